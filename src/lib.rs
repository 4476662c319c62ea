//! dunnage: a backup sidecar for containers.
//!
//! One run is a pipeline of small stages, each in its own module (see docs/architecture.md):
//! `config` (environment, `_FILE`, conf.d -> [`config::Config`]) -> `commands` (backup,
//! prune, check, recover, scheduler; one file each) -> `schedule` (cron, jitter, lock) and
//! `docker` (stop/start labeled containers, hooks) -> `pipeline` (archive -> stream ->
//! spool -> every destination) -> `storage` (one trait; local, S3, Azure, WebDAV, SFTP,
//! Dropbox) -> `prune` (retention over listings) -> `report` (run results) -> `notify`.
//! `net` (TLS, retry budget, error chains) and `stream` sit at the bottom.

pub mod archive;
pub mod commands;
pub mod config;
pub mod docker;
pub mod duration;
pub mod filename;
pub mod net;
pub mod notify;
pub mod pipeline;
pub mod prune;
pub mod registry;
pub mod report;
pub mod schedule;
pub mod spool;
pub mod storage;
pub mod stream;
