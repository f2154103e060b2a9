//! Folder validation and file-name checks on arbitrary strings: never a
//! panic, and nothing accepted can climb out of its folder or hide a
//! control character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vidpipe::api::folder::{checked_filename, checked_folder};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(folder) = checked_folder(text) {
        assert!(folder == "root" || folder.starts_with("root/"));
        assert!(folder.len() <= 255);
        assert!(folder
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && s.trim() == s));
    }
    if let Ok(name) = checked_filename(text) {
        assert!(!name.is_empty() && name.len() <= 255);
        assert!(!name.contains('/') && !name.contains('\\'));
        assert!(!name.chars().any(char::is_control));
    }
});
