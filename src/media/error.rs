//! The one error type of the media module: a stable machine code plus a
//! human-readable message.

use std::fmt;

/// Why a probe or transcode failed, as a stable machine code callers branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaErrorCode {
    /// Not a container we accept (text, random bytes, playlists, unknown codecs).
    UnsupportedMedia,
    /// A real container without any decodable video stream (audio-only files).
    NoVideoStream,
    /// Dimensions, duration or frame count over the configured `MediaLimits`.
    InputTooLarge,
    /// The container opened but no video frame could be decoded.
    CorruptMedia,
    /// Our side failed (I/O on the output, encoder setup): not the upload's fault.
    Internal,
    /// The caller stopped the job before it finished.
    Cancelled,
}

impl MediaErrorCode {
    /// The code as it appears in API responses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnsupportedMedia => "unsupported_media",
            Self::NoVideoStream => "no_video_stream",
            Self::InputTooLarge => "input_too_large",
            Self::CorruptMedia => "corrupt_media",
            Self::Internal => "internal_error",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for MediaErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed probe or transcode; `Display` is the message alone.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MediaError {
    /// Stable machine code, mapped to the API's `error.code`.
    pub code: MediaErrorCode,
    /// Human-readable detail, safe to show to the uploader.
    pub message: String,
}

impl MediaError {
    /// An error with this code and message.
    pub fn new(code: MediaErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Not a container we accept.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(MediaErrorCode::UnsupportedMedia, message)
    }

    /// Over the configured `MediaLimits`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(MediaErrorCode::InputTooLarge, message)
    }

    /// A real container with nothing decodable.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(MediaErrorCode::CorruptMedia, message)
    }

    /// The caller stopped the job.
    pub fn cancelled() -> Self {
        Self::new(MediaErrorCode::Cancelled, "the transcode was stopped")
    }

    /// An internal failure while doing `what`, keeping libav's own reason.
    pub fn internal(what: &str, err: impl fmt::Display) -> Self {
        Self::new(MediaErrorCode::Internal, format!("{what}: {err}"))
    }
}

/// `map_err` adapter: `.map_err(internal("opening the H.264 encoder"))`.
pub(crate) fn internal<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> MediaError {
    move |err| MediaError::internal(what, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_strings() {
        assert_eq!(
            MediaErrorCode::UnsupportedMedia.as_str(),
            "unsupported_media"
        );
        assert_eq!(MediaErrorCode::NoVideoStream.as_str(), "no_video_stream");
        assert_eq!(MediaErrorCode::InputTooLarge.as_str(), "input_too_large");
        assert_eq!(MediaErrorCode::CorruptMedia.as_str(), "corrupt_media");
        assert_eq!(MediaErrorCode::Internal.as_str(), "internal_error");
        assert_eq!(MediaErrorCode::Cancelled.as_str(), "cancelled");
    }

    #[test]
    fn display_is_the_message() {
        let err = MediaError::too_large("8000x8000 is over the limit");
        assert_eq!(err.to_string(), "8000x8000 is over the limit");
        assert_eq!(err.code, MediaErrorCode::InputTooLarge);
    }
}
