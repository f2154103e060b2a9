//! What a client may name and how it is told when it gets a name wrong:
//! form parts, file names, folders, callback URLs and upload ids, over HTTP
//! against a real server. Forms are written by hand, as no client library
//! sends a part without `Content-Disposition` or a file name that is not UTF-8.

mod common;

use common::*;
use serde_json::Value;

const BOUNDARY: &str = "vidpipe-test-boundary";

/// One part of a form: its header lines, then its data.
fn part(headers: &[&[u8]], data: &[u8]) -> Vec<u8> {
    let mut bytes = format!("--{BOUNDARY}\r\n").into_bytes();
    for header in headers {
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// A text field named `name`.
fn text(name: &str, value: &str) -> Vec<u8> {
    let disposition = format!("Content-Disposition: form-data; name=\"{name}\"");
    part(&[disposition.as_bytes()], value.as_bytes())
}

/// A file part carrying the sample clip, under a raw `Content-Disposition` value.
fn file(disposition: &[u8]) -> Vec<u8> {
    let header = [b"Content-Disposition: ".as_slice(), disposition].concat();
    part(&[&header, b"Content-Type: video/mp4"], &sample())
}

/// The `video` part with `filename` as raw bytes.
fn video(filename: &[u8]) -> Vec<u8> {
    file(
        &[
            b"form-data; name=\"video\"; filename=\"".as_slice(),
            filename,
            b"\"",
        ]
        .concat(),
    )
}

fn sample() -> Vec<u8> {
    std::fs::read(fixture("sample.mp4")).unwrap()
}

/// The parts, closed.
fn form(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = parts.concat();
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post(t: &TestServer, key: &str, body: Vec<u8>) -> (u16, Value) {
    let response = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Asserts a 422 whose one error is `message` on `field`, and that the
/// top-level message is that one too.
fn assert_refused(answer: &(u16, Value), field: &str, message: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 422, "{body}");
    assert_eq!(body["code"], "validation_failed", "{body}");
    assert_eq!(body["errors"][field][0], message, "{body}");
    assert_eq!(body["message"], message, "{body}");
}

/// Asserts that the refused requests left no upload behind.
async fn assert_none_accepted(t: &TestServer, key: &str) {
    let (_, list) = get_json(&t.client, &t.url("/uploads"), key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
}

async fn start() -> (TestServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;
    (t, key, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misnamed_and_unnamed_parts_are_told_what_is_wrong() {
    let (t, key, _dir) = start().await;

    // A video under the wrong case: larger than a text field, so it used to
    // be told that "the form field is too long".
    let answer = post(
        &t,
        &key,
        form(&[
            text("folder", "root"),
            file(b"form-data; name=\"VIDEO\"; filename=\"a.mp4\""),
        ]),
    )
    .await;
    assert_refused(
        &answer,
        "video",
        "The form has a part named VIDEO; field names are case-sensitive: use video.",
    );
    // A small one, which used to be ignored.
    let answer = post(&t, &key, form(&[text("Folder", "root"), video(b"a.mp4")])).await;
    assert_refused(
        &answer,
        "folder",
        "The form has a part named Folder; field names are case-sensitive: use folder.",
    );

    // A part with no Content-Disposition, large or small, beside a valid form.
    for data in [sample(), b"x".to_vec()] {
        let stray = part(&[b"Content-Type: video/mp4"], &data);
        let (status, body) = post(
            &t,
            &key,
            form(&[text("folder", "root"), video(b"a.mp4"), stray]),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "malformed_body", "{body}");
        assert_eq!(
            body["message"],
            "The request body is not valid multipart form data: a part has no Content-Disposition header.",
        );
    }
    // One whose Content-Disposition names no field.
    let (status, body) = post(
        &t,
        &key,
        form(&[
            text("folder", "root"),
            file(b"form-data; filename=\"a.mp4\""),
        ]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "malformed_body", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("has no name"), "{message}");

    assert_none_accepted(&t, &key).await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_that_are_not_utf8_or_hold_control_characters_are_refused() {
    let (t, key, _dir) = start().await;
    let folder = text("folder", "root");

    // Latin-1, as an old client might send it.
    let answer = post(&t, &key, form(&[folder.clone(), video(b"clip\xe9.mp4")])).await;
    assert_refused(&answer, "video", "The video's filename must be UTF-8.");

    // A tab, NEL and CSI (C1 controls in UTF-8): header parsers let them through.
    for name in ["a\tb.mp4", "a\u{85}b.mp4", "a\u{9b}31mb.mp4"] {
        let answer = post(&t, &key, form(&[folder.clone(), video(name.as_bytes())])).await;
        assert_refused(
            &answer,
            "video",
            "The video's filename must not contain control characters.",
        );
    }

    // RFC 7578 forbids the RFC 5987 form; it used to read as "not a file".
    let answer = post(
        &t,
        &key,
        form(&[
            folder.clone(),
            file(b"form-data; name=\"video\"; filename*=utf-8''%C3%A9t%C3%A9.mp4"),
        ]),
    )
    .await;
    assert_refused(
        &answer,
        "video",
        "The video's filename must be sent as filename=\"...\" in UTF-8; filename* is not supported.",
    );

    assert_none_accepted(&t, &key).await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_controls_are_refused_in_file_names_and_folders() {
    let (t, key, _dir) = start().await;
    let bidi = ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}');
    for c in bidi {
        // "clip<RLO>4pm.exe" shows as "clipexe.mp4".
        let name = format!("clip{c}4pm.exe");
        let answer = post(
            &t,
            &key,
            form(&[text("folder", "root"), video(name.as_bytes())]),
        )
        .await;
        assert_refused(
            &answer,
            "video",
            "The video's filename must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069).",
        );

        let folder = format!("root/a{c}b");
        let answer = post(&t, &key, form(&[text("folder", &folder), video(b"a.mp4")])).await;
        assert_refused(
            &answer,
            "folder",
            "The folder must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069).",
        );
    }
    assert_none_accepted(&t, &key).await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_segments_may_not_be_blank_or_padded_with_spaces() {
    let (t, key, _dir) = start().await;
    for folder in ["root/ ", "root/   ", "root/a/ /b"] {
        let answer = post(&t, &key, form(&[text("folder", folder), video(b"a.mp4")])).await;
        assert_refused(
            &answer,
            "folder",
            "The folder must not contain a segment that is only spaces.",
        );
    }
    for folder in ["root/ a", "root/a ", "root/a /b", "root/a/ b"] {
        let answer = post(&t, &key, form(&[text("folder", folder), video(b"a.mp4")])).await;
        assert_refused(
            &answer,
            "folder",
            "The folder's segments must not start or end with a space.",
        );
    }
    // Spaces inside a segment are still fine.
    let (status, body) = post(
        &t,
        &key,
        form(&[text("folder", "root/my clips/a b"), video(b"a.mp4")]),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["folder"], "root/my clips/a b");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_and_folders_are_stored_in_nfc() {
    let (t, key, _dir) = start().await;
    // "e" + COMBINING ACUTE ACCENT, as macOS file systems write it.
    let decomposed = "Cafe\u{301}";
    let composed = "Caf\u{e9}";
    let name = format!("{decomposed}.mp4");
    let folder = format!("root/{decomposed}");
    let (status, body) = post(
        &t,
        &key,
        form(&[text("folder", &folder), video(name.as_bytes())]),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    for data in [
        body["data"].clone(),
        get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key)
            .await
            .1["data"]
            .clone(),
    ] {
        assert_eq!(data["filename"], format!("{composed}.mp4"), "{data}");
        assert_eq!(data["folder"], format!("root/{composed}"), "{data}");
    }
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_on_port_0_are_refused() {
    let (t, key, _dir) = start().await;
    for url in [
        "http://93.184.216.34:0/hook",
        "https://hooks.example.com:00/",
    ] {
        let answer = post(
            &t,
            &key,
            form(&[
                text("folder", "root"),
                text("callback_url", url),
                video(b"a.mp4"),
            ]),
        )
        .await;
        assert_refused(
            &answer,
            "callback_url",
            "The callback url must not use port 0.",
        );
    }
    assert_none_accepted(&t, &key).await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_ids_are_read_only_in_the_hyphenated_form() {
    let (t, key, _dir) = start().await;
    let (status, body) = post(&t, &key, form(&[text("folder", "root"), video(b"a.mp4")])).await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();

    for shown in [id.clone(), id.to_uppercase()] {
        let (status, body) = get_json(&t.client, &t.url(&format!("/uploads/{shown}")), &key).await;
        assert_eq!(status, 200, "{shown}: {body}");
        assert_eq!(body["data"]["id"], id.as_str());
    }
    let simple = id.replace('-', "");
    for other in [
        simple.clone(),
        simple.to_uppercase(),
        format!("urn:uuid:{id}"),
        format!("%7B{id}%7D"),
    ] {
        let (status, body) = get_json(&t.client, &t.url(&format!("/uploads/{other}")), &key).await;
        assert_eq!(status, 404, "{other}: {body}");
        assert_eq!(body["code"], "not_found", "{other}: {body}");
    }
    t.server.shutdown().await;
}
