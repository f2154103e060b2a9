#!/usr/bin/env bash
# Upload ingest over loopback: MB/s and server memory growth for one large upload.
# Usage: benches/ingest.sh [SIZE_MIB]   (default 1024)
# Prints the throughput and the server's peak RSS growth (VmHWM after - VmRSS before).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
cargo build --release -q
bin=target/release/vidpipe
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
key=$($bin keys create --data-dir "$work/data" --name bench | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$bin serve --listen 127.0.0.1:$port --data-dir "$work/data" --transcoders 1 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do grep -q "listening" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
# Warm up the connection path once so the baseline includes the runtime's steady state.
curl -s -o /dev/null -H "Authorization: Bearer $key" http://127.0.0.1:$port/api/client/v1/uploads
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/big.bin"
# The upload's fsync should wait for its own pages, not for the write-back of
# this test file or of a bench run just before.
sync
rss_before=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
start=$(date +%s.%N)
code=$(curl -s -o "$work/resp.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
  -F "video=@$work/big.bin;filename=big.mp4" -F folder=root/bench \
  http://127.0.0.1:$port/api/client/v1/uploads)
end=$(date +%s.%N)
hwm_after=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
python3 - "$size_mib" "$start" "$end" "$rss_before" "$hwm_after" "$code" <<'PY'
import sys
size, start, end, before, after, code = sys.argv[1:]
size, secs = int(size), float(end) - float(start)
growth = (int(after) - int(before)) / 1024
print(f"status {code}; {size} MiB in {secs:.2f} s = {size * 1.048576 / secs:.0f} MB/s")
print(f"server RSS before {int(before)/1024:.1f} MiB, peak after {int(after)/1024:.1f} MiB, growth {growth:.1f} MiB (target <= 64)")
PY
