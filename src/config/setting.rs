//! How one `[server]` setting is declared: the pieces the
//! [`server_settings!`](crate::config) table is made of. Each setting is one
//! entry there, with its name, type, default, doc line, flag, environment
//! variable and check; everything else (the `Config` field, the file key,
//! the flag, `config check`, the help text, the example file and README
//! checks) is made from that entry.

use std::fmt::Display;
use std::time::Duration;

/// How a setting is written in the file, flags and environment (`File`)
/// against the type the server uses.
pub trait Form<T> {
    /// The type in the file.
    type File;
    /// The server's value of a file value.
    fn read(file: Self::File) -> T;
    /// The file value of the server's, `None` when unset.
    fn write(value: &T) -> Option<Self::File>;
}

/// Written as it is used.
pub struct Plain;

impl<T: Clone> Form<T> for Plain {
    type File = T;
    fn read(file: T) -> T {
        file
    }
    fn write(value: &T) -> Option<T> {
        Some(value.clone())
    }
}

/// A duration written in whole seconds.
pub struct Secs;

impl Form<Duration> for Secs {
    type File = u64;
    fn read(file: u64) -> Duration {
        Duration::from_secs(file)
    }
    fn write(value: &Duration) -> Option<u64> {
        Some(value.as_secs())
    }
}

/// A duration written in whole hours.
pub struct Hours;

impl Form<Duration> for Hours {
    type File = u64;
    fn read(file: u64) -> Duration {
        Duration::from_secs(file.saturating_mul(3600))
    }
    fn write(value: &Duration) -> Option<u64> {
        Some(value.as_secs() / 3600)
    }
}

/// A list written as one string, its items separated by commas (so that a
/// flag or an environment variable holds it as well as the file).
pub struct List;

impl Form<Vec<String>> for List {
    type File = String;
    fn read(file: String) -> Vec<String> {
        file.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect()
    }
    fn write(value: &Vec<String>) -> Option<String> {
        (!value.is_empty()).then(|| value.join(","))
    }
}

/// A setting that may be left unset.
pub struct Optional;

impl<T: Clone> Form<Option<T>> for Optional {
    type File = T;
    fn read(file: T) -> Option<T> {
        Some(file)
    }
    fn write(value: &Option<T>) -> Option<T> {
        value.clone()
    }
}

/// What the documentation of one setting says, for the help text and the
/// tests that hold the example file and the README to the table.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    /// The file key, e.g. `max_attempts`.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The doc line.
    pub doc: &'static str,
    /// How the default is described when it is not a plain value (it
    /// depends on the machine, or the setting is unset by default).
    pub default_text: Option<&'static str>,
}

impl SettingDoc {
    /// The flag, e.g. `--max-attempts`.
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
}

/// A value as the help text, README and `config check` show it: strings
/// without quotes, everything else as TOML writes it.
pub fn render(value: &impl serde::Serialize) -> String {
    match toml::Value::try_from(value) {
        Ok(toml::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

/// The check of a setting that must be at least `min`.
pub fn at_least<T: PartialOrd + Display>(min: T) -> impl Fn(&T) -> Result<(), String> {
    move |value| {
        if *value < min {
            return Err(format!("must be at least {min}"));
        }
        Ok(())
    }
}

/// The check of a duration that must not be zero.
pub fn not_zero(value: &Duration) -> Result<(), String> {
    if value.is_zero() {
        return Err("must be above 0".into());
    }
    Ok(())
}

/// The check of a list of origins: each `*`, or `http`/`https`, `://`, a
/// host and an optional port, with no path (a browser's `Origin` header).
pub fn origins(value: &Vec<String>) -> Result<(), String> {
    for origin in value {
        if origin == "*" {
            continue;
        }
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let valid = host.is_some_and(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
        if !valid {
            return Err(format!(
                "has {origin:?}, which is not an origin (scheme://host[:port], no path, or *)"
            ));
        }
    }
    Ok(())
}

/// The check of an optional setting: `check` on its value when it is set.
pub fn unless_unset(
    check: impl Fn(&str) -> Result<(), String>,
) -> impl Fn(&Option<String>) -> Result<(), String> {
    move |value| value.as_deref().map_or(Ok(()), &check)
}

/// The check of a setting any value of its type is fine for.
pub fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

/// The help line of a flag: the doc comment's lines joined, then the default.
pub fn help(doc: &str, default: String) -> String {
    let line = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{line} [default: {default}]")
}
