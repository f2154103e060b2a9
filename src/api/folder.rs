//! Validation of the `folder` field and cleaning of client file names.

/// Longest accepted folder, in bytes.
pub const MAX_FOLDER_BYTES: usize = 255;

/// Checks a collection path: `root` or `root/...`, segments of letters,
/// digits, space, `_`, `.` and `-`, with no empty, `.` or `..` segment.
pub fn validate_folder(folder: &str) -> Result<(), String> {
    if folder.is_empty() {
        return Err("The folder field is required.".into());
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
            long.as_str(),
        ] {
            assert!(validate_folder(bad).is_err(), "{bad:?} should be refused");
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
