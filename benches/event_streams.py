#!/usr/bin/env python3
"""The status poll with 1,000 event streams open, against a release build.

Starts `target/release/vidpipe serve` on a temp data dir and keeps it busy
with changes: a small upload (a text file, which fails at probing) every
250 ms, so every open stream has events to send. Then, side by side in one
run, polls `GET /uploads/{id}` of one upload on 8 keep-alive
connections for a while with no stream open, then with N streams of
`GET /events` open (all of one key, so each change goes to all N), then
with none again. Prints the p50 and p99 of the poll in each, their ratio,
the server's memory before and with the streams open, and what the streams
received.

    cargo build --release && python3 benches/event_streams.py [N] [SECONDS]
"""
import asyncio, resource, statistics, sys, time

from release_server import rss_mib, start

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 15
POLLERS = 8


def form(body):
    parts = (
        b'--B\r\nContent-Disposition: form-data; name="folder"\r\n\r\nroot/bench\r\n'
        b'--B\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n\r\n'
        + body + b"\r\n--B--\r\n"
    )
    return parts


async def http(reader, writer, request):
    """Sends one request on a keep-alive connection; returns (status, body)."""
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def create(port, key):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = form(b"not a video " * 8)
    head = (
        f"POST /api/client/v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    status, answer = await http(reader, writer, head + body)
    writer.close()
    assert status in (202, 429, 503), (status, answer)
    return answer


async def changes(port, key, stop):
    """An upload every 250 ms until `stop` is set."""
    made = 0
    while not stop.is_set():
        await create(port, key)
        made += 1
        await asyncio.sleep(0.25)
    return made


async def poll(port, key, upload, until, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET /api/client/v1/uploads/{upload} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    ).encode()
    while time.monotonic() < until:
        started = time.perf_counter()
        status, _ = await http(reader, writer, request)
        latencies.append(time.perf_counter() - started)
        assert status == 200, status
    writer.close()


async def measure(port, key, upload):
    latencies = []
    until = time.monotonic() + SECONDS
    await asyncio.gather(*(poll(port, key, upload, until, latencies) for _ in range(POLLERS)))
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return p50, p99, len(latencies)


async def stream(port, key, counts, index, opened):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/client/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    assert status == 200, status
    opened.append(index)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"event: upload"):
                counts[index] += 1
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def bench(port, key, pid):
    first = await create(port, key)  # its record is polled
    upload = first.split(b'"id":"')[1].split(b'"')[0].decode()
    stop = asyncio.Event()
    changing = asyncio.create_task(changes(port, key, stop))
    await asyncio.sleep(2)

    before = rss_mib(pid)
    p50_0, p99_0, n0 = await measure(port, key, upload)

    counts, opened = [0] * N, []
    streams = [asyncio.create_task(stream(port, key, counts, i, opened)) for i in range(N)]
    while len(opened) < N:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)
    with_streams = rss_mib(pid)
    start_counts = list(counts)
    p50_n, p99_n, n_n = await measure(port, key, upload)
    received = [c - s for c, s in zip(counts, start_counts)]
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    await asyncio.sleep(2)
    # No stream again: the first figures are not just a cold start.
    p50_1, p99_1, n1 = await measure(port, key, upload)
    stop.set()
    made = await changing

    print(f"{made} uploads created in the background, one every 250 ms")
    print(f"GET /uploads/{{id}} on {POLLERS} connections, {SECONDS:.0f} s each:")
    print(f"  no stream open     p50 {p50_0:6.2f} ms  p99 {p99_0:6.2f} ms  ({n0} polls)")
    print(f"  {N} streams open  p50 {p50_n:6.2f} ms  p99 {p99_n:6.2f} ms  ({n_n} polls)")
    print(f"  no stream, again   p50 {p50_1:6.2f} ms  p99 {p99_1:6.2f} ms  ({n1} polls)")
    print(f"  p99 ratio (streams / the worse of the two without): {p99_n / max(p99_0, p99_1):.2f}"
          f", (streams / the better): {p99_n / min(p99_0, p99_1):.2f}")
    print(f"server RSS: {before:.1f} MiB without streams, {with_streams:.1f} MiB with {N} "
          f"({(with_streams - before) * 1024 / N:.1f} KiB per stream)")
    print(f"events per stream while measured: min {min(received)}, median "
          f"{statistics.median(received):.0f}, max {max(received)}")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * N + 256)), hard))
    server, port, key, _ = start("bench", {
        "VIDPIPE_MAX_EVENT_STREAMS_PER_TENANT": str(N),
        "VIDPIPE_MAX_CONNECTIONS": str(N + 256),
        "VIDPIPE_MAX_IN_FLIGHT_PER_TENANT": "100000",
        "VIDPIPE_MAX_QUEUED_JOBS": "100000",
    })
    try:
        asyncio.run(bench(port, key, server.pid))
    finally:
        server.terminate()
        server.wait()


main()
