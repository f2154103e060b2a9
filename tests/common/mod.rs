//! Shared helpers: a real server on an ephemeral port, keys, uploads, polling.
#![allow(dead_code)]

pub mod seaweed;
pub mod tus;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vidpipe::config::Config;
use vidpipe::server::Server;
use vidpipe::store::keys::KeyFile;

/// How long a test waits for an upload to reach a terminal status.
pub const TERMINAL_DEADLINE: Duration = Duration::from_secs(180);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn test_config(data_dir: &Path) -> Config {
    Config::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir.to_path_buf(),
    )
    .with_transcoders(2)
}

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let server = Server::start(config).await.expect("server starts");
        let base = format!("http://{}/api/client/v1", server.addr());
        TestServer {
            server,
            base,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET` of an operator path such as `/readyz` or `/metrics`, without a key.
    pub async fn get_ops(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}{path}", self.server.addr()))
            .send()
            .await
            .unwrap()
    }

    /// `POST /uploads` with a form, as `key`.
    pub async fn post_form(&self, key: &str, form: reqwest::multipart::Form) -> reqwest::Response {
        self.client
            .post(self.url("/uploads"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }
}

pub fn create_key(data_dir: &Path, name: &str) -> String {
    std::fs::create_dir_all(data_dir).unwrap();
    KeyFile::new(data_dir).create(name).unwrap().1
}

/// Revokes the key named `name` in `data_dir`'s key file.
pub fn revoke_key(data_dir: &Path, name: &str) {
    let keys = KeyFile::new(data_dir);
    let id = keys
        .list()
        .unwrap()
        .into_iter()
        .find(|k| k.name == name)
        .unwrap()
        .id;
    assert!(keys.revoke(&id).unwrap());
}

/// A multipart form with a video file part and a folder field.
pub fn video_form(bytes: Vec<u8>, filename: &str, folder: &str) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(filename.to_string())
        .mime_str("video/mp4")
        .unwrap();
    reqwest::multipart::Form::new()
        .part("video", part)
        .text("folder", folder.to_string())
}

pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    fixture_name: &str,
    folder: &str,
) -> (u16, Value) {
    let bytes = std::fs::read(fixture(fixture_name)).unwrap();
    let response = client
        .post(format!("{base}/uploads"))
        .bearer_auth(key)
        .multipart(video_form(bytes, fixture_name, folder))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

pub async fn get_json(client: &reqwest::Client, url: &str, key: &str) -> (u16, Value) {
    let response = client.get(url).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Polls `GET /uploads/{id}` until the status is terminal (6 or 7), or panics at the deadline.
pub async fn wait_terminal(client: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    loop {
        let (code, body) = get_json(client, &format!("{base}/uploads/{id}"), key).await;
        assert_eq!(code, 200, "{body}");
        let status = body["data"]["status"].as_u64().unwrap();
        if status == 6 || status == 7 {
            return body["data"].clone();
        }
        assert!(Instant::now() < deadline, "upload {id} stuck: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Top-level MP4 box names in file order.
pub fn mp4_top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let mut size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
        let name = String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned();
        if size == 1 && at + 16 <= bytes.len() {
            size = u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        } else if size == 0 {
            size = (bytes.len() - at) as u64;
        }
        names.push(name);
        if size < 8 {
            break;
        }
        at += size as usize;
    }
    names
}

/// Files directly inside a folder (empty when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What is left in `dir` once the server has had a moment to finish: the
/// local files of an upload go just after its terminal status is committed
/// (so a crash between the two loses nothing), so a test that has seen that
/// status waits up to 5 s for them.
pub async fn left_in(dir: &Path) -> Vec<String> {
    settled_in(dir, &[]).await
}

/// What `dir` holds (sorted) once it holds just `expected`, or after 5 s.
pub async fn settled_in(dir: &Path, expected: &[String]) -> Vec<String> {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = files_in(dir);
        left.sort();
        if left == expected || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The name of an upload's staged source in `staging/`: a failed upload
/// keeps it for `failed_source_retention_hours`, so it can be retried.
pub fn kept_source(id: &str) -> String {
    format!("{id}.upload")
}

pub const BIN: &str = env!("CARGO_BIN_EXE_vidpipe");

pub struct Running {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A port free now, for a server started later. Drawn below Linux's
/// ephemeral range (32768-60999): a port the kernel gave out would be free
/// again for any outgoing connection to take before the server binds it,
/// as happened to SeaweedFS's ports while vidpipe kept reconnecting to it.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (getrandom::u32().unwrap() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts the real binary on `data_dir` with extra environment variables, without waiting.
pub fn spawn_server(data_dir: &Path, env: &[(&str, &str)]) -> Running {
    spawn_server_on(data_dir, free_port(), env)
}

/// As [`spawn_server`], on `port`: a restart where its clients left it.
pub fn spawn_server_on(data_dir: &Path, port: u16, env: &[(&str, &str)]) -> Running {
    spawn_server_by(Command::new(BIN), data_dir, port, env)
}

/// As [`spawn_server`], under a soft and a hard limit on open files.
pub fn spawn_server_with_file_limit(data_dir: &Path, soft: u64, hard: u64) -> Running {
    let mut shell = Command::new("sh");
    // Soft first: a hard limit may not go under the soft one.
    shell.args([
        "-c",
        &format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""),
        BIN,
    ]);
    spawn_server_by(shell, data_dir, free_port(), &[])
}

/// Runs `command` (the binary, or a shell that execs it) with the server's arguments.
fn spawn_server_by(
    mut command: Command,
    data_dir: &Path,
    port: u16,
    env: &[(&str, &str)],
) -> Running {
    let mut child = command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--transcoders",
            "1",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Running {
        child,
        base: format!("http://127.0.0.1:{port}/api/client/v1"),
        log,
    }
}

impl Running {
    /// Waits until the server listens; false if it exited first.
    pub fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("vidpipe listening on"))
            {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary on `data_dir` and waits until it listens.
pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Running {
    start_on(data_dir, free_port(), env)
}

/// As [`start`], on `port`.
pub fn start_on(data_dir: &Path, port: u16, env: &[(&str, &str)]) -> Running {
    let mut running = spawn_server_on(data_dir, port, env);
    assert!(
        running.wait_listening(),
        "server exited: {:?}",
        running.log.lock().unwrap()
    );
    running
}

pub fn keys_create(data_dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["keys", "create", "--name", "restart-test"])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

/// The token under which an upload's outputs are stored, from the database.
pub fn token_of(t: &TestServer, id: &str) -> String {
    let id = uuid::Uuid::parse_str(id).unwrap();
    t.server
        .services()
        .store
        .get(id)
        .unwrap()
        .unwrap()
        .media_token
}

/// Uploads a fixture to `folder`, expects 202, and waits until the upload is
/// terminal; returns its record.
pub async fn upload_to_end(t: &TestServer, key: &str, fixture_name: &str, folder: &str) -> Value {
    let (code, body) = upload(&t.client, &t.base, key, fixture_name, folder).await;
    assert_eq!(code, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap();
    wait_terminal(&t.client, &t.base, key, id).await
}

/// GETs `url` without a key (media URLs need none); returns the status, content type and body.
pub async fn fetch_media(client: &reqwest::Client, url: &str) -> (u16, String, bytes::Bytes) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.bytes().await.unwrap())
}

/// The URIs a playlist names (its non-comment lines).
pub fn playlist_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// `base` (a URL ending in a file) with its last segment replaced by `relative`.
pub fn resolve(base: &str, relative: &str) -> String {
    let folder = &base[..=base.rfind('/').unwrap()];
    format!("{folder}{relative}")
}

/// Whether sseclient-py (a third-party SSE client) can run; outside CI a
/// test may go without it (with a line saying so), in CI it must be there.
pub fn sseclient_installed() -> bool {
    let installed = Command::new("python3")
        .args(["-c", "import sseclient, requests"])
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "sseclient-py is not installed; .ci/setup installs it"
        );
        eprintln!("without sseclient-py (pip install sseclient-py)");
    }
    installed
}

/// A stream of what `rx` receives, for a request body sent piece by piece.
pub fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The ids of a `GET /uploads` page, in its order.
pub fn page_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}
