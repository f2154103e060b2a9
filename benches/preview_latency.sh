#!/usr/bin/env bash
# Time to playable: a long 1080p upload (camera-like: H.264 at a phone's bit
# rate and keyframe spacing, AAC stereo) through `vidpipe serve` with the
# default profile (the full ladder, 4 s segments), measured from its 202:
#   - until the record shows `preview.hls_url`;
#   - until the first segment of every rendition is fetched from the preview
#     and ffprobe has read the preview master (video and audio);
#   - with FULL=1, until the upload is completed too.
# Target: the first playable preview segment in under 10 s on two cores.
#
#   benches/preview_latency.sh             # a 10-minute source at 12 Mb/s
#   MINUTES=2 FULL=1 benches/preview_latency.sh
#   MBPS=5 benches/preview_latency.sh      # within 1080p's cap: passthrough copies
#                                          # the video, after one read of its packets
#
# Needs: ffmpeg (CLI), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${MINUTES:-10}
mbps=${MBPS:-12}
cargo build --release -q --bin vidpipe
bin=$PWD/target/release/vidpipe
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; [ -n "${KEEP_LOG:-}" ] && cp "$work/server.log" "$KEEP_LOG"; rm -rf "$work"' EXIT

echo "== input: ${minutes} min of 1080p30, H.264 at ${mbps} Mb/s with a keyframe every 2 s, AAC stereo"
secs=$((minutes * 60))
ffmpeg -v error -f lavfi -i "testsrc2=size=1920x1080:rate=30:duration=$secs" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$secs" \
  -c:v libx264 -preset ultrafast -b:v ${mbps}M -maxrate ${mbps}M -bufsize $((mbps * 2))M -g 60 -pix_fmt yuv420p \
  -c:a aac -b:a 128k -ac 2 -movflags +faststart "$work/long.mp4"
ls -l "$work/long.mp4" | awk '{printf "   %.0f MB\n", $5 / 1e6}'

key=$($bin keys create --data-dir "$work/data" --name bench | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$bin serve --listen 127.0.0.1:$port --data-dir "$work/data" 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do grep -q "listening" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
sync

python3 - "$port" "$key" "$work/long.mp4" "${FULL:-0}" <<'PY'
import json, subprocess, sys, time, urllib.request

port, key, path, full = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
api = f"http://127.0.0.1:{port}/api/client/v1"

def get(url, auth=True):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request) as response:
        return response.read()

def record(upload):
    return json.loads(get(f"{api}/uploads/{upload}"))["data"]

out = subprocess.run(
    ["curl", "-s", "-H", f"Authorization: Bearer {key}", "-F", f"video=@{path};filename=long.mp4",
     "-F", "folder=root/bench", f"{api}/uploads"],
    check=True, capture_output=True)
accepted = time.monotonic()
upload = json.loads(out.stdout)["data"]["id"]

while True:
    data = record(upload)
    if data.get("preview"):
        break
    if data["status"] >= 5:
        sys.exit(f"no preview before status {data['status']}")
    time.sleep(0.05)
previewable = time.monotonic() - accepted
master_url = data["preview"]["hls_url"]
master = get(master_url, auth=False).decode()
base = master_url.rsplit("/", 1)[0]
variants = [line for line in master.splitlines() if line and not line.startswith("#")]
for variant in variants:
    playlist = get(f"{base}/{variant}", auth=False).decode()
    segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    folder = f"{base}/{variant}".rsplit("/", 1)[0]
    segment = get(f"{folder}/{segments[0]}", auth=False)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist and segment
probe = subprocess.run(
    ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json", master_url],
    check=True, capture_output=True)
kinds = {s["codec_type"] for s in json.loads(probe.stdout)["streams"]}
assert {"video", "audio"} <= kinds, kinds
playable = time.monotonic() - accepted
status = record(upload)["status"]
print(f"preview shown {previewable:.2f} s after the 202 ({len(variants)} renditions)")
print(f"first segment of every rendition fetched and the preview probed {playable:.2f} s after the 202 "
      f"(status then {status}; target < 10 s: {'holds' if playable < 10 else 'MISSED'})")
if full:
    while record(upload)["status"] not in (6, 7):
        time.sleep(0.5)
    print(f"completed {time.monotonic() - accepted:.1f} s after the 202")
PY
