//! A full disk: the data dir, or only final storage, on a small tmpfs this
//! test mounts. Needs root (as in CI); elsewhere it says so and passes only
//! when CI is not set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        return Some(Tmpfs(dir.to_path_buf()));
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must run as root so this test can mount a tmpfs"
    );
    eprintln!("skipping: cannot mount a tmpfs here (needs root)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_does_not_fit_gets_507_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_mount) = mount_tmpfs(&data, "6m") else {
        return;
    };
    let key = create_key(&data, "app");
    let t = TestServer::start(test_config(&data)).await;

    let big: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let response = t.post_form(&key, video_form(big, "big.mp4", "root")).await;
    assert_eq!(response.status(), 507);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "insufficient_storage");
    assert!(
        files_in(&data.join("staging")).is_empty(),
        "partial body removed"
    );

    // The server keeps serving and the database still takes uploads.
    let done = upload_to_end(&t, &key, "not-a-video.txt", "root").await;
    assert_eq!(done["error"]["code"], "unsupported_media");
    let (code, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_do_not_fit_fail_with_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_mount) = mount_tmpfs(&data.join("media"), "16k") else {
        return;
    };
    let key = create_key(&data, "app");
    let t = TestServer::start(test_config(&data)).await;

    let done = upload_to_end(&t, &key, "sample.mp4", "root").await;
    assert_eq!(done["status"], 7, "{done}");
    assert_eq!(done["error"]["code"], "storage_error");
    assert!(done["playback"].is_null());
    // Nothing half-written is left in final storage, nor in staging or work.
    assert!(
        files_in(&data.join("media")).is_empty(),
        "{:?}",
        files_in(&data.join("media"))
    );
    assert!(files_in(&data.join("staging")).is_empty());
    assert!(files_in(&data.join("work")).is_empty());
    let (code, _) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    t.server.shutdown().await;
}
