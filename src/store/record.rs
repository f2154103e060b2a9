//! The upload record as persisted, and its status machine.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::media::SourceInfo;

/// Where an upload is in its life. The numbers are the documented API codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Durably staged, waiting for a transcoder.
    Pending,
    /// A transcoder is working on it.
    Processing,
    /// Outputs are being moved to final storage.
    Uploading,
    /// Outputs are in final storage, ready for playback.
    Completed,
    /// Processing ended with an error; see `error`.
    Failed,
}

impl Status {
    /// Every status, in the order an upload goes through them.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Processing,
        Status::Uploading,
        Status::Completed,
        Status::Failed,
    ];

    /// The documented numeric code.
    pub fn code(self) -> u8 {
        match self {
            Status::Pending => 1,
            Status::Processing => 3,
            Status::Uploading => 5,
            Status::Completed => 6,
            Status::Failed => 7,
        }
    }

    /// The documented text.
    pub fn text(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Uploading => "uploading",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    /// True once nothing more will happen to the upload.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }
}

/// Why an upload failed: a stable machine code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadError {
    /// Stable machine code, e.g. `unsupported_media`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// One upload as kept in the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Public identifier.
    pub id: Uuid,
    /// Creation order, unique per database; orders the per-tenant listing.
    pub seq: u64,
    /// Id of the API key (tenant) that owns the upload.
    pub tenant: String,
    /// Client-supplied file name; never used as a path.
    pub filename: String,
    /// Collection path, validated at intake.
    pub folder: String,
    /// Current status.
    pub status: Status,
    /// When the upload was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the status last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Size of the staged body in bytes.
    pub size_bytes: u64,
    /// Probed metadata of the source, once known.
    pub source: Option<SourceInfo>,
    /// Random name of the final storage folder; unguessable, so media URLs need no key.
    pub media_token: String,
    /// Names of the files in final storage, once completed.
    pub outputs: Option<MediaOutputs>,
    /// Set when the upload failed.
    pub error: Option<UploadError>,
    /// How many times a transcode was started; bounds retries after crashes.
    pub attempts: u32,
    /// Endpoint given with the upload that receives its webhook events; `None` in
    /// records made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Writes of the record that clients can see, its create being the
    /// first; orders the upload's events. 0 in records made before it
    /// existed, until their next such write.
    #[serde(default)]
    pub version: u64,
    /// The master playlist of the ladder being written (`hls/master.m3u8`,
    /// relative to the job's work folder), once every rendition has its
    /// first segment; only while processing and uploading. A restart
    /// leaves it until the next transition, but clients see it only while
    /// it is served (`Services::previews`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// The files an upload produced in final storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaOutputs {
    /// Progressive MP4 file name.
    pub mp4: String,
    /// JPEG poster file name.
    pub poster: String,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// HLS master playlist, relative to the upload's storage folder (`hls/master.m3u8`);
    /// `None` when the ladder is turned off, and in records made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_master: Option<String>,
    /// The ladder's renditions, top (the MP4's size) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<RenditionOutput>,
    /// The storyboard's WebVTT (`storyboard.vtt`, naming its sprite beside it);
    /// `None` in records made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storyboard: Option<String>,
}

/// One rendition of the HLS ladder, as stored on the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionOutput {
    /// `720p` and the like: the short side of the picture.
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Peak bit rate in bits per second, as the master playlist's `BANDWIDTH`.
    pub bandwidth: u64,
    /// Media playlist, relative to the upload's storage folder (`hls/720p/index.m3u8`).
    pub playlist: String,
    /// False when the rendition is the source's video, copied (no re-encode);
    /// true in records made before passthrough existed.
    #[serde(default = "encoded_by_default")]
    pub encoded: bool,
}

fn encoded_by_default() -> bool {
    true
}

/// One status change, appended to the transitions table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Status before, `None` for the creation.
    pub from: Option<Status>,
    /// Status after.
    pub to: Status,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Error code when the transition is to `failed`.
    pub error_code: Option<String>,
}

/// What a transition changes besides the status.
#[derive(Debug, Clone, Default)]
pub struct TransitionPatch {
    /// Probed source metadata.
    pub source: Option<SourceInfo>,
    /// Outputs now in final storage.
    pub outputs: Option<MediaOutputs>,
    /// The failure, for a transition to `failed`.
    pub error: Option<UploadError>,
    /// Count one more transcode attempt.
    pub count_attempt: bool,
    /// Take back the last attempt: it was interrupted by a clean shutdown, not a failure.
    pub release_attempt: bool,
    /// What is stored under the upload's token must be removed: recorded in
    /// the same transaction ([`super::cleanup`]).
    pub clean_up: bool,
    /// The statuses the upload may be in for the transition to apply; empty:
    /// any status but a terminal one. A transition refused by it fails with
    /// [`StoreError::Conflict`](super::StoreError::Conflict) and writes nothing.
    pub only_from: &'static [Status],
    /// A retry: the error and the attempts are cleared, and the kept source
    /// is the upload's again ([`super::kept`]).
    pub retry: bool,
    /// A transition to `failed` that keeps the staged source until this Unix
    /// time, so that the upload can be retried ([`super::kept`]).
    pub keep_source_until: Option<i64>,
    /// The kept source was freed by the sweeper ([`super::kept`]).
    pub source_freed: bool,
    /// The ladder being written can be played: its master playlist
    /// (`upload.previewable`).
    pub preview: Option<String>,
}

impl TransitionPatch {
    /// Whether applied without a transition it changes what clients see of
    /// the upload (its source, outputs or error), unlike the bookkeeping of
    /// attempts and kept sources.
    pub fn changes_view(&self) -> bool {
        self.source.is_some()
            || self.outputs.is_some()
            || self.error.is_some()
            || self.retry
            || self.preview.is_some()
    }

    /// Whether a transition with this patch applies to an upload in `status`.
    pub fn allows_from(&self, status: Status) -> bool {
        if self.only_from.is_empty() {
            !status.is_terminal()
        } else {
            self.only_from.contains(&status)
        }
    }
}

impl UploadRecord {
    /// Applies a transition to the record, stamping `updated_at`.
    pub fn apply(&mut self, to: Status, patch: TransitionPatch, at: OffsetDateTime) -> Transition {
        let from = self.status;
        self.status = to;
        self.updated_at = at;
        self.version += 1;
        // The preview lasts while the outputs are stored, and no longer.
        if to != Status::Uploading {
            self.preview = None;
        }
        self.patch(patch);
        Transition {
            from: Some(from),
            to,
            at,
            error_code: self
                .error
                .as_ref()
                .filter(|_| to == Status::Failed)
                .map(|e| e.code.clone()),
        }
    }

    /// Applies the fields of a patch without a status change (the source, once probed).
    pub fn patch(&mut self, patch: TransitionPatch) {
        if patch.source.is_some() {
            self.source = patch.source;
        }
        if patch.outputs.is_some() {
            self.outputs = patch.outputs;
        }
        if patch.error.is_some() {
            self.error = patch.error;
        }
        if patch.count_attempt {
            self.attempts += 1;
        }
        if patch.release_attempt {
            self.attempts = self.attempts.saturating_sub(1);
        }
        if patch.retry {
            self.error = None;
            self.attempts = 0;
        }
        if patch.preview.is_some() {
            self.preview = patch.preview;
        }
    }
}

/// The current Unix time in seconds: the clock of the store's timed rows
/// (kept sources, removals owed, idempotency keys).
pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The Unix time `span` from now.
pub fn unix_in(span: std::time::Duration) -> i64 {
    unix_now().saturating_add(i64::try_from(span.as_secs()).unwrap_or(i64::MAX))
}

/// The Unix time `span` ago.
pub fn unix_ago(span: std::time::Duration) -> i64 {
    unix_now().saturating_sub(i64::try_from(span.as_secs()).unwrap_or(i64::MAX))
}

/// The current time in UTC, in whole seconds, the precision the API shows.
pub fn now_utc() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completed record as a build from before the ladder and the storyboard stored it.
    const OLD_RECORD: &str = r#"{"id":"9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7f","seq":7,"tenant":"k1","filename":"a.mp4","folder":"root","status":"Completed","created_at":"2024-08-11T10:00:00Z","updated_at":"2024-08-11T10:00:09Z","size_bytes":1000,"source":{"duration":2.0,"width":320,"height":240,"frame_rate":25.0,"video_codec":"h264","audio_codec":"aac","bit_rate":64000,"size_bytes":1000},"media_token":"abc123","outputs":{"mp4":"video.mp4","poster":"poster.jpg","width":320,"height":240},"error":null,"attempts":1}"#;

    #[test]
    fn records_from_before_the_storyboard_still_read_and_write_back_the_same() {
        let record: UploadRecord = serde_json::from_str(OLD_RECORD).unwrap();
        let outputs = record.outputs.as_ref().unwrap();
        assert_eq!(outputs.storyboard, None);
        assert_eq!(outputs.hls_master, None);
        assert_eq!(record.version, 0);
        // What an older build reads back: no field it does not know of.
        let written = serde_json::to_value(&record).unwrap();
        let old: serde_json::Value = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(written["outputs"], old["outputs"]);

        let mut outputs = outputs.clone();
        outputs.storyboard = Some("storyboard.vtt".into());
        let json = serde_json::to_string(&outputs).unwrap();
        assert!(json.contains(r#""storyboard":"storyboard.vtt""#), "{json}");
        assert_eq!(
            serde_json::from_str::<MediaOutputs>(&json).unwrap(),
            outputs
        );
    }
}
