#!/usr/bin/env python3
"""tus uploads against multipart ones, and server memory with 100 tus
uploads in flight, against a release build.

Starts `target/release/vidpipe serve` on a temp data dir with a key, then,
side by side in one run:

1. Throughput over loopback of one upload of `--size-mib` MiB of
   pseudo-random bytes (made once in a temp dir; not a video, so the
   pipeline fails it at probing, which is cheap): as one multipart
   `POST /uploads` (timed from the request's start to its 202) and through
   tus (`POST /tus`, then `PATCH`es of `--chunk-mib` MiB, each a request of
   its own on one keep-alive connection; timed from the creation to the
   last 204). Both send the file with sendfile(2) from the page cache, so
   the client costs the same on both sides. `--runs` of each, alternating,
   with a `sync` before each and the pipeline left to settle (the upload
   failed) after each, then the upload deleted (its kept source freed);
   the medians are compared, and each tus run with the multipart run just
   before it.
2. Memory: `--uploads` tus uploads created, then each sending its body
   (`--slow-mib` MiB in 64 KiB pieces with a pause between) at once, all on
   connections of their own, split over `--keys` fresh keys so that no key
   reaches `max_unfinished_tus_uploads_per_tenant` or
   `max_in_flight_per_tenant` (100 each by default). The server's RSS
   before, after the creations, its peak while the bodies arrive (sampled
   from /proc every 20 ms, and VmHWM after a reset of it) and after.

The server runs with its default limits; any answer but the expected one
(a 429, a 503 server_busy, ...) is counted and printed, not retried.

    cargo build --release && python3 benches/tus_uploads.py [--size-mib 1024]
"""
import argparse, asyncio, base64, collections, json, os, resource, shutil, socket
import statistics, subprocess, sys, tempfile, threading, time

from release_server import BIN, rss_mib, start

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--size-mib", type=int, default=1024, help="size of the big upload (default 1024)")
p.add_argument("--chunk-mib", type=int, default=8, help="tus PATCH size (default 8)")
p.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
p.add_argument("--uploads", type=int, default=100, help="concurrent tus uploads (default 100)")
p.add_argument("--keys", type=int, default=2, help="keys they are split over (default 2)")
p.add_argument("--slow-mib", type=int, default=4, help="body of each concurrent upload (default 4)")
p.add_argument("--piece-kib", type=int, default=64, help="piece written at a time (default 64)")
p.add_argument("--pause-ms", type=float, default=100, help="pause between pieces (default 100)")
args = p.parse_args()

MIB = 1024 * 1024
SIZE = args.size_mib * MIB
CHUNK = args.chunk_mib * MIB
API = "/api/client/v1"
TERMINAL = (6, 7)  # completed, failed


def b64(text):
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------- a tiny blocking HTTP/1.1 client


class Conn:
    """One keep-alive connection; requests are written by hand, bodies sent
    with sendfile(2)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def close(self):
        self.reader.close()
        self.sock.close()

    def request(self, head, parts=()):
        """Sends `head` (bytes) then each part (bytes, or (file, offset,
        count) to sendfile); returns (status, headers, body). A server that
        answers before the body is all sent (and closes) is still read."""
        try:
            self.sock.sendall(head)
            for part in parts:
                if isinstance(part, bytes):
                    self.sock.sendall(part)
                else:
                    f, offset, count = part
                    sent = self.sock.sendfile(f, offset, count)
                    assert sent == count, (sent, count)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return self.response()

    def response(self):
        line = self.reader.readline()
        if not line:
            raise ConnectionError("connection closed with no answer")
        status = int(line.split()[1])
        headers = {}
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                n = int(self.reader.readline().split(b";")[0], 16)
                if n == 0:
                    while self.reader.readline() not in (b"\r\n", b""):
                        pass
                    break
                body += self.reader.read(n)
                self.reader.readline()
        else:
            body = self.reader.read(int(headers.get("content-length", 0)))
        return status, headers, body


def get_json(port, key, path):
    c = Conn(port)
    try:
        status, _, body = c.request(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        return status, (json.loads(body) if body else None)
    finally:
        c.close()


def delete(port, key, upload):
    """Deletes `upload`, freeing the source its failure kept (a GiB a run)."""
    c = Conn(port)
    try:
        status, _, _ = c.request(
            f"DELETE {API}/uploads/{upload} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key}\r\n\r\n".encode())
        return status
    finally:
        c.close()


def settle(port, key, upload, timeout=120):
    """Waits until `upload` is completed or failed; returns its status and the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status, body = get_json(port, key, f"{API}/uploads/{upload}")
        if status == 200 and body["data"]["status"] in TERMINAL:
            return body["data"]["status"], time.monotonic() - started
        time.sleep(0.05)
    return None, time.monotonic() - started


# ---------------------------------------------------------------- 1. throughput


def multipart(port, key, f):
    boundary = "vidpipebenchboundary7d3f"
    pre = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nroot/bench\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"big.mp4\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    post = f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST {API}/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(pre) + SIZE + len(post)}\r\n\r\n"
    ).encode()
    c = Conn(port)
    try:
        started = time.perf_counter()
        status, _, body = c.request(head, [pre, (f, 0, SIZE), post])
        secs = time.perf_counter() - started
    finally:
        c.close()
    upload = json.loads(body)["data"]["id"] if status == 202 else None
    return secs, [status], upload, body


def tus(port, key, f):
    statuses = []
    c = Conn(port)
    try:
        started = time.perf_counter()
        status, headers, body = c.request((
            f"POST {API}/tus HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Length: {SIZE}\r\n"
            f"Upload-Metadata: filename {b64('big.mp4')},folder {b64('root/bench')}\r\n"
            f"Content-Length: 0\r\n\r\n").encode())
        statuses.append(status)
        if status != 201:
            return time.perf_counter() - started, statuses, None, body
        url = headers["location"]
        path = url[url.index(API):] if "://" in url else url
        offset = 0
        while offset < SIZE:
            n = min(CHUNK, SIZE - offset)
            status, headers, body = c.request((
                f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Upload-Offset: {offset}\r\nContent-Length: {n}\r\n\r\n").encode(), [(f, offset, n)])
            statuses.append(status)
            if status != 204:
                return time.perf_counter() - started, statuses, None, body
            offset = int(headers["upload-offset"])
        secs = time.perf_counter() - started
    finally:
        c.close()
    return secs, statuses, path.rsplit("/", 1)[1], b""


def throughput(port, key, path):
    results = {"multipart": [], "tus": []}
    odd = []
    with open(path, "rb") as f:
        for run in range(args.runs):
            for name, send in (("multipart", multipart), ("tus", tus)):
                synced = time.monotonic()
                os.sync()  # the upload's fsyncs wait for its own pages only
                synced = time.monotonic() - synced
                secs, statuses, upload, body = send(port, key, f)
                counts = collections.Counter(statuses)
                expected = {"multipart": 202, "tus": 204}[name]
                ok = upload is not None
                waited, end = 0.0, None
                if ok:
                    end, waited = settle(port, key, upload)
                    delete(port, key, upload)
                mbs = SIZE / 1e6 / secs
                print(f"  run {run + 1} {name:9s} {secs:7.2f} s  {mbs:7.1f} MB/s  "
                      f"answers {dict(counts)}  then status {end} after {waited:.1f} s"
                      f" (sync before: {synced:.1f} s)", flush=True)
                if ok:
                    results[name].append(mbs)
                else:
                    odd.append(f"{name} run {run + 1}: answers {dict(counts)}, last body {body[:300]!r}")
                if set(counts) - {expected, 201}:
                    odd.append(f"{name} run {run + 1}: answers {dict(counts)}")
    return results, odd


# ---------------------------------------------------------------- 2. memory


async def areq(reader, writer, head, body=b""):
    writer.write(head + body)
    await writer.drain()
    return await aresponse(reader)


async def aresponse(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed")
    status = int(line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers, body


async def slow_upload(port, key, index, created, go, statuses, uploads, errors):
    length = args.slow_mib * MIB
    piece = os.urandom(args.piece_kib * 1024)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, body = await areq(reader, writer, (
            f"POST {API}/tus HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Length: {length}\r\n"
            f"Upload-Metadata: filename {b64(f'slow{index}.mp4')},folder {b64('root/bench')}\r\n"
            f"Content-Length: 0\r\n\r\n").encode())
        statuses["create"][status] += 1
        created.append(index)
        if status != 201:
            errors.append(f"create {index}: {status} {body[:200]!r}")
            writer.close()
            return
        url = headers["location"]
        path = url[url.index(API):] if "://" in url else url
        await go.wait()
        writer.write((
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: 0\r\nContent-Length: {length}\r\n\r\n").encode())
        sent = 0
        while sent < length:
            n = min(len(piece), length - sent)
            writer.write(piece[:n])
            await writer.drain()
            sent += n
            if sent < length:
                await asyncio.sleep(args.pause_ms / 1000)
        status, headers, body = await aresponse(reader)
        statuses["patch"][status] += 1
        if status == 204:
            uploads.append((key, path.rsplit("/", 1)[1]))
        else:
            errors.append(f"patch {index}: {status} {body[:200]!r}")
        writer.close()
    except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
        errors.append(f"upload {index}: {e!r}")
        created.append(index)


def reset_hwm(pid):
    """Resets the process's VmHWM to its RSS now (Linux >= 4.0); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


async def memory(port, keys, pid):
    statuses = {"create": collections.Counter(), "patch": collections.Counter()}
    created, uploads, errors, samples = [], [], [], []
    go = asyncio.Event()
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append(rss_mib(pid))
            time.sleep(0.02)

    before = rss_mib(pid)
    hwm_reset = reset_hwm(pid)
    tasks = [asyncio.create_task(slow_upload(port, keys[i % len(keys)], i, created, go, statuses,
                                             uploads, errors))
             for i in range(args.uploads)]
    while len(created) < args.uploads:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    with_created = rss_mib(pid)
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    started = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)
    secs = time.monotonic() - started
    stop.set()
    thread.join()
    peak_sampled = max(samples) if samples else 0.0
    hwm = rss_mib(pid, "VmHWM")
    right_after = rss_mib(pid)
    # Let the pipeline fail them all (probe), then read the memory again.
    settled, waited = 0, time.monotonic()
    for key, upload in uploads:
        end, _ = settle(port, key, upload, timeout=max(5, 120 - (time.monotonic() - waited)))
        settled += end in TERMINAL
    waited = time.monotonic() - waited
    await asyncio.sleep(1)
    after = rss_mib(pid)
    return dict(before=before, with_created=with_created, peak_sampled=peak_sampled, hwm=hwm,
                hwm_reset=hwm_reset, right_after=right_after, after=after, secs=secs,
                statuses=statuses, errors=errors, settled=settled, done=len(uploads),
                waited=waited, samples=len(samples))


# ---------------------------------------------------------------- main


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.uploads + 256)), hard))
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release first")

    tmp = tempfile.gettempdir()
    # The source file, then every upload's source kept by the server (a
    # failed upload keeps its source for a retry), plus the slow ones.
    need = SIZE * (1 + 2 * args.runs) + args.uploads * args.slow_mib * MIB + 512 * MIB
    free = shutil.disk_usage(tmp).free
    print(f"{tmp}: {free / 2**30:.1f} GiB free, this run needs about {need / 2**30:.1f} GiB")
    if free < need:
        sys.exit("not enough free disk")

    work = tempfile.mkdtemp(prefix="tus-bench-")
    path = os.path.join(work, "big.bin")
    started = time.monotonic()
    with open(path, "wb") as f:
        for offset in range(0, SIZE, 8 * MIB):
            f.write(os.urandom(min(8 * MIB, SIZE - offset)))
    os.sync()
    print(f"made {args.size_mib} MiB of random bytes in {time.monotonic() - started:.1f} s")

    server, port, key, data = start("bench")
    try:
        config = subprocess.run([BIN, "config", "check", "--data-dir", data], capture_output=True,
                                text=True).stdout
        limits = {}
        for line in config.splitlines():
            name, _, value = line.partition(" = ")
            if name in ("max_upload_bytes", "max_requests_in_flight", "max_in_flight_per_tenant",
                        "max_unfinished_tus_uploads_per_tenant", "max_connections", "transcoders"):
                limits[name] = int(value)
        print("server limits:", ", ".join(f"{k} {v}" for k, v in limits.items()))
        if limits.get("max_upload_bytes", SIZE) < SIZE + MIB:
            sys.exit(f"max_upload_bytes {limits['max_upload_bytes']} is below {SIZE}")
        per_key = -(-args.uploads // args.keys)
        if per_key > min(limits.get("max_unfinished_tus_uploads_per_tenant", per_key),
                         limits.get("max_in_flight_per_tenant", per_key)):
            print(f"warning: {per_key} uploads per key is past a per-key limit; expect 429s")

        # Warm up the connection path and the tus routes once.
        get_json(port, key, f"{API}/uploads")

        print(f"1. one {args.size_mib} MiB upload over loopback, {args.runs} runs each, alternating"
              f" (tus PATCHes of {args.chunk_mib} MiB on one connection):", flush=True)
        results, odd = throughput(port, key, path)

        keys = []
        for i in range(args.keys):
            made = subprocess.run([BIN, "keys", "create", "--data-dir", data, "--name", f"slow{i}"],
                                  capture_output=True, text=True, check=True)
            keys.append(made.stdout.strip().splitlines()[-1])
        for k in keys:  # the server loads new keys by itself, soon after
            for _ in range(100):
                if get_json(port, k, f"{API}/uploads")[0] == 200:
                    break
                time.sleep(0.1)
            else:
                sys.exit("a new key was not accepted")
        time.sleep(1)
        print(f"2. {args.uploads} tus uploads at once over {args.keys} keys, each {args.slow_mib} MiB"
              f" in {args.piece_kib} KiB pieces, {args.pause_ms:.0f} ms apart ...", flush=True)
        mem = asyncio.run(memory(port, keys, server.pid))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)

    print()
    print("| measure | value | goal |")
    print("|---|---|---|")
    med = {}
    for name in ("multipart", "tus"):
        runs = results[name]
        med[name] = statistics.median(runs) if runs else float("nan")
        print(f"| {args.size_mib} MiB {name}, median of {len(runs)} | **{med[name]:.0f} MB/s** "
              f"({', '.join(f'{r:.0f}' for r in runs)}) | |")
    ratio = med["tus"] / med["multipart"]
    print(f"| tus / multipart, of the medians | **{ratio:.2f}** | >= 0.8: {'yes' if ratio >= 0.8 else 'NO'} |")
    pairs = [t / m for m, t in zip(results["multipart"], results["tus"])]
    if pairs:
        print(f"| tus / multipart, each run against the multipart one just before | "
              f"{', '.join(f'{r:.2f}' for r in pairs)} (median {statistics.median(pairs):.2f}) | |")
    peak = max(mem["peak_sampled"], mem["hwm"] if mem["hwm_reset"] else 0)
    growth = peak - mem["before"]
    print(f"| server RSS, {args.uploads} tus uploads in flight | before {mem['before']:.1f} MiB, "
          f"{args.uploads} created {mem['with_created']:.1f}, peak {mem['peak_sampled']:.1f} sampled"
          f" ({mem['samples']} samples) / {mem['hwm']:.1f} VmHWM{'' if mem['hwm_reset'] else ' (not reset)'},"
          f" at the end {mem['right_after']:.1f}, settled {mem['after']:.1f} | |")
    print(f"| RSS growth, peak - before | **{growth:.1f} MiB** | < 64: {'yes' if growth < 64 else 'NO'} |")
    print()
    print(f"memory phase: bodies took {mem['secs']:.1f} s; answers: creates "
          f"{dict(mem['statuses']['create'])}, PATCHes {dict(mem['statuses']['patch'])}; "
          f"{mem['settled']} of {mem['done']} finished uploads reached status 6/7 "
          f"within {mem['waited']:.1f} s")
    for line in odd + mem["errors"][:20]:
        print("odd:", line)
    if len(mem["errors"]) > 20:
        print(f"odd: ... and {len(mem['errors']) - 20} more")


main()
