//! The live feed behind the event streams (`GET /events`,
//! `GET /uploads/{id}/events`): every committed change of an upload, and
//! the progress of a running transcode at most once a second, published to
//! the streams of its tenant.
//!
//! Each tenant with a stream open has one bounded broadcast channel of
//! [`Change`]s; a tenant with none costs nothing (no channel, nothing
//! rendered). A change is rendered once, when it is published, into the
//! frames its streams send, which they share. A stream that falls more than
//! the channel's capacity behind misses changes and learns it
//! ([`Missed::Lagged`]): the tenant stream tells its client to reload, an
//! upload's stream reads the record again. Nothing here is durable: the
//! record is, and a stream that starts reads it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Services;
use crate::store::record::{Status, UploadRecord};
use crate::view::UploadView;

/// Least time between two progress events of one upload.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Changes a tenant's channel holds for its slowest stream before that
/// stream misses some.
pub const CHANNEL_CAPACITY: usize = 256;

/// One change of an upload, rendered for both kinds of stream.
#[derive(Debug)]
pub struct Change {
    /// The upload.
    pub upload: Uuid,
    /// Its place in the upload's own stream: grows with every change of it
    /// (none for its deletion, which ends that stream).
    pub upload_event_id: Option<u64>,
    /// Nothing follows it on the upload's stream (completed, failed, deleted).
    pub last: bool,
    /// The frame the tenant's streams send (its id is the feed's sequence).
    pub tenant_frame: Bytes,
    /// The frame the upload's own streams send.
    pub upload_frame: Bytes,
}

/// The id of an upload's event: its record's version, then the progress
/// shown, so that it grows with each write and each progress step.
pub fn upload_event_id(record: &UploadRecord, progress: Option<u8>) -> u64 {
    record.version * 1000 + u64::from(progress.unwrap_or(0))
}

/// The progress an upload's view shows from the live board: only a running
/// transcode has one (the view fixes the others by status).
pub fn shown_progress(services: &Services, record: &UploadRecord) -> Option<u8> {
    (record.status == Status::Processing).then(|| services.progress.get(record.id).unwrap_or(0))
}

/// An SSE frame: `event`, an optional `id`, and one line of `data`.
pub fn frame(event: &str, id: Option<u64>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 48);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The frame of `record` on its own stream, with `progress` shown: what a
/// stream sends when it reads the record rather than receives a change.
pub fn upload_frame(services: &Services, record: &UploadRecord, progress: Option<u8>) -> Bytes {
    let data = rendered(services, record, progress);
    frame("upload", Some(upload_event_id(record, progress)), &data)
}

/// The frame of a deleted upload on its own stream.
pub fn deleted_frame(id: Uuid) -> Bytes {
    frame("deleted", None, json!({ "id": id }).to_string().as_bytes())
}

fn rendered(services: &Services, record: &UploadRecord, progress: Option<u8>) -> Vec<u8> {
    let view = UploadView::render(
        record,
        services.storage.as_ref(),
        &services.base_url,
        progress,
    );
    serde_json::to_vec(&view).unwrap_or_default()
}

/// The feed: the channels of the tenants with a stream open, and the
/// uploads being transcoded (whose progress events are made from them).
pub struct EventFeed {
    inner: Arc<Mutex<Inner>>,
    /// Cancelled when the server stops: every stream ends.
    closed: CancellationToken,
}

struct Inner {
    tenants: HashMap<Arc<str>, Channel>,
    /// Uploads in `processing`, as last written, and when their progress
    /// was last published.
    running: HashMap<Uuid, Running>,
    /// The id of the next change on the tenant streams.
    next_seq: u64,
}

struct Channel {
    sender: broadcast::Sender<Arc<Change>>,
    /// Streams open on it.
    streams: usize,
}

struct Running {
    record: UploadRecord,
    progress: Option<u8>,
    published_at: Instant,
}

/// Why a stream could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyStreams;

/// What a stream missed.
#[derive(Debug, PartialEq, Eq)]
pub enum Missed {
    /// It fell behind by more than the channel holds: changes were dropped.
    Lagged,
    /// The server is stopping.
    Closed,
}

impl Default for EventFeed {
    fn default() -> Self {
        // Ids go on growing across restarts: they start from the clock (µs).
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(1);
        EventFeed {
            inner: Arc::new(Mutex::new(Inner {
                tenants: HashMap::new(),
                running: HashMap::new(),
                next_seq: start,
            })),
            closed: CancellationToken::new(),
        }
    }
}

impl EventFeed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a stream on `tenant`'s changes, unless it has `limit` open.
    pub fn subscribe(
        &self,
        tenant: &Arc<str>,
        limit: usize,
    ) -> Result<Subscription, TooManyStreams> {
        let mut inner = self.lock();
        let channel = inner
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| Channel {
                sender: broadcast::channel(CHANNEL_CAPACITY).0,
                streams: 0,
            });
        if channel.streams >= limit {
            if channel.streams == 0 {
                inner.tenants.remove(tenant);
            }
            return Err(TooManyStreams);
        }
        channel.streams += 1;
        let receiver = channel.sender.subscribe();
        let last_seq = inner.next_seq - 1;
        Ok(Subscription {
            receiver,
            tenant: tenant.clone(),
            inner: self.inner.clone(),
            closed: self.closed.clone(),
            last_seq,
        })
    }

    /// Ends every stream, now and from now on (the server is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// How many streams are open, over every tenant.
    pub fn open_streams(&self) -> usize {
        self.lock().tenants.values().map(|c| c.streams).sum()
    }

    /// A committed write left `record` so: its tenant's streams hear of it.
    pub fn changed(&self, services: &Services, record: &UploadRecord) {
        let mut inner = self.lock();
        let progress = shown_progress(services, record);
        if record.status == Status::Processing {
            let running = Running {
                record: record.clone(),
                progress,
                published_at: Instant::now(),
            };
            inner.running.insert(record.id, running);
        } else {
            inner.running.remove(&record.id);
        }
        inner.publish(&record.tenant, record.id, || Rendered {
            event: "upload",
            upload_event_id: Some(upload_event_id(record, progress)),
            last: record.status.is_terminal(),
            data: rendered(services, record, progress),
        });
    }

    /// A running transcode of `id` reached `percent`: published if it
    /// changed and the last was at least [`PROGRESS_EVERY`] ago.
    pub fn progressed(&self, services: &Services, id: Uuid, percent: u8) {
        let mut inner = self.lock();
        let Some(running) = inner.running.get(&id) else {
            return;
        };
        let due = running.published_at.elapsed() >= PROGRESS_EVERY;
        if !due || running.progress == Some(percent) || !inner.watched(&running.record.tenant) {
            return;
        }
        let record = running.record.clone();
        if let Some(running) = inner.running.get_mut(&id) {
            running.progress = Some(percent);
            running.published_at = Instant::now();
        }
        inner.publish(&record.tenant, id, || Rendered {
            event: "upload",
            upload_event_id: Some(upload_event_id(&record, Some(percent))),
            last: false,
            data: rendered(services, &record, Some(percent)),
        });
    }

    /// `record`'s upload was deleted.
    pub fn deleted(&self, record: &UploadRecord) {
        let mut inner = self.lock();
        inner.running.remove(&record.id);
        inner.publish(&record.tenant, record.id, || Rendered {
            event: "deleted",
            upload_event_id: None,
            last: true,
            data: json!({ "id": record.id }).to_string().into_bytes(),
        });
    }
}

/// A change as [`Inner::publish`] sends it, before its frames are made.
struct Rendered {
    event: &'static str,
    upload_event_id: Option<u64>,
    last: bool,
    data: Vec<u8>,
}

impl Inner {
    fn watched(&self, tenant: &str) -> bool {
        self.tenants
            .get(tenant)
            .is_some_and(|c| c.sender.receiver_count() > 0)
    }

    /// Sends the change of `upload` that `render` makes to `tenant`'s
    /// streams, rendering it only if there are any.
    fn publish(&mut self, tenant: &str, upload: Uuid, render: impl FnOnce() -> Rendered) {
        let Some(channel) = self.tenants.get(tenant) else {
            return;
        };
        if channel.sender.receiver_count() == 0 {
            return;
        }
        let Rendered {
            event,
            upload_event_id,
            last,
            data,
        } = render();
        let change = Change {
            upload,
            upload_event_id,
            last,
            tenant_frame: frame(event, Some(self.next_seq), &data),
            upload_frame: frame(event, upload_event_id, &data),
        };
        self.next_seq += 1;
        let _ = channel.sender.send(Arc::new(change));
    }
}

/// One open stream's place on its tenant's channel, given up when dropped.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Change>>,
    tenant: Arc<str>,
    inner: Arc<Mutex<Inner>>,
    closed: CancellationToken,
    /// The id of the last change published before the stream opened.
    last_seq: u64,
}

impl Subscription {
    /// The next change of the tenant's uploads, or what was missed.
    pub async fn next(&mut self) -> Result<Arc<Change>, Missed> {
        tokio::select! {
            biased;
            _ = self.closed.cancelled() => Err(Missed::Closed),
            received = self.receiver.recv() => match received {
                Ok(change) => Ok(change),
                Err(broadcast::error::RecvError::Lagged(_)) => Err(Missed::Lagged),
                Err(broadcast::error::RecvError::Closed) => Err(Missed::Closed),
            },
        }
    }

    /// The id of the last change on the tenant streams before this one opened.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = inner.tenants.get_mut(&self.tenant) {
            channel.streams -= 1;
            if channel.streams == 0 {
                inner.tenants.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(inner: &Arc<Mutex<Inner>>, tenant: &str, upload: Uuid, n: u64) {
        let mut inner = inner.lock().unwrap();
        inner.publish(tenant, upload, || Rendered {
            event: "upload",
            upload_event_id: Some(n),
            last: false,
            data: b"{}".to_vec(),
        });
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_is_told_and_goes_on_from_the_newest() {
        let feed = EventFeed::default();
        let tenant: Arc<str> = "t".into();
        let mut slow = feed.subscribe(&tenant, 4).unwrap();
        let mut quick = feed.subscribe(&tenant, 4).unwrap();
        let upload = Uuid::new_v4();
        let total = CHANNEL_CAPACITY as u64 + 10;
        let mut received = Vec::new();
        for n in 1..=total {
            change(&feed.inner, "t", upload, n);
            received.push(quick.next().await.unwrap());
            assert_eq!(received.last().unwrap().upload_event_id, Some(n));
        }
        // The slow one missed the oldest changes; then it has the newest ones.
        assert_eq!(slow.next().await.unwrap_err(), Missed::Lagged);
        let next = slow.next().await.unwrap().upload_event_id.unwrap();
        assert_eq!(next, total - CHANNEL_CAPACITY as u64 + 1);
        // The tenant frames' ids are the feed's sequence; the upload's, its own.
        let ids: Vec<u64> = received
            .iter()
            .map(|c| {
                let frame = std::str::from_utf8(&c.tenant_frame).unwrap();
                assert!(frame.ends_with("\ndata: {}\n\n"), "{frame}");
                let id = frame.strip_prefix("event: upload\nid: ").unwrap();
                id.split('\n').next().unwrap().parse().unwrap()
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
        let first = std::str::from_utf8(&received[0].upload_frame).unwrap();
        assert_eq!(first, "event: upload\nid: 1\ndata: {}\n\n");
    }

    #[test]
    fn streams_are_capped_per_tenant_and_give_their_place_back() {
        let feed = EventFeed::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = feed.subscribe(&a, 2).unwrap();
        let _second = feed.subscribe(&a, 2).unwrap();
        assert_eq!(feed.subscribe(&a, 2).err(), Some(TooManyStreams));
        assert!(feed.subscribe(&b, 2).is_ok());
        drop(first);
        assert!(feed.subscribe(&a, 2).is_ok());
        assert_eq!(feed.open_streams(), 1);
    }

    #[test]
    fn nothing_is_rendered_for_a_tenant_without_streams() {
        let feed = EventFeed::default();
        let mut inner = feed.inner.lock().unwrap();
        inner.publish("nobody", Uuid::new_v4(), || panic!("rendered for no one"));
        assert!(inner.tenants.is_empty());
    }

    #[tokio::test]
    async fn closing_the_feed_ends_every_stream() {
        let feed = EventFeed::default();
        let mut stream = feed.subscribe(&"t".into(), 1).unwrap();
        feed.close();
        assert_eq!(stream.next().await.unwrap_err(), Missed::Closed);
    }
}
