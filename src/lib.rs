//! dunnage: a backup sidecar for containers.
//!
//! One run is a pipeline of small stages, each in its own module:
//! `config` (environment -> [`config::Config`]) -> `run` (one backup) -> `archive` (walk, tar,
//! compress: a byte stream) -> `storage` (destinations). `stream` is the bounded channel that
//! carries the archive between the blocking archive stage and the async destinations.

pub mod archive;
pub mod config;
pub mod filename;
pub mod run;
pub mod storage;
pub mod stream;
