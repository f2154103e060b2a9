//! The probe step on arbitrary bytes as an uploaded file: never a panic,
//! and the allow-list keeps libav from opening anything else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vidpipe::media::{init, probe, MediaLimits};

fuzz_target!(|data: &[u8]| {
    init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload");
    std::fs::write(&path, data).unwrap();
    let _ = probe(&path, &MediaLimits::default());
});
