//! What the command line (and later the API) can ask for, one file each. Each takes the
//! validated configurations and reports what happened; `main` only turns that into an exit
//! code.
//!
//! - `backup`: one run (lock, hooks, containers, archive and store, prune, report).
//! - `list`: the backups each schedule has in each destination.
//! - `prune`: the retention policy now, or a dry run.
//! - `check`: can every destination be reached, read and written; do notifications arrive.
//! - `recover`: start containers an interrupted run left stopped.
//! - `scheduler`: every schedule on its cron expression until shutdown.
//! - `startup`: telling people that the configuration is invalid (once per mistake).

pub mod akeeba;
pub mod backup;
pub mod check;
pub mod list;
pub mod profiles;
pub mod prune;
pub mod recover;
pub mod rest;
pub mod restore;
pub mod runs;
pub mod scheduler;
pub mod serve;
pub mod startup;
pub mod verify;
