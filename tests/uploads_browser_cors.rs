//! Uploads from a page of another origin, in a real browser: Debian's
//! Chromium, driven by playwright-core, opens a page that
//! tests/clients/browser_upload.mjs serves on a loopback port of its own (so
//! the page's origin is not the server's), and the page uploads the sample
//! video to the real server twice, with tus-js-client's browser build and
//! with Uppy's Tus plugin (both as published on npm). With the page's origin
//! in `cors_origins`, both uploads complete and the page logs no error; with
//! another origin there, the browser refuses the page the server's answers,
//! so neither upload is even created.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

const FOLDER: &str = "root/browser";
const CHROMIUM: &str = "/usr/bin/chromium";
/// PATCH bodies of the page's uploads: the sample (56,499 bytes) takes 3.
const CHUNK: usize = 20_000;
/// How long one run of the page may take, browser start included.
const RUN_DEADLINE: Duration = Duration::from_secs(50);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Whether node, Chromium and the npm packages the page needs are here;
/// outside CI a test skips without them, under `CI` it fails.
fn browser_installed() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let modules = clients_dir().join("node_modules");
    let missing: Vec<&str> = [
        ("node", node),
        (CHROMIUM, Path::new(CHROMIUM).is_file()),
        (
            "tus-js-client",
            modules.join("tus-js-client/dist/tus.min.js").is_file(),
        ),
        ("uppy", modules.join("uppy/dist/uppy.min.js").is_file()),
        (
            "playwright-core",
            modules.join("playwright-core/package.json").is_file(),
        ),
    ]
    .into_iter()
    .filter(|(_, there)| !there)
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "not installed: {missing:?}; .ci/setup installs them"
        );
        eprintln!("skipped: not installed: {missing:?} (run .ci/setup)");
    }
    missing.is_empty()
}

/// The real server, killed when the test ends, however it ends.
struct Served(Running);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.kill9();
    }
}

impl Served {
    fn start(data_dir: &Path, cors_origins: &str) -> Served {
        Served(start(data_dir, &[("VIDPIPE_CORS_ORIGINS", cors_origins)]))
    }

    /// `http://127.0.0.1:PORT/api/client/v1`.
    fn base(&self) -> &str {
        &self.0.base
    }

    /// `http://127.0.0.1:PORT`.
    fn root(&self) -> &str {
        self.0.base.trim_end_matches("/api/client/v1")
    }

    /// The `vidpipe_http_requests_total` counts whose labels hold `method`
    /// and exactly `route`, added up; `status` too if given.
    async fn requests(&self, method: &str, route: &str, status: Option<&str>) -> u64 {
        let metrics = reqwest::get(format!("{}/metrics", self.root()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("vidpipe_http_requests_total{")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("route=\"{route}\""))
                    && status.is_none_or(|s| l.contains(&format!("status=\"{s}\"")))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    }
}

/// What a run of the page reported, and whether it exited 0 (both uploads
/// done, no error logged).
struct PageRun {
    ok: bool,
    report: Value,
}

/// Runs tests/clients/browser_upload.mjs: the page on `page_port`, the
/// sample uploaded to `server` with `key`.
async fn run_page(server: &Served, key: &str, page_port: u16) -> PageRun {
    let run = tokio::process::Command::new("node")
        .arg(clients_dir().join("browser_upload.mjs"))
        .args([server.root(), key])
        .arg(fixture("sample.mp4"))
        .arg(FOLDER)
        .arg(page_port.to_string())
        .args(["--chunk-size", &CHUNK.to_string(), "--chromium", CHROMIUM])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_DEADLINE, run)
        .await
        .expect("the browser run took too long")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no report from the page ({e}; exit {:?}): {stderr}{stdout}",
            out.status.code()
        )
    });
    eprintln!("page: {report}");
    PageRun {
        ok: out.status.success(),
        report,
    }
}

/// The id of the upload at a tus URL of `server`: its last segment.
fn upload_id<'a>(server: &Served, url: &'a Value) -> &'a str {
    let url = url
        .as_str()
        .unwrap_or_else(|| panic!("no upload URL: {url}"));
    let prefix = format!("{}/tus/", server.base());
    assert!(url.starts_with(&prefix), "{url} is not under {prefix}");
    common::tus::id_of(url)
}

/// With the page's origin in `cors_origins`, tus-js-client and Uppy upload
/// the sample from the page, in 3 `PATCH`es each, without an error in the
/// page's console; both uploads complete with the file's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_and_uppy_upload_from_a_page_of_an_allowed_origin() {
    if !browser_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keys_create(dir.path());
    let page_port = free_port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let server = Served::start(dir.path(), &origin);

    let run = run_page(&server, &key, page_port).await;
    let report = &run.report;
    assert_eq!(report["page_origin"], origin.as_str(), "{report}");
    assert_eq!(report["tus"]["error"], Value::Null, "{report}");
    assert_eq!(report["uppy"]["error"], Value::Null, "{report}");
    assert_eq!(
        report["console_errors"],
        serde_json::json!([]),
        "the page logged errors: {report}"
    );
    assert!(run.ok, "{report}");

    let by_tus = upload_id(&server, &report["tus"]["url"]);
    let by_uppy = upload_id(&server, &report["uppy"]["url"]);
    assert_ne!(by_tus, by_uppy, "{report}");
    let len = std::fs::metadata(fixture("sample.mp4")).unwrap().len();
    let client = reqwest::Client::new();
    for id in [by_tus, by_uppy] {
        let record = wait_terminal(&client, server.base(), &key, id).await;
        assert_eq!(record["status"], 6, "{record}");
        assert_eq!(record["status_text"], "completed", "{record}");
        assert_eq!(record["size_bytes"], len, "{record}");
        assert_eq!(record["source"]["size_bytes"], len, "{record}");
        assert_eq!(record["filename"], "sample.mp4", "{record}");
        assert_eq!(record["folder"], FOLDER, "{record}");
    }
    let patches = server
        .requests("PATCH", "/api/client/v1/tus/{id}", Some("204"))
        .await;
    assert_eq!(patches, 2 * len.div_ceil(CHUNK as u64), "PATCHes answered");
}

/// With another origin in `cors_origins`, the server refuses the page's
/// preflight (403), so the browser sends nothing more: tus-js-client and
/// Uppy report the failure, the console tells of the CORS policy, and no
/// upload exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_an_origin_not_allowed_uploads_nothing() {
    if !browser_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keys_create(dir.path());
    let page_port = free_port();
    let other_port = loop {
        let port = free_port();
        if port != page_port {
            break port;
        }
    };
    let server = Served::start(dir.path(), &format!("http://127.0.0.1:{other_port}"));

    let run = run_page(&server, &key, page_port).await;
    let report = &run.report;
    assert!(!run.ok, "the page uploaded: {report}");
    assert_eq!(report["tus"]["url"], Value::Null, "{report}");
    let tus_error = report["tus"]["error"].as_str().unwrap_or_default();
    assert!(
        tus_error.contains("failed to create upload"),
        "tus-js-client: {report}"
    );
    assert_eq!(report["uppy"]["url"], Value::Null, "{report}");
    assert!(report["uppy"]["error"].is_string(), "Uppy: {report}");
    let console = report["console_errors"].as_array().unwrap();
    assert!(
        console.iter().any(|m| m
            .as_str()
            .is_some_and(|m| m.contains("blocked by CORS policy"))),
        "no CORS refusal in the console: {report}"
    );

    let (code, list) = get_json(
        &reqwest::Client::new(),
        &format!("{}/uploads", server.base()),
        &key,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(page_ids(&list), Vec::<String>::new(), "{list}");
    assert_eq!(
        server.requests("POST", "/api/client/v1/tus", None).await,
        0,
        "a creation reached the server"
    );
    assert!(
        server
            .requests("OPTIONS", "/api/client/v1/tus", Some("403"))
            .await
            > 0,
        "the server refused no preflight"
    );
}
