//! Cross-origin requests on a real server: a preflight from a listed origin
//! is answered with no key, one from another origin (or with none listed)
//! is a 403; answers to a listed origin say it may read them and which
//! headers, the tus ones and `Location` among them; others say nothing.

mod common;

use common::tus::*;
use common::*;
use reqwest::Method;

const PAGE: &str = "https://app.example";

fn preflight(t: &TestServer, path: &str, origin: &str) -> reqwest::RequestBuilder {
    t.client
        .request(Method::OPTIONS, t.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization,tus-resumable,upload-offset,content-type",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_may_call_the_api_and_read_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "page");
    let mut config = test_config(dir.path());
    config.cors_origins = vec![PAGE.to_string(), "http://localhost:3000".to_string()];
    let t = TestServer::start(config).await;

    // The preflight needs no key.
    let allowed = preflight(&t, "/tus/3f1c0d8e-2f4b-4d7a-9a55-0c6f1b2e9d10", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], PAGE);
    for name in [
        "Authorization",
        "Tus-Resumable",
        "Upload-Offset",
        "Content-Type",
    ] {
        let listed = headers["access-control-allow-headers"].to_str().unwrap();
        assert!(listed.contains(name), "{name} in {listed}");
    }
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("PATCH"));
    assert!(headers.contains_key("access-control-max-age"));

    let refused = preflight(&t, "/tus", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "origin_not_allowed");

    // An answer to the page says what it may read: Location and the offset.
    let created = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("origin", PAGE)
        .header("upload-length", "10")
        .header(
            "upload-metadata",
            metadata(&[("filename", "a.mp4"), ("folder", "root")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["access-control-allow-origin"], PAGE);
    let exposed = created.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for name in [
        "Location",
        "Upload-Offset",
        "Tus-Resumable",
        "Upload-Expires",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    assert!(created
        .headers()
        .get_all("vary")
        .iter()
        .any(|v| v == "Origin"));
    // Errors too, so a page can read why.
    let unauthenticated = t
        .client
        .get(t.url("/uploads"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(
        unauthenticated.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    // Another origin's answer says nothing of CORS.
    let other = t
        .client
        .get(t.url("/uploads"))
        .bearer_auth(&key)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // Every answer varies by Origin, so that a cache keeps them apart.
    let vary = |response: &reqwest::Response| {
        response
            .headers()
            .get_all("vary")
            .iter()
            .any(|v| v == "Origin")
    };
    assert!(vary(&other));
    let no_origin = t
        .client
        .get(t.url("/uploads"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(vary(&no_origin));
    // An OPTIONS that is not a preflight is tus's own, with the key.
    let discovery = tus_request(&t, Method::OPTIONS, &t.url("/tus"), &key)
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(discovery.status(), 204);
    assert_eq!(discovery.headers()["tus-version"], "1.0.0");
    assert_eq!(discovery.headers()["access-control-allow-origin"], PAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_origin_listed_a_preflight_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "page");
    let t = TestServer::start(test_config(dir.path())).await;
    let refused = preflight(&t, "/tus", PAGE).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let answer = t
        .client
        .get(t.url("/uploads"))
        .bearer_auth(&key)
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}
