//! Folder validation and file-name cleaning on arbitrary strings: never a
//! panic, and nothing accepted can climb out of its folder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vidpipe::api::folder::{clean_filename, validate_folder};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if validate_folder(text).is_ok() {
        assert!(text == "root" || text.starts_with("root/"));
        assert!(text.len() <= 255);
        assert!(text.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
    }
    let name = clean_filename(text);
    assert!(!name.is_empty() && name.len() <= 255);
    assert!(!name.contains('/') && !name.contains('\\'));
});
