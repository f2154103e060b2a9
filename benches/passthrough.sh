#!/usr/bin/env bash
# No re-encode where none is needed, side by side in one run: camera-like
# H.264 sources (720p30 and 1080p30, AAC-LC stereo 48 kHz, B-frames, a
# keyframe every second as phones make them, a bit rate within the top
# rendition's cap) uploaded to `vidpipe serve`, timed from the 202 to
# completed:
#   - MP4 only (profile.hls = false) with passthrough, against the ffmpeg
#     CLI's re-encode of the same MP4 (the settings of benches/compare.sh);
#     goal: at most 0.1 of the CLI's time;
#   - the full ladder with passthrough against without it (profile.passthrough
#     = false); goal: at most 0.6.
# Then a camera original's bit rate (16 Mb/s at 1080p, over the 6 Mb/s cap):
# re-encoded, so passthrough costs it nothing but a header check.
#
#   benches/passthrough.sh                 # 30 s clips
#   CLIP_SECONDS=60 benches/passthrough.sh
#
# Needs: ffmpeg (CLI), curl, python3. Exit status 1 if a goal is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${CLIP_SECONDS:-30}
cargo build --release -q --bin vidpipe
bin=$PWD/target/release/vidpipe
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
now() { date +%s.%N; }

camera() { # SIZE BITRATE OUTPUT
  ffmpeg -v error -f lavfi -i "testsrc2=size=$1:rate=30:duration=$secs" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$secs" \
    -c:v libx264 -preset fast -b:v "$2" -maxrate "$2" -bufsize "$2" -g 30 -pix_fmt yuv420p \
    -c:a aac -b:a 128k -ac 2 -movflags +faststart "$3"
}
echo "== inputs: ${secs} s camera-like clips"
camera 1280x720 3M "$work/in720.mp4"
camera 1920x1080 5M "$work/in1080.mp4"
camera 1920x1080 16M "$work/in1080hi.mp4"
for f in in720 in1080 in1080hi; do
  ffprobe -v error -select_streams v -show_entries stream=width,height,bit_rate \
    -of csv=p=0 "$work/$f.mp4" | awk -F, -v f=$f '{printf "   %s: %sx%s, video %.2f Mb/s\n", f, $1, $2, $3 / 1e6}'
done

# serve NAME HLS PASSTHROUGH: a server with that profile, on its own data dir.
serve() {
  [ -n "$pid" ] && kill $pid && wait $pid 2>/dev/null || true
  local dir=$work/$1
  mkdir -p "$dir"
  # One transcoder: the one job has every core, as the CLI does.
  printf '[server]\ndata_dir = "%s"\ntranscoders = 1\n[profile]\nhls = %s\npassthrough = %s\n' \
    "$dir/data" "$2" "$3" >"$dir/vidpipe.toml"
  key=$($bin keys create --config "$dir/vidpipe.toml" --name bench | tail -n 1)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  VIDPIPE_LOG=warn $bin serve --config "$dir/vidpipe.toml" --listen 127.0.0.1:$port 2>"$dir/server.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
}

# completed FILE: seconds from the 202 to completed; prints the top rendition's encoded flag.
completed() {
  python3 - "$port" "$key" "$1" <<'PY'
import json, subprocess, sys, time, urllib.request
port, key, path = sys.argv[1:]
api = f"http://127.0.0.1:{port}/api/client/v1"
out = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {key}", "-F",
                      f"video=@{path};filename=clip.mp4", "-F", "folder=root/bench", f"{api}/uploads"],
                     check=True, capture_output=True)
accepted = time.monotonic()
upload = json.loads(out.stdout)["data"]["id"]
while True:
    request = urllib.request.Request(f"{api}/uploads/{upload}")
    request.add_header("Authorization", f"Bearer {key}")
    data = json.loads(urllib.request.urlopen(request).read())["data"]
    if data["status"] in (6, 7):
        break
    time.sleep(0.05)
assert data["status"] == 6, data
took = time.monotonic() - accepted
top = (data.get("renditions") or [{}])[0].get("encoded", "n/a")
print(f"{took:.3f} {top}")
PY
}

cli_mp4() { # INPUT OUTPUT WIDTH HEIGHT VBV
  ffmpeg -v error -y -i "$1" -map 0:v:0 -map 0:a:0? \
    -vf "scale=$3:$4:flags=bicubic,format=yuv420p,setsar=1" \
    -c:v libx264 -preset veryfast -crf 23 -forced-idr 1 -fps_mode passthrough \
    -force_key_frames "expr:if(lt(n_forced,2),gte(t,n_forced),gte(t,4*(n_forced-1)))" \
    -x264-params "vbv-maxrate=$5:vbv-bufsize=$(($5 * 2))" \
    -c:a aac -b:a 128k -ar 48000 -ac 2 -movflags +faststart "$2"
}

declare -A took
for input in in720 in1080 in1080hi; do
  for config in "mp4_copy false true" "mp4_encode false false" "ladder_copy true true" "ladder_encode true false"; do
    set -- $config
    [ "$input" = in1080hi ] && [ "$1" != ladder_copy ] && [ "$1" != ladder_encode ] && continue
    serve "$input-$1" "$2" "$3"
    read -r t top < <(completed "$work/$input.mp4")
    took[$input,$1]=$t
    echo "   $input $1: ${t} s from the 202 to completed (top rendition encoded: $top)"
  done
done
for input in in720 in1080; do
  case $input in in720) size="1280 720 3266";; in1080) size="1920 1080 6000";; esac
  t0=$(now); cli_mp4 "$work/$input.mp4" "$work/$input-cli.mp4" $size; t1=$(now)
  took[$input,cli]=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  echo "   $input ffmpeg CLI re-encode (MP4): ${took[$input,cli]} s"
done

status=0
echo "== ratios"
check() { # NAME A B LIMIT
  local ratio
  ratio=$(python3 -c "print(f'{$2 / $3:.3f}')")
  local verdict=holds
  python3 -c "import sys; sys.exit(0 if $ratio <= $4 else 1)" || { verdict=MISSED; status=1; }
  printf '   %-58s %s (goal <= %s: %s)\n' "$1" "$ratio" "$4" "$verdict"
}
for input in in720 in1080; do
  check "$input MP4 only, passthrough / ffmpeg CLI re-encode" "${took[$input,mp4_copy]}" "${took[$input,cli]}" 0.1
  check "$input MP4 only, passthrough / vidpipe without it" "${took[$input,mp4_copy]}" "${took[$input,mp4_encode]}" 1
  check "$input ladder, passthrough / vidpipe without it" "${took[$input,ladder_copy]}" "${took[$input,ladder_encode]}" 0.6
done
check "in1080hi ladder (over the cap: re-encoded) / without it" "${took[in1080hi,ladder_copy]}" "${took[in1080hi,ladder_encode]}" 1.1
exit $status
