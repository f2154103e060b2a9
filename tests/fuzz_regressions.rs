//! Inputs kept from fuzzing (`fixtures/fuzz/<target>/`): each runs through
//! the same code as its fuzz target and must end in a value or a typed
//! error, never a panic. New crash inputs from `cargo fuzz` go there.

mod common;

use std::path::PathBuf;

use vidpipe::api::folder::{checked_filename, checked_folder};
use vidpipe::config::Config;
use vidpipe::media::{init, probe, MediaLimits};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fixture("fuzz").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

use common::fixture;

#[test]
fn folder_inputs() {
    for (path, data) in inputs("folder") {
        let text = String::from_utf8_lossy(&data);
        if let Ok(folder) = checked_folder(&text) {
            assert!(
                folder.split('/').all(|s| s != ".." && s != "."),
                "{}",
                path.display()
            );
        }
        if let Ok(name) = checked_filename(&text) {
            assert!(!name.contains('/'), "{}", path.display());
            assert!(!name.chars().any(char::is_control), "{}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(([127, 0, 0, 1], 0).into(), dir.path().to_path_buf());
    config.max_upload_bytes = 1 << 20;
    config.max_part_header_bytes = 1024;
    for (path, data) in inputs("multipart") {
        let part = dir.path().join("fuzz.part");
        let result =
            vidpipe::api::intake::parse_and_validate(data.into(), "B", &config, &part).await;
        eprintln!(
            "{}: {:?}",
            path.display(),
            result.as_ref().map_err(|e| e.code())
        );
    }
}

#[test]
fn probe_inputs() {
    init();
    for (path, _) in inputs("probe") {
        let result = probe(&path, &MediaLimits::default());
        eprintln!(
            "{}: {:?}",
            path.display(),
            result.as_ref().map_err(|e| e.code)
        );
    }
}
