//! The config file layer: built-in defaults, then a TOML file, then
//! environment variables, then command-line flags, each overriding the one
//! before, mapped onto the one [`Config`] the server uses.
//!
//! The file has three tables: `[server]` (every setting here also has a flag
//! and an environment variable, from [`ServerSettings`]), `[profile]` (output
//! encoding) and `[media_limits]` (what the pipeline accepts). Unknown keys and
//! values of the wrong type are errors that name the line; values out of range
//! are caught by [`Config::validate`]. `vidpipe.example.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, LogFormat};
use crate::media::{MediaLimits, OutputProfile};
use crate::storage::s3::S3Config;
use crate::webhook::WebhookConfig;

/// Address the server listens on when nothing else says.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Data dir when nothing else says.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong and where, from the TOML parser.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The `[server]` table, and the same settings as flags with environment
/// variables. Every field is optional: what is not set falls through to the
/// layer below.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "VIDPIPE_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Folder for everything the server keeps: database, keys, staging, work, media [default: ./data]
    #[arg(long, env = "VIDPIPE_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Base URL in front of media URLs, no trailing slash, e.g. behind a proxy [default: http://LISTEN]
    #[arg(long, env = "VIDPIPE_PUBLIC_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Transcoder workers, one OS thread and one job each [default: number of CPUs]
    #[arg(long, env = "VIDPIPE_TRANSCODERS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcoders: Option<usize>,
    /// Largest accepted video in bytes; larger bodies get 413 [default: 4294967296 (4 GiB)]
    #[arg(long, env = "VIDPIPE_MAX_UPLOAD_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<u64>,
    /// Accepted uploads waiting for a transcoder before uploads get 503 [default: 1000]
    #[arg(long, env = "VIDPIPE_MAX_QUEUED_JOBS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_jobs: Option<usize>,
    /// Uploads of one key in flight (not yet completed or failed) before uploads get 429 [default: 100]
    #[arg(long, env = "VIDPIPE_MAX_IN_FLIGHT_PER_TENANT", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_tenant: Option<usize>,
    /// Seconds a client may pause mid-body before the upload gets 408 [default: 60]
    #[arg(long, env = "VIDPIPE_BODY_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_idle_timeout_secs: Option<u64>,
    /// Most parts in one multipart body [default: 16]
    #[arg(long, env = "VIDPIPE_MAX_FORM_PARTS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_form_parts: Option<usize>,
    /// Largest header block of one multipart part, in bytes [default: 16384]
    #[arg(long, env = "VIDPIPE_MAX_PART_HEADER_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_part_header_bytes: Option<u64>,
    /// Times a job is started (first run plus retries after crashes) before it fails [default: 3]
    #[arg(long, env = "VIDPIPE_MAX_ATTEMPTS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Seconds in the Retry-After header of 503 and 429 answers [default: 5]
    #[arg(long, env = "VIDPIPE_RETRY_AFTER_SECS", value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Seconds a client has to send the request headers [default: 30]
    #[arg(long, env = "VIDPIPE_HEADER_READ_TIMEOUT_SECS", value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_secs: Option<u64>,
    /// Client connections open at once; more wait in the listen backlog [default: 1024]
    #[arg(long, env = "VIDPIPE_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Seconds in-flight requests get to finish on shutdown [default: 30]
    #[arg(long, env = "VIDPIPE_SHUTDOWN_GRACE_SECS", value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds GET /readyz gives each check before reporting it failed [default: 5]
    #[arg(long, env = "VIDPIPE_READINESS_TIMEOUT_SECS", value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_timeout_secs: Option<u64>,
    /// Bearer token GET /metrics requires [default: none, /metrics is open]
    #[arg(
        long,
        env = "VIDPIPE_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// Log output: human-readable text or one JSON object per line [default: text]
    #[arg(long, env = "VIDPIPE_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Which logs to write, as a tracing filter, e.g. info,vidpipe=debug [default: info]
    #[arg(long, env = "VIDPIPE_LOG", value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_filter: Option<String>,
}

/// The `[profile]` table: how outputs are encoded.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    /// Longest side of the output in pixels; never upscaled. Default 1920.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_long_side: Option<u32>,
    /// libx264 constant rate factor, 0-51, lower is better and bigger. Default 23.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crf: Option<u8>,
    /// libx264 speed preset. Default `veryfast`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// AAC bit rate in bits per second. Default 128000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_bit_rate: Option<usize>,
    /// AAC sample rate in Hz. Default 48000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_sample_rate: Option<u32>,
    /// CPU threads per job; 0 means every core. Default: CPUs / transcoders, at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Write the HLS ladder beside the MP4. Default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls: Option<bool>,
    /// Target length of an HLS segment in seconds. Default 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls_segment_secs: Option<f64>,
}

/// The `[media_limits]` table: what an upload may be before it fails with `input_too_large`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaLimitSettings {
    /// Widest coded frame in pixels. Default 3840.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    /// Tallest coded frame in pixels. Default 3840.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Most pixels per frame. Default 8294400 (3840x2160).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pixels: Option<u64>,
    /// Longest duration in seconds. Default 21600 (6 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration_secs: Option<f64>,
    /// Most video frames decoded per job. Default 2592000 (6 h at 120 fps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frames: Option<u64>,
}

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Server settings; each also has a flag and an environment variable.
    #[serde(default)]
    pub server: ServerSettings,
    /// Output encoding.
    #[serde(default)]
    pub profile: ProfileSettings,
    /// Input limits.
    #[serde(default)]
    pub media_limits: MediaLimitSettings,
    /// Final storage in an S3-compatible bucket instead of the local media folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// Webhook endpoints and delivery.
    #[serde(default)]
    pub webhooks: WebhookConfig,
}

/// Where the configuration comes from: a file plus overrides. This is the
/// argument set of `vidpipe serve` and `vidpipe config check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file (see vidpipe.example.toml); environment variables and flags override it [default: none]
    #[arg(long, env = "VIDPIPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Settings that override the file.
    #[command(flatten)]
    pub overrides: ServerSettings,
}

impl ConfigArgs {
    /// The validated configuration: defaults, then the file, then the overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut file = match &self.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        file.server = self.overrides.clone().over(file.server);
        file.to_config()
    }
}

impl ConfigFile {
    /// Parses the text of a config file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads and parses a config file.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        ConfigFile::parse(&text, &origin)
    }

    /// The validated configuration: built-in defaults with this file's settings on top.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let server = &self.server;
        let mut config = Config::new(
            server.listen.unwrap_or(DEFAULT_LISTEN),
            server
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        );
        if let Some(n) = server.transcoders {
            if n == 0 {
                return Err(ConfigError::Invalid(
                    "transcoders must be at least 1".into(),
                ));
            }
            config = config.with_transcoders(n);
        }
        let secs = Duration::from_secs;
        set(&mut config.public_url, server.public_url.clone().map(Some));
        set(&mut config.max_upload_bytes, server.max_upload_bytes);
        set(&mut config.max_queued_jobs, server.max_queued_jobs);
        set(
            &mut config.max_in_flight_per_tenant,
            server.max_in_flight_per_tenant,
        );
        set(
            &mut config.body_idle_timeout,
            server.body_idle_timeout_secs.map(secs),
        );
        set(&mut config.max_form_parts, server.max_form_parts);
        set(
            &mut config.max_part_header_bytes,
            server.max_part_header_bytes,
        );
        set(&mut config.max_attempts, server.max_attempts);
        set(&mut config.retry_after, server.retry_after_secs.map(secs));
        set(
            &mut config.header_read_timeout,
            server.header_read_timeout_secs.map(secs),
        );
        set(&mut config.max_connections, server.max_connections);
        set(
            &mut config.shutdown_grace,
            server.shutdown_grace_secs.map(secs),
        );
        set(
            &mut config.readiness_timeout,
            server.readiness_timeout_secs.map(secs),
        );
        set(
            &mut config.metrics_token,
            server.metrics_token.clone().map(Some),
        );
        set(&mut config.log_format, server.log_format);
        set(&mut config.log_filter, server.log_filter.clone());

        let (profile, p) = (&mut config.profile, &self.profile);
        set(&mut profile.max_long_side, p.max_long_side);
        set(&mut profile.crf, p.crf);
        set(&mut profile.preset, p.preset.clone());
        set(&mut profile.audio_bit_rate, p.audio_bit_rate);
        set(&mut profile.audio_sample_rate, p.audio_sample_rate);
        set(&mut profile.threads, p.threads);
        set(&mut profile.hls, p.hls);
        set(&mut profile.hls_segment_secs, p.hls_segment_secs);

        let (limits, l) = (&mut config.media_limits, &self.media_limits);
        set(&mut limits.max_width, l.max_width);
        set(&mut limits.max_height, l.max_height);
        set(&mut limits.max_pixels, l.max_pixels);
        set(&mut limits.max_duration_secs, l.max_duration_secs);
        set(&mut limits.max_frames, l.max_frames);

        config.s3 = self.s3.clone().map(S3Config::with_env_credentials);
        config.webhooks = self.webhooks.clone().with_env_secret();
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Every setting of `config`, as a file would write it; the metrics token is redacted.
    pub fn effective(config: &Config) -> ConfigFile {
        // Destructured in full so a new `Config` field fails to compile here
        // until it is mapped to the file (and to `to_config`).
        let Config {
            listen,
            data_dir,
            public_url,
            transcoders,
            max_upload_bytes,
            max_queued_jobs,
            max_in_flight_per_tenant,
            body_idle_timeout,
            max_form_parts,
            max_part_header_bytes,
            max_attempts,
            retry_after,
            header_read_timeout,
            max_connections,
            shutdown_grace,
            profile,
            media_limits,
            readiness_timeout,
            metrics_token,
            log_format,
            log_filter,
            s3,
            webhooks,
            faults: _,
        } = config;
        let OutputProfile {
            max_long_side,
            crf,
            preset,
            audio_bit_rate,
            audio_sample_rate,
            threads,
            hls,
            hls_segment_secs,
        } = profile;
        let MediaLimits {
            max_width,
            max_height,
            max_pixels,
            max_duration_secs,
            max_frames,
        } = media_limits;
        ConfigFile {
            server: ServerSettings {
                listen: Some(*listen),
                data_dir: Some(data_dir.clone()),
                public_url: public_url.clone(),
                transcoders: Some(*transcoders),
                max_upload_bytes: Some(*max_upload_bytes),
                max_queued_jobs: Some(*max_queued_jobs),
                max_in_flight_per_tenant: Some(*max_in_flight_per_tenant),
                body_idle_timeout_secs: Some(body_idle_timeout.as_secs()),
                max_form_parts: Some(*max_form_parts),
                max_part_header_bytes: Some(*max_part_header_bytes),
                max_attempts: Some(*max_attempts),
                retry_after_secs: Some(retry_after.as_secs()),
                header_read_timeout_secs: Some(header_read_timeout.as_secs()),
                max_connections: Some(*max_connections),
                shutdown_grace_secs: Some(shutdown_grace.as_secs()),
                readiness_timeout_secs: Some(readiness_timeout.as_secs()),
                metrics_token: metrics_token.as_ref().map(|_| "<redacted>".to_string()),
                log_format: Some(*log_format),
                log_filter: Some(log_filter.clone()),
            },
            profile: ProfileSettings {
                max_long_side: Some(*max_long_side),
                crf: Some(*crf),
                preset: Some(preset.clone()),
                audio_bit_rate: Some(*audio_bit_rate),
                audio_sample_rate: Some(*audio_sample_rate),
                threads: Some(*threads),
                hls: Some(*hls),
                hls_segment_secs: Some(*hls_segment_secs),
            },
            media_limits: MediaLimitSettings {
                max_width: Some(*max_width),
                max_height: Some(*max_height),
                max_pixels: Some(*max_pixels),
                max_duration_secs: Some(*max_duration_secs),
                max_frames: Some(*max_frames),
            },
            s3: s3.as_ref().map(S3Config::redacted),
            webhooks: webhooks.redacted(),
        }
    }

    /// The file as TOML text.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

impl ServerSettings {
    /// These settings where set, `lower` where not.
    pub fn over(self, lower: ServerSettings) -> ServerSettings {
        ServerSettings {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            public_url: self.public_url.or(lower.public_url),
            transcoders: self.transcoders.or(lower.transcoders),
            max_upload_bytes: self.max_upload_bytes.or(lower.max_upload_bytes),
            max_queued_jobs: self.max_queued_jobs.or(lower.max_queued_jobs),
            max_in_flight_per_tenant: self
                .max_in_flight_per_tenant
                .or(lower.max_in_flight_per_tenant),
            body_idle_timeout_secs: self.body_idle_timeout_secs.or(lower.body_idle_timeout_secs),
            max_form_parts: self.max_form_parts.or(lower.max_form_parts),
            max_part_header_bytes: self.max_part_header_bytes.or(lower.max_part_header_bytes),
            max_attempts: self.max_attempts.or(lower.max_attempts),
            retry_after_secs: self.retry_after_secs.or(lower.retry_after_secs),
            header_read_timeout_secs: self
                .header_read_timeout_secs
                .or(lower.header_read_timeout_secs),
            max_connections: self.max_connections.or(lower.max_connections),
            shutdown_grace_secs: self.shutdown_grace_secs.or(lower.shutdown_grace_secs),
            readiness_timeout_secs: self.readiness_timeout_secs.or(lower.readiness_timeout_secs),
            metrics_token: self.metrics_token.or(lower.metrics_token),
            log_format: self.log_format.or(lower.log_format),
            log_filter: self.log_filter.or(lower.log_filter),
        }
    }
}

/// Overwrites `field` when the layer sets it.
fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// The data dir the key commands use: the flag or environment variable, else
/// the config file's, else `./data`.
pub fn data_dir(config: Option<&Path>, flag: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    let from_file = match config {
        Some(path) => ConfigFile::read(path)?.server.data_dir,
        None => None,
    };
    Ok(from_file.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = ConfigFile::parse("", "t").unwrap().to_config().unwrap();
        let defaults = Config::new(DEFAULT_LISTEN, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(
            ConfigFile::effective(&config),
            ConfigFile::effective(&defaults)
        );
    }

    #[test]
    fn file_values_reach_the_config() {
        let text = r#"
            [server]
            listen = "0.0.0.0:9000"
            transcoders = 3
            retry_after_secs = 9
            log_format = "json"
            [profile]
            crf = 28
            preset = "medium"
            max_long_side = 1280
            [media_limits]
            max_duration_secs = 60.0
        "#;
        let config = ConfigFile::parse(text, "t").unwrap().to_config().unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.transcoders, 3);
        assert_eq!(config.retry_after, Duration::from_secs(9));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(
            (config.profile.crf, config.profile.preset.as_str()),
            (28, "medium")
        );
        assert_eq!(config.profile.max_long_side, 1280);
        assert_eq!(config.media_limits.max_duration_secs, 60.0);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let file = ServerSettings {
            transcoders: Some(3),
            max_attempts: Some(5),
            ..Default::default()
        };
        let flags = ServerSettings {
            transcoders: Some(1),
            ..Default::default()
        };
        let merged = flags.over(file);
        assert_eq!(
            (merged.transcoders, merged.max_attempts),
            (Some(1), Some(5))
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = ConfigFile::parse("[server]\nlisten_port = 1\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err = ConfigFile::parse("[profile]\ncrf = 300\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("crf"), "{err}");
        let err = ConfigFile::parse("[nope]\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = ConfigFile::parse("[profile]\npreset = \"warp9\"\n", "f.toml")
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(err.to_string().contains("warp9"), "{err}");
    }

    /// Keys whose example value is not the default (it depends on the machine, or is unset).
    const EXAMPLE_ONLY: [&str; 4] = ["transcoders", "threads", "public_url", "metrics_token"];

    #[test]
    fn the_example_file_documents_every_setting_at_its_default() {
        let example = include_str!("../../vidpipe.example.toml");
        fn setting(line: &str) -> Option<&str> {
            let rest = line.strip_prefix("# ")?;
            let (key, _) = rest.split_once(" = ")?;
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
                .then_some(rest)
        }
        let uncommented: String = example
            .lines()
            .map(|line| setting(line).unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let file = ConfigFile::parse(&uncommented, "example").unwrap();
        let config = file.to_config().unwrap();

        let mut defaults = Config::new(DEFAULT_LISTEN, PathBuf::from(DEFAULT_DATA_DIR));
        defaults.public_url = Some("https://x".into());
        defaults.metrics_token = Some("x".into());
        let as_table =
            |f: &ConfigFile| -> toml::Table { toml::from_str(&f.to_toml().unwrap()).unwrap() };
        let (documented, expected) = (
            as_table(&ConfigFile::effective(&config)),
            as_table(&ConfigFile::effective(&defaults)),
        );
        for (section, keys) in &expected {
            for (key, value) in keys.as_table().unwrap() {
                let got = documented.get(section).and_then(|s| s.get(key));
                assert!(got.is_some(), "{section}.{key} missing from the example");
                if !EXAMPLE_ONLY.contains(&key.as_str()) {
                    assert_eq!(got, Some(value), "{section}.{key} in the example");
                }
            }
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let mut config = Config::new(DEFAULT_LISTEN, PathBuf::from("/srv/vidpipe"));
        config.public_url = Some("https://videos.example.com".into());
        let file = ConfigFile::effective(&config);
        let again = ConfigFile::parse(&file.to_toml().unwrap(), "t").unwrap();
        assert_eq!(again, file);
        assert_eq!(ConfigFile::effective(&again.to_config().unwrap()), file);
    }
}
