//! HTTP semantics clients rely on: the `Bearer` scheme in any case, HEAD
//! wherever GET is answered, exactly one `Host` in HTTP/1.1, and no body
//! framing other than `chunked`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` as raw bytes and reads the answer until the server closes
/// or goes quiet; returns its status and the whole text.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// The JSON body of a raw answer.
fn json_body(text: &str) -> Value {
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "case");
    let t = TestServer::start(test_config(dir.path())).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = t
            .client
            .get(t.url("/uploads"))
            .header("authorization", format!("{scheme} {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let response = t
        .client
        .get(t.url("/uploads"))
        .header("authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    t.server.shutdown().await;
}

/// `HEAD path` over HTTP/2 (prior knowledge); its status and whatever body came.
async fn head_over_http2(addr: std::net::SocketAddr, path: &str, key: &str) -> (u16, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = warp::http::Request::head(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("HEAD {path}: {e}")));
    }
    (status, bytes)
}

#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "head");
    let t = TestServer::start(test_config(dir.path())).await;
    let (code, created) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{created}");
    let id = created["data"]["id"].as_str().unwrap();
    // A record that changes between the GET and the HEAD (progress while it
    // is processing) would have another length: compare a settled one.
    wait_terminal(&t.client, &t.base, &key, id).await;
    let addr = t.server.addr();
    let paths = [
        format!("/api/client/v1/uploads/{id}"),
        "/api/client/v1/uploads".to_string(),
        "/api/client/v1/openapi.json".to_string(),
        "/healthz".to_string(),
        "/readyz".to_string(),
        "/metrics".to_string(),
    ];
    for path in paths {
        let url = format!("http://{addr}{path}");
        let got = t.client.get(&url).bearer_auth(&key).send().await.unwrap();
        let get_status = got.status();
        let get_type = got.headers().get("content-type").cloned();
        let get_length = got.bytes().await.unwrap().len();
        let head = t.client.head(&url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(head.status(), get_status, "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type").cloned(),
            get_type,
            "HEAD {path}"
        );
        if path != "/metrics" {
            // (The metrics change between two scrapes.)
            assert_eq!(
                head.headers()["content-length"],
                get_length.to_string().as_str(),
                "HEAD {path}"
            );
        }
        // Over HTTP/2 the answer has no body either (hyper leaves it out
        // only for HTTP/1); a body would be a protocol error.
        let (status, body) = head_over_http2(addr, &path, &key).await;
        assert_eq!(status, get_status.as_u16(), "HTTP/2 HEAD {path}");
        assert!(body.is_empty(), "HTTP/2 HEAD {path}: {body:?}");
    }
    // A method no route takes still says what is allowed, HEAD included.
    let response = t
        .client
        .delete(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    t.server.shutdown().await;
}

#[tokio::test]
async fn an_http11_request_needs_exactly_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    let addr = t.server.addr();

    let (status, text) = raw(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(json_body(&text)["code"], "bad_request");

    let (status, text) = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(json_body(&text)["code"], "bad_request");

    let (status, text) = raw(addr, b"GET /healthz HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    // HTTP/1.0 has no such rule.
    let (status, text) = raw(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "te");
    let t = TestServer::start(test_config(dir.path())).await;
    let addr = t.server.addr();
    let video = std::fs::read(fixture("sample.mp4")).unwrap();
    let boundary = "vidpipe-test-boundary";
    let mut form = Vec::new();
    form.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nroot\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\
             Content-Type: video/mp4\r\n\r\n"
        )
        .as_bytes(),
    );
    form.extend_from_slice(&video);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    // The form as one chunk, under `coding`.
    let request = |coding: &str| {
        let mut request = format!(
            "POST /api/client/v1/uploads HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {key}\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\n\
             Transfer-Encoding: {coding}\r\n\r\n{:x}\r\n",
            form.len()
        )
        .into_bytes();
        request.extend_from_slice(&form);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        request
    };
    // Codings the server does not decode.
    for coding in ["gzip, chunked", "identity, chunked", "chunked, chunked"] {
        let (status, text) = raw(addr, &request(coding)).await;
        assert!(status == 501 || status == 400, "{coding}: {text}");
        if status == 501 {
            assert_eq!(json_body(&text)["code"], "unsupported_transfer_encoding");
        }
    }
    let (code, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing stored: {list}"
    );

    // Plain chunked is a normal upload.
    let (status, text) = raw(addr, &request("chunked")).await;
    assert_eq!(status, 202, "{text}");
    t.server.shutdown().await;
}
