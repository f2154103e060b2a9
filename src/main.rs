//! The `vidpipe` command: parse the command line, set up logging, call into the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vidpipe::config::file::{self, ConfigArgs, ConfigFile};
use vidpipe::config::{Config, LogFormat};
use vidpipe::server::Server;
use vidpipe::store::keys::{KeyFile, SecretChange};
use vidpipe::webhook::check_endpoint_url;

/// Self-hosted Video Uploads API: multipart intake, in-process transcoding, durable status.
///
/// Settings come from built-in defaults, then a TOML config file (--config),
/// then environment variables, then flags; each overrides the one before.
/// `vidpipe config example` prints a config file with every setting and its default.
#[derive(Parser)]
#[command(name = "vidpipe", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API server.
    ///
    /// Serves the Uploads API under /api/client/v1 (OpenAPI description at
    /// /api/client/v1/openapi.json), media under /media, and /healthz, /readyz
    /// and /metrics for operators. Stops gracefully on SIGINT or SIGTERM.
    Serve(Box<ConfigArgs>),
    /// Check a configuration, or print a sample one.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage API keys (each key is a tenant and sees only its own uploads).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the media pipeline on a file, offline: INPUT to OUTDIR/video.mp4, poster.jpg,
    /// the storyboard (storyboard.jpg, storyboard.vtt) and the HLS ladder
    /// OUTDIR/hls/master.m3u8 (the hls folder is replaced).
    ///
    /// Uses the [profile] and [media_limits] of the config file when one is
    /// given, and every CPU. Shows a progress bar on a terminal and ends with
    /// a summary: time, realtime factor and output sizes.
    Transcode {
        /// Input video file.
        input: PathBuf,
        /// Output folder (created if missing).
        outdir: PathBuf,
        /// TOML config file whose [profile] and [media_limits] apply [default: none]
        #[arg(long, env = "VIDPIPE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Write only the MP4, the poster and the storyboard, no HLS ladder [default: off, the ladder is
        /// written unless the config file's profile.hls is false]
        #[arg(long, env = "VIDPIPE_NO_HLS")]
        no_hls: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration `serve` would use (file, environment and flags)
    /// and print the effective settings as TOML; exits with status 1 on an error.
    Check(Box<ConfigArgs>),
    /// Print a sample config file with every setting, commented, at its default.
    Example,
}

/// Where the key commands find the data dir.
#[derive(clap::Args)]
struct DataDirArgs {
    /// Data dir of the server [default: the config file's data_dir, else ./data]
    #[arg(long, env = "VIDPIPE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file to take data_dir from [default: none]
    #[arg(long, env = "VIDPIPE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints it once, as the last line of output.
    Create {
        #[command(flatten)]
        dir: DataDirArgs,
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// Endpoint that receives the webhook events of this key's uploads [default: none]
        #[arg(long, env = "VIDPIPE_KEY_WEBHOOK_URL", value_name = "URL")]
        webhook_url: Option<String>,
    },
    /// Set or clear a key's webhook endpoint, and keep, rotate or set its signing secret.
    SetWebhook {
        #[command(flatten)]
        dir: DataDirArgs,
        /// The key id shown by `keys list`.
        id: String,
        /// Endpoint for the key's webhook events [default: unchanged]
        #[arg(long, value_name = "URL", conflicts_with = "clear_url")]
        url: Option<String>,
        /// Remove the endpoint; the secret stays, for uploads' callback_url [default: keep it]
        #[arg(long)]
        clear_url: bool,
        /// Replace the signing secret with a new random one, printed [default: keep it]
        #[arg(long, conflicts_with = "secret")]
        rotate_secret: bool,
        /// Replace the signing secret with this one [default: keep it]
        #[arg(long, value_name = "SECRET")]
        secret: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Revoke a key by id; takes effect on the next request.
    Revoke {
        #[command(flatten)]
        dir: DataDirArgs,
        /// The key id shown by `keys list`.
        id: String,
    },
}

/// A sample config file with every setting at its default.
const EXAMPLE_CONFIG: &str = include_str!("../vidpipe.example.toml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.load().map_err(Into::into).and_then(|config| {
            init_logging(config.log_format, &config.log_filter)?;
            serve(config)
        }),
        Command::Config { command } => config_command(command),
        Command::Keys { command } => init_default_logging().and_then(|()| keys(command)),
        Command::Transcode {
            input,
            outdir,
            config,
            no_hls,
        } => init_default_logging()
            .and_then(|()| transcode(&input, &outdir, config.as_deref(), no_hls)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn init_logging(format: LogFormat, filter: &str) -> CliResult {
    vidpipe::logging::init(format, filter)
}

/// Logging for the commands that take no config: `VIDPIPE_LOG_FORMAT` and `VIDPIPE_LOG`.
fn init_default_logging() -> CliResult {
    let format = match std::env::var("VIDPIPE_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") | Err(_) => LogFormat::Text,
        Ok(other) => return Err(format!("VIDPIPE_LOG_FORMAT {other:?} is not text or json").into()),
    };
    let filter = std::env::var("VIDPIPE_LOG").unwrap_or_else(|_| "info".into());
    init_logging(format, &filter)
}

fn serve(config: Config) -> CliResult {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let data_dir = config.data_dir.clone();
        let server = Server::start(config).await?;
        if server.active_keys() == 0 {
            eprintln!(
                "No API keys yet. Create one with:\n  vidpipe keys create --data-dir {} --name my-app",
                data_dir.display()
            );
        }
        eprintln!("vidpipe listening on http://{}", server.addr());
        eprintln!("Web console: http://{}{}", server.addr(), vidpipe::console::PREFIX);
        wait_for_signal().await?;
        server.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

fn config_command(command: ConfigCommand) -> CliResult {
    match command {
        ConfigCommand::Check(args) => {
            let config = args.load()?;
            let source = match &args.config {
                Some(path) => format!("{}, environment and flags", path.display()),
                None => "built-in defaults, environment and flags".to_string(),
            };
            println!("# The configuration is valid. Effective settings ({source}):");
            print!("{}", ConfigFile::effective(&config).to_toml()?);
        }
        ConfigCommand::Example => print!("{EXAMPLE_CONFIG}"),
    }
    Ok(())
}

fn keys(command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Create {
            dir,
            name,
            webhook_url,
        } => {
            if let Some(url) = &webhook_url {
                check_endpoint_url(url, usize::MAX).map_err(|e| format!("--webhook-url {e}"))?;
            }
            let data_dir = dir.resolve()?;
            std::fs::create_dir_all(&data_dir)?;
            let (key, secret) =
                KeyFile::new(&data_dir).create_with_webhook(&name, webhook_url.as_deref())?;
            print_webhook(&key);
            println!(
                "Created key {} ({}). Store it now; it is not shown again:",
                key.id, key.name
            );
            println!("{secret}");
        }
        KeysCommand::SetWebhook {
            dir,
            id,
            url,
            clear_url,
            rotate_secret,
            secret,
        } => {
            if let Some(url) = &url {
                check_endpoint_url(url, usize::MAX).map_err(|e| format!("--url {e}"))?;
            }
            let change = match (rotate_secret, secret) {
                (true, _) => SecretChange::Rotate,
                (false, Some(secret)) => SecretChange::Set(secret),
                (false, None) => SecretChange::Keep,
            };
            let key = KeyFile::new(&dir.resolve()?)
                .set_webhook(&id, url_change(url.as_deref(), clear_url), change)?
                .ok_or_else(|| format!("no key with id {id}"))?;
            if key.webhook_url.is_none() {
                println!("Key {id} has no webhook endpoint.");
            }
            print_webhook(&key);
        }
        KeysCommand::List { dir } => {
            println!(
                "{:<18} {:<14} {:<22} {:<22} NAME",
                "ID", "PREFIX", "CREATED", "REVOKED"
            );
            for key in KeyFile::new(&dir.resolve()?).list()? {
                let revoked = key
                    .revoked_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<18} {:<14} {:<22} {:<22} {}",
                    key.id,
                    key.prefix,
                    key.created_at.to_string(),
                    revoked,
                    key.name
                );
            }
        }
        KeysCommand::Revoke { dir, id } => {
            if !KeyFile::new(&dir.resolve()?).revoke(&id)? {
                return Err(format!("no key with id {id}").into());
            }
            println!("Revoked key {id}.");
        }
    }
    Ok(())
}

/// A key's webhook endpoint and signing secret, as the key commands show them.
fn print_webhook(key: &vidpipe::store::keys::ApiKey) {
    if let Some(url) = &key.webhook_url {
        println!("Webhook events of key {} go to {url}.", key.id);
    }
    if let Some(secret) = &key.webhook_secret {
        println!("Webhook signing secret: {secret}");
    }
}

/// `set_webhook`'s endpoint change from the flags: set, clear or keep.
fn url_change(url: Option<&str>, clear: bool) -> Option<Option<&str>> {
    match (url, clear) {
        (Some(url), _) => Some(Some(url)),
        (None, true) => Some(None),
        (None, false) => None,
    }
}

impl DataDirArgs {
    fn resolve(self) -> Result<PathBuf, file::ConfigError> {
        file::data_dir(self.config.as_deref(), self.data_dir)
    }
}

fn transcode(input: &Path, outdir: &Path, config_file: Option<&Path>, no_hls: bool) -> CliResult {
    let config = match config_file {
        Some(path) => ConfigFile::read(path)?.to_config()?,
        None => Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), PathBuf::from(".")),
    };
    vidpipe::media::init();
    std::fs::create_dir_all(outdir)?;
    let mut profile = config.profile.clone();
    profile.threads = Some(num_cpus::get());
    profile.hls &= !no_hls;
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {percent:>3}% (eta {eta})",
        )?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let result = vidpipe::media::transcode(
        input,
        outdir,
        &profile,
        &config.media_limits,
        &mut |fraction: f64| bar.set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64),
    );
    bar.finish_and_clear();
    let out = result.map_err(|e| format!("{} ({})", e.message, e.code.as_str()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} -> {} ({}x{}, {:.2} s of video in {:.2} s, {:.2}x realtime)",
        input.display(),
        out.mp4.display(),
        out.width,
        out.height,
        out.duration,
        elapsed,
        out.duration / elapsed.max(1e-9)
    );
    let copied = |yes: bool| if yes { "copied" } else { "encoded" };
    println!(
        "  {}: {} (video {}, audio {})\n  {}: {}",
        out.mp4.display(),
        human_bytes(size(&out.mp4)),
        copied(out.video_copied),
        match out.source.audio_codec {
            None => "none",
            Some(_) => copied(out.audio_copied),
        },
        out.poster.display(),
        human_bytes(size(&out.poster))
    );
    let storyboard = &out.storyboard;
    println!(
        "  {}: {}, {} tiles of {}x{}, one every {} s ({})",
        storyboard.image.display(),
        human_bytes(size(&storyboard.image)),
        storyboard.tiles,
        storyboard.tile_width,
        storyboard.tile_height,
        storyboard.interval_secs,
        storyboard.vtt.display()
    );
    if let Some(hls) = &out.hls {
        println!("  {}", outdir.join(&hls.master).display());
        for rendition in &hls.renditions {
            let bytes: u64 = rendition.segments.iter().map(|s| s.bytes).sum();
            println!(
                "    {} {}x{}, {}, {} segments, {}, peak {} kb/s",
                rendition.name,
                rendition.width,
                rendition.height,
                copied(!rendition.encoded),
                rendition.segments.len(),
                human_bytes(bytes),
                rendition.bandwidth / 1000
            );
        }
    }
    Ok(())
}

/// `1234567` as `1.2 MB (1234567 bytes)`.
fn human_bytes(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {} ({bytes} bytes)", units[unit])
    }
}
