//! dunnage: a backup sidecar for containers.
//!
//! One run is a pipeline of small stages, each in its own module (see docs/architecture.md):
//! `config` (environment, `_FILE`, conf.d -> [`config::Config`]) -> `commands` (backup,
//! prune, check, recover, scheduler; one file each) -> `schedule` (cron, jitter, lock) and
//! `docker` (stop/start labeled containers, hooks) -> `pipeline` (archive -> stream ->
//! spool -> every destination) -> `storage` (one trait; local, S3, Azure, WebDAV, SFTP,
//! Dropbox) -> `prune` (retention over listings) -> `report` (run results) -> `notify`.
//! `net` (TLS, retry budget, error chains) and `stream` sit at the bottom.

// The public surface: what the binary (`main.rs`) and the integration tests use. The
// rest is private, so the compiler reports what nothing uses.
pub mod commands;
pub mod config;
pub mod registry;
pub mod secrets;
pub mod storage;

pub use metrics::Metrics;
pub use notify::capture::{CaptureLayer, RUN_SPAN};

mod archive;
mod catalog;
mod commit;
mod docker;
mod duration;
mod fetch;
mod filename;
mod manifest;
mod metrics;
mod net;
mod notify;
mod pipeline;
mod progress;
mod prune;
mod report;
mod resources;
mod schedule;
mod spool;
mod stream;
mod tokens;
