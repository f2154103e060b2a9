//! Prometheus metrics of one server. Every server owns its own
//! [`prometheus::Registry`] (no process-global recorder), so several servers
//! in one process (as in the tests) keep separate counts.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::store::record::Status;

/// Content type of [`Metrics::render`]: the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every status an upload can move to, so each series exists from the start.
const STATUSES: [Status; 5] = [
    Status::Pending,
    Status::Processing,
    Status::Uploading,
    Status::Completed,
    Status::Failed,
];

/// Seconds a transcode takes, from a short clip to a long film.
const TRANSCODE_SECONDS_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// Seconds of media per second of wall time; above 1 is faster than real time.
const REALTIME_FACTOR_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0,
];

/// Seconds to answer a request: status polls take milliseconds, uploads minutes.
const HTTP_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Method labels the table has columns for.
const HTTP_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "OTHER",
];
/// Statuses the server answers with; any other is counted the slow way.
const HTTP_STATUSES: [u16; 24] = [
    200, 201, 202, 204, 206, 304, 400, 401, 403, 404, 405, 406, 408, 409, 411, 413, 415, 416, 422,
    429, 500, 502, 503, 507,
];

/// The handles of one route and method.
#[derive(Default)]
struct HttpCell {
    seconds: OnceLock<Histogram>,
    requests: [OnceLock<IntCounter>; HTTP_STATUSES.len()],
}

/// Handles by route (in the order of [`Metrics::new`]'s labels) and method.
type HttpSeries = Vec<[HttpCell; HTTP_METHODS.len()]>;

/// Where a storage error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageStage {
    /// Writing an incoming body to the staging folder.
    Staging,
    /// Moving finished outputs to final storage.
    Final,
    /// Committing status changes to the database.
    Database,
}

impl StorageStage {
    fn label(self) -> &'static str {
        match self {
            StorageStage::Staging => "staging",
            StorageStage::Final => "final",
            StorageStage::Database => "database",
        }
    }
}

/// The metrics of one server and the registry they are exposed from.
pub struct Metrics {
    /// The server's own registry, rendered at `/metrics`.
    registry: Registry,
    /// Status transitions by the status moved to (`pending` counts accepted uploads).
    transitions: IntCounterVec,
    /// Bytes of accepted uploads.
    ingested_bytes: IntCounter,
    /// Accepted uploads waiting for a transcoder; set at each scrape.
    queue_depth: IntGauge,
    /// Transcodes running now.
    jobs_running: IntGauge,
    /// Wall time of successful transcodes.
    transcode_seconds: Histogram,
    /// Media seconds per wall second of successful transcodes.
    realtime_factor: Histogram,
    /// Answered requests by route template, method and status.
    http_requests: IntCounterVec,
    /// Time to the response head, by route template and method.
    http_seconds: HistogramVec,
    /// The route labels the HTTP series table has rows for.
    http_routes: &'static [&'static str],
    /// The series of each (route, method, status) seen so far. Finding a
    /// labelled series hashes its label strings under the vector's lock (and
    /// the status would be formatted each time); this keeps the handles in
    /// a table read without a lock.
    http_series: HttpSeries,
    /// Failed writes to staging or final storage.
    storage_errors: IntCounterVec,
    /// Responses cut off because their client read nothing for the stall time.
    stalled_responses: IntCounter,
    /// Requests holding a file, a body or a buffer; set at each scrape.
    requests_in_flight: IntGauge,
    /// Event streams open; set at each scrape.
    event_streams: IntGauge,
    /// Removals from final storage recorded and not yet done.
    cleanups_pending: IntGauge,
    /// Tries of such removals that failed.
    cleanup_failures: IntCounter,
}

/// The gauges read from the server at each scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sampled {
    /// Accepted uploads waiting for a transcoder.
    pub queue_depth: usize,
    /// Requests holding a file, a body or a buffer.
    pub requests_in_flight: usize,
    /// Event streams open.
    pub event_streams: usize,
}

/// Counts a transcode as running until dropped.
pub struct RunningJob<'a>(&'a IntGauge);

impl Drop for RunningJob<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Creates the metrics and registers them in a new registry. The HTTP
    /// series are labelled by `http_routes`, the route templates the server
    /// answers for.
    pub fn new(http_routes: &'static [&'static str]) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let transitions = IntCounterVec::new(
            Opts::new(
                "vidpipe_upload_transitions_total",
                "Upload status transitions, by the status moved to (pending = accepted).",
            ),
            &["status"],
        )?;
        let ingested_bytes = IntCounter::new(
            "vidpipe_ingested_bytes_total",
            "Bytes of video accepted (bodies answered 202).",
        )?;
        let queue_depth = IntGauge::new(
            "vidpipe_queue_depth",
            "Accepted uploads waiting for a transcoder.",
        )?;
        let jobs_running = IntGauge::new(
            "vidpipe_transcode_jobs_running",
            "Transcodes running in the transcoder pool.",
        )?;
        let transcode_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "vidpipe_transcode_duration_seconds",
                "Wall time of successful transcodes.",
            )
            .buckets(TRANSCODE_SECONDS_BUCKETS.to_vec()),
        )?;
        let realtime_factor = Histogram::with_opts(
            HistogramOpts::new(
                "vidpipe_transcode_realtime_factor",
                "Seconds of media transcoded per second of wall time (above 1 is faster than real time).",
            )
            .buckets(REALTIME_FACTOR_BUCKETS.to_vec()),
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "vidpipe_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "vidpipe_http_request_duration_seconds",
                "Time from request to response head, by route template and method.",
            )
            .buckets(HTTP_SECONDS_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let storage_errors = IntCounterVec::new(
            Opts::new(
                "vidpipe_storage_errors_total",
                "Failed writes, by stage (staging = incoming bodies, final = final storage, database = status commits).",
            ),
            &["stage"],
        )?;
        let stalled_responses = IntCounter::new(
            "vidpipe_http_stalled_responses_total",
            "Responses cut off (HTTP/2 stream reset, HTTP/1 connection closed) because their client read nothing for the stall time.",
        )?;
        let requests_in_flight = IntGauge::new(
            "vidpipe_http_requests_in_flight",
            "Requests holding a file, a body or a buffer now (capped by max_requests_in_flight).",
        )?;
        let event_streams = IntGauge::new(
            "vidpipe_event_streams_open",
            "Event streams (GET /events and GET /uploads/{id}/events) open now, over every key.",
        )?;
        let cleanups_pending = IntGauge::new(
            "vidpipe_storage_cleanups_pending",
            "Failed uploads whose outputs are still to be removed from final storage.",
        )?;
        let cleanup_failures = IntCounter::new(
            "vidpipe_storage_cleanup_failures_total",
            "Tries to remove a failed upload's outputs from final storage that failed (each is tried again).",
        )?;
        let build_info = IntGauge::with_opts(
            Opts::new("vidpipe_build_info", "Always 1; the version is a label.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);

        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(ingested_bytes.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(jobs_running.clone()))?;
        registry.register(Box::new(transcode_seconds.clone()))?;
        registry.register(Box::new(realtime_factor.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        registry.register(Box::new(storage_errors.clone()))?;
        registry.register(Box::new(stalled_responses.clone()))?;
        registry.register(Box::new(requests_in_flight.clone()))?;
        registry.register(Box::new(event_streams.clone()))?;
        registry.register(Box::new(cleanups_pending.clone()))?;
        registry.register(Box::new(cleanup_failures.clone()))?;
        registry.register(Box::new(build_info))?;

        for status in STATUSES {
            transitions.with_label_values(&[status.text()]);
        }
        for stage in [
            StorageStage::Staging,
            StorageStage::Final,
            StorageStage::Database,
        ] {
            storage_errors.with_label_values(&[stage.label()]);
        }
        Ok(Metrics {
            registry,
            transitions,
            ingested_bytes,
            queue_depth,
            jobs_running,
            transcode_seconds,
            realtime_factor,
            http_requests,
            http_seconds,
            http_routes,
            http_series: http_routes.iter().map(|_| Default::default()).collect(),
            storage_errors,
            stalled_responses,
            requests_in_flight,
            event_streams,
            cleanups_pending,
            cleanup_failures,
        })
    }

    /// `n` removals from final storage are still to be done.
    pub fn cleanups_pending(&self, n: usize) {
        self.cleanups_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A try to remove a failed upload's outputs failed.
    pub fn cleanup_failed(&self) {
        self.cleanup_failures.inc();
    }

    /// A response was cut off because its client read nothing.
    pub fn stalled_response(&self) {
        self.stalled_responses.inc();
    }

    /// An upload moved to `to`.
    pub fn transition(&self, to: Status) {
        self.transitions.with_label_values(&[to.text()]).inc();
    }

    /// An upload of `bytes` was accepted.
    pub fn ingested(&self, bytes: u64) {
        self.ingested_bytes.inc_by(bytes);
    }

    /// Counts a transcode as running until the guard is dropped.
    pub fn job_running(&self) -> RunningJob<'_> {
        self.jobs_running.inc();
        RunningJob(&self.jobs_running)
    }

    /// A transcode succeeded after `elapsed`, on `media_seconds` of media when known.
    pub fn transcoded(&self, elapsed: Duration, media_seconds: Option<f64>) {
        let wall = elapsed.as_secs_f64();
        self.transcode_seconds.observe(wall);
        if let Some(media) = media_seconds.filter(|m| m.is_finite() && *m > 0.0) {
            if wall > 0.0 {
                self.realtime_factor.observe(media / wall);
            }
        }
    }

    /// A write to storage failed.
    pub fn storage_error(&self, stage: StorageStage) {
        self.storage_errors
            .with_label_values(&[stage.label()])
            .inc();
    }

    /// A request to `route` (a template, never a raw path) was answered.
    pub fn http_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        latency: Duration,
    ) {
        let seconds = latency.as_secs_f64();
        let (Some(r), Some(m)) = (
            self.http_routes.iter().position(|&x| x == route),
            HTTP_METHODS.iter().position(|&x| x == method),
        ) else {
            // Not a label the table knows: the slow way.
            self.http_requests
                .with_label_values(&[route, method, &status.to_string()])
                .inc();
            self.http_seconds
                .with_label_values(&[route, method])
                .observe(seconds);
            return;
        };
        let cell = &self.http_series[r][m];
        cell.seconds
            .get_or_init(|| self.http_seconds.with_label_values(&[route, method]))
            .observe(seconds);
        let counter = || {
            self.http_requests
                .with_label_values(&[route, method, &status.to_string()])
        };
        match HTTP_STATUSES.iter().position(|&x| x == status) {
            Some(s) => cell.requests[s].get_or_init(counter).inc(),
            None => counter().inc(),
        }
    }

    /// Every metric in the Prometheus text format, with the gauges of `now`.
    pub fn render(&self, now: Sampled) -> Result<String, prometheus::Error> {
        let gauge = |g: &IntGauge, n: usize| g.set(i64::try_from(n).unwrap_or(i64::MAX));
        gauge(&self.queue_depth, now.queue_depth);
        gauge(&self.requests_in_flight, now.requests_in_flight);
        gauge(&self.event_streams, now.event_streams);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_and_counts() {
        let metrics = Metrics::new(&["/healthz"]).unwrap();
        metrics.transition(Status::Pending);
        metrics.ingested(42);
        metrics.transcoded(Duration::from_secs(2), Some(4.0));
        metrics.http_request("/healthz", "GET", 200, Duration::from_millis(3));
        metrics.storage_error(StorageStage::Final);
        {
            let _job = metrics.job_running();
            let sampled = Sampled {
                queue_depth: 7,
                ..Default::default()
            };
            assert!(metrics
                .render(sampled)
                .unwrap()
                .contains("vidpipe_transcode_jobs_running 1"));
        }
        let sampled = Sampled {
            queue_depth: 3,
            event_streams: 2,
            ..Default::default()
        };
        let text = metrics.render(sampled).unwrap();
        assert!(text.contains("vidpipe_event_streams_open 2"), "{text}");
        for line in [
            "vidpipe_upload_transitions_total{status=\"pending\"} 1",
            "vidpipe_upload_transitions_total{status=\"failed\"} 0",
            "vidpipe_ingested_bytes_total 42",
            "vidpipe_queue_depth 3",
            "vidpipe_transcode_jobs_running 0",
            "vidpipe_transcode_duration_seconds_count 1",
            "vidpipe_transcode_realtime_factor_sum 2",
            "vidpipe_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
            "vidpipe_storage_errors_total{stage=\"final\"} 1",
            "vidpipe_storage_errors_total{stage=\"staging\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn two_servers_keep_separate_counts() {
        let (a, b) = (Metrics::new(&[]).unwrap(), Metrics::new(&[]).unwrap());
        a.ingested(5);
        assert!(b
            .render(Sampled::default())
            .unwrap()
            .contains("vidpipe_ingested_bytes_total 0"));
    }
}
