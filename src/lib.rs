//! # vidpipe
//!
//! A self-hosted Video Uploads API: clients POST a video as multipart form
//! data, get `202 Accepted` at once, and poll while the server transcodes it
//! in-process through libav and moves the results to final storage.
//!
//! # Layout
//!
//! - [`config`]: the one documented `Config`, every default stated.
//! - [`server`]: start and stop the whole service (database, recovery, actors, HTTP).
//! - [`api`]: warp routes, handlers, auth, JSON views, error mapping.
//! - [`actors`]: supervisor, intake, transcoder pool, uploader, status registry.
//! - [`media`]: probing and the decode -> scale -> encode -> mux pipeline; no tokio, no ractor.
//! - [`store`]: redb tables for uploads, their transition history and API keys; sync code.
//! - [`storage`]: final storage trait and the local-folder backend.
//! - [`layout`]: where files live under the data dir.
pub mod actors;
pub mod api;
pub mod config;
pub mod layout;
pub mod media;
pub mod server;
pub mod storage;
pub mod store;
