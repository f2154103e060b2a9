//! One documented configuration for the server, validated at start.
//!
//! Every `[server]` setting is one entry of the table below: its field, type,
//! default, doc line, file key, flag, environment variable and check. The
//! `Config` fields, the `[server]` table of the file with its flags and
//! environment variables ([`file::ServerSettings`]), the `--help` texts,
//! `config check` and [`SERVER_SETTINGS`] (which the tests hold the example
//! file and the README to) are all made from it. The other tables are one
//! struct each, beside what they configure: [`OutputProfile`] and
//! [`MediaLimits`] (media), [`S3Config`] (storage), [`WebhookConfig`]
//! (webhooks); each documents its defaults on its fields and checks its own
//! values. [`file`] reads a TOML file with environment and flag overrides.

pub mod file;
pub mod setting;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::media::{MediaLimits, OutputProfile};
use crate::storage::s3::S3Config;
use crate::webhook::WebhookConfig;
use setting::{
    any, at_least, not_zero, origins, Form, Hours, List, Optional, Plain, Secs, SettingDoc,
};

/// Most `max_connections` accepted (far past what one process serves).
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// Address the server listens on when nothing else says.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Data dir when nothing else says.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Declares the `[server]` settings, each once: see the module doc.
///
/// An entry: doc comment; `field: RuntimeType = default`; `file key: FileType`
/// with the [`Form`] that converts between the two; the flag's value name and
/// the environment variable; optionally how to describe the default when it
/// is not a plain value; the check the value must pass.
macro_rules! server_settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $runtime:ty = $default:expr;
        file $key:ident: $file:ty as $form:ty;
        flag $value_name:literal, $env:literal;
        $(default $default_text:literal;)?
        check $check:expr;
    )+) => {
        /// Everything the server needs to run. Every `[server]` setting has a
        /// documented default ([`Config::new`] fills them in); the other tables
        /// document theirs on their own types.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $runtime, )+
            /// Output encoding (the `[profile]` table); see [`OutputProfile`] for each
            /// setting's default. `threads` defaults to CPUs / transcoders, at least 1.
            pub profile: OutputProfile,
            /// Limits on what the media pipeline accepts (the `[media_limits]` table).
            pub media_limits: MediaLimits,
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

        impl Config {
            /// A configuration with every default filled in.
            pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Config {
                let mut config = Config {
                    $( $field: $default, )+
                    profile: OutputProfile::default(),
                    media_limits: MediaLimits::default(),
                    s3: None,
                    webhooks: WebhookConfig::default(),
                    faults: FaultInjection::default(),
                };
                config.listen = listen;
                config.data_dir = data_dir;
                let transcoders = config.transcoders;
                config.with_transcoders(transcoders)
            }

            /// Checks each `[server]` setting, naming the one that fails.
            fn validate_server(&self) -> Result<(), String> {
                $(
                    let check: &dyn Fn(&$runtime) -> Result<(), String> = &$check;
                    check(&self.$field).map_err(|why| format!("{} {why}", stringify!($key)))?;
                )+
                Ok(())
            }
        }

        /// The documentation of every `[server]` setting, in file order.
        pub const SERVER_SETTINGS: &[SettingDoc] = &[
            $( SettingDoc {
                key: stringify!($key),
                env: $env,
                doc: concat!($($doc),+),
                default_text: server_settings!(@text $($default_text)?),
            }, )+
        ];

        pub(crate) mod server_table {
            //! The `[server]` table as the file, flags and environment give it.
            use super::*;

            /// The `[server]` table, and the same settings as flags with
            /// environment variables. Every field is optional: what is not set
            /// falls through to the layer below.
            #[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize, clap::Args)]
            #[serde(deny_unknown_fields)]
            pub struct ServerSettings {
                $(
                    #[arg(long, env = $env, value_name = $value_name, hide_env_values = true,
                          help = setting::help(concat!($($doc),+), default_text(stringify!($key))))]
                    #[serde(skip_serializing_if = "Option::is_none")]
                    #[doc = concat!("`", stringify!($key), "`: see [`Config`].")]
                    pub $key: Option<$file>,
                )+
            }

            impl ServerSettings {
                /// These settings where set, `lower` where not.
                pub fn over(self, lower: ServerSettings) -> ServerSettings {
                    ServerSettings { $( $key: self.$key.or(lower.$key), )+ }
                }

                /// Sets the fields of `config` these settings set.
                pub fn apply(&self, config: &mut Config) {
                    $(
                        if let Some(value) = &self.$key {
                            config.$field = <$form as Form<$runtime>>::read(value.clone());
                        }
                    )+
                }

                /// Every setting of `config`.
                pub fn of(config: &Config) -> ServerSettings {
                    ServerSettings { $( $key: <$form as Form<$runtime>>::write(&config.$field), )+ }
                }
            }

            /// How the help text describes the default of setting `key`.
            fn default_text(key: &str) -> String {
                let doc = SERVER_SETTINGS.iter().find(|s| s.key == key);
                if let Some(text) = doc.and_then(|d| d.default_text) {
                    return text.to_string();
                }
                let defaults = ServerSettings::of(&Config::new(
                    DEFAULT_LISTEN,
                    PathBuf::from(DEFAULT_DATA_DIR),
                ));
                toml::Table::try_from(&defaults)
                    .ok()
                    .and_then(|table| table.get(key).map(setting::render))
                    .unwrap_or_default()
            }
        }
    };
    (@text $text:literal) => { Some($text) };
    (@text) => { None };
}

server_settings! {
    /// Address the HTTP server listens on.
    listen: SocketAddr = DEFAULT_LISTEN;
    file listen: SocketAddr as Plain;
    flag "ADDR", "VIDPIPE_LISTEN";
    check any;

    /// Folder for everything the server keeps: database, keys, staging, work, media.
    data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR);
    file data_dir: PathBuf as Plain;
    flag "DIR", "VIDPIPE_DATA_DIR";
    check any;

    /// Base URL in front of media URLs, no trailing slash, e.g. behind a proxy.
    public_url: Option<String> = None;
    file public_url: String as Optional;
    flag "URL", "VIDPIPE_PUBLIC_URL";
    default "http://LISTEN";
    check setting::unless_unset(public_url);

    /// Transcoder workers, one OS thread and one job each.
    transcoders: usize = num_cpus::get().max(1);
    file transcoders: usize as Plain;
    flag "N", "VIDPIPE_TRANSCODERS";
    default "number of CPUs";
    check at_least(1);

    /// Largest accepted video in bytes; larger bodies get 413.
    max_upload_bytes: u64 = 4 * 1024 * 1024 * 1024;
    file max_upload_bytes: u64 as Plain;
    flag "BYTES", "VIDPIPE_MAX_UPLOAD_BYTES";
    check at_least(1);

    /// Accepted uploads waiting for a transcoder before uploads get 503.
    max_queued_jobs: usize = 1000;
    file max_queued_jobs: usize as Plain;
    flag "N", "VIDPIPE_MAX_QUEUED_JOBS";
    check at_least(1);

    /// Uploads of one key in flight (not yet completed or failed) before uploads get 429.
    max_in_flight_per_tenant: usize = 100;
    file max_in_flight_per_tenant: usize as Plain;
    flag "N", "VIDPIPE_MAX_IN_FLIGHT_PER_TENANT";
    check at_least(1);

    /// Seconds a client may pause in the middle of a body before the upload is refused with 408.
    body_idle_timeout: Duration = Duration::from_secs(60);
    file body_idle_timeout_secs: u64 as Secs;
    flag "SECS", "VIDPIPE_BODY_IDLE_TIMEOUT_SECS";
    check not_zero;

    /// Most parts in one multipart body.
    max_form_parts: usize = 16;
    file max_form_parts: usize as Plain;
    flag "N", "VIDPIPE_MAX_FORM_PARTS";
    check at_least(1);

    /// Largest header block of one multipart part, in bytes.
    max_part_header_bytes: u64 = 16 * 1024;
    file max_part_header_bytes: u64 as Plain;
    flag "BYTES", "VIDPIPE_MAX_PART_HEADER_BYTES";
    check at_least(1);

    /// Times a job is started (first run plus retries after crashes) before it fails.
    max_attempts: u32 = 3;
    file max_attempts: u32 as Plain;
    flag "N", "VIDPIPE_MAX_ATTEMPTS";
    check at_least(1);

    /// Seconds in the Retry-After header of 503 and 429 answers.
    retry_after: Duration = Duration::from_secs(5);
    file retry_after_secs: u64 as Secs;
    flag "SECS", "VIDPIPE_RETRY_AFTER_SECS";
    check not_zero;

    /// Seconds a client has to send the request headers.
    header_read_timeout: Duration = Duration::from_secs(30);
    file header_read_timeout_secs: u64 as Secs;
    flag "SECS", "VIDPIPE_HEADER_READ_TIMEOUT_SECS";
    check not_zero;

    /// Client connections open at once; more wait in the listen backlog.
    max_connections: usize = 1024;
    file max_connections: usize as Plain;
    flag "N", "VIDPIPE_MAX_CONNECTIONS";
    check max_connections;

    /// HTTP/2 streams one connection may have open at once (hyper's own default is 200); the client is told in the connection's settings.
    http2_max_streams: u32 = 32;
    file http2_max_streams: u32 as Plain;
    flag "N", "VIDPIPE_HTTP2_MAX_STREAMS";
    check at_least(1);

    /// Requests in flight across all connections that hold a file, a body or a buffer (media, uploads, lists); past it, such a request gets 503 at once. A quarter is kept for requests with a valid API key, so that /media alone cannot fill it.
    max_requests_in_flight: usize = 256;
    file max_requests_in_flight: usize as Plain;
    flag "N", "VIDPIPE_MAX_REQUESTS_IN_FLIGHT";
    check at_least(1);

    /// Seconds a response may send nothing (its client reads nothing; less than 16 KiB counts as nothing) before its HTTP/2 stream is reset or its HTTP/1 connection closed, and its file closed.
    response_stall_timeout: Duration = Duration::from_secs(30);
    file response_stall_timeout_secs: u64 as Secs;
    flag "SECS", "VIDPIPE_RESPONSE_STALL_TIMEOUT_SECS";
    check not_zero;

    /// Hours a failed upload keeps its source, so that it can be retried; then the source is freed (the record stays, failed).
    failed_source_retention: Duration = Duration::from_secs(72 * 3600);
    file failed_source_retention_hours: u64 as Hours;
    flag "HOURS", "VIDPIPE_FAILED_SOURCE_RETENTION_HOURS";
    check any;

    /// Hours the answer to a POST /uploads with an Idempotency-Key is kept for its repeats.
    idempotency_key_retention: Duration = Duration::from_secs(24 * 3600);
    file idempotency_key_retention_hours: u64 as Hours;
    flag "HOURS", "VIDPIPE_IDEMPOTENCY_KEY_RETENTION_HOURS";
    check not_zero;

    /// Hours an unfinished tus upload is kept after its last write; then its bytes are freed and it is 404.
    tus_expiry: Duration = Duration::from_secs(24 * 3600);
    file tus_expiry_hours: u64 as Hours;
    flag "HOURS", "VIDPIPE_TUS_EXPIRY_HOURS";
    check not_zero;

    /// tus uploads not yet in the pipeline (being sent, or waiting to be joined or for room) one API key may have at once; past it, 429.
    max_unfinished_tus_uploads_per_tenant: usize = 100;
    file max_unfinished_tus_uploads_per_tenant: usize as Plain;
    flag "N", "VIDPIPE_MAX_UNFINISHED_TUS_UPLOADS_PER_TENANT";
    check at_least(1);

    /// Event streams (GET /events and GET /uploads/{id}/events) one API key may have open at once; past it, 429.
    max_event_streams_per_tenant: usize = 16;
    file max_event_streams_per_tenant: usize as Plain;
    flag "N", "VIDPIPE_MAX_EVENT_STREAMS_PER_TENANT";
    check at_least(1);

    /// Origins (`scheme://host[:port]`, comma-separated, or `*` for any) whose pages may call the API and read /media from a browser: CORS preflights are answered and the answers readable there.
    cors_origins: Vec<String> = Vec::new();
    file cors_origins: String as List;
    flag "ORIGINS", "VIDPIPE_CORS_ORIGINS";
    default "none";
    check origins;

    /// Seconds in-flight requests get to finish on shutdown.
    shutdown_grace: Duration = Duration::from_secs(30);
    file shutdown_grace_secs: u64 as Secs;
    flag "SECS", "VIDPIPE_SHUTDOWN_GRACE_SECS";
    check any;

    /// Seconds GET /readyz gives each check before reporting it failed.
    readiness_timeout: Duration = Duration::from_secs(5);
    file readiness_timeout_secs: u64 as Secs;
    flag "SECS", "VIDPIPE_READINESS_TIMEOUT_SECS";
    check not_zero;

    /// Free space, in bytes, kept on the data dir's disk for the uploads already accepted; below it new uploads get 507.
    reserved_disk_bytes: u64 = 1024 * 1024;
    file reserved_disk_bytes: u64 as Plain;
    flag "BYTES", "VIDPIPE_RESERVED_DISK_BYTES";
    check any;

    /// Bearer token GET /metrics requires.
    metrics_token: Option<String> = None;
    file metrics_token: String as Optional;
    flag "TOKEN", "VIDPIPE_METRICS_TOKEN";
    default "none: /metrics is open";
    check setting::unless_unset(metrics_token);

    /// Log output: human-readable text or one JSON object per line.
    log_format: LogFormat = LogFormat::Text;
    file log_format: LogFormat as Plain;
    flag "FORMAT", "VIDPIPE_LOG_FORMAT";
    check any;

    /// Which logs to write, as a tracing filter, e.g. info,vidpipe=debug.
    log_filter: String = "info".into();
    file log_filter: String as Plain;
    flag "FILTER", "VIDPIPE_LOG";
    check |filter: &String| log_filter(filter);
}

pub use server_table::ServerSettings;

fn public_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
        return Err(format!(
            "{url:?} must start with http:// or https:// and have no trailing slash"
        ));
    }
    Ok(())
}

fn max_connections(n: &usize) -> Result<(), String> {
    at_least(1)(n)?;
    if *n > MAX_CONNECTIONS_LIMIT {
        return Err(format!("must be at most {MAX_CONNECTIONS_LIMIT}"));
    }
    Ok(())
}

fn metrics_token(token: &str) -> Result<(), String> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be non-empty printable ASCII without spaces".into());
    }
    Ok(())
}

fn log_filter(filter: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("{filter:?} is not a valid filter: {e}"))
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

/// Deliberate failures a test can switch on to exercise recovery paths.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    /// Panic inside the transcoder thread for uploads whose filename contains this text.
    pub panic_on_filename: Option<String>,
    /// Wait this long before each transcode, to hold uploads in flight.
    pub transcode_delay: Option<Duration>,
    /// Object storage: wait this long after each file stored, to hold an
    /// upload at status 5 with some of its files in the bucket.
    pub storage_put_delay: Option<Duration>,
}

impl Config {
    /// Sets the number of transcoders and re-derives the per-job thread budget.
    pub fn with_transcoders(mut self, transcoders: usize) -> Config {
        self.transcoders = transcoders.max(1);
        self.profile.threads = Some((num_cpus::get() / self.transcoders).max(1));
        self
    }

    /// Checks the values that cannot be caught by types.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_server()?;
        self.profile.validate()?;
        self.media_limits.validate()?;
        if let Some(s3) = &self.s3 {
            s3.validate()?;
        }
        self.webhooks.validate()
    }

    /// Where the status database lives.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("vidpipe.redb")
    }
}
