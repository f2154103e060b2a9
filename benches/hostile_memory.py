#!/usr/bin/env python3
"""Server memory under hostile clients, against a running release build.

Starts `target/release/vidpipe serve` on a temp data dir, then opens, all at
once: N slowloris connections (headers never finished), N endless part-header
floods (1 MiB each), N bodies that stop mid-way, and N uploads cut off by a
disconnect. Prints the server's peak RSS growth and checks it still serves.

    cargo build --release && python3 benches/hostile_memory.py [N]
"""
import json, os, socket, sys, threading, time, urllib.request

from release_server import rss_mib as rss, start

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100


def head(key, length=None):
    framing = f"Content-Length: {length}\r\n" if length else "Transfer-Encoding: chunked\r\n"
    return (
        "POST /api/client/v1/uploads HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary=B\r\n{framing}\r\n"
    ).encode()


def run(kind, port, key, results):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        if kind == "slowloris":
            s.sendall(b"GET /api/client/v1/uploads HTTP/1.1\r\nHost: x\r\n")
            time.sleep(3)
        elif kind == "flood":
            s.sendall(head(key))
            block = b"--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a\"\r\n"
            line = b"X-Flood: " + b"a" * 1000 + b"\r\n"
            payload = block + line * 1000
            try:
                s.sendall(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            except OSError:
                pass
        elif kind == "stalled":
            s.sendall(head(key, 10_000_000))
            s.sendall(b"--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\n" + b"x" * 65536)
            time.sleep(3)
        elif kind == "cut":
            s.sendall(head(key, 10_000_000))
            s.sendall(b"--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\n" + b"x" * 1_000_000)
        s.settimeout(10)
        try:
            answer = s.recv(64).split(b" ")
            results.append((kind, answer[1].decode() if len(answer) > 1 else "closed"))
        except OSError:
            results.append((kind, "closed"))
        s.close()
    except OSError as e:
        results.append((kind, f"error {e.errno}"))


def main():
    server, port, key, data = start("hostile")
    try:
        before = rss(server.pid, "VmRSS")
        results, threads = [], []
        for kind in ["slowloris", "flood", "stalled", "cut"]:
            for _ in range(N):
                t = threading.Thread(target=run, args=(kind, port, key, results))
                t.start()
                threads.append(t)
        for t in threads:
            t.join()
        peak = rss(server.pid, "VmHWM")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/client/v1/uploads",
                                         headers={"Authorization": f"Bearer {key}"})
        listed = json.load(urllib.request.urlopen(request, timeout=5))["data"]
        outcomes = {}
        for kind, answer in results:
            outcomes.setdefault(kind, {}).setdefault(answer, 0)
            outcomes[kind][answer] += 1
        print(f"{4 * N} hostile connections ({N} of each kind)")
        for kind, answers in outcomes.items():
            print(f"  {kind:10} {answers}")
        print(f"server RSS before {before:.1f} MiB, peak {peak:.1f} MiB, growth {peak - before:.1f} MiB")
        print(f"still serving: GET /uploads answered with {len(listed)} records; staging files left: "
              f"{len(os.listdir(os.path.join(data, 'staging')))}")
    finally:
        server.terminate()
        server.wait()


main()
