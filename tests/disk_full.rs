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
    // The source alone stays, kept for a retry.
    let source = vec![kept_source(done["id"].as_str().unwrap())];
    assert_eq!(settled_in(&data.join("staging"), &source).await, source);
    assert!(left_in(&data.join("work")).await.is_empty());
    let (code, _) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    t.server.shutdown().await;
}

/// Fills the filesystem of `dir` with one file, then frees `leave` bytes of it.
struct Filler(PathBuf);

impl Filler {
    fn fill(dir: &Path, leave: u64) -> Filler {
        use std::io::Write;
        let path = dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1024 * 1024, 4096] {
            let bytes = vec![1u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(leave)).unwrap();
        Filler(path)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The value of one sample line of `/metrics`.
async fn metric(t: &TestServer, name: &str) -> f64 {
    let text = t.get_ops("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

const STAGING_ERRORS: &str = "vidpipe_storage_errors_total{stage=\"staging\"}";

/// A data dir on an 8 MiB tmpfs, with a key: the folder, the mount, the key
/// and a configuration to start a server with. `None` where no tmpfs can be mounted.
fn small_data_dir(dir: &Path) -> Option<(PathBuf, Tmpfs, String, vidpipe::config::Config)> {
    let data = dir.join("data");
    let mount = mount_tmpfs(&data, "8m")?;
    let key = create_key(&data, "app");
    let config = test_config(&data);
    Some((data, mount, key, config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_a_new_upload_gets_507_and_accepted_ones_finish() {
    let dir = tempfile::tempdir().unwrap();
    let Some((data, _mount, key, mut config)) = small_data_dir(dir.path()) else {
        return;
    };
    config.faults.transcode_delay = Some(std::time::Duration::from_millis(1500));
    let t = TestServer::start(config).await;
    // Accepted before the disk fills; it transcodes while the disk is full.
    let (code, body) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    let accepted = body["data"]["id"].as_str().unwrap().to_string();

    // Below the reserve already: refused before the body is read.
    let filler = Filler::fill(&data, 256 * 1024);
    let (code, body) = upload(&t.client, &t.base, &key, "not-a-video.txt", "root").await;
    assert_eq!(code, 507, "{body}");
    assert_eq!(body["code"], "insufficient_storage");
    drop(filler);

    // Above it until the body is staged: the record is refused before it is written.
    let filler = Filler::fill(&data, 1536 * 1024);
    let big = video_form(vec![7u8; 700 * 1024], "big.bin", "root");
    let response = t.post_form(&key, big).await;
    assert_eq!(response.status(), 507);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "insufficient_storage");
    assert_eq!(
        metric(&t, STAGING_ERRORS).await,
        0.0,
        "staging took the bodies"
    );
    assert_eq!(
        files_in(&data.join("staging")).len(),
        1,
        "only the accepted upload's body"
    );
    let (_, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // Space again: the accepted upload completes and new ones are taken.
    drop(filler);
    let done = wait_terminal(&t.client, &t.base, &key, &accepted).await;
    assert_eq!(done["status"], 6, "{done}");
    let done = upload_to_end(&t, &key, "not-a-video.txt", "root").await;
    assert_eq!(done["error"]["code"], "unsupported_media");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_the_database_commit_gets_507_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((data, _mount, key, mut config)) = small_data_dir(dir.path()) else {
        return;
    };
    // No reserve: the commit itself meets the full disk.
    config.reserved_disk_bytes = 0;
    let t = TestServer::start(config.clone()).await;
    let before = upload_to_end(&t, &key, "not-a-video.txt", "root").await;

    // Room for the body in staging and nothing more, until a commit fails.
    let mut accepted = vec![before["id"].as_str().unwrap().to_string()];
    let mut refused = 0;
    for _ in 0..50 {
        let filler = Filler::fill(&data, 4096);
        let (code, body) = upload(&t.client, &t.base, &key, "not-a-video.txt", "root").await;
        drop(filler);
        match code {
            202 => accepted.push(body["data"]["id"].as_str().unwrap().to_string()),
            507 => {
                assert_eq!(body["code"], "insufficient_storage", "{body}");
                refused += 1;
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(refused, 1, "no commit met the full disk");
    assert_eq!(metric(&t, STAGING_ERRORS).await, 0.0, "the body was staged");
    assert!(metric(&t, "vidpipe_storage_errors_total{stage=\"database\"}").await >= 1.0);

    // With space again the server is ready at once (the readiness check
    // opens the database again if nothing has written since), the database
    // works, and every upload that got its 202 is there and finishes.
    let ready = t.get_ops("/readyz").await;
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let done = upload_to_end(&t, &key, "not-a-video.txt", "root").await;
    accepted.push(done["id"].as_str().unwrap().to_string());
    for id in &accepted {
        let done = wait_terminal(&t.client, &t.base, &key, id).await;
        assert_eq!(done["error"]["code"], "unsupported_media", "{done}");
    }
    t.server.shutdown().await;
    let t = TestServer::start(config).await;
    let (_, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), accepted.len());
    // Only the failed uploads' sources, kept for a retry.
    let mut sources: Vec<String> = accepted.iter().map(|id| kept_source(id)).collect();
    sources.sort();
    assert_eq!(settled_in(&data.join("staging"), &sources).await, sources);
    t.server.shutdown().await;
}

/// A tus upload on a full disk: below the reserve a `PATCH` is a 507 before
/// a byte is read; with no reserve, one that meets the full disk mid-body is
/// a 507 too. Either way the offset is where it was and the file up to it is
/// what was sent; once there is space, the upload resumes from there and
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tus_upload_on_a_full_disk_keeps_its_offset_and_resumes() {
    use common::tus::*;
    let dir = tempfile::tempdir().unwrap();
    let Some((data, _mount, key, mut config)) = small_data_dir(dir.path()) else {
        return;
    };
    config.reserved_disk_bytes = 512 * 1024;
    let t = TestServer::start(config.clone()).await;
    let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let url = create(&t, &key, bytes.len()).await;
    let first = 300_000;
    let response = patch_at(&t, &url, &key, 0)
        .body(bytes[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let id = id_of(&url).to_string();
    let file = data.join("tus").join(format!("{id}.bin"));

    let filler = Filler::fill(&data, 256 * 1024);
    let refused = patch_at(&t, &url, &key, first)
        .body(bytes[first..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(refused).await, (507, "insufficient_storage".into()));
    assert_eq!(head_offset(&t.client, &url, &key).await, first as u64);
    drop(filler);
    t.server.shutdown().await;

    // No reserve: the body itself meets the full disk.
    config.reserved_disk_bytes = 0;
    let t = TestServer::start(config).await;
    let url = format!("http://{}/api/client/v1/tus/{id}", t.server.addr());
    let filler = Filler::fill(&data, 600 * 1024);
    let refused = patch_at(&t, &url, &key, first)
        .body(bytes[first..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(refused).await, (507, "insufficient_storage".into()));
    let offset = head_offset(&t.client, &url, &key).await as usize;
    assert_eq!(offset, first);
    assert_eq!(&std::fs::read(&file).unwrap()[..offset], &bytes[..offset]);

    drop(filler);
    let response = patch_at(&t, &url, &key, offset)
        .body(bytes[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let done = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(done["error"]["code"], "unsupported_media", "{done}");
    assert_eq!(done["size_bytes"], bytes.len() as u64);
    let kept = std::fs::read(data.join("staging").join(kept_source(&id))).unwrap();
    assert!(kept == bytes, "the kept source is the bytes sent");
    t.server.shutdown().await;
}
