//! An upload as clients see it: the JSON shape of `GET /uploads/{id}`, built
//! from a record. The API answers with it and webhook events carry it, so it
//! lives beside both.

use serde::Serialize;
use uuid::Uuid;

use crate::media::SourceInfo;
use crate::storage::FinalStorage;
use crate::store::record::{Status, UploadError, UploadRecord};

/// An upload as clients see it. Fields beyond the seed's are additions; the
/// seed's fields keep their meaning.
#[derive(Debug, Serialize)]
pub struct UploadView<'a> {
    id: Uuid,
    filename: &'a str,
    folder: &'a str,
    status: u8,
    status_text: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: time::OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
    size_bytes: u64,
    source: Option<&'a SourceInfo>,
    playback: Option<Playback>,
    /// Where to play the ladder while it is written; only while processing
    /// (and storing), once every rendition has its first segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<Preview>,
    /// The HLS ladder's renditions once completed (top first; empty without a ladder).
    renditions: Option<Vec<RenditionView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a UploadError>,
}

/// Where to play a completed upload.
#[derive(Debug, Serialize)]
pub struct Playback {
    mp4_url: String,
    poster_url: String,
    hls_url: Option<String>,
    /// WebVTT of seek-bar preview tiles; `None` for uploads completed before storyboards.
    storyboard_url: Option<String>,
}

/// Where to play an upload before it is completed.
#[derive(Debug, Serialize)]
pub struct Preview {
    /// Master playlist over EVENT media playlists that grow segment by
    /// segment until the transcode ends.
    hls_url: String,
}

/// The path under which an upload's preview is served: `/preview/{token}/`.
pub const PREVIEW_PREFIX: &str = "preview";

/// One rendition of the HLS ladder, as clients see it.
#[derive(Debug, Serialize)]
pub struct RenditionView<'a> {
    name: &'a str,
    width: u32,
    height: u32,
    /// Peak bit rate in bits per second (the master playlist's `BANDWIDTH`).
    bandwidth: u64,
    playlist_url: String,
    /// False when the rendition is the source's own video, copied.
    encoded: bool,
}

impl<'a> UploadView<'a> {
    /// The view of a record as a transition left it, without live progress: what a
    /// webhook event carries.
    pub fn snapshot(
        record: &'a UploadRecord,
        storage: &dyn FinalStorage,
        base_url: &str,
    ) -> UploadView<'a> {
        UploadView::render(record, storage, base_url, None, true)
    }

    /// The view of a record, with `live_progress` for a running transcode;
    /// the preview it records is shown only if `previewing` (it is served
    /// now: a restart ends the one of an interrupted transcode).
    pub fn render(
        record: &'a UploadRecord,
        storage: &dyn FinalStorage,
        base_url: &str,
        live_progress: Option<u8>,
        previewing: bool,
    ) -> UploadView<'a> {
        let progress = match record.status {
            Status::Pending => Some(0),
            Status::Processing => Some(live_progress.unwrap_or(0)),
            Status::Uploading | Status::Completed => Some(100),
            Status::Failed => None,
        };
        let completed = record
            .outputs
            .as_ref()
            .filter(|_| record.status == Status::Completed);
        let url = |name: &str| storage.url(base_url, &record.media_token, name);
        let playback = completed.map(|out| Playback {
            mp4_url: url(&out.mp4),
            poster_url: url(&out.poster),
            hls_url: out.hls_master.as_deref().map(url),
            storyboard_url: out.storyboard.as_deref().map(url),
        });
        let preview = record
            .preview
            .as_deref()
            .filter(|_| previewing)
            .filter(|_| matches!(record.status, Status::Processing | Status::Uploading))
            .map(|name| Preview {
                hls_url: format!("{base_url}/{PREVIEW_PREFIX}/{}/{name}", record.media_token),
            });
        let renditions = completed.map(|out| {
            out.renditions
                .iter()
                .map(|r| RenditionView {
                    name: &r.name,
                    width: r.width,
                    height: r.height,
                    bandwidth: r.bandwidth,
                    playlist_url: url(&r.playlist),
                    encoded: r.encoded,
                })
                .collect()
        });
        UploadView {
            id: record.id,
            filename: &record.filename,
            folder: &record.folder,
            status: record.status.code(),
            status_text: record.status.text(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            progress,
            size_bytes: record.size_bytes,
            source: record.source.as_ref(),
            playback,
            preview,
            renditions,
            error: record.error.as_ref(),
        }
    }
}
