//! Resumable uploads driven by tus-js-client (the tus project's JavaScript
//! client, the one browsers and Uppy use) under Node, on a real server,
//! through tests/clients/tus_js_upload.mjs: a whole file in one `PATCH`,
//! 1 MiB chunks, parallel partial uploads concatenated by a final one, a
//! resume from its URL storage after `kill -9` of the server, and creation
//! with upload and with a deferred length. The bytes the server keeps are the
//! client's: uploads of pseudo-random bytes (no video) fail in the pipeline,
//! which keeps their staged source, and its SHA-256 is the file's.

mod common;

use std::path::{Path, PathBuf};

use common::tus::{head_offset, id_of};
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;
const FOLDER: &str = "root/tus-js";

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn tus_js_installed() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let package = clients_dir()
        .join("node_modules/tus-js-client/package.json")
        .is_file();
    if !(node && package) {
        assert!(
            std::env::var_os("CI").is_none(),
            "node or tus-js-client is not installed; .ci/setup installs them"
        );
        eprintln!("skipped: node or tus-js-client is not installed (run .ci/setup)");
    }
    node && package
}

/// Runs tests/clients/tus_js_upload.mjs on `file`, to `FOLDER`; returns the
/// upload's URL and how the run ended (`done` or `stopped`).
async fn tus_js(endpoint: &str, key: &str, file: &Path, args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new("node")
        .arg(clients_dir().join("tus_js_upload.mjs"))
        .args([endpoint, key])
        .arg(file)
        .arg(FOLDER)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tus-js-client {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let url = lines.next().unwrap_or_default().to_string();
    let end = lines.next().unwrap_or_default().to_string();
    (url, end)
}

/// An upload by tus-js-client to the end: its id, its terminal record, and
/// how many `PATCH`es the server answered meanwhile.
struct Uploaded {
    id: String,
    record: Value,
    patches: u64,
}

/// Uploads `file` with tus-js-client to the end and waits until the upload is
/// terminal.
async fn upload_js(t: &TestServer, key: &str, file: &Path, args: &[&str]) -> Uploaded {
    let before = patches_answered(t).await;
    let (url, end) = tus_js(&t.url("/tus"), key, file, args).await;
    assert_eq!(end, "done", "{args:?}: {url}");
    let patches = patches_answered(t).await - before;
    let id = id_of(&url).to_string();
    let record = wait_terminal(&t.client, &t.base, key, &id).await;
    Uploaded {
        id,
        record,
        patches,
    }
}

/// The `PATCH`es on tus uploads the server has answered, from `/metrics`.
async fn patches_answered(t: &TestServer) -> u64 {
    let metrics = t.get_ops("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("vidpipe_http_requests_total{")
                && l.contains("method=\"PATCH\"")
                && l.contains("route=\"/api/client/v1/tus/{id}\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// `len` pseudo-random bytes (xorshift64* from `seed`) in `dir`/noise.bin:
/// no container starts like that, so the pipeline refuses them.
fn noise_file(dir: &Path, len: usize, seed: u64) -> PathBuf {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    let path = dir.join("noise.bin");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A failed upload of `source`: refused by the pipeline, with the source's
/// size, name and folder, and its staged source exactly the source's bytes.
fn assert_failed_with_the_bytes_of(record: &Value, data_dir: &Path, id: &str, source: &Path) {
    assert_eq!(record["status"], 7, "{record}");
    assert_eq!(record["status_text"], "failed", "{record}");
    assert_eq!(record["error"]["code"], "unsupported_media", "{record}");
    assert_eq!(record["filename"], "noise.bin", "{record}");
    assert_eq!(record["folder"], FOLDER, "{record}");
    let len = std::fs::metadata(source).unwrap().len();
    assert_eq!(record["size_bytes"], len, "{record}");
    let kept = data_dir.join("staging").join(kept_source(id));
    assert_eq!(
        sha256_of(&kept),
        sha256_of(source),
        "the server kept other bytes than the client's"
    );
}

/// A completed upload of the fixture `name`, with its size, name and folder.
fn assert_completed(record: &Value, name: &str) {
    assert_eq!(record["status"], 6, "{record}");
    assert_eq!(record["status_text"], "completed", "{record}");
    let len = std::fs::metadata(fixture(name)).unwrap().len();
    assert_eq!(record["size_bytes"], len, "{record}");
    assert_eq!(record["source"]["size_bytes"], len, "{record}");
    assert_eq!(record["filename"], name, "{record}");
    assert_eq!(record["folder"], FOLDER, "{record}");
}

/// The default chunk size sends the whole file in one `PATCH`; the upload
/// goes through the pipeline like a multipart one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_file_in_one_patch_completes() {
    if !tus_js_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus-js");
    let t = TestServer::start(test_config(dir.path())).await;
    let uploaded = upload_js(&t, &key, &fixture("sample.mp4"), &[]).await;
    assert_completed(&uploaded.record, "sample.mp4");
    assert_eq!(uploaded.patches, 1);
    t.server.shutdown().await;
}

/// 5 MiB in 1 MiB chunks, a `PATCH` each: what the server kept is what the
/// client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_chunks_arrive_as_sent() {
    if !tus_js_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus-js");
    let t = TestServer::start(test_config(dir.path())).await;
    let source = noise_file(files.path(), 5 * MIB, 0x7e57_0001);
    let chunk = MIB.to_string();
    let uploaded = upload_js(&t, &key, &source, &["--chunk-size", &chunk]).await;
    assert_failed_with_the_bytes_of(&uploaded.record, dir.path(), &uploaded.id, &source);
    assert_eq!(uploaded.patches, 5);
    t.server.shutdown().await;
}

/// Three partial uploads at once (a `PATCH` each) and a final one that
/// concatenates them: the final upload holds the file's bytes in order, and
/// only it is an upload of the API; a real video uploaded so completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_partial_uploads_are_concatenated_in_order() {
    if !tus_js_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus-js");
    let t = TestServer::start(test_config(dir.path())).await;
    let source = noise_file(files.path(), 6 * MIB, 0x7e57_0002);
    let noise = upload_js(&t, &key, &source, &["--parallel", "3"]).await;
    assert_failed_with_the_bytes_of(&noise.record, dir.path(), &noise.id, &source);
    assert_eq!(noise.patches, 3);

    let video = upload_js(&t, &key, &fixture("sample.mp4"), &["--parallel", "3"]).await;
    assert_completed(&video.record, "sample.mp4");
    assert_eq!(video.patches, 3);

    let (code, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200, "{list}");
    let mut listed = page_ids(&list);
    listed.sort();
    let mut finals = vec![noise.id, video.id];
    finals.sort();
    assert_eq!(
        listed, finals,
        "the partial uploads are not uploads: {list}"
    );
    t.server.shutdown().await;
}

/// tus-js-client, in 1 MiB chunks, stops after 8 MiB of 20; the server is
/// killed with `kill -9` and started again on the same port; what it had
/// acknowledged is still there, the client finds the upload in its URL
/// storage, resumes it from the server's offset (the same URL), and the
/// server ends up with exactly the file's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_url_storage_after_a_kill_9() {
    if !tus_js_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let key = keys_create(dir.path());
    let port = free_port();
    let mut server = start_on(dir.path(), port, &[]);
    let endpoint = format!("{}/tus", server.base);
    let len = 20 * MIB;
    let source = noise_file(files.path(), len, 0x7e57_0003);
    let storage = files.path().join("tus-urls.json");
    let storage = storage.to_str().unwrap();
    let chunk = MIB.to_string();
    let stop = (8 * MIB).to_string();
    let args = ["--chunk-size", &chunk, "--url-storage", storage];

    let (url, end) = tus_js(
        &endpoint,
        &key,
        &source,
        &[&args[..], &["--stop-after", &stop]].concat(),
    )
    .await;
    assert_eq!(end, "stopped", "{url}");
    server.kill9();

    let mut server = start_on(dir.path(), port, &[]);
    let client = reqwest::Client::new();
    // At least the 7 MiB whose PATCHes were answered before the client
    // had sent 8 MiB.
    let offset = head_offset(&client, &url, &key).await;
    assert!(
        (7 * MIB as u64..len as u64).contains(&offset),
        "offset {offset} after the restart"
    );

    let (resumed, end) = tus_js(&endpoint, &key, &source, &args).await;
    assert_eq!(end, "done", "{resumed}");
    assert_eq!(resumed, url, "resumed the stored upload, not a new one");
    let id = id_of(&url);
    let record = wait_terminal(&client, &server.base, &key, id).await;
    assert_failed_with_the_bytes_of(&record, dir.path(), id, &source);
    server.kill9();
}

/// Creation with upload (the whole file in the `POST`, and the first chunk
/// in it with the rest in `PATCH`es) and a deferred length (`Upload-Length`
/// on the last `PATCH`) each complete a video. The count of `PATCH`es shows
/// that the server took the `POST`'s body: a server that ignores it answers
/// `Upload-Offset: 0`, and the client sends everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_with_upload_and_deferred_length_complete() {
    if !tus_js_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus-js");
    let t = TestServer::start(test_config(dir.path())).await;
    let video = fixture("sample.mp4");
    assert_eq!(std::fs::metadata(&video).unwrap().len(), 56_499);
    for (args, patches) in [
        (&["--upload-during-creation"][..], 0),
        // 20000 bytes in the POST, 20000 and 16499 in PATCHes.
        (&["--upload-during-creation", "--chunk-size", "20000"], 2),
        (&["--defer-length"], 1),
    ] {
        let uploaded = upload_js(&t, &key, &video, args).await;
        assert_completed(&uploaded.record, "sample.mp4");
        assert_eq!(uploaded.patches, patches, "{args:?}");
    }
    t.server.shutdown().await;
}
