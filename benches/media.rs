//! The media pipeline alone (no server): frames per second for the MP4 only
//! and for the MP4 plus the full HLS ladder, on a 1080p30 clip with audio
//! made once with libav before the measurements.

#[path = "../tests/synth/mod.rs"]
mod synth;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vidpipe::media::{self, MediaLimits, OutputProfile};

const SECONDS: f64 = 4.0;
const FPS: i32 = 30;

fn pipeline(c: &mut Criterion) {
    media::init();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in1080.mp4");
    let mut clip = synth::Clip::mp4(synth::VideoTrack::h264(1920, 1080, FPS), SECONDS);
    clip.audio.push(synth::AudioTrack::new("aac", 2, 48_000));
    synth::write(&input, &clip);

    let mut group = c.benchmark_group("media_1080p30");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements((SECONDS * FPS as f64) as u64));
    for (name, hls) in [("mp4_only", false), ("mp4_and_ladder", true)] {
        let profile = OutputProfile {
            hls,
            threads: Some(num_cpus::get()),
            ..OutputProfile::default()
        };
        group.bench_with_input(
            BenchmarkId::new("transcode", name),
            &profile,
            |b, profile| {
                b.iter(|| {
                    let out = tempfile::tempdir().unwrap();
                    media::transcode(
                        &input,
                        out.path(),
                        profile,
                        &MediaLimits::default(),
                        &mut |_| {},
                    )
                    .unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
