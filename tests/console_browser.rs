//! The web console, used the way a person uses it: in Debian's Chromium,
//! driven over WebDriver (chromedriver, through fantoccini), against a real
//! server and real transcodes. Sign in, upload a clip, watch its row go from
//! pending through processing to completed without a reload, play it, hover
//! the seek bar for a storyboard tile, delete it; a reload mid-upload
//! resumes; a hostile filename shows as text; keyboard, a narrow screen and
//! the browser console. The screenshots of `docs/` come from these runs.
//!
//! The tests, in file order: `a_person_signs_in_uploads_watches_plays_and_deletes`
//! (the main path, and most screenshots), `an_upload_resumes_after_a_reload_and_a_hostile_name_stays_text`
//! (over `slow_proxy`), `the_console_works_by_keyboard_and_on_a_narrow_screen`
//! (with `CONTRAST`), `filters_pages_cancel_and_retry_from_the_page`,
//! `the_console_is_served_from_the_binary_with_its_own_origin_only` and
//! `an_upload_plays_in_the_console_while_it_is_processed` (the preview).
//! Shared steps: `clip`, `sign_in` and `ROW` at the top; `post`, `click`
//! and `row_ids` before the filters test; the browser itself is
//! `common/browser.rs`.

#[path = "common/browser.rs"]
mod browser;
mod common;
mod synth;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::Browser;
use common::*;
use fantoccini::actions::{InputSource, KeyAction, KeyActions, MouseActions, PointerAction};
use fantoccini::Locator;
use serde_json::{json, Value};
use synth::{AudioTrack, Clip, VideoTrack};

/// How long a transcode of the test clips may take on two busy cores.
const PROCESSING: Duration = Duration::from_secs(120);

/// A clip with sound, long enough that its processing is seen to move: a
/// keyframe only every 10 s, so that it is encoded, not copied (passthrough
/// needs one at least every two segments).
fn clip(dir: &Path, name: &str, seconds: f64, crf: &'static str) -> std::path::PathBuf {
    let mut video = VideoTrack::h264(854, 480, 25);
    video.options = vec![
        ("preset", "ultrafast"),
        ("crf", crf),
        ("g", "250"),
        ("x264-params", "scenecut=0"),
    ];
    let clip = Clip {
        audio: vec![AudioTrack::new("aac", 2, 44_100)],
        ..Clip::mp4(video, seconds)
    };
    let path = dir.join(name);
    synth::write(&path, &clip);
    path
}

/// Opens the console at `origin` and signs in with `key`.
async fn sign_in(b: &Browser, origin: &str, key: &str) {
    b.client.goto(&format!("{origin}/")).await.unwrap();
    let field = b
        .client
        .wait()
        .for_element(Locator::Id("key"))
        .await
        .unwrap();
    field.send_keys(key).await.unwrap();
    b.client
        .find(Locator::Css("#sign-in-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until(
        "the console after sign-in",
        Duration::from_secs(10),
        "return !document.getElementById('app').hidden && document.getElementById('live').textContent === 'Live';",
    )
    .await;
}

/// The row of upload `id` as the page shows it, or null.
const ROW: &str = r#"
    const el = document.querySelector(`li.upload[data-id="${arguments[0]}"]`);
    if (!el) return null;
    const bar = el.querySelector('progress');
    return {
        status: Number(el.dataset.status),
        progress: bar ? Number(bar.value) : null,
        name: el.querySelector('.name').textContent,
    };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_uploads_watches_plays_and_deletes() {
    if !browser::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "console-demo");
    let t = TestServer::start(test_config(dir.path())).await;
    let origin = format!("http://{}", t.server.addr());
    let video = clip(dir.path(), "beach day.mp4", 16.0, "30");
    let b = Browser::start(1280, 900).await;
    let shots = browser::docs_dir();

    // `/` leads to the sign-in form; a wrong key is refused on the page.
    b.client.goto(&format!("{origin}/")).await.unwrap();
    let field = b
        .client
        .wait()
        .for_element(Locator::Id("key"))
        .await
        .unwrap();
    assert!(b
        .client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/"));
    b.screenshot(&shots.join("console-sign-in.png")).await;
    field.send_keys("sk-not-a-key").await.unwrap();
    field.send_keys("\u{E007}").await.unwrap(); // Enter
    let refused = b
        .until(
            "the refusal",
            Duration::from_secs(10),
            "return document.getElementById('sign-in-error').textContent || null;",
        )
        .await;
    assert!(refused.as_str().unwrap().contains("not valid"), "{refused}");
    // The refused key is answered 401, which the browser logs as a failed load.
    b.logs().await;
    field.clear().await.unwrap();
    field.send_keys(&key).await.unwrap();
    field.send_keys("\u{E007}").await.unwrap();
    b.until(
        "the console after sign-in",
        Duration::from_secs(10),
        "return document.getElementById('live').textContent === 'Live';",
    )
    .await;
    let who = b
        .js("return document.getElementById('who').textContent;", vec![])
        .await;
    assert!(who.as_str().unwrap().contains("console-demo"), "{who}");
    // The key is in the tab's session storage, nowhere in the URL.
    let url = b.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(&key), "{url}");
    b.js("window.notReloaded = true; return null;", vec![])
        .await;

    // Upload into a folder through the file picker.
    let folder = b.client.find(Locator::Id("folder")).await.unwrap();
    folder.clear().await.unwrap();
    folder.send_keys("root/holidays").await.unwrap();
    let picker = b.client.find(Locator::Id("files")).await.unwrap();
    picker.send_keys(video.to_str().unwrap()).await.unwrap();

    // Its row appears from the events stream and moves without a reload.
    let id = b
        .until(
            "the upload's row",
            Duration::from_secs(30),
            "const el = document.querySelector('li.upload'); return el && el.dataset.id;",
        )
        .await;
    let id = id.as_str().unwrap().to_string();
    let deadline = Instant::now() + PROCESSING;
    let mut statuses = Vec::new();
    let mut progress_while_processing = BTreeSet::new();
    let mut shot_processing = false;
    loop {
        let row = b.js(ROW, vec![json!(id)]).await;
        let status = row["status"].as_u64().unwrap();
        if statuses.last() != Some(&status) {
            statuses.push(status);
        }
        if status == 3 {
            progress_while_processing.insert(row["progress"].as_u64().unwrap());
            if !shot_processing && row["progress"].as_u64().unwrap() > 0 {
                b.screenshot(&shots.join("console-processing.png")).await;
                shot_processing = true;
            }
        }
        if status == 6 || status == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "still {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&6), "{statuses:?}");
    assert!(statuses.contains(&3), "processing was shown: {statuses:?}");
    assert!(
        progress_while_processing.len() >= 2,
        "the progress bar moved: {progress_while_processing:?}"
    );
    let not_reloaded = b.js("return window.notReloaded === true;", vec![]).await;
    assert_eq!(not_reloaded, json!(true), "the page was not reloaded");
    let row = b.js(ROW, vec![json!(id)]).await;
    assert_eq!(row["name"], "beach day.mp4");
    let source = b
        .js(
            &format!(
                "return document.querySelector(\"li.upload[data-id='{id}'] .source\").textContent;"
            ),
            vec![],
        )
        .await;
    assert!(
        source.as_str().unwrap().starts_with("854×480 · 0:16"),
        "{source}"
    );
    b.screenshot(&shots.join("console-uploads.png")).await;

    // Play it: HLS through hls.js, with a quality menu; time advances.
    b.client
        .find(Locator::Css(&format!(
            "li.upload[data-id='{id}'] button.name"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until(
        "the player",
        Duration::from_secs(10),
        "return document.getElementById('details').open && !document.getElementById('player-box').hidden;",
    )
    .await;
    let levels = b
        .until(
            "the quality menu",
            Duration::from_secs(20),
            "const q = document.getElementById('quality'); return !q.disabled && q.options.length;",
        )
        .await;
    assert!(
        levels.as_u64().unwrap() >= 2,
        "Auto and the renditions: {levels}"
    );
    b.js(
        "const v = document.getElementById('player'); v.muted = true; v.play(); return null;",
        vec![],
    )
    .await;
    b.until(
        "playback to advance",
        Duration::from_secs(20),
        "return document.getElementById('player').currentTime > 1.5;",
    )
    .await;
    let player = b
        .js(
            "const v = document.getElementById('player'); return {src: v.currentSrc, paused: v.paused, error: v.error && v.error.code};",
            vec![],
        )
        .await;
    assert_eq!(player["error"], Value::Null, "{player}");
    let shown = b
        .js("return document.getElementById('details').innerText + document.getElementById('uploads').innerText;", vec![])
        .await;
    for word in ["null", "undefined", "NaN", "[object"] {
        assert!(
            !shown.as_str().unwrap().contains(word),
            "{word} shown: {shown}"
        );
    }
    assert!(
        player["src"].as_str().unwrap().starts_with("blob:"),
        "hls.js feeds the element: {player}"
    );

    // Hovering the seek bar shows the storyboard tile of that moment.
    let scrub = b.client.find(Locator::Id("scrub")).await.unwrap();
    let (_, _, width, _) = scrub.rectangle().await.unwrap();
    let early = tile_at(&b, &scrub, -width * 0.4).await;
    let late = tile_at(&b, &scrub, width * 0.4).await;
    assert!(
        early["image"].as_str().unwrap().contains("storyboard.jpg"),
        "{early}"
    );
    assert_ne!(early["cue"], late["cue"], "another moment, another tile");
    b.screenshot(&shots.join("console-player.png")).await;

    // Delete it, with a confirmation: the row goes, and so does the upload.
    b.client
        .find(Locator::Id("do-delete"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until(
        "the confirmation",
        Duration::from_secs(5),
        "return document.getElementById('confirm').open;",
    )
    .await;
    b.client
        .find(Locator::Id("confirm-yes"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until(
        "the row to go",
        Duration::from_secs(10),
        &format!("return !document.querySelector(\"li.upload[data-id='{id}']\");"),
    )
    .await;
    // The row may go a moment before the answer (the list redrawn from a
    // page read while the deletion commits); the upload goes within seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
        if code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there after the delete: {code}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.assert_no_console_errors("after upload, play and delete")
        .await;
    b.close().await;
}

/// Moves the pointer over the seek bar, `x` pixels from its centre, and
/// returns the storyboard tile then shown.
async fn tile_at(b: &Browser, scrub: &fantoccini::elements::Element, x: f64) -> Value {
    let hover = MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
        element: scrub.clone(),
        duration: Some(Duration::from_millis(50)),
        x,
        y: 0.0,
    });
    b.client.perform_actions(hover).await.unwrap();
    b.until(
        "a storyboard tile",
        Duration::from_secs(10),
        "const t = document.getElementById('tile'); return !t.hidden && t.dataset.cue && {cue: t.dataset.cue, image: getComputedStyle(t).backgroundImage, w: t.offsetWidth};",
    )
    .await
}

/// What crossed the slow link towards the server.
#[derive(Default)]
struct Crossed {
    /// Bytes.
    bytes: AtomicU64,
    /// The `Upload-Offset` of each `PATCH`, in order.
    patches: std::sync::Mutex<Vec<u64>>,
}

impl Crossed {
    /// Notes the `Upload-Offset` of a `PATCH` whose head is in `piece`
    /// (a request's head comes in one write, so in one read of the proxy).
    fn look_at(&self, piece: &[u8]) {
        let text = String::from_utf8_lossy(piece).to_ascii_lowercase();
        let Some(patch) = text.find("patch /") else {
            return;
        };
        let Some(at) = text[patch..].find("\r\nupload-offset: ") else {
            return;
        };
        let value = &text[patch + at + 18..];
        let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(offset) = digits.parse() {
            self.patches.lock().unwrap().push(offset);
        }
    }
}

/// A loopback proxy that passes at most `rate` bytes a second towards the
/// server, and counts them: a slow link the page's uploads go through.
async fn slow_proxy(upstream: std::net::SocketAddr, rate: u64) -> (String, Arc<Crossed>) {
    // A small receive window, so that the browser's progress is the link's
    // and not how much a large buffer took in at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(Crossed::default());
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate))
                            .await;
                        counter.look_at(&buf[..n]);
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        counter.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = to_server.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (origin, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_after_a_reload_and_a_hostile_name_stays_text() {
    if !browser::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "console-resume");
    let t = TestServer::start(test_config(dir.path())).await;
    let (origin, sent) = slow_proxy(t.server.addr(), 1_000_000).await;
    let hostile = "<img src=x onerror=alert(1)>.mp4";
    let video = clip(dir.path(), hostile, 6.0, "12");
    let size = std::fs::metadata(&video).unwrap().len();
    assert!(size > 3_000_000, "a few seconds over the slow link: {size}");
    let b = Browser::start(1280, 900).await;
    sign_in(&b, &origin, &key).await;

    // Start sending, and reload the page half-way.
    let picker = b.client.find(Locator::Id("files")).await.unwrap();
    picker.send_keys(video.to_str().unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.bytes.load(Ordering::Relaxed) < size / 2 {
        assert!(Instant::now() < deadline, "the upload did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.screenshot(&browser::docs_dir().join("console-upload.png"))
        .await;
    b.client.refresh().await.unwrap();
    let before_reload = sent.bytes.load(Ordering::Relaxed);
    let patches_before = sent.patches.lock().unwrap().len();

    // Still signed in (the tab's session storage); the page lists the
    // unfinished upload by its name, as text.
    b.until(
        "the console after the reload",
        Duration::from_secs(10),
        "return !document.getElementById('app').hidden;",
    )
    .await;
    let unfinished = b
        .until(
            "the unfinished upload",
            Duration::from_secs(10),
            "const u = document.getElementById('unfinished'); return !u.hidden && u.querySelector('.name').textContent;",
        )
        .await;
    assert_eq!(unfinished, json!(hostile));

    // The same file chosen again goes on from where it stopped.
    let picker = b.client.find(Locator::Id("files")).await.unwrap();
    picker.send_keys(video.to_str().unwrap()).await.unwrap();
    let resumed = b
        .until(
            "the transfer",
            Duration::from_secs(10),
            "const el = document.querySelector('li.transfer'); return el && (el.dataset.resumed || 'new');",
        )
        .await;
    assert_eq!(
        resumed,
        json!("true"),
        "tus-js-client resumed the stored upload"
    );
    let id = b
        .until(
            "the upload's row",
            Duration::from_secs(60),
            "const el = document.querySelector('li.upload'); return el && el.dataset.id;",
        )
        .await;
    let id = id.as_str().unwrap().to_string();
    let record = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(record["status"], 6, "{record}");
    assert_eq!(record["filename"], hostile);
    assert_eq!(record["size_bytes"], size);
    let total = sent.bytes.load(Ordering::Relaxed);
    // Resumed: the PATCHes after the reload go on from an offset the server
    // had, none from 0; so the file did not cross the link twice.
    let patches = sent.patches.lock().unwrap().clone();
    eprintln!("{total} bytes crossed the link for {size}, {before_reload} before the reload; PATCHes at {patches:?}");
    let after: Vec<u64> = patches[patches_before..].to_vec();
    assert!(
        !after.is_empty() && after.iter().all(|&at| at > 0),
        "{patches:?}"
    );
    assert!(
        total < size + before_reload,
        "{total} bytes crossed the link for {size}"
    );
    let (_, page) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        1,
        "one upload: {page}"
    );

    // The name is text: no alert, no element made of it.
    b.until(
        "the completed row",
        Duration::from_secs(30),
        &format!("const el = document.querySelector(\"li.upload[data-id='{id}']\"); return el && el.dataset.status === '6';"),
    )
    .await;
    assert!(b.client.get_alert_text().await.is_err(), "no alert is open");
    let injected = b
        .js(
            "return document.querySelectorAll('img[src=\"x\"], img:not([src])').length;",
            vec![],
        )
        .await;
    assert_eq!(injected, json!(0));
    let row = b.js(ROW, vec![json!(id)]).await;
    assert_eq!(row["name"], hostile);

    // A folder the server refuses: its message, as text, on the transfer.
    let folder = b.client.find(Locator::Id("folder")).await.unwrap();
    folder.clear().await.unwrap();
    folder.send_keys("root/<b>bold</b>").await.unwrap();
    let picker = b.client.find(Locator::Id("files")).await.unwrap();
    picker.send_keys(video.to_str().unwrap()).await.unwrap();
    let refusal = b
        .until(
            "the refusal",
            Duration::from_secs(20),
            "const el = document.querySelector('li.transfer.failed'); return el && el.querySelector('.transfer-line').textContent;",
        )
        .await;
    assert!(refusal.as_str().unwrap().contains("folder"), "{refusal}");
    let bold = b
        .js("return document.querySelectorAll('b').length;", vec![])
        .await;
    assert_eq!(bold, json!(0));
    // A file being sent can be cancelled: its transfer goes, and so do its
    // bytes on the server (the tus upload is terminated).
    let folder = b.client.find(Locator::Id("folder")).await.unwrap();
    folder.clear().await.unwrap();
    folder.send_keys("root/cancelled").await.unwrap();
    let picker = b.client.find(Locator::Id("files")).await.unwrap();
    picker.send_keys(video.to_str().unwrap()).await.unwrap();
    let tus_dir = dir.path().join("tus");
    let sending = || {
        std::fs::read_dir(&tus_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while sending() == 0 {
        assert!(Instant::now() < deadline, "the upload was not created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click(&b, "li.transfer:not(.failed) .transfer-foot button").await;
    b.until(
        "the cancelled transfer to go",
        Duration::from_secs(10),
        "return !document.querySelector('li.transfer:not(.failed)');",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sending() > 0 {
        assert!(
            Instant::now() < deadline,
            "the cancelled upload's bytes stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        1,
        "still one upload: {page}"
    );

    // The refused creation (422) is a failed load in the console; nothing else is.
    let logs = b.logs().await;
    let bad: Vec<_> = logs
        .iter()
        .filter(|(level, message)| {
            (level == "SEVERE" || level == "WARNING") && !message.contains("422")
        })
        .collect();
    assert!(bad.is_empty(), "the browser console: {logs:?}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_by_keyboard_and_on_a_narrow_screen() {
    if !browser::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "console-small");
    let t = TestServer::start(test_config(dir.path())).await;
    upload_to_end(&t, &key, "sample.mp4", "root/phone").await;
    let origin = format!("http://{}", t.server.addr());
    let b = Browser::start(360, 740).await;

    // Signed in by keyboard alone: the key, then Enter.
    b.client.goto(&format!("{origin}/console/")).await.unwrap();
    b.client
        .wait()
        .for_element(Locator::Id("key"))
        .await
        .unwrap();
    let focused = b
        .js(
            "document.getElementById('key').focus(); return document.activeElement.id;",
            vec![],
        )
        .await;
    assert_eq!(focused, json!("key"));
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("{key}\u{E007}"))
        .await
        .unwrap();
    b.until(
        "the uploaded video's row",
        Duration::from_secs(10),
        "const el = document.querySelector('li.upload'); return el && el.dataset.status === '6';",
    )
    .await;

    // Two files chosen at once: each has its transfer, and each becomes a row.
    let sample = std::fs::read(fixture("sample.mp4")).unwrap();
    let (one, two) = (dir.path().join("one.mp4"), dir.path().join("two.mp4"));
    std::fs::write(&one, &sample).unwrap();
    std::fs::write(&two, &sample).unwrap();
    let picker = b.client.find(Locator::Id("files")).await.unwrap();
    let both = format!("{}\n{}", one.display(), two.display());
    picker.send_keys(&both).await.unwrap();
    b.until(
        "two more completed rows",
        PROCESSING,
        "const done = [...document.querySelectorAll('li.upload')].filter((el) => el.dataset.status === '6'); return done.length === 3;",
    )
    .await;
    let names = b
        .js(
            "return [...document.querySelectorAll('li.upload .name')].map((el) => el.textContent).sort();",
            vec![],
        )
        .await;
    assert_eq!(names, json!(["one.mp4", "sample.mp4", "two.mp4"]));

    // Nothing wider than the screen.
    let widths = b
        .js(
            "return {page: document.documentElement.scrollWidth, screen: window.innerWidth};",
            vec![],
        )
        .await;
    assert_eq!(widths["screen"], 360, "{widths}");
    assert!(
        widths["page"].as_u64() <= widths["screen"].as_u64(),
        "no sideways scrolling at 360 px: {widths}"
    );
    b.screenshot(&browser::docs_dir().join("console-narrow.png"))
        .await;

    // Tab reaches the folder, the file chooser, the filters and the row.
    let mut reached = Vec::new();
    for _ in 0..25 {
        press(&b, '\u{E004}').await; // Tab
        let at = b
            .js(
                "const a = document.activeElement; return a.id || a.className || a.tagName;",
                vec![],
            )
            .await;
        reached.push(at.as_str().unwrap_or("").to_string());
    }
    for wanted in [
        "folder",
        "files",
        "filter-status",
        "filter-folder",
        "link name",
    ] {
        assert!(
            reached.iter().any(|r| r == wanted),
            "Tab reaches {wanted}: {reached:?}"
        );
    }
    // Enter on the row's name opens it; Escape closes it.
    let name = b
        .client
        .find(Locator::Css("li.upload button.name"))
        .await
        .unwrap();
    name.send_keys("\u{E007}").await.unwrap();
    b.until(
        "the details",
        Duration::from_secs(10),
        "return document.getElementById('details').open;",
    )
    .await;
    // The details fit the screen and are readable too.
    let low = b.js(CONTRAST, vec![]).await;
    assert_eq!(low, json!([]), "text below 4.5:1 contrast in the details");
    let wide = b
        .js(
            "const d = document.getElementById('details'); return d.scrollWidth > d.clientWidth || d.getBoundingClientRect().right > window.innerWidth;",
            vec![],
        )
        .await;
    assert_eq!(wide, json!(false), "the details fit 360 px");
    press(&b, '\u{E00C}').await; // Escape
    b.until(
        "the details to close",
        Duration::from_secs(5),
        "return !document.getElementById('details').open;",
    )
    .await;

    // Text is readable: WCAG AA contrast (4.5:1) for every text element shown.
    let low = b.js(CONTRAST, vec![]).await;
    assert_eq!(low, json!([]), "text below 4.5:1 contrast");
    b.assert_no_console_errors("on a narrow screen").await;
    b.close().await;
}

/// `POST /uploads` of `bytes` named `name` into `folder`; the new id.
async fn post(t: &TestServer, key: &str, bytes: Vec<u8>, name: &str, folder: &str) -> String {
    let response = t.post_form(key, video_form(bytes, name, folder)).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["data"]["id"].as_str().unwrap().to_string()
}

/// Clicks the element `css` finds. A list re-rendered by a live event
/// between the find and the click replaces the element: it is found again.
async fn click(b: &Browser, css: &str) {
    let mut tries = 0;
    loop {
        let found = b.client.find(Locator::Css(css)).await.unwrap();
        match found.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && tries < 10 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

/// The ids of the rows shown, top to bottom.
async fn row_ids(b: &Browser) -> Vec<String> {
    let ids = b
        .js(
            "return [...document.querySelectorAll('li.upload')].map((el) => el.dataset.id);",
            vec![],
        )
        .await;
    serde_json::from_value(ids).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pages_cancel_and_retry_from_the_page() {
    if !browser::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "console-lifecycle");
    let t = TestServer::start(test_config(dir.path())).await;
    // 21 files that are no video: each fails at once, with its reason.
    let text = std::fs::read(fixture("not-a-video.txt")).unwrap();
    let mut failed = Vec::new();
    for n in 0..21 {
        failed.push(
            post(
                &t,
                &key,
                text.clone(),
                &format!("notes-{n}.mp4"),
                "root/notes",
            )
            .await,
        );
    }
    for id in &failed {
        wait_terminal(&t.client, &t.base, &key, id).await;
    }
    let origin = format!("http://{}", t.server.addr());
    let b = Browser::start(1280, 900).await;
    sign_in(&b, &origin, &key).await;

    // A page of 20, newest first; the next one on demand.
    b.until(
        "the first page",
        Duration::from_secs(10),
        "return document.querySelectorAll('li.upload').length === 20 && !document.getElementById('more').hidden;",
    )
    .await;
    let first: Vec<String> = failed.iter().rev().take(20).cloned().collect();
    assert_eq!(row_ids(&b).await, first);
    let reason = b
        .js(
            "return document.querySelector('li.upload .reason').textContent;",
            vec![],
        )
        .await;
    assert!(!reason.as_str().unwrap().is_empty(), "the failure's reason");
    click(&b, "#more").await;
    b.until(
        "the second page",
        Duration::from_secs(10),
        "return document.querySelectorAll('li.upload').length === 21 && document.getElementById('more').hidden;",
    )
    .await;

    // A new upload in another folder arrives live at the top; the filters narrow the list.
    let long = clip(dir.path(), "long.mp4", 20.0, "30");
    let id = post(
        &t,
        &key,
        std::fs::read(&long).unwrap(),
        "long.mp4",
        "root/films",
    )
    .await;
    b.until(
        "the new row at the top",
        Duration::from_secs(20),
        &format!(
            "const el = document.querySelector('li.upload'); return el.dataset.id === '{id}';"
        ),
    )
    .await;
    let folder = b.client.find(Locator::Id("filter-folder")).await.unwrap();
    folder.send_keys("root/films").await.unwrap();
    click(&b, "#filters button[type=submit]").await;
    b.until(
        "the folder's uploads",
        Duration::from_secs(10),
        "return document.querySelectorAll('li.upload').length === 1;",
    )
    .await;
    assert_eq!(row_ids(&b).await, vec![id.clone()]);
    folder.clear().await.unwrap();
    b.client
        .find(Locator::Id("filter-status"))
        .await
        .unwrap()
        .select_by_value("7")
        .await
        .unwrap();
    click(&b, "#filters button[type=submit]").await;
    b.until(
        "the failed uploads",
        Duration::from_secs(10),
        &format!("return document.querySelectorAll('li.upload').length === 20 && !document.querySelector(\"li.upload[data-id='{id}']\");"),
    )
    .await;
    b.client
        .find(Locator::Id("filter-status"))
        .await
        .unwrap()
        .select_by_value("")
        .await
        .unwrap();
    click(&b, "#filters button[type=submit]").await;

    // Cancel it while it is processed: it fails as cancelled; retry: it runs again.
    let open = format!("li.upload[data-id='{id}'] button.name");
    b.until(
        "its row",
        Duration::from_secs(10),
        &format!("return !!document.querySelector(\"{open}\");"),
    )
    .await;
    click(&b, &open).await;
    b.until(
        "the cancel button",
        Duration::from_secs(30),
        "return document.getElementById('details').open && !document.getElementById('do-cancel').hidden;",
    )
    .await;
    click(&b, "#do-cancel").await;
    let cancelled = b
        .until(
            "the cancelled upload",
            Duration::from_secs(20),
            &format!("const el = document.querySelector(\"li.upload[data-id='{id}']\"); return el.dataset.status === '7' && !document.getElementById('do-retry').hidden && el.querySelector('.reason').textContent;"),
        )
        .await;
    assert!(!cancelled.as_str().unwrap().is_empty());
    let (_, record) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
    assert_eq!(record["data"]["error"]["code"], "cancelled");
    click(&b, "#do-retry").await;
    b.until(
        "the retried upload at work",
        Duration::from_secs(20),
        &format!("const el = document.querySelector(\"li.upload[data-id='{id}']\"); return ['1', '3'].includes(el.dataset.status);"),
    )
    .await;
    let record = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(record["status"], 6, "{record}");
    b.until(
        "the completed row",
        Duration::from_secs(20),
        &format!(
            "return document.querySelector(\"li.upload[data-id='{id}']\").dataset.status === '6';"
        ),
    )
    .await;
    b.assert_no_console_errors("after paging, filters, cancel and retry")
        .await;
    b.close().await;
}

/// One key pressed and released where the focus is, as a keyboard does.
async fn press(b: &Browser, key: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    b.client.perform_actions(keys).await.unwrap();
}

/// Every visible element with text of its own whose colour against the
/// background behind it is under 4.5:1 (WCAG 2 relative luminance).
const CONTRAST: &str = r#"
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
        for (; el; el = el.parentElement) {
            const c = rgb(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    const low = [];
    for (const el of document.querySelectorAll('body *')) {
        const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
        if (!own || !el.offsetParent && getComputedStyle(el).position !== 'fixed') continue;
        const style = getComputedStyle(el);
        if (style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
        const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        if (ratio < 4.5) low.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)} "${el.textContent.trim().slice(0, 30)}"`);
    }
    return low;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_with_its_own_origin_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "console-http");
    let t = TestServer::start(test_config(dir.path())).await;
    let origin = format!("http://{}", t.server.addr());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    for path in ["/", "/console"] {
        let response = client.get(format!("{origin}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 302, "{path}");
        assert_eq!(response.headers()["location"], "/console/");
    }
    let page = client
        .get(format!("{origin}/console/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "worker-src 'none'",
    ] {
        assert!(policy.contains(part), "{policy}");
    }
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy}"
    );
    let etag = page.headers()["etag"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    // Nothing from another origin: every script and style is the console's own.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
    for asset in [
        "console.js",
        "console.css",
        "vendor/tus.min.js",
        "vendor/hls.light.min.js",
        "icon.svg",
    ] {
        assert!(html.contains(asset), "{asset}");
        let response = client
            .get(format!("{origin}/console/{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    let again = client
        .get(format!("{origin}/console/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    let missing = client
        .get(format!("{origin}/console/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    // The page's sign-in: GET /me names the key; without one, 401.
    let (code, me) = get_json(&t.client, &t.url("/me"), &key).await;
    assert_eq!(code, 200);
    assert_eq!(me["data"]["name"], "console-http");
    let listed = vidpipe::store::keys::KeyFile::new(dir.path())
        .list()
        .unwrap();
    assert_eq!(me["data"]["id"], listed[0].id.as_str());
    let (code, refused) = get_json(&t.client, &t.url("/me"), "sk-unknown").await;
    assert_eq!(code, 401);
    assert_eq!(refused["code"], "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_plays_in_the_console_while_it_is_processed() {
    if !browser::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "console-preview");
    let mut config = test_config(dir.path());
    config.profile.hls_segment_secs = 2.0;
    let t = TestServer::start(config).await;
    let origin = format!("http://{}", t.server.addr());
    let video = clip(dir.path(), "long take.mp4", 40.0, "30");
    let b = Browser::start(1280, 900).await;
    sign_in(&b, &origin, &key).await;
    let id = post(
        &t,
        &key,
        std::fs::read(video).unwrap(),
        "long take.mp4",
        "root",
    )
    .await;

    // Once the record has a preview, the details play it through hls.js.
    let record_url = t.url(&format!("/uploads/{id}"));
    let deadline = Instant::now() + PROCESSING;
    loop {
        let (_, body) = get_json(&t.client, &record_url, &key).await;
        if !body["data"]["preview"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "no preview: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.until(
        "the row",
        Duration::from_secs(10),
        &format!("return !!document.querySelector(\"li.upload[data-id='{id}'] button.name\");"),
    )
    .await;
    click(&b, &format!("li.upload[data-id='{id}'] button.name")).await;
    b.until(
        "the preview's player",
        Duration::from_secs(10),
        "return !document.getElementById('player-box').hidden && !document.getElementById('preview-note').hidden;",
    )
    .await;
    b.js(
        "const v = document.getElementById('player'); v.muted = true; v.play(); return null;",
        vec![],
    )
    .await;
    let started = b
        .until(
            "the preview to play",
            Duration::from_secs(30),
            "const v = document.getElementById('player'); return v.currentTime > 1 && v.currentTime;",
        )
        .await;
    let (_, body) = get_json(&t.client, &record_url, &key).await;
    assert_ne!(body["data"]["status"], 6, "played before it was completed");
    // From the start of the video, not near the end of what is written.
    assert!(started.as_f64().unwrap() < 5.0, "started at {started}");
    let src = b
        .js(
            "return document.getElementById('player').currentSrc;",
            vec![],
        )
        .await;
    assert!(src.as_str().unwrap().starts_with("blob:"), "{src}");

    // Completed, the details play the finished ladder instead.
    let done = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(done["status"], 6, "{done}");
    b.until(
        "the finished ladder",
        Duration::from_secs(20),
        "return document.getElementById('preview-note').hidden && !document.getElementById('player-box').hidden;",
    )
    .await;
    b.assert_no_console_errors("playing a preview").await;
    b.close().await;
}
