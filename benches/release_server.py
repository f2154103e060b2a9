"""What the benchmark scripts share: the release build of vidpipe started on
a temp data dir with a key, and the memory of its process."""
import os, socket, subprocess, tempfile, time, urllib.request

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "vidpipe")


def rss_mib(pid, field="VmRSS"):
    """A memory figure of process `pid` from /proc (VmRSS now, VmHWM the peak), in MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(name, env=None):
    """Starts `vidpipe serve` on a new data dir with a key named `name`, logging
    warnings only, and waits until it answers. Returns (process, port, key, data dir)."""
    data = tempfile.mkdtemp()
    key = subprocess.run([BIN, "keys", "create", "--data-dir", data, "--name", name],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              stderr=subprocess.DEVNULL,
                              env=dict(os.environ, VIDPIPE_LOG="warn", **(env or {})))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return server, port, key, data
