//! Configuration through the real `vidpipe` command: a TOML file with
//! environment and flag overrides, `vidpipe config check`, clear errors for
//! unknown keys and bad values, and complete `--help` texts.

use std::path::Path;
use std::process::{Command, Output};

/// `vidpipe ARGS` with `env` set and no other `VIDPIPE_*` variable.
fn vidpipe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vidpipe"));
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("VIDPIPE_")) {
        command.env_remove(name);
    }
    command.args(args).envs(env.iter().copied());
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("vidpipe.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// The effective settings printed by `config check`, parsed back.
fn check(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let out = vidpipe(&[&["config", "check"], args].concat(), env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    toml::from_str(&text(&out.stdout)).unwrap()
}

#[test]
fn check_prints_the_effective_settings_with_overrides_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[server]\ntranscoders = 3\nmax_attempts = 5\nlog_format = \"json\"\n\n[profile]\ncrf = 28\npreset = \"medium\"\n\n[media_limits]\nmax_duration_secs = 600.0\n",
    );
    let effective = check(&["--config", &file], &[]);
    assert_eq!(effective["server"]["transcoders"].as_integer(), Some(3));
    assert_eq!(effective["server"]["max_attempts"].as_integer(), Some(5));
    assert_eq!(effective["server"]["log_format"].as_str(), Some("json"));
    assert_eq!(
        effective["server"]["listen"].as_str(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(effective["profile"]["crf"].as_integer(), Some(28));
    assert_eq!(effective["profile"]["preset"].as_str(), Some("medium"));
    assert_eq!(
        effective["media_limits"]["max_duration_secs"].as_float(),
        Some(600.0)
    );

    // The environment overrides the file; a flag overrides both.
    let env = [
        ("VIDPIPE_CONFIG", file.as_str()),
        ("VIDPIPE_TRANSCODERS", "2"),
    ];
    let effective = check(&[], &env);
    assert_eq!(effective["server"]["transcoders"].as_integer(), Some(2));
    assert_eq!(effective["server"]["max_attempts"].as_integer(), Some(5));
    let effective = check(&["--transcoders", "1", "--log-format", "text"], &env);
    assert_eq!(effective["server"]["transcoders"].as_integer(), Some(1));
    assert_eq!(effective["server"]["log_format"].as_str(), Some("text"));

    // The metrics token is never printed.
    let effective = check(&["--metrics-token", "s3cret"], &[]);
    assert_eq!(
        effective["server"]["metrics_token"].as_str(),
        Some("<redacted>")
    );
}

#[test]
fn unknown_keys_and_bad_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 7] = [
        (
            "[server]\nlisten_port = 8080\n",
            &["unknown field `listen_port`", "line 2"],
        ),
        ("[servre]\n", &["unknown field `servre`"]),
        (
            "[profile]\nthreads = 2\nbogus = true\n",
            &["unknown field `bogus`", "line 3"],
        ),
        (
            "[server]\nmax_attempts = \"three\"\n",
            &["max_attempts", "line 2"],
        ),
        ("[server]\nlisten = \"localhost\"\n", &["listen", "line 2"]),
        ("[profile]\ncrf = 60\n", &["profile.crf must be 0 to 51"]),
        (
            "[server]\nmax_queued_jobs = 0\n",
            &["max_queued_jobs must be at least 1"],
        ),
    ];
    for (body, expected) in cases {
        let file = write_config(dir.path(), body);
        for command in [&["config", "check"][..], &["serve"][..]] {
            let out = vidpipe(&[command, &["--config", &file]].concat(), &[]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command:?} {body:?}: {stderr}");
            assert!(stderr.starts_with("error: "), "{stderr}");
            for needle in expected {
                assert!(
                    stderr.contains(needle),
                    "{body:?}: {needle:?} not in {stderr}"
                );
            }
        }
    }

    let missing = dir.path().join("missing.toml").display().to_string();
    let out = vidpipe(&["config", "check", "--config", &missing], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read config file"));

    // Bad values from the environment and flags are refused by the parser.
    let out = vidpipe(&["config", "check"], &[("VIDPIPE_TRANSCODERS", "many")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--transcoders"),
        "{}",
        text(&out.stderr)
    );
    let out = vidpipe(&["config", "check", "--log-format", "xml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = vidpipe(&["config", "check", "--log-filter", "vidpipe=[[["], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("log_filter"));
}

#[test]
fn the_sample_config_is_printed_and_valid() {
    let out = vidpipe(&["config", "example"], &[]);
    assert!(out.status.success());
    let sample = text(&out.stdout);
    let in_repo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("vidpipe.example.toml"))
            .unwrap();
    assert_eq!(sample, in_repo);
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), &sample);
    check(&["--config", &file], &[]);
}

#[test]
fn key_commands_take_the_data_dir_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-file");
    let file = write_config(
        dir.path(),
        &format!("[server]\ndata_dir = {:?}\n", data.display().to_string()),
    );
    let out = vidpipe(&["keys", "create", "--config", &file, "--name", "a"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(data.join("keys.redb").exists());
    let out = vidpipe(&["keys", "list"], &[("VIDPIPE_CONFIG", &file)]);
    assert!(text(&out.stdout).contains(" a\n"), "{}", text(&out.stdout));
}

/// Every option in a help text states its default and environment variable.
fn assert_options_documented(args: &[&str], exempt: &[&str]) {
    let out = vidpipe(args, &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    let mut options = 0;
    let blocks: Vec<&str> = help.split("\n      --").skip(1).collect();
    for block in blocks {
        let name = block.split_whitespace().next().unwrap();
        if exempt.contains(&name) || name == "help" {
            continue;
        }
        options += 1;
        assert!(
            block.contains("[default: "),
            "{args:?} --{name}: no default"
        );
        assert!(
            block.contains("[env: VIDPIPE_"),
            "{args:?} --{name}: no env"
        );
    }
    assert!(options > 0, "{help}");
}

#[test]
fn every_help_documents_defaults_and_environment() {
    let out = vidpipe(&["--help"], &[]);
    let help = text(&out.stdout);
    for command in ["serve", "config", "keys", "transcode"] {
        assert!(help.contains(command), "{help}");
    }
    assert_options_documented(&["serve", "--help"], &[]);
    assert_options_documented(&["config", "check", "--help"], &[]);
    assert_options_documented(&["keys", "create", "--help"], &["name"]);
    assert_options_documented(&["keys", "list", "--help"], &[]);
    assert_options_documented(&["keys", "revoke", "--help"], &[]);
    assert_options_documented(&["transcode", "--help"], &[]);
}

/// The cells of the README's `[server]` table, backticks removed.
fn readme_server_rows(readme: &str) -> Vec<Vec<String>> {
    let start = readme
        .find("The `[server]` table")
        .expect("README has the [server] table");
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            row.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().replace('`', ""))
                .collect()
        })
        .collect()
}

#[test]
fn the_readme_documents_every_setting_at_its_default() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let defaults = check(&[], &[]);
    let rows = readme_server_rows(&readme);
    let settings = vidpipe::config::SERVER_SETTINGS;
    let keys: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let expected: Vec<&str> = settings.iter().map(|s| s.key).collect();
    assert_eq!(keys, expected, "the README's [server] table, in file order");
    for (row, setting) in rows.iter().zip(settings) {
        assert_eq!(row[1], setting.flag(), "{}", setting.key);
        assert_eq!(row[2], setting.env, "{}", setting.key);
        let documented = row[3].split(" (").next().unwrap();
        match setting.default_text {
            Some(text) => assert_eq!(row[3], text.replace('`', ""), "{}", setting.key),
            None => {
                let value = &defaults["server"][setting.key];
                let rendered = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(documented, rendered, "{}", setting.key);
            }
        }
    }
    // The file-only tables, as the prose lists them: "`key` value".
    for table in ["profile", "media_limits"] {
        for (key, value) in defaults[table].as_table().unwrap() {
            if key == "threads" {
                continue;
            }
            let at = readme
                .find(&format!("`{key}` "))
                .unwrap_or_else(|| panic!("{table}.{key} not in the README"));
            let word: String = readme[at + key.len() + 3..]
                .chars()
                .take_while(|c| !matches!(c, ',' | ')' | ' ' | '\n'))
                .collect::<String>()
                .replace('`', "");
            let same = match value {
                toml::Value::String(s) => word == *s,
                toml::Value::Boolean(b) => word == b.to_string(),
                number => {
                    word.parse::<f64>().ok()
                        == number.as_float().or(number.as_integer().map(|n| n as f64))
                }
            };
            assert!(
                same,
                "{table}.{key}: README says {word}, the default is {value}"
            );
        }
    }
}
