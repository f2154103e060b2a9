//! `/media` as HTTP clients meet it: ranges (RFC 9110 section 14) as players,
//! caches and `ffprobe` send them, validators and conditional requests, and
//! paths that must never be a server error nor reveal a hidden file,
//! however they are spelled.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server with one completed upload of `sample.mp4`.
struct Played {
    _dir: tempfile::TempDir,
    t: TestServer,
    /// `http://host/media`
    media: String,
    token: String,
    /// The upload's folder in final storage.
    folder: PathBuf,
}

impl Played {
    async fn start() -> Played {
        let dir = tempfile::tempdir().unwrap();
        let key = create_key(dir.path(), "media");
        let t = TestServer::start(test_config(dir.path())).await;
        let record = upload_to_end(&t, &key, "sample.mp4", "root/media").await;
        assert_eq!(record["status"], 6, "{record}");
        let mp4_url = record["playback"]["mp4_url"].as_str().unwrap();
        let media = format!("http://{}/media", t.server.addr());
        let token = mp4_url
            .strip_prefix(&format!("{media}/"))
            .and_then(|rest| rest.strip_suffix("/video.mp4"))
            .unwrap()
            .to_string();
        let folder = dir.path().join("media").join(&token);
        assert!(folder.join("video.mp4").is_file(), "{folder:?}");
        Played {
            _dir: dir,
            t,
            media,
            token,
            folder,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.media, self.token)
    }

    /// The stored bytes of one of the upload's files.
    fn bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.folder.join(name)).unwrap()
    }

    async fn get(&self, name: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Vec<u8>) {
        let mut request = self.t.client.get(self.url(name));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    async fn get_range(&self, name: &str, range: &str) -> (u16, HeaderMap, Vec<u8>) {
        self.get(name, &[("range", range)]).await
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_past_the_end_are_clamped_and_ranges_starting_there_are_416() {
    let p = Played::start().await;
    let mp4 = p.bytes("video.mp4");
    let len = mp4.len();
    assert!(len < 1_048_576, "sample.mp4's output is small: {len}");

    // The first slice a cache asks for, longer than the file: all of it, as 206.
    let (code, headers, body) = p.get_range("video.mp4", "bytes=0-1048575").await;
    assert_eq!(code, 206);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 0-{}/{len}", len - 1)
    );
    assert_eq!(header(&headers, "content-length"), len.to_string());
    assert_eq!(header(&headers, "content-type"), "video/mp4");
    assert!(body == mp4, "the clamped range is the whole file");

    // An end past the file from the middle.
    let (code, headers, body) = p
        .get_range("video.mp4", &format!("bytes=1000-{}", len + 5000))
        .await;
    assert_eq!(code, 206);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 1000-{}/{len}", len - 1)
    );
    assert!(body == mp4[1000..]);

    // A suffix longer than the file is the whole file, as 206.
    let (code, headers, body) = p
        .get_range("video.mp4", &format!("bytes=-{}", len * 3))
        .await;
    assert_eq!(code, 206);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 0-{}/{len}", len - 1)
    );
    assert!(body == mp4);

    // A suffix, an open range, one byte, the last byte.
    let (code, headers, body) = p.get_range("video.mp4", "bytes=-100").await;
    assert_eq!((code, &body[..]), (206, &mp4[len - 100..]));
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes {}-{}/{len}", len - 100, len - 1)
    );
    let (code, _, body) = p.get_range("video.mp4", "bytes=2000-").await;
    assert_eq!((code, &body[..]), (206, &mp4[2000..]));
    let (code, headers, body) = p.get_range("video.mp4", "bytes=0-0").await;
    assert_eq!((code, &body[..]), (206, &mp4[..1]));
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 0-0/{len}")
    );
    let last = format!("bytes={}-{}", len - 1, len - 1);
    let (code, _, body) = p.get_range("video.mp4", &last).await;
    assert_eq!((code, &body[..]), (206, &mp4[len - 1..]));

    // Starting at or past the end: 416 with the length.
    for range in [
        format!("bytes={len}-"),
        format!("bytes={len}-{}", len + 1_048_575),
        "bytes=99999999999999999999-".to_string(),
        "bytes=-0".to_string(),
    ] {
        let (code, headers, _) = p.get_range("video.mp4", &range).await;
        assert_eq!(code, 416, "{range}");
        // About this request, not the file: no cache keeps it for a year.
        assert!(headers.get("cache-control").is_none(), "{range}");
        assert_eq!(
            header(&headers, "content-range"),
            format!("bytes */{len}"),
            "{range}"
        );
    }

    // Invalid headers and other units are ignored: the whole file, 200.
    for range in [
        "bytes=5-1",
        "items=0-1",
        "bytes=abc",
        "bytes=0-1;x",
        "bytes",
    ] {
        let (code, headers, body) = p.get_range("video.mp4", range).await;
        assert_eq!(code, 200, "{range}");
        assert!(headers.get("content-range").is_none(), "{range}");
        assert!(body == mp4, "{range}");
    }
    p.t.server.shutdown().await;
}

/// The parts of a `multipart/byteranges` body: each one's `Content-Type`,
/// `Content-Range` and bytes, checked against the framing of RFC 9110 14.6.
fn byteranges(content_type: &str, body: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content type {content_type}"));
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        rest = rest
            .strip_prefix(delimiter.as_bytes())
            .unwrap_or_else(|| panic!("no delimiter at {:?}", String::from_utf8_lossy(rest)));
        if let Some(after) = rest.strip_prefix(b"--") {
            assert!(after.is_empty() || after == b"\r\n", "after the close");
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").unwrap();
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        rest = &rest[end + 4..];
        let field = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no {name} in {head}"))
        };
        let (content_type, content_range) = (field("content-type"), field("content-range"));
        let span = content_range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(span, _)| span.split_once('-'))
            .unwrap();
        let (first, last): (usize, usize) = (span.0.parse().unwrap(), span.1.parse().unwrap());
        let data = rest[..=last - first].to_vec();
        rest = &rest[data.len()..];
        parts.push((content_type, content_range, data));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ranges_are_multipart_byteranges_and_piles_of_them_the_whole_file() {
    let p = Played::start().await;
    let mp4 = p.bytes("video.mp4");
    let len = mp4.len();

    // Out of order, one past the end (dropped), a suffix: the parts as asked.
    let range = format!("bytes=5000-5999,0-99,{}-,-64", len + 10);
    let (code, headers, body) = p.get_range("video.mp4", &range).await;
    assert_eq!(code, 206);
    assert!(headers.get("content-range").is_none());
    assert_eq!(header(&headers, "content-length"), body.len().to_string());
    let parts = byteranges(header(&headers, "content-type"), &body);
    let expected = [(5000, 5999), (0, 99), (len - 64, len - 1)];
    assert_eq!(parts.len(), expected.len());
    for ((content_type, content_range, data), (first, last)) in parts.iter().zip(expected) {
        assert_eq!(content_type, "video/mp4");
        assert_eq!(content_range, &format!("bytes {first}-{last}/{len}"));
        assert!(data[..] == mp4[first..=last], "{content_range}");
    }

    // A playlist's parts carry the playlist's type.
    let playlist = p.bytes("hls/master.m3u8");
    let (code, headers, body) = p.get_range("hls/master.m3u8", "bytes=0-6,-1").await;
    assert_eq!(code, 206);
    let parts = byteranges(header(&headers, "content-type"), &body);
    assert_eq!(parts[0].0, "application/vnd.apple.mpegurl");
    assert_eq!(
        (&parts[0].2[..], &parts[1].2[..]),
        (&b"#EXTM3U"[..], &playlist[playlist.len() - 1..])
    );

    // Overlapping ranges, or more than sixteen, cannot amplify: the whole file once.
    let many: Vec<String> = (0..17)
        .map(|i| format!("{}-{}", i * 100, i * 100 + 9))
        .collect();
    for range in [
        "bytes=0-99,50-149".to_string(),
        "bytes=0-,0-".to_string(),
        "bytes=-500,0-".to_string(),
        format!("bytes={}", many.join(",")),
    ] {
        let (code, headers, body) = p.get_range("video.mp4", &range).await;
        assert_eq!(code, 200, "{range}");
        assert_eq!(header(&headers, "content-type"), "video/mp4");
        assert!(body == mp4, "{range}");
    }
    // Sixteen are still answered.
    let sixteen = format!("bytes={}", many[..16].join(","));
    let (code, headers, body) = p.get_range("video.mp4", &sixteen).await;
    assert_eq!(code, 206);
    assert_eq!(
        byteranges(header(&headers, "content-type"), &body).len(),
        16
    );
    p.t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_answer_conditional_requests_and_head_has_the_same_headers() {
    let p = Played::start().await;
    let mp4 = p.bytes("video.mp4");
    let (code, headers, body) = p.get("video.mp4", &[]).await;
    assert_eq!(code, 200);
    assert!(body == mp4);
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    assert_eq!(
        header(&headers, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    let etag = header(&headers, "etag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong tag: {etag}"
    );
    let modified = header(&headers, "last-modified").to_string();
    assert!(modified.ends_with(" GMT"), "{modified}");
    let before = "Sat, 01 Jan 2000 00:00:00 GMT";

    // HEAD: the same headers, no body; a Range is for GET only (RFC 9110 14.2).
    for extra in [&[][..], &[("range", "bytes=0-9")][..]] {
        let mut request = p.t.client.head(p.url("video.mp4"));
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        for name in [
            "content-length",
            "content-type",
            "etag",
            "last-modified",
            "accept-ranges",
            "cache-control",
        ] {
            assert_eq!(response.headers()[name], headers[name], "{name}");
        }
        assert!(response.bytes().await.unwrap().is_empty());
    }

    // Revalidation: 304 with the validators and no body.
    for condition in [
        ("if-none-match", etag.clone()),
        ("if-none-match", format!("W/{etag}")),
        ("if-none-match", format!("\"other\", {etag}")),
        ("if-none-match", "*".to_string()),
        ("if-modified-since", modified.clone()),
    ] {
        let (code, headers, body) = p.get("video.mp4", &[(condition.0, &condition.1)]).await;
        assert_eq!(code, 304, "{condition:?}");
        assert_eq!(header(&headers, "etag"), etag);
        assert!(body.is_empty());
    }
    // A changed validator, or an older date: the file.
    for condition in [
        ("if-none-match", "\"other\"".to_string()),
        ("if-modified-since", before.to_string()),
    ] {
        let (code, _, body) = p.get("video.mp4", &[(condition.0, &condition.1)]).await;
        assert_eq!(code, 200, "{condition:?}");
        assert!(body == mp4);
    }
    // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    let (code, _, _) = p
        .get(
            "video.mp4",
            &[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &modified),
            ],
        )
        .await;
    assert_eq!(code, 200);

    // If-Range: the range only while the validator matches (strongly), else all.
    for (validator, ranged) in [
        (etag.clone(), true),
        (modified.clone(), true),
        (format!("W/{etag}"), false),
        ("\"other\"".to_string(), false),
        (before.to_string(), false),
    ] {
        let (code, _, body) = p
            .get(
                "video.mp4",
                &[("range", "bytes=10-19"), ("if-range", &validator)],
            )
            .await;
        if ranged {
            assert_eq!((code, &body[..]), (206, &mp4[10..20]), "{validator}");
        } else {
            assert_eq!(code, 200, "{validator}");
            assert!(body == mp4, "{validator}");
        }
    }

    // If-Match and If-Unmodified-Since: 412 when they fail.
    for (name, value, expected) in [
        ("if-match", etag.as_str(), 200),
        ("if-match", "*", 200),
        ("if-match", "\"other\"", 412),
        ("if-unmodified-since", modified.as_str(), 200),
        ("if-unmodified-since", before, 412),
    ] {
        let (code, headers, _) = p.get("video.mp4", &[(name, value)]).await;
        assert_eq!(code, expected, "{name}: {value}");
        assert_eq!(headers.contains_key("cache-control"), code == 200);
    }
    p.t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_a_client_gets_wrong_are_404_not_500() {
    let p = Played::start().await;
    for path in [
        "x/a%00".to_string(),
        format!("{}/video.mp4/", p.token),
        format!("{}/poster.jpg/x", p.token),
        format!("{}/hls", p.token),
        format!("{}/hls/", p.token),
        format!("{}/{}", p.token, "a".repeat(300)),
        format!("{}/hls/{}", p.token, "b/".repeat(3000)),
        format!("{}/%ff", p.token),
        format!("{}/video.mp4%00", p.token),
        "nosuchtoken/video.mp4".to_string(),
    ] {
        let (code, _, body) = fetch_media(&p.t.client, &format!("{}/{path}", p.media)).await;
        assert_eq!(code, 404, "{path}: {}", String::from_utf8_lossy(&body));
    }
    p.t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_files_stay_hidden_however_their_names_are_encoded() {
    let p = Played::start().await;
    let root = p.folder.parent().unwrap();
    // An upload being stored, and a completion marker, as final storage names them.
    let incoming = root.join(format!(".incoming-{}", p.token));
    std::fs::create_dir(&incoming).unwrap();
    std::fs::write(incoming.join("video.mp4"), "unfinished").unwrap();
    std::fs::write(p.folder.join(".complete"), "marker").unwrap();

    for path in [
        format!(".incoming-{}/video.mp4", p.token),
        format!("%2eincoming-{}/video.mp4", p.token),
        format!("%2Eincoming-{}/video.mp4", p.token),
        format!("%2e%69ncoming-{}/video.mp4", p.token),
        format!("{}/.complete", p.token),
        format!("{}/%2ecomplete", p.token),
        format!("{}/%2Ecomplete", p.token),
        format!("{}/hls/%2e%2e/.complete", p.token),
    ] {
        let (code, _, body) = fetch_media(&p.t.client, &format!("{}/{path}", p.media)).await;
        assert_eq!(code, 404, "{path}: {}", String::from_utf8_lossy(&body));
    }
    p.t.server.shutdown().await;
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'a>(&mut self, from: &'a [String]) -> &'a str {
        &from[self.below(from.len())]
    }
}

/// One raw HTTP/1.1 `GET` of `target` exactly as given (no client
/// normalising `..` or escapes); the status and the whole response.
async fn raw_get(addr: std::net::SocketAddr, target: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let range = range.map_or(String::new(), |r| format!("Range: {r}\r\n"));
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: media\r\n{range}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let status = std::str::from_utf8(&response[..12.min(response.len())])
        .ok()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{target}: {:?}", String::from_utf8_lossy(&response)));
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_generated_paths_are_never_a_5xx_and_never_a_hidden_file() {
    let p = Played::start().await;
    let root = p.folder.parent().unwrap();
    let hidden_token = "0123abcd0123abcd0123abcd0123abcd";
    let incoming = root.join(format!(".incoming-{hidden_token}"));
    std::fs::create_dir_all(incoming.join("hls")).unwrap();
    const SECRET: &str = "hidden-bytes-never-served";
    std::fs::write(incoming.join("video.mp4"), SECRET).unwrap();
    std::fs::write(incoming.join("hls/master.m3u8"), SECRET).unwrap();
    std::fs::write(p.folder.join(".complete"), SECRET).unwrap();
    std::fs::write(p.folder.join("hls/.secret.ts"), SECRET).unwrap();

    let fragments: Vec<String> = [
        "%00",
        "%2e",
        "%2E",
        "%2e%2e",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "..",
        ".",
        "/",
        "//",
        "%ff",
        "%c3%28",
        "%e2%82%ac",
        "%",
        "%2",
        "%zz",
        "%20",
        "%3f",
        "%23",
        "~",
        "+",
        ";",
        "\\",
        ":",
        "video.mp4",
        "poster.jpg",
        "hls",
        "master.m3u8",
        "240p",
        "index.m3u8",
        "seg_00000.ts",
        ".complete",
        "complete",
        ".secret.ts",
        "secret.ts",
        ".incoming-",
        "incoming-",
        "-",
        "%2eincoming-",
        "%2Ecomplete",
        "%2esecret.ts",
        "v%69deo.mp4",
        "%76ideo%2emp4",
        "\u{e9}",
        "\u{1f3ac}",
    ]
    .iter()
    .map(|f| f.to_string())
    .chain([
        p.token.clone(),
        hidden_token.to_string(),
        format!(".incoming-{hidden_token}"),
        format!("%2eincoming-{hidden_token}"),
        "a".repeat(255),
        "a".repeat(256),
        "b".repeat(5000),
    ])
    .collect();
    let ranges: Vec<String> = [
        "bytes=0-",
        "bytes=0-0",
        "bytes=-1",
        "bytes=-99999999",
        "bytes=0-1048575",
        "bytes=99999999-",
        "bytes=5-1",
        "bytes=0-9,20-29",
        "bytes=0-9,5-15",
        "bytes=",
        "bytes=-",
        "bytes=18446744073709551615-18446744073709551616",
        "items=0-1",
        "bytes=a-b",
    ]
    .iter()
    .map(|r| r.to_string())
    .collect();

    let files: Vec<String> = [
        "video.mp4",
        "poster.jpg",
        "hls/master.m3u8",
        "hls/240p/index.m3u8",
        "hls/240p/seg_00000.ts",
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    for name in &files {
        assert!(p.folder.join(name).is_file(), "{name}");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let addr = p.t.server.addr();
    let (mut found, mut partial) = (0, 0);
    for _ in 0..3000 {
        let mut path = String::from("/media/");
        if rng.below(3) == 0 {
            // A real file, perhaps with one fragment spliced in.
            let mut real = format!("{}/{}", p.token, rng.pick(&files));
            if rng.below(2) == 0 {
                let at = rng.below(real.len() + 1);
                real.insert_str(at, rng.pick(&fragments));
            }
            path.push_str(&real);
        } else {
            if rng.below(3) > 0 {
                path.push_str(if rng.below(4) == 0 {
                    hidden_token
                } else {
                    &p.token
                });
                path.push('/');
            }
            for _ in 0..1 + rng.below(5) {
                path.push_str(rng.pick(&fragments));
                if rng.below(2) == 0 {
                    path.push('/');
                }
            }
        }
        // Non-ASCII goes on the wire percent-encoded, as a client sends it.
        let target: String = path
            .bytes()
            .map(|b| {
                if b.is_ascii() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let range = (rng.below(3) == 0).then(|| rng.pick(&ranges));
        let (status, response) = raw_get(addr, &target, range).await;
        assert!(status < 500, "{target} ({range:?}): {status}");
        assert!(
            !response
                .windows(SECRET.len())
                .any(|w| w == SECRET.as_bytes()),
            "{target} served a hidden file"
        );
        found += usize::from(status == 200);
        partial += usize::from(status == 206);
    }
    // The generator reaches real files too, whole and in ranges.
    assert!(found > 100 && partial > 20, "200: {found}, 206: {partial}");
    p.t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_one_mib_slices_put_a_file_back_together_up_to_its_last_short_slice() {
    const SLICE: usize = 1 << 20;
    let p = Played::start().await;
    // A file in the upload's folder longer than two slices, so that the
    // last slice starts past 0 and ends past the end; any byte out of place shows.
    let mut rng = Rng(0x5eed);
    let big: Vec<u8> = (0..2 * SLICE + 123_457)
        .map(|_| rng.below(256) as u8)
        .collect();
    std::fs::write(p.folder.join("hls/big.ts"), &big).unwrap();

    for (name, bytes) in [("hls/big.ts", big), ("video.mp4", p.bytes("video.mp4"))] {
        let len = bytes.len();
        let mut assembled = Vec::new();
        for start in (0..len).step_by(SLICE) {
            let range = format!("bytes={start}-{}", start + SLICE - 1);
            let (code, headers, body) = p.get_range(name, &range).await;
            assert_eq!(code, 206, "{name} {range}");
            let last = (start + SLICE).min(len) - 1;
            assert_eq!(
                header(&headers, "content-range"),
                format!("bytes {start}-{last}/{len}"),
                "{name} {range}"
            );
            assert_eq!(body.len(), last + 1 - start, "{name} {range}");
            assembled.extend_from_slice(&body);
        }
        assert!(
            assembled == bytes,
            "{name}: the slices differ from the file"
        );
    }
    p.t.server.shutdown().await;
}

/// `ffprobe` and `ffmpeg` (the FFmpeg CLI), unless they are not installed (and `CI` is not set).
fn ffmpeg_cli() -> bool {
    let installed = ["ffprobe", "ffmpeg"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "the FFmpeg CLI is not installed; .ci/setup installs it"
        );
        eprintln!("skipped: ffprobe/ffmpeg are not installed (apt-get install ffmpeg)");
    }
    installed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_and_ffmpeg_read_and_seek_the_mp4_over_http() {
    if !ffmpeg_cli() {
        return;
    }
    let p = Played::start().await;
    let url = p.url("video.mp4");
    let local = p.folder.join("video.mp4");
    let probe = |input: &str| {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries"])
            .args(["format=duration,size:stream=codec_name,width,height"])
            .args(["-of", "json", input])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (remote, on_disk) = (probe(&url), probe(local.to_str().unwrap()));
    assert_eq!(remote, on_disk);
    assert_eq!(remote["streams"][0]["codec_name"], "h264", "{remote}");

    // Every packet, and a seek to near the end, which reads from a new offset.
    for seek in [None, Some("1.5")] {
        let mut command = Command::new("ffmpeg");
        command.args(["-v", "error", "-nostdin"]);
        if let Some(at) = seek {
            command.args(["-ss", at]);
        }
        let out = command
            .args(["-i", &url, "-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "seek {seek:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    p.t.server.shutdown().await;
}
