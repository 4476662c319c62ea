//! The integration tests, one binary (one link): each module drives the real `dunnage`
//! binary, or the library's storage layer, against real tools and the servers that
//! `scripts/with-servers` starts on 127.0.0.1. Run one module with
//! `scripts/test --test integration sftp::`.

mod common;

mod api;
mod backup;
mod cli;
mod conformance;
mod control;
mod docker;
mod docs;
mod dropbox;
mod encryption;
mod faults;
mod gdrive;
mod health;
mod image;
mod notify;
mod remote;
mod restore;
mod scheduler;
mod sftp;
mod webdav;
