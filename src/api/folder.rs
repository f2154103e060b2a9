//! The rules for the names a client gives: the `folder` field and the
//! video's file name. Both are taken in Unicode NFC, so that one name has one
//! spelling, and refused when they hold characters that make a name show as
//! something else.

use unicode_normalization::UnicodeNormalization;

/// Longest accepted folder, in bytes.
pub const MAX_FOLDER_BYTES: usize = 255;

/// The folder as it is stored: `raw` in NFC, if it passes [`validate_folder`].
pub fn checked_folder(raw: &str) -> Result<String, String> {
    let folder: String = raw.nfc().collect();
    validate_folder(&folder)?;
    Ok(folder)
}

/// Checks a collection path: `root` or `root/...`, segments of letters,
/// digits, space, `_`, `.` and `-`, with no empty, `.` or `..` segment and
/// no segment that starts or ends with a space.
pub fn validate_folder(folder: &str) -> Result<(), String> {
    if folder.is_empty() {
        return Err("The folder field is required.".into());
    }
    if folder.chars().any(is_bidi_control) {
        return Err(format!(
            "The folder must not contain bidirectional control characters ({BIDI_CONTROLS})."
        ));
    }
    if folder.len() > MAX_FOLDER_BYTES {
        return Err(format!(
            "The folder must be at most {MAX_FOLDER_BYTES} bytes."
        ));
    }
    let mut segments = folder.split('/');
    if segments.next() != Some("root") {
        return Err("The folder must be root or start with root/.".into());
    }
    for segment in segments {
        if segment.is_empty() {
            return Err("The folder must not contain an empty segment.".into());
        }
        if segment == "." || segment == ".." {
            return Err("The folder must not contain . or .. segments.".into());
        }
        // "a " and "a" would look like one folder.
        if segment.trim_matches(' ').is_empty() {
            return Err("The folder must not contain a segment that is only spaces.".into());
        }
        if segment.starts_with(' ') || segment.ends_with(' ') {
            return Err("The folder's segments must not start or end with a space.".into());
        }
        if !segment
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '.' | '-'))
        {
            return Err(
                "The folder may only contain letters, digits, spaces, _, . and - in each segment."
                    .into(),
            );
        }
    }
    Ok(())
}

/// The video's file name as it is stored: `raw` in NFC, refused if it holds
/// control or bidirectional control characters, then [`clean_filename`]d.
pub fn checked_filename(raw: &str) -> Result<String, String> {
    let name: String = raw.nfc().collect();
    if name.chars().any(char::is_control) {
        return Err("The video's filename must not contain control characters.".into());
    }
    if name.chars().any(is_bidi_control) {
        return Err(format!(
            "The video's filename must not contain bidirectional control characters ({BIDI_CONTROLS})."
        ));
    }
    Ok(clean_filename(&name))
}

/// The embeddings, overrides and isolates, as written in the messages.
const BIDI_CONTROLS: &str = "U+202A-U+202E, U+2066-U+2069";

/// True for a character that reorders the text around it when shown:
/// `clip<U+202E>4pm.exe` shows as `clipexe.mp4`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A client file name made safe to show: the last path component, without
/// control characters, at most 255 bytes. Never used as a path.
pub fn clean_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
    while name.len() > 255 {
        name.pop();
    }
    let name = name.trim().to_string();
    if name.is_empty() || name == "." || name == ".." {
        "video".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_folders() {
        for ok in ["root", "root/my-folder", "root/a b/c_d.e", "root/Été 2024"] {
            assert_eq!(validate_folder(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_folders() {
        let long = format!("root/{}", "a".repeat(300));
        for bad in [
            "",
            "/root",
            "root/",
            "root//a",
            "root/../x",
            "root/.",
            "other",
            "rootx",
            "root/a\\b",
            "root/a\0",
            "root/<script>",
            "root/ ",
            "root/a ",
            "root/ a",
            "root/a\u{202e}b",
            "\u{2066}root",
            long.as_str(),
        ] {
            assert!(validate_folder(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn folders_are_taken_in_nfc() {
        // The combining accent alone is not a letter: only NFC passes.
        assert_eq!(
            checked_folder("root/Cafe\u{301}"),
            Ok("root/Caf\u{e9}".into())
        );
        assert_eq!(
            checked_folder("root/Caf\u{e9}"),
            Ok("root/Caf\u{e9}".into())
        );
        // The length is that of the NFC form.
        let decomposed = format!("root/{}", "e\u{301}".repeat(125));
        assert_eq!(decomposed.len(), 380);
        assert!(checked_folder(&decomposed).is_ok());
    }

    #[test]
    fn folder_messages_name_the_problem() {
        let message = |folder| validate_folder(folder).unwrap_err();
        assert!(message("root/a\u{202e}b").contains("bidirectional"));
        assert!(message("root/  ").contains("only spaces"));
        assert!(message("root/a/b ").contains("start or end with a space"));
        assert!(message("root/a\u{2069}").contains("U+2066-U+2069"));
    }

    #[test]
    fn filenames_are_taken_in_nfc_and_cleaned() {
        assert_eq!(
            checked_filename("Cafe\u{301}.mp4"),
            Ok("Caf\u{e9}.mp4".into())
        );
        assert_eq!(checked_filename("../clips/a.mp4"), Ok("a.mp4".into()));
        assert_eq!(checked_filename(""), Ok("video".into()));
    }

    #[test]
    fn filenames_with_control_characters_are_refused() {
        for bad in [
            "a\nb.mp4",
            "a\tb.mp4",
            "\0",
            "a\u{7f}",
            "a\u{85}b",
            "\u{9b}31m.mp4",
        ] {
            let message = checked_filename(bad).unwrap_err();
            assert!(message.contains("control characters"), "{bad:?}: {message}");
            assert!(!message.contains("bidirectional"), "{bad:?}: {message}");
        }
        for c in ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}') {
            let message = checked_filename(&format!("clip{c}4pm.exe")).unwrap_err();
            assert!(message.contains("bidirectional"), "{c:?}: {message}");
        }
        // Neighbours of the ranges, and marks that reorder nothing, are kept.
        for ok in [
            "a\u{2029}b",
            "a\u{202f}b",
            "a\u{2065}b",
            "a\u{206a}b",
            "a\u{200e}b",
        ] {
            assert!(checked_filename(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn cleans_filenames() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\clips\\a.mp4"), "a.mp4");
        assert_eq!(clean_filename("a\nb.mp4"), "ab.mp4");
        assert_eq!(clean_filename(".."), "video");
        assert_eq!(clean_filename(""), "video");
        assert_eq!(clean_filename(&"é".repeat(200)).len(), 254);
    }
}
