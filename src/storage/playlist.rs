//! HLS playlists (RFC 8216), and the storyboard's WebVTT, for backends with
//! presigned URLs: a relative reference in them resolves to a URL without a
//! signature, so the API server hands them out with every reference rewritten
//! to a full URL.

/// Rewrites every reference of `playlist`, which is stored as `name` (such as
/// `hls/master.m3u8`), to `url_of(target)`, where `target` is the referenced
/// file's name in the same upload (`hls/720p/seg_00000.ts`). URI lines and
/// `URI="..."` attributes (`EXT-X-MAP`, `EXT-X-MEDIA`, ...) are rewritten;
/// absolute URLs and references that leave the upload stay as they are.
pub fn rewrite(playlist: &str, name: &str, url_of: impl Fn(&str) -> String) -> String {
    let dir = name.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
    let rewrite_ref = |reference: &str| -> String {
        resolve(dir, reference)
            .map(|target| url_of(&target))
            .unwrap_or_else(|| reference.to_string())
    };
    let mut out = String::with_capacity(playlist.len() * 2);
    for line in playlist.split_inclusive('\n') {
        let (body, ending) = split_ending(line);
        let trimmed = body.trim();
        if trimmed.is_empty() {
            out.push_str(body);
        } else if trimmed.starts_with('#') {
            out.push_str(&rewrite_uri_attributes(body, &rewrite_ref));
        } else {
            out.push_str(&rewrite_ref(trimmed));
        }
        out.push_str(ending);
    }
    out
}

/// Rewrites the image reference of every cue of `vtt`, a storyboard stored as
/// `name` (`storyboard.jpg#xywh=0,0,160,90` becomes `url_of("storyboard.jpg")`
/// followed by the same `#xywh=...` fragment, which is never sent to a server
/// and so leaves a signature intact). Other lines, and references that are
/// absolute or leave the upload, stay as they are.
pub fn rewrite_webvtt(vtt: &str, name: &str, url_of: impl Fn(&str) -> String) -> String {
    let dir = name.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
    let mut out = String::with_capacity(vtt.len() * 4);
    // A cue's payload runs from the line after its timings to the next blank line.
    let mut in_payload = false;
    for line in vtt.split_inclusive('\n') {
        let (body, ending) = split_ending(line);
        let trimmed = body.trim();
        if trimmed.is_empty() {
            in_payload = false;
            out.push_str(body);
        } else if trimmed.contains("-->") {
            in_payload = true;
            out.push_str(body);
        } else if in_payload {
            let (reference, fragment) = match trimmed.split_once('#') {
                Some((reference, fragment)) => (reference, Some(fragment)),
                None => (trimmed, None),
            };
            match resolve(dir, reference) {
                Some(target) => {
                    out.push_str(&url_of(&target));
                    if let Some(fragment) = fragment {
                        out.push('#');
                        out.push_str(fragment);
                    }
                }
                None => out.push_str(body),
            }
        } else {
            out.push_str(body);
        }
        out.push_str(ending);
    }
    out
}

/// The line without its `\n` or `\r\n`, and that ending.
fn split_ending(line: &str) -> (&str, &str) {
    if let Some(body) = line.strip_suffix("\r\n") {
        (body, "\r\n")
    } else if let Some(body) = line.strip_suffix('\n') {
        (body, "\n")
    } else {
        (line, "")
    }
}

/// A tag line with each `URI="..."` value passed through `rewrite_ref`.
fn rewrite_uri_attributes(line: &str, rewrite_ref: &impl Fn(&str) -> String) -> String {
    const ATTRIBUTE: &str = "URI=\"";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(ATTRIBUTE) {
        let value_start = at + ATTRIBUTE.len();
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        out.push_str(&rest[..value_start]);
        out.push_str(&rewrite_ref(&rest[value_start..value_start + len]));
        out.push('"');
        rest = &rest[value_start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The name a relative reference points at, from the folder `dir` of the
/// playlist; `None` for absolute URLs, paths with a query or fragment, and
/// references outside the upload.
fn resolve(dir: &str, reference: &str) -> Option<String> {
    if reference.is_empty()
        || reference.starts_with('/')
        || reference.contains("://")
        || reference.contains(['?', '#', '\\'])
    {
        return None;
    }
    let mut segments: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for segment in reference.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    (!segments.is_empty()).then(|| segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(target: &str) -> String {
        format!("https://s3.test/b/tok/{target}?X-Amz-Signature=abc")
    }

    #[test]
    fn media_playlist_segments_and_map_become_full_urls() {
        let playlist = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\nseg_00000.ts\n\n#EXTINF:2.5,\r\nseg_00001.ts\r\n#EXT-X-ENDLIST\n";
        let out = rewrite(playlist, "hls/720p/index.m3u8", signed);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-MAP:URI=\"https://s3.test/b/tok/hls/720p/init.mp4?X-Amz-Signature=abc\"\n#EXTINF:4.0,\nhttps://s3.test/b/tok/hls/720p/seg_00000.ts?X-Amz-Signature=abc\n\n#EXTINF:2.5,\r\nhttps://s3.test/b/tok/hls/720p/seg_00001.ts?X-Amz-Signature=abc\r\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn master_playlist_variants_resolve_from_its_folder() {
        let playlist = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"x\",URI=\"audio/index.m3u8\"\n";
        let out = rewrite(playlist, "hls/master.m3u8", |t| format!("U[{t}]"));
        assert!(out.contains("\nU[hls/360p/index.m3u8]\n"), "{out}");
        assert!(out.contains("URI=\"U[hls/audio/index.m3u8]\""), "{out}");
        assert!(out.contains("GROUP-ID=\"a\""), "{out}");
    }

    #[test]
    fn storyboard_cues_name_the_signed_sprite_and_keep_their_rectangle() {
        let vtt = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard.jpg#xywh=0,0,160,90\n\nNOTE storyboard.jpg\n\n00:00:01.000 --> 00:00:01.960\r\nstoryboard.jpg#xywh=160,0,160,90\r\n\n00:00:02.000 --> 00:00:03.000\n../x.jpg#xywh=0,0,1,1\n";
        let out = rewrite_webvtt(vtt, "storyboard.vtt", signed);
        assert_eq!(
            out,
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhttps://s3.test/b/tok/storyboard.jpg?X-Amz-Signature=abc#xywh=0,0,160,90\n\nNOTE storyboard.jpg\n\n00:00:01.000 --> 00:00:01.960\r\nhttps://s3.test/b/tok/storyboard.jpg?X-Amz-Signature=abc#xywh=160,0,160,90\r\n\n00:00:02.000 --> 00:00:03.000\n../x.jpg#xywh=0,0,1,1\n"
        );
    }

    #[test]
    fn absolute_and_escaping_references_stay() {
        let playlist =
            "https://cdn.test/x.ts\n../../../etc/passwd\n/abs.ts\n../poster.jpg\nseg.ts?x=1\n";
        let out = rewrite(playlist, "hls/master.m3u8", |t| format!("U[{t}]"));
        assert_eq!(
            out,
            "https://cdn.test/x.ts\n../../../etc/passwd\n/abs.ts\nU[poster.jpg]\nseg.ts?x=1\n"
        );
    }
}
