//! The `dunnage` command line. Parsing only; the work is in the library.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dunnage::config::Config;

/// Exit code for a backup that failed.
const EXIT_FAILED: u8 = 1;
/// Exit code for invalid configuration or usage (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(name = "dunnage", version, about = "Backup sidecar for containers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one backup now and exit: 0 on success, 1 when it failed, 2 for invalid configuration.
    Backup,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args());
    init_logging();
    match cli.command {
        Command::Backup => backup(),
    }
}

/// Invoked as `backup` (a symlink in the image, as in docker-volume-backup) the binary
/// behaves as `dunnage backup`.
fn args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_os_string());
    if invoked_as.as_deref() == Some("backup".as_ref()) {
        args.insert(1, "backup".into());
    }
    args
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn backup() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(dunnage::run::backup(&config)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("backup failed: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
