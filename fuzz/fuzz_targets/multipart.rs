//! The multipart intake on arbitrary bodies: every input ends in a typed
//! error or an accepted form, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vidpipe::api::intake::parse_and_validate;
use vidpipe::config::Config;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(([127, 0, 0, 1], 0).into(), dir.path().to_path_buf());
    config.max_upload_bytes = 1 << 20;
    config.max_part_header_bytes = 1024;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let body = bytes::Bytes::copy_from_slice(data);
    let part = dir.path().join("fuzz.part");
    let _ = runtime.block_on(parse_and_validate(body, "B", &config, &part));
});
