//! One documented configuration for the server, validated at start.
//! [`file`] reads it from a TOML file with env and flag overrides.

pub mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::media::{MediaLimits, OutputProfile};
use crate::storage::s3::S3Config;
use crate::webhook::WebhookConfig;

/// Most `max_connections` accepted (far past what one process serves).
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// Everything the server needs to run. Every limit and duration has a
/// documented default; [`Config::new`] fills them in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Root of everything the server keeps (database, staging, media). Default `./data`.
    pub data_dir: PathBuf,
    /// Base URL put in front of media paths in `playback` (no trailing slash).
    /// Default: `http://` + the bound listen address.
    pub public_url: Option<String>,
    /// Number of transcoder workers, each owning one OS thread. Default: the number of CPUs.
    pub transcoders: usize,
    /// Largest accepted request body in bytes. Default 4 GiB.
    pub max_upload_bytes: u64,
    /// Accepted uploads waiting for a transcoder before `POST /uploads` answers 503. Default 1000.
    pub max_queued_jobs: usize,
    /// Uploads of one tenant accepted and not yet terminal before `POST /uploads` answers 429. Default 100.
    pub max_in_flight_per_tenant: usize,
    /// Time a client may pause mid-body before the upload is refused with 408. Default 60 s.
    pub body_idle_timeout: Duration,
    /// Most parts in one multipart body. Default 16.
    pub max_form_parts: usize,
    /// Largest header block of one multipart part, in bytes. Default 16 KiB.
    pub max_part_header_bytes: u64,
    /// Times a job is started (first run plus retries after crashes) before it fails. Default 3.
    pub max_attempts: u32,
    /// Seconds a client waits before retrying after a 503. Default 5 s.
    pub retry_after: Duration,
    /// Time allowed to send the request headers. Default 30 s.
    pub header_read_timeout: Duration,
    /// Client connections open at once; past it, new ones wait in the
    /// listen backlog until one closes. Default 1024.
    pub max_connections: usize,
    /// Grace period for in-flight requests on shutdown. Default 30 s.
    pub shutdown_grace: Duration,
    /// Output encoding settings. Default: H.264 CRF 23 veryfast, AAC 128 kb/s, with
    /// `threads` (libav threads per job) = CPUs / transcoders, at least 1.
    pub profile: OutputProfile,
    /// Limits on what the media pipeline accepts. Default: 3840x2160 class, 6 h.
    pub media_limits: MediaLimits,
    /// Time `GET /readyz` gives each check before reporting it failed. Default 5 s.
    pub readiness_timeout: Duration,
    /// Bearer token `GET /metrics` requires. Default: none (the endpoint is open).
    pub metrics_token: Option<String>,
    /// Log output: human-readable `text` or one JSON object per line. Default `text`.
    pub log_format: LogFormat,
    /// Which logs to write, as a `tracing` filter (e.g. `info,vidpipe=debug`). Default `info`.
    pub log_filter: String,
    /// Final storage in an S3-compatible bucket (the `[s3]` table); see [`S3Config`]
    /// for each setting's default. Default: none, outputs stay in `media/` under the data dir.
    pub s3: Option<S3Config>,
    /// Webhook endpoints and delivery (the `[webhooks]` table); see [`WebhookConfig`]
    /// for each setting's default. Default: no global endpoint.
    pub webhooks: WebhookConfig,
    /// Faults to inject, for tests of the failure paths only. Default: none.
    #[doc(hidden)]
    pub faults: FaultInjection,
}

/// How log lines are written to stderr.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The x264 speed presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Deliberate failures a test can switch on to exercise recovery paths.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    /// Panic inside the transcoder thread for uploads whose filename contains this text.
    pub panic_on_filename: Option<String>,
    /// Wait this long before each transcode, to hold uploads in flight.
    pub transcode_delay: Option<Duration>,
}

impl Config {
    /// A configuration with every default filled in.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Config {
        let cpus = num_cpus::get().max(1);
        let transcoders = cpus;
        let profile = OutputProfile {
            threads: (cpus / transcoders).max(1),
            ..OutputProfile::default()
        };
        Config {
            listen,
            data_dir,
            public_url: None,
            transcoders,
            max_upload_bytes: 4 * 1024 * 1024 * 1024,
            max_queued_jobs: 1000,
            max_in_flight_per_tenant: 100,
            body_idle_timeout: Duration::from_secs(60),
            max_form_parts: 16,
            max_part_header_bytes: 16 * 1024,
            max_attempts: 3,
            retry_after: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
            profile,
            media_limits: MediaLimits::default(),
            readiness_timeout: Duration::from_secs(5),
            metrics_token: None,
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            s3: None,
            webhooks: WebhookConfig::default(),
            faults: FaultInjection::default(),
        }
    }

    /// Sets the number of transcoders and re-derives the per-job thread budget.
    pub fn with_transcoders(mut self, transcoders: usize) -> Config {
        self.transcoders = transcoders.max(1);
        self.profile.threads = (num_cpus::get() / self.transcoders).max(1);
        self
    }

    /// Checks the values that cannot be caught by types.
    pub fn validate(&self) -> Result<(), String> {
        if self.transcoders == 0 {
            return Err("transcoders must be at least 1".into());
        }
        if self.max_upload_bytes == 0 {
            return Err("max_upload_bytes must be above 0".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        self.validate_operations()?;
        self.validate_media()?;
        if let Some(s3) = &self.s3 {
            s3.validate()?;
        }
        self.webhooks.validate()?;
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                return Err(format!(
                    "public_url {url:?} must start with http:// or https:// and have no trailing slash"
                ));
            }
        }
        Ok(())
    }

    /// Where the status database lives.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("vidpipe.redb")
    }

    fn validate_operations(&self) -> Result<(), String> {
        let at_least_one = [
            ("max_queued_jobs", self.max_queued_jobs as u64),
            (
                "max_in_flight_per_tenant",
                self.max_in_flight_per_tenant as u64,
            ),
            ("max_form_parts", self.max_form_parts as u64),
            ("max_part_header_bytes", self.max_part_header_bytes),
            ("max_connections", self.max_connections as u64),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(format!(
                "max_connections must be at most {MAX_CONNECTIONS_LIMIT}"
            ));
        }
        let durations = [
            ("retry_after_secs", self.retry_after),
            ("header_read_timeout_secs", self.header_read_timeout),
            ("body_idle_timeout_secs", self.body_idle_timeout),
            ("readiness_timeout_secs", self.readiness_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, value)| value.is_zero()) {
            return Err(format!("{name} must be above 0"));
        }
        if let Some(token) = &self.metrics_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(
                    "metrics_token must be non-empty printable ASCII without spaces".into(),
                );
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_filter).map_err(|e| {
            format!(
                "log_filter {:?} is not a valid filter: {e}",
                self.log_filter
            )
        })?;
        Ok(())
    }

    fn validate_media(&self) -> Result<(), String> {
        let profile = &self.profile;
        if profile.crf > 51 {
            return Err(format!("profile.crf must be 0 to 51, not {}", profile.crf));
        }
        if !X264_PRESETS.contains(&profile.preset.as_str()) {
            return Err(format!(
                "profile.preset {:?} is not one of {}",
                profile.preset,
                X264_PRESETS.join(", ")
            ));
        }
        if profile.max_long_side < 16 {
            return Err("profile.max_long_side must be at least 16".into());
        }
        if !(8_000..=512_000).contains(&profile.audio_bit_rate) {
            return Err("profile.audio_bit_rate must be 8000 to 512000".into());
        }
        if !AAC_SAMPLE_RATES.contains(&profile.audio_sample_rate) {
            return Err(format!(
                "profile.audio_sample_rate must be one of {AAC_SAMPLE_RATES:?}"
            ));
        }
        if !(profile.hls_segment_secs > 0.0 && profile.hls_segment_secs <= 60.0) {
            return Err("profile.hls_segment_secs must be above 0 and at most 60".into());
        }
        let limits = &self.media_limits;
        if limits.max_width == 0
            || limits.max_height == 0
            || limits.max_pixels == 0
            || limits.max_frames == 0
        {
            return Err("media_limits values must be above 0".into());
        }
        if !(limits.max_duration_secs.is_finite() && limits.max_duration_secs > 0.0) {
            return Err("media_limits.max_duration_secs must be above 0".into());
        }
        Ok(())
    }
}

/// Sample rates FFmpeg's AAC encoder takes.
const AAC_SAMPLE_RATES: [u32; 12] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 64_000, 88_200, 96_000,
];
