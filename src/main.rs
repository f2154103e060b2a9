//! The `vidpipe` command: parse the command line, set up logging, call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vidpipe::config::Config;
use vidpipe::server::Server;
use vidpipe::store::keys::KeyFile;

/// Self-hosted Video Uploads API: multipart intake, in-process transcoding, durable status.
#[derive(Parser)]
#[command(name = "vidpipe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "VIDPIPE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Folder for everything the server keeps.
        #[arg(long, env = "VIDPIPE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Number of transcoder workers [default: number of CPUs].
        #[arg(long, env = "VIDPIPE_TRANSCODERS")]
        transcoders: Option<usize>,
        /// Largest accepted upload in bytes [default: 4 GiB].
        #[arg(long, env = "VIDPIPE_MAX_UPLOAD_BYTES")]
        max_upload_bytes: Option<u64>,
        /// Base URL in front of media URLs [default: http://LISTEN].
        #[arg(long, env = "VIDPIPE_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// Manage API keys (each key is a tenant).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the media pipeline on a file, offline: INPUT to OUTDIR/video.mp4 and poster.jpg.
    Transcode {
        /// Input video file.
        input: PathBuf,
        /// Output folder (created if missing).
        outdir: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints it once, as the last line of output.
    Create {
        /// Data dir of the server.
        #[arg(long, env = "VIDPIPE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// A label for the key.
        #[arg(long)]
        name: String,
    },
    /// List keys (never their secrets).
    List {
        /// Data dir of the server.
        #[arg(long, env = "VIDPIPE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Revoke a key by id; takes effect on the next request.
    Revoke {
        /// Data dir of the server.
        #[arg(long, env = "VIDPIPE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The key id shown by `keys list`.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIDPIPE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            transcoders,
            max_upload_bytes,
            public_url,
        } => {
            let mut config = Config::new(listen, data_dir);
            if let Some(n) = transcoders {
                config = config.with_transcoders(n);
            }
            if let Some(max) = max_upload_bytes {
                config.max_upload_bytes = max;
            }
            config.public_url = public_url;
            serve(config)
        }
        Command::Keys { command } => keys(command),
        Command::Transcode { input, outdir } => transcode(&input, &outdir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

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

fn keys(command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Create { data_dir, name } => {
            std::fs::create_dir_all(&data_dir)?;
            let (key, secret) = KeyFile::new(&data_dir).create(&name)?;
            println!(
                "Created key {} ({}). Store it now; it is not shown again:",
                key.id, key.name
            );
            println!("{secret}");
        }
        KeysCommand::List { data_dir } => {
            println!(
                "{:<18} {:<14} {:<22} {:<22} NAME",
                "ID", "PREFIX", "CREATED", "REVOKED"
            );
            for key in KeyFile::new(&data_dir).list()? {
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
        KeysCommand::Revoke { data_dir, id } => {
            if !KeyFile::new(&data_dir).revoke(&id)? {
                return Err(format!("no key with id {id}").into());
            }
            println!("Revoked key {id}.");
        }
    }
    Ok(())
}

fn transcode(input: &std::path::Path, outdir: &std::path::Path) -> CliResult {
    vidpipe::media::init();
    std::fs::create_dir_all(outdir)?;
    let config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), PathBuf::from("."));
    let mut profile = config.profile.clone();
    profile.threads = num_cpus::get();
    let started = std::time::Instant::now();
    let out = vidpipe::media::transcode(input, outdir, &profile, &config.media_limits, &mut |_| {})
        .map_err(|e| format!("{} ({})", e.message, e.code.as_str()))?;
    let elapsed = started.elapsed().as_secs_f64();
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
    Ok(())
}
