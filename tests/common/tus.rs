//! tus requests for the tests: the version header, `PATCH`es at an offset,
//! `Upload-Metadata`, creation and the codes of refusals.

use std::path::Path;

use serde_json::Value;

use super::TestServer;

/// A request to `url` with the key and `Tus-Resumable: 1.0.0`.
pub fn tus_request(
    t: &TestServer,
    method: reqwest::Method,
    url: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    t.client
        .request(method, url)
        .bearer_auth(key)
        .header("tus-resumable", "1.0.0")
}

/// A `PATCH` to `url` at `offset`, of the body the caller adds.
pub fn patch_at(t: &TestServer, url: &str, key: &str, offset: usize) -> reqwest::RequestBuilder {
    tus_request(t, reqwest::Method::PATCH, url, key)
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
}

/// An `Upload-Metadata` value of these pairs.
pub fn metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates an upload of `length` bytes (filename `a.mp4`, folder `root`); its URL.
pub async fn create(t: &TestServer, key: &str, length: usize) -> String {
    let response = tus_request(t, reqwest::Method::POST, &t.url("/tus"), key)
        .header("upload-length", length.to_string())
        .header(
            "upload-metadata",
            metadata(&[("filename", "a.mp4"), ("folder", "root")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["tus-resumable"], "1.0.0");
    let location = response.headers()["location"].to_str().unwrap();
    format!("http://{}{location}", t.server.addr())
}

/// The status and machine code of a tus answer, which must say the version.
pub async fn code_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("tus-resumable")
            .map(|v| v.to_str().unwrap()),
        Some("1.0.0"),
        "every answer but OPTIONS's says the version"
    );
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or("").to_string())
}

/// The upload's offset by `HEAD`, which must not be cached.
pub async fn head_offset(client: &reqwest::Client, url: &str, key: &str) -> u64 {
    let response = client
        .head(url)
        .bearer_auth(key)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether tuspy is installed (in CI it must be).
pub fn tuspy_installed() -> bool {
    let installed = std::process::Command::new("python3")
        .args(["-c", "import tusclient"])
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "tuspy is not installed; .ci/setup installs it"
        );
        eprintln!("skipped: tuspy is not installed (pip install tuspy)");
    }
    installed
}

/// Runs tests/clients/tus_upload.py; returns the upload's URL and whether it finished.
pub fn tuspy(
    endpoint: &str,
    key: &str,
    file: &Path,
    chunk: usize,
    args: &[&str],
) -> (String, bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tus_upload.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args([endpoint, key])
        .arg(file)
        .args(["root/tus", &chunk.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tuspy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let url = lines.next().unwrap().to_string();
    (url, lines.next() == Some("done"))
}

/// The upload id in a tus upload's URL (its last segment).
pub fn id_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}
