//! dunnage: a backup sidecar for containers.
//!
//! One run is a pipeline of small stages, each in its own module:
//! `config` (environment, `_FILE`, conf.d -> [`config::Config`]) -> `schedule` (cron, jitter,
//! lock) -> `run` (phases, stats) -> `docker` (stop/start labeled containers) -> `archive` (walk, tar, compress: a byte stream) ->
//! `storage` (destinations: local, S3, Azure, WebDAV, SFTP, Dropbox; one fan-out, retries in
//! one place) -> `prune` (retention policy over listings, then deletes) -> `notify` (health pings).
//! `stream` is the bounded channel that carries the archive between the blocking archive
//! stage and the async destinations.

pub mod archive;
pub mod check;
pub mod config;
pub mod docker;
pub mod filename;
pub mod notify;
pub mod prune;
pub mod run;
pub mod schedule;
pub mod spool;
pub mod storage;
pub mod stream;
