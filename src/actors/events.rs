//! The live feed behind the event streams (`GET /events`,
//! `GET /uploads/{id}/events`): every committed change of an upload that
//! clients can see, and the progress of a running transcode at most once a
//! second, published to the streams of its tenant.
//!
//! Each tenant with a stream open has one bounded broadcast channel of
//! [`Change`]s; for a tenant with none, nothing is rendered or sent, only
//! the id of its last change kept (so that a stream that comes back knows
//! whether it missed any). A change is rendered once, when it is published,
//! into the frames its streams share. A stream that falls more than the
//! channel's capacity behind is told ([`Missed::Lagged`]) and goes on from
//! the newest change: the tenant stream tells its client to reload, an
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
    /// The frame the upload's own streams send; none for a deletion.
    pub upload_frame: Option<Bytes>,
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

fn rendered(services: &Services, record: &UploadRecord, progress: Option<u8>) -> Vec<u8> {
    let view = UploadView::render(
        record,
        services.storage.as_ref(),
        &services.base_url,
        progress,
        services.previews.serves(record),
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
    /// The id of each tenant's last change since start, streams open or not.
    last_change: HashMap<Arc<str>, u64>,
    /// Uploads in `processing`, as last written, and when their progress
    /// was last published.
    running: HashMap<Uuid, Running>,
    /// The first id of this run: an id below it is from an earlier one.
    first_seq: u64,
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
    /// It fell behind by more than the channel holds: the changes up to the
    /// one with this id were dropped, and it goes on from the next.
    Lagged(u64),
    /// The server is stopping.
    Closed,
}

impl Default for EventFeed {
    fn default() -> Self {
        // Ids go on growing across restarts: they start from the clock (µs).
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(1)
            .max(1);
        EventFeed {
            inner: Arc::new(Mutex::new(Inner {
                tenants: HashMap::new(),
                last_change: HashMap::new(),
                running: HashMap::new(),
                first_seq: start,
                next_seq: start,
            })),
            closed: CancellationToken::new(),
        }
    }
}

fn locked(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventFeed {
    /// Opens a stream on `tenant`'s changes, unless it has `limit` open.
    pub fn subscribe(
        &self,
        tenant: &Arc<str>,
        limit: usize,
    ) -> Result<Subscription, TooManyStreams> {
        let mut inner = locked(&self.inner);
        let opened = inner.last_seen(tenant);
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
        Ok(Subscription {
            receiver,
            tenant: tenant.clone(),
            inner: self.inner.clone(),
            closed: self.closed.clone(),
            opened,
        })
    }

    /// How many streams are open, over every tenant.
    pub fn open_streams(&self) -> usize {
        locked(&self.inner)
            .tenants
            .values()
            .map(|c| c.streams)
            .sum()
    }

    /// Ends every stream, now and from now on (the server is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// A committed write left `record` so: its tenant's streams hear of it.
    pub fn changed(&self, services: &Services, record: &UploadRecord) {
        let mut inner = locked(&self.inner);
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
        inner.publish(&record.tenant, record.id, || {
            let data = rendered(services, record, progress);
            let id = upload_event_id(record, progress);
            Rendered {
                event: "upload",
                upload_frame: Some(frame("upload", Some(id), &data)),
                upload_event_id: Some(id),
                last: record.status.is_terminal(),
                data,
            }
        });
    }

    /// A running transcode of `id` reached `percent`: published if it
    /// changed and the last was at least [`PROGRESS_EVERY`] ago.
    pub fn progressed(&self, services: &Services, id: Uuid, percent: u8) {
        let mut inner = locked(&self.inner);
        let Some(running) = inner.running.get_mut(&id) else {
            return;
        };
        if running.published_at.elapsed() < PROGRESS_EVERY || running.progress == Some(percent) {
            return;
        }
        running.progress = Some(percent);
        running.published_at = Instant::now();
        let record = running.record.clone();
        inner.publish(&record.tenant, id, || {
            let data = rendered(services, &record, Some(percent));
            let event_id = upload_event_id(&record, Some(percent));
            Rendered {
                event: "upload",
                upload_frame: Some(frame("upload", Some(event_id), &data)),
                upload_event_id: Some(event_id),
                last: false,
                data,
            }
        });
    }

    /// `record`'s upload was deleted: `event: deleted` on the tenant's
    /// streams; the upload's own streams end.
    pub fn deleted(&self, record: &UploadRecord) {
        let mut inner = locked(&self.inner);
        inner.running.remove(&record.id);
        inner.publish(&record.tenant, record.id, || Rendered {
            event: "deleted",
            upload_frame: None,
            upload_event_id: None,
            last: true,
            data: json!({ "id": record.id }).to_string().into_bytes(),
        });
    }
}

/// A change as [`Inner::publish`] sends it, before its tenant frame is made.
struct Rendered {
    event: &'static str,
    upload_event_id: Option<u64>,
    upload_frame: Option<Bytes>,
    last: bool,
    data: Vec<u8>,
}

impl Inner {
    /// The id of `tenant`'s last change, or the id just before this run's
    /// first if it had none since start.
    fn last_seen(&self, tenant: &str) -> u64 {
        self.last_change
            .get(tenant)
            .copied()
            .unwrap_or(self.first_seq - 1)
    }

    /// Gives the change of `upload` that `render` makes the next id and
    /// sends it to `tenant`'s streams, rendering it only if there are any.
    fn publish(&mut self, tenant: &str, upload: Uuid, render: impl FnOnce() -> Rendered) {
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.last_change.get_mut(tenant) {
            Some(last) => *last = seq,
            None => {
                self.last_change.insert(tenant.into(), seq);
            }
        }
        let Some(channel) = self.tenants.get(tenant) else {
            return;
        };
        if channel.sender.receiver_count() == 0 {
            return;
        }
        let Rendered {
            event,
            upload_event_id,
            upload_frame,
            last,
            data,
        } = render();
        let change = Change {
            upload,
            upload_event_id,
            last,
            tenant_frame: frame(event, Some(seq), &data),
            upload_frame,
        };
        let _ = channel.sender.send(Arc::new(change));
    }
}

/// One open stream's place on its tenant's channel, given up when dropped.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Change>>,
    tenant: Arc<str>,
    inner: Arc<Mutex<Inner>>,
    closed: CancellationToken,
    /// The id of the tenant's last change when the stream opened.
    opened: u64,
}

impl Subscription {
    /// The next change of the tenant's uploads, or what was missed.
    pub async fn next(&mut self) -> Result<Arc<Change>, Missed> {
        let received = tokio::select! {
            biased;
            _ = self.closed.cancelled() => return Err(Missed::Closed),
            received = self.receiver.recv() => received,
        };
        match received {
            Ok(change) => Ok(change),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // What is left in the channel is stale too: go on from now.
                let inner = locked(&self.inner);
                self.receiver = self.receiver.resubscribe();
                Err(Missed::Lagged(inner.last_seen(&self.tenant)))
            }
            Err(broadcast::error::RecvError::Closed) => Err(Missed::Closed),
        }
    }

    /// The tenant whose changes these are.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The id of the tenant's last change when the stream opened.
    pub fn opened_after(&self) -> u64 {
        self.opened
    }

    /// Whether a client that saw the change with id `seen` (on an earlier
    /// stream) missed one before this stream opened: one came after it,
    /// or it is from an earlier run (changes were not kept over the
    /// restart), or from no run at all.
    pub fn missed_since(&self, seen: u64) -> bool {
        let inner = locked(&self.inner);
        // `first_seq - 1` is this run's id of "no change yet".
        seen < self.opened || seen.saturating_add(1) < inner.first_seq || seen >= inner.next_seq
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = locked(&self.inner);
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

    fn change(feed: &EventFeed, tenant: &str, upload: Uuid, n: u64) {
        let mut inner = locked(&feed.inner);
        inner.publish(tenant, upload, || Rendered {
            event: "upload",
            upload_event_id: Some(n),
            upload_frame: None,
            last: false,
            data: b"{}".to_vec(),
        });
    }

    fn tenant_id(change: &Change) -> u64 {
        let frame = std::str::from_utf8(&change.tenant_frame).unwrap();
        assert!(frame.ends_with("\ndata: {}\n\n"), "{frame}");
        let id = frame.strip_prefix("event: upload\nid: ").unwrap();
        id.split('\n').next().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_is_told_and_goes_on_from_the_newest() {
        let feed = EventFeed::default();
        let tenant: Arc<str> = "t".into();
        let mut slow = feed.subscribe(&tenant, 4).unwrap();
        let mut quick = feed.subscribe(&tenant, 4).unwrap();
        let upload = Uuid::new_v4();
        let mut ids = Vec::new();
        for n in 1..=CHANNEL_CAPACITY as u64 + 10 {
            change(&feed, "t", upload, n);
            let received = quick.next().await.unwrap();
            assert_eq!(received.upload_event_id, Some(n));
            ids.push(tenant_id(&received));
        }
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
        // The slow one is told up to where it missed, then gets only what is new.
        assert_eq!(
            slow.next().await.unwrap_err(),
            Missed::Lagged(*ids.last().unwrap())
        );
        change(&feed, "t", upload, 1000);
        assert_eq!(slow.next().await.unwrap().upload_event_id, Some(1000));
    }

    #[test]
    fn a_returning_client_knows_whether_it_missed_a_change() {
        let feed = EventFeed::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first_seq = locked(&feed.inner).first_seq;
        // Nothing happened to `a` since start: the id it was given for that
        // is up to date; an id of an earlier run missed the restart.
        let stream = feed.subscribe(&a, 4).unwrap();
        assert_eq!(stream.opened_after(), first_seq - 1);
        assert!(!stream.missed_since(first_seq - 1));
        assert!(stream.missed_since(first_seq - 2));
        assert!(stream.missed_since(first_seq - 1000));
        drop(stream);
        // Changes while no stream is open are counted all the same.
        change(&feed, "a", Uuid::new_v4(), 1);
        let seen = locked(&feed.inner).last_seen("a");
        change(&feed, "b", Uuid::new_v4(), 1);
        let stream = feed.subscribe(&a, 4).unwrap();
        assert!(
            !stream.missed_since(seen),
            "another tenant's change is not a's"
        );
        assert!(stream.missed_since(seen - 1));
        assert!(stream.missed_since(u64::MAX), "an id this run never gave");
        drop(stream);
        change(&feed, "a", Uuid::new_v4(), 2);
        assert!(feed.subscribe(&a, 4).unwrap().missed_since(seen));
        assert!(feed.subscribe(&b, 4).is_ok());
    }

    #[test]
    fn streams_are_capped_per_tenant_and_give_their_place_back() {
        let feed = EventFeed::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = feed.subscribe(&a, 2).unwrap();
        let second = feed.subscribe(&a, 2).unwrap();
        assert_eq!(feed.subscribe(&a, 2).err(), Some(TooManyStreams));
        assert!(feed.subscribe(&b, 2).is_ok());
        drop(first);
        assert!(feed.subscribe(&a, 2).is_ok());
        drop(second);
        assert!(locked(&feed.inner).tenants.is_empty(), "no channel is left");
    }

    #[test]
    fn nothing_is_rendered_for_a_tenant_without_streams() {
        let feed = EventFeed::default();
        let mut inner = locked(&feed.inner);
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
