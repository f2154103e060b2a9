//! The config file layer: built-in defaults, then a TOML file, then
//! environment variables, then command-line flags, each overriding the one
//! before, mapped onto the one [`Config`] the server uses.
//!
//! The file's tables: `[server]` (every setting here also has a flag and an
//! environment variable, from [`ServerSettings`]), `[profile]` (output
//! encoding), `[media_limits]` (what the pipeline accepts), `[s3]` and
//! `[webhooks]`. Unknown keys and values of the wrong type are errors that
//! name the line; values out of range are caught by [`Config::validate`].
//! `vidpipe.example.toml` documents every key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::ServerSettings;
use super::{Config, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use crate::media::{MediaLimits, OutputProfile};
use crate::storage::s3::S3Config;
use crate::webhook::WebhookConfig;

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

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Server settings; each also has a flag and an environment variable.
    #[serde(default)]
    pub server: ServerSettings,
    /// Output encoding.
    #[serde(default)]
    pub profile: OutputProfile,
    /// Input limits.
    #[serde(default)]
    pub media_limits: MediaLimits,
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
        let mut config = Config::new(DEFAULT_LISTEN, PathBuf::from(DEFAULT_DATA_DIR));
        self.server.apply(&mut config);
        // The per-job thread budget follows the number of transcoders unless the file sets it.
        let derived = config
            .clone()
            .with_transcoders(config.transcoders)
            .profile
            .threads;
        config.profile = OutputProfile {
            threads: self.profile.threads.or(derived),
            ..self.profile.clone()
        };
        config.media_limits = self.media_limits.clone();
        config.s3 = self.s3.clone().map(S3Config::with_env_credentials);
        config.webhooks = self.webhooks.clone().with_env_secret();
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Every setting of `config`, as a file would write it; secrets are redacted.
    pub fn effective(config: &Config) -> ConfigFile {
        let mut server = ServerSettings::of(config);
        if server.metrics_token.is_some() {
            server.metrics_token = Some("<redacted>".to_string());
        }
        ConfigFile {
            server,
            profile: config.profile.clone(),
            media_limits: config.media_limits.clone(),
            s3: config.s3.as_ref().map(S3Config::redacted),
            webhooks: config.webhooks.redacted(),
        }
    }

    /// The file as TOML text.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))
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
    use std::time::Duration;

    use super::*;
    use crate::config::LogFormat;

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
    const EXAMPLE_ONLY: [&str; 7] = [
        "cors_origins",
        "transcoders",
        "threads",
        "public_url",
        "metrics_token",
        "url",
        "secret",
    ];

    /// The example file's `# key = value` lines, uncommented, by table (the
    /// `[s3]` block, written further indented, is checked in `storage::s3`).
    fn example_settings(example: &str) -> toml::Table {
        let mut tables = toml::Table::new();
        let mut table = String::new();
        for line in example.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = name.to_string();
                continue;
            }
            let Some((key, value)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = "))
            else {
                continue;
            };
            if !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                continue;
            }
            let value: toml::Table = toml::from_str(&format!("v = {value}")).unwrap();
            let entry = tables
                .entry(table.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let fresh = entry
                .as_table_mut()
                .unwrap()
                .insert(key.to_string(), value["v"].clone());
            assert!(fresh.is_none(), "{table}.{key} documented twice");
        }
        tables
    }

    #[test]
    fn the_example_file_documents_every_setting_at_its_default() {
        let example = include_str!("../../vidpipe.example.toml");
        let documented = example_settings(example);
        // Every setting, the optional ones given a value so that they are listed.
        let mut defaults = Config::new(DEFAULT_LISTEN, PathBuf::from(DEFAULT_DATA_DIR));
        defaults.public_url = Some("https://x".into());
        defaults.metrics_token = Some("x".into());
        defaults.cors_origins = vec!["https://x".into()];
        defaults.webhooks.url = Some("https://x".into());
        defaults.webhooks.secret = Some("x".into());
        let expected: toml::Table =
            toml::from_str(&ConfigFile::effective(&defaults).to_toml().unwrap()).unwrap();
        for table in ["server", "profile", "media_limits", "webhooks"] {
            let want = expected[table].as_table().unwrap();
            let have = documented[table].as_table().unwrap();
            for (key, value) in want {
                let got = have.get(key);
                assert!(got.is_some(), "{table}.{key} missing from the example");
                if !EXAMPLE_ONLY.contains(&key.as_str()) {
                    assert_eq!(got, Some(value), "{table}.{key} in the example");
                }
            }
            for key in have.keys() {
                assert!(want.contains_key(key), "{table}.{key} is not a setting");
            }
        }
        // Each [server] setting is introduced by its flag and environment variable.
        for setting in crate::config::SERVER_SETTINGS {
            let lines = format!(
                "# {}, {}\n# {} = ",
                setting.flag(),
                setting.env,
                setting.key
            );
            assert!(example.contains(&lines), "{lines:?} not in the example");
        }
    }

    #[test]
    fn every_server_setting_has_a_flag_and_a_help_line_with_its_default() {
        let command = <ConfigArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        for setting in crate::config::SERVER_SETTINGS {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(&setting.flag()[2..]))
                .unwrap_or_else(|| panic!("no flag {}", setting.flag()));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(setting.env),
                "{}",
                setting.key
            );
            let help = arg.get_help().unwrap().to_string();
            assert!(help.contains("[default: "), "{}: {help}", setting.key);
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
