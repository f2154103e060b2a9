//! # vidpipe
//!
//! A self-hosted Video Uploads API: clients POST a video as multipart form
//! data, get `202 Accepted` at once, and poll while the server transcodes it
//! in-process through libav and moves the results to final storage.
//!
//! # Layout
//!
//! - [`config`]: the one documented `Config`, every default stated; read from a TOML file,
//!   environment and flags by [`config::file`].
//! - [`server`]: start and stop the whole service (database, recovery, actors, HTTP).
//! - [`api`]: the route table, handlers, auth, JSON views, error mapping, the bounds on
//!   what requests may hold, and the `/media` file server.
//! - [`actors`]: supervisor, intake, transcoder pool, uploader, status registry, webhook
//!   delivery, and the cleaner of what failed uploads left in final storage.
//! - [`media`]: probing and the decode -> scale -> encode -> mux pipeline (MP4, poster,
//!   storyboard, HLS ladder); no tokio, no ractor.
//! - [`store`]: redb tables for uploads, their transition history, the webhook outbox, the
//!   removals owed to final storage and API keys; sync code.
//! - [`storage`]: final storage trait, the local-folder backend and the S3-compatible one,
//!   and the cached check behind `/readyz`.
//! - [`console`]: the web console's embedded page and browser libraries, served at `/console/`.
//! - [`view`]: an upload as clients see it, shared by the API and webhook events.
//! - [`webhook`]: signed webhook events: endpoints, signatures, routing into the outbox.
//! - `faults`: crash points for the crash-matrix harness (hidden).
//! - [`layout`]: where files live under the data dir, and how full their disk is.
//! - [`backoff`]: the one exponential backoff of every retry.
//! - [`metrics`]: the server's Prometheus registry and what it counts.
//! - [`logging`]: log output as text or JSON lines.
pub mod actors;
pub mod api;
pub mod backoff;
pub mod config;
pub mod console;
#[doc(hidden)]
pub mod faults;
pub mod layout;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod server;
pub mod storage;
pub mod store;
pub mod view;
pub mod webhook;
