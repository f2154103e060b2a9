//! The OpenAPI description: served, complete, and true of the live server
//! according to schemathesis.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;
use vidpipe::api::observe::{allowed_methods, route_template};

/// How long schemathesis may run before the test fails.
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(150);

fn repo_document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_repo_file_and_covers_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    let response = t.client.get(t.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    let doc = repo_document();
    assert_eq!(served, doc);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer");

    // Every path the server routes is described, with exactly the methods it takes.
    let paths = doc["paths"].as_object().unwrap();
    let mut routes: Vec<&str> = Vec::new();
    for (path, item) in paths {
        let route = route_template(&path.replace("{videoId}", "{id}"));
        assert_ne!(route, "unmatched", "{path} is not a route of the server");
        routes.push(route);
        let mut documented: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.as_str() != "parameters")
            .map(|k| k.to_uppercase())
            .collect();
        documented.sort();
        let mut served: Vec<String> = allowed_methods(route)
            .unwrap()
            .split(", ")
            .map(str::to_string)
            .collect();
        // HEAD is answered wherever GET is (RFC 9110 9.3.2); the document
        // lists it only where it has a handler of its own.
        served.retain(|m| m != "HEAD" || documented.iter().any(|d| d == "HEAD"));
        served.sort();
        assert_eq!(documented, served, "methods of {path}");
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} has no responses");
            let needs_key = path.starts_with("/api/client/v1/uploads")
                || path.starts_with("/api/client/v1/tus")
                || path.as_str() == "/api/client/v1/events"
                || path.as_str() == "/api/client/v1/me";
            assert_eq!(
                op.get("security").is_none(),
                needs_key,
                "{method} {path}: only the uploads API, its events and /me take the API key"
            );
        }
    }
    for route in vidpipe::api::observe::ROUTE_TEMPLATES {
        if route != "unmatched" {
            assert!(routes.contains(&route), "{route} is not documented");
        }
    }

    // A 405 names the methods the path takes.
    let response = t
        .client
        .delete(t.url("/uploads"))
        .bearer_auth("sk-x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST");
    t.server.shutdown().await;
}

/// The schemathesis command, if installed (`schemathesis`, or its short name `st`).
fn schemathesis() -> Option<&'static str> {
    ["schemathesis", "st"].into_iter().find(|cmd| {
        std::process::Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|out| {
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("version")
            })
    })
}

/// A schemathesis hook: a fresh `Idempotency-Key` on every request sent with one.
const FRESH_IDEMPOTENCY_KEYS: &str = r#"
import uuid

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # A case made to leave a header out is sent as made: an edit would
    # have schemathesis put the missing header back.
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    if str(getattr(data, "scenario", "")).upper().endswith("MISSING_PARAMETER"):
        return
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_difference_between_the_document_and_the_server() {
    let Some(st) = schemathesis() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "schemathesis is not installed; .ci/setup installs it (pip install schemathesis)"
        );
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "schemathesis");
    let t = TestServer::start(test_config(dir.path())).await;

    // A completed upload, so listings carry `source` and `playback` for the schema checks.
    let done = upload_to_end(&t, &key, "sample.mp4", "root/st").await;
    assert_eq!(done["status"], 6, "{done}");

    let origin = format!("http://{}", t.server.addr());
    let work = tempfile::tempdir().unwrap();
    // Each generated create gets an Idempotency-Key of its own: a key is
    // one request's, and schemathesis would send one key with other bodies
    // (rightly refused, 422; uploads_idempotency.rs tests that).
    std::fs::write(work.path().join("vidpipe_hooks.py"), FRESH_IDEMPOTENCY_KEYS).unwrap();
    let run = tokio::process::Command::new(st)
        .current_dir(work.path())
        .env("SCHEMATHESIS_HOOKS", "vidpipe_hooks")
        .args([
            "run",
            &format!("{origin}/api/client/v1/openapi.json"),
            "--url",
            &origin,
            "--header",
            &format!("Authorization: Bearer {key}"),
            // Every check except negative_data_rejection: the server ignores
            // form parts it does not know, on purpose, where the schema
            // only describes `video` and `folder`.
            // The tenant's event stream never ends by itself, and a fuzzer
            // reads each response to its end (uploads_events.rs tests it);
            // tus is a protocol of headers a schema cannot say (base64
            // metadata, offsets that must match), driven in uploads_tus.rs
            // by a real tus client and protocol tests.
            "--exclude-path-regex",
            "^/api/client/v1/(events|tus)",
            "--checks",
            "all",
            "--exclude-checks",
            "negative_data_rejection",
            "--max-examples",
            "25",
            "--seed",
            "20240811",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCHEMATHESIS_DEADLINE, run)
        .await
        .expect("schemathesis finished in time")
        .expect("schemathesis ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
    // Every operation but the document itself was exercised.
    let tested: usize = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no operation count in\n{stdout}"));
    assert!(tested >= 8, "{stdout}");
    t.server.shutdown().await;
}
