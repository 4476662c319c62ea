//! The `dunnage` command line. Parsing and exit codes only; the work is in the library.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dunnage::commands;
use dunnage::commands::verify::Level;
use dunnage::config::{self, Config, Vars};
use dunnage::storage::Backend;
use tokio::sync::watch;

/// Exit code for a backup that failed.
const EXIT_FAILED: u8 = 1;
/// Exit code for invalid configuration or usage (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "dunnage",
    version,
    about = "Backup sidecar for containers",
    long_about = "Backup sidecar for containers. Without a command, runs every schedule in \
                  the foreground until SIGTERM or SIGINT."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one backup now and exit: 0 when stored in every destination, 1 when it failed
    /// anywhere, 2 for invalid configuration.
    Backup {
        /// Run only this conf.d file's schedule (default: every schedule, one after another).
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
    },
    /// Show each schedule's resolved settings and where they came from (secrets redacted).
    PrintConfig,
    /// Validate the configuration (exit 2 when invalid), then connect to every destination
    /// and list its folder (exit 1 when one fails).
    Check {
        /// Also store a small test object, read it back and delete it.
        #[arg(long)]
        write: bool,
        /// Also send a test message to every notification service.
        #[arg(long)]
        notify: bool,
        /// Only this conf.d file's schedule.
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
    },
    /// List each schedule's backups in each destination, oldest first (exit 1 when a
    /// destination cannot be listed).
    List {
        /// Only this conf.d file's schedule.
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
        /// Only this destination: local, s3, azure, webdav, sftp (or ssh), dropbox, googledrive.
        #[arg(long, value_name = "DESTINATION", value_parser = parse_backend)]
        from: Option<Backend>,
        /// JSON for scripts: name, size, modified per backup; error per failed destination.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a folder (default: back into BACKUP_SOURCES, stopping the
    /// labeled containers meanwhile). Exit 0 restored, 1 failed or entries refused, 2 bad
    /// usage, 3 the backup could not be read.
    Restore {
        /// A backup's name as `dunnage list` shows it, or `latest`.
        name: String,
        /// The conf.d file's schedule (needed when there are several).
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
        /// Restore from this destination (default: the first that has the backup).
        #[arg(long, value_name = "DESTINATION", value_parser = parse_backend)]
        from: Option<Backend>,
        /// Extract here instead of back into BACKUP_SOURCES (names as stored, like tar -x).
        #[arg(long, value_name = "DIR")]
        target: Option<std::path::PathBuf>,
        /// Drop this many leading folders from every name.
        #[arg(long, value_name = "N")]
        strip_components: Option<usize>,
        /// Replace files that exist in the target (needed when it is not empty).
        #[arg(long)]
        overwrite: bool,
        /// Restoring in place: back up what is there first.
        #[arg(long)]
        safety_backup: bool,
    },
    /// Check stored backups against their manifests. Exit 0 verified, 1 damaged or
    /// missing, 3 could not be checked.
    Verify {
        /// A backup's name, `latest` or `all`.
        #[arg(default_value = "latest")]
        name: String,
        /// Only this conf.d file's schedule.
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
        /// Only this destination.
        #[arg(long, value_name = "DESTINATION", value_parser = parse_backend)]
        from: Option<Backend>,
        /// size (listing against the manifest), hash (download and SHA-256) or read
        /// (decrypt, decompress and read every entry).
        #[arg(long, default_value = "hash", value_parser = parse_level)]
        level: Level,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// For the image's HEALTHCHECK: exit 0 when the running scheduler's API
    /// (DUNNAGE_API_LISTEN) answers /healthz, 1 when it does not; 0 without an API.
    Healthcheck,
    /// Apply the retention policy now.
    Prune {
        /// Show what would be deleted and why, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this conf.d file's schedule.
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
    },
}

fn parse_backend(raw: &str) -> Result<Backend, String> {
    Backend::parse(raw).ok_or_else(|| {
        format!(
            "{raw:?} is not a destination: expected {}",
            Backend::choices_text()
        )
    })
}

fn parse_level(raw: &str) -> Result<Level, String> {
    Level::parse(raw).ok_or_else(|| format!("{raw:?} is not a level: expected size, hash or read"))
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args());
    init_logging();
    if matches!(cli.command, Some(Command::PrintConfig)) {
        return print_config(&Vars::from_env());
    }
    if matches!(cli.command, Some(Command::Healthcheck)) {
        return healthcheck(&Vars::from_env());
    }
    let only = match &cli.command {
        Some(
            Command::Backup { config }
            | Command::List { config, .. }
            | Command::Prune { config, .. }
            | Command::Restore { config, .. }
            | Command::Verify { config, .. }
            | Command::Check { config, .. },
        ) => config.as_deref(),
        _ => None,
    };
    // Runs nobody watches (the scheduler, `backup` from cron) report an invalid
    // configuration through its notifications as well.
    let unattended = matches!(cli.command, None | Some(Command::Backup { .. }));
    let env = Vars::from_env();
    // Whatever happens next, no configured secret reaches the log or a notification.
    if let Ok(schedules) = config::schedules(&env, only) {
        for vars in schedules.iter().filter_map(|s| s.vars.as_ref().ok()) {
            dunnage::secrets::register(config::secret_values(vars).iter().map(String::as_str));
        }
    }
    let configs = match config::load(&env, only) {
        Ok(c) => c,
        Err(e) => {
            log_warnings(e.warnings.iter());
            tracing::error!("{e}");
            if unattended {
                let only = only.map(str::to_owned);
                return runtime(|_| async move {
                    commands::startup::report_invalid(&env, only.as_deref()).await;
                    ExitCode::from(EXIT_CONFIG)
                });
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if unattended {
        commands::startup::forget_invalid(&configs);
    }
    log_warnings(configs.iter().flat_map(|c| &c.warnings));
    match cli.command {
        Some(Command::PrintConfig | Command::Healthcheck) => unreachable!("handled before loading"),
        Some(Command::Check { write, notify, .. }) => {
            println!("configuration OK: {} schedule(s)", configs.len());
            runtime(move |_| async move {
                exit(commands::check::run(&configs, write, notify, &mut std::io::stdout()).await)
            })
        }
        Some(Command::List { from, json, .. }) => runtime(move |_| async move {
            let listed = commands::list::collect(&configs, from).await;
            exit(commands::list::print(&listed, json, &mut std::io::stdout()))
        }),
        Some(Command::Backup { .. }) => {
            runtime(|shutdown| async move { exit(commands::backup::run(&configs, shutdown).await) })
        }
        Some(Command::Verify {
            name,
            from,
            level,
            json,
            ..
        }) => runtime(move |_| async move {
            let results = commands::verify::run(&configs, &name, from, level).await;
            ExitCode::from(commands::verify::print(
                &results,
                json,
                &mut std::io::stdout(),
            ))
        }),
        Some(Command::Restore {
            name,
            from,
            target,
            strip_components,
            overwrite,
            safety_backup,
            ..
        }) => {
            let [config] = configs.as_slice() else {
                eprintln!(
                    "restore: there are {} schedules; choose one with --config NAME",
                    configs.len()
                );
                return ExitCode::from(EXIT_CONFIG);
            };
            let config = config.clone();
            let request = commands::restore::Request {
                which: name,
                from,
                target,
                strip_components,
                overwrite,
                safety_backup,
            };
            runtime(move |shutdown| async move {
                ExitCode::from(
                    commands::restore::run(&config, &request, shutdown, &mut std::io::stdout())
                        .await,
                )
            })
        }
        Some(Command::Prune { dry_run, .. }) => runtime(move |_| async move {
            exit(commands::prune::run(&configs, dry_run, &mut std::io::stdout()).await)
        }),
        None => runtime(|shutdown| async move {
            let (listen, tokens) = match (
                commands::serve::listen_setting(&env),
                commands::serve::tokens_setting(&env),
            ) {
                (Ok(listen), Ok(tokens)) => (listen, tokens),
                (listen, tokens) => {
                    for e in [listen.err(), tokens.err()].into_iter().flatten() {
                        tracing::error!("{e}");
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            tracing::info!(
                "dunnage scheduler started with {} schedule(s)",
                configs.len()
            );
            let metrics = std::sync::Arc::new(dunnage::Metrics::new());
            let concurrency = configs.iter().map(|c| c.concurrency).max().unwrap_or(1);
            let runs = std::sync::Arc::new(commands::runs::Runs::new(
                concurrency,
                metrics.clone(),
                shutdown.clone(),
            ));
            let profiles = commands::profiles::Profiles::new(env.clone(), configs);
            tokio::spawn(profiles.clone().watch(shutdown.clone()));
            let mut api_server = None;
            if let Some(listen) = listen {
                let api = std::sync::Arc::new(commands::serve::Api {
                    profiles: profiles.clone(),
                    runs: runs.clone(),
                    metrics: metrics.clone(),
                    tokens,
                    akeeba: commands::akeeba::Akeeba::new(profiles.clone(), runs.clone()),
                });
                let shutdown = shutdown.clone();
                api_server = Some(tokio::spawn(async move {
                    if let Err(e) = commands::serve::serve(listen, api, shutdown).await {
                        // The schedules go on: backups matter more than their dashboard.
                        tracing::error!("the API is off: {e}");
                    }
                }));
            }
            let failed =
                commands::scheduler::run_forever(profiles, runs.clone(), metrics, shutdown).await;
            runs.wait_idle(std::time::Duration::from_secs(30)).await;
            // Answers being sent are finished and a unix socket file is removed.
            const API_WIND_DOWN: Duration = Duration::from_secs(5);
            if let Some(server) = api_server
                && tokio::time::timeout(API_WIND_DOWN, server).await.is_err()
            {
                tracing::warn!("the API did not finish its open requests within {API_WIND_DOWN:?}");
            }
            tracing::info!("scheduler stopped ({failed} failed run(s) since start)");
            ExitCode::SUCCESS
        }),
    }
}

/// Invoked as `backup` (a symlink in the image, as in docker-volume-backup) the binary
/// behaves as `dunnage backup`, except for `backup print-config` and the like. The
/// reference's `-foreground` flag is accepted and means the default: the scheduler.
fn args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os()
        .filter(|a| a != "-foreground" && a != "--foreground")
        .collect();
    let invoked_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_os_string());
    let next = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let passes_through = [
        "print-config",
        "check",
        "prune",
        "help",
        "--help",
        "-h",
        "--version",
        "-V",
    ];
    if invoked_as.as_deref() == Some("backup".as_ref()) && !passes_through.contains(&next) {
        args.insert(1, "backup".into());
    }
    args
}

fn init_logging() {
    use dunnage::{CaptureLayer, RUN_SPAN};
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // object_store's own retry lines are replaced by ours (storage::http_log).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,object_store=warn"));
    let print = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| dunnage::secrets::Redacting(std::io::stderr()))
        .with_filter(filter);
    // Each run's lines, kept for its notification whatever RUST_LOG says.
    let capture = CaptureLayer.with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.name() == RUN_SPAN || *m.level() <= tracing::Level::INFO
    }));
    tracing_subscriber::registry()
        .with(print)
        .with(capture)
        .init();
}

/// Logs each distinct warning once (schedules from one environment share most of them).
fn log_warnings<'a>(warnings: impl Iterator<Item = &'a String>) {
    let mut seen = Vec::new();
    for w in warnings {
        if !seen.contains(&w) {
            tracing::warn!("{w}");
            seen.push(w);
        }
    }
}

/// Runs `work` on a multi-threaded runtime with a shutdown channel fed by SIGTERM/SIGINT.
fn runtime<F, Fut>(work: F) -> ExitCode
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = rt.block_on(async {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
            let _ = tx.send(true);
            // Keep the sender alive so receivers see the value, not a closed channel.
            std::future::pending::<()>().await;
        });
        let code = work(rx).await;
        // An aborted upload is being cancelled at its destination (e.g. an S3 multipart
        // upload aborted): give that a moment before the process ends.
        if !dunnage::storage::cleanup::settle(Duration::from_secs(15)).await {
            tracing::warn!("gave up waiting for unfinished uploads to be cancelled");
        }
        code
    });
    // An aborted archive stage notices its closed stream at its next write.
    rt.shutdown_timeout(Duration::from_secs(10));
    code
}

/// 0 when `ok`, else the "failed" code.
fn healthcheck(env: &Vars) -> ExitCode {
    match commands::serve::listen_setting(env) {
        Ok(None) => {
            println!("no API (DUNNAGE_API_LISTEN is unset): nothing to check");
            ExitCode::SUCCESS
        }
        Ok(Some(listen)) => match commands::serve::probe(&listen, Duration::from_secs(5)) {
            Ok(()) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{e}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Err(e) => {
            println!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `print-config`: every schedule's settings as they resolve (secrets redacted), valid or
/// not, then the problems of the invalid ones (exit 2).
fn print_config(env: &Vars) -> ExitCode {
    let schedules = match config::schedules(env, None) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut invalid = Vec::new();
    for (i, schedule) in schedules.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("# schedule {}", schedule.name);
        let vars = match &schedule.vars {
            Ok(vars) => vars,
            Err(e) => {
                println!("# INVALID: cannot be read (see the errors)");
                invalid.push((schedule.name.clone(), e.clone()));
                continue;
            }
        };
        match Config::from_vars(&schedule.name, vars) {
            Ok(c) => {
                log_warnings(c.warnings.iter());
                let now = jiff::Zoned::now().with_time_zone(c.time_zone.clone());
                match c.cron.next_after(&now) {
                    Some(next) => {
                        println!("# next run: {}", next.strftime("%Y-%m-%d %H:%M:%S %Z"))
                    }
                    None => println!("# next run: never"),
                }
            }
            Err(e) => {
                println!(
                    "# INVALID: {} problem(s) (see the errors)",
                    e.problems.len()
                );
                invalid.push((schedule.name.clone(), e));
            }
        }
        if let Some(name) = config::preview_filename(vars) {
            // `$VAR`s may name a secret: the name is shown without it.
            dunnage::secrets::register(config::secret_values(vars).iter().map(String::as_str));
            println!(
                "# archive name if it ran now: {}",
                dunnage::secrets::redact(&name)
            );
        }
        print_rows(config::describe_vars(vars));
    }
    if invalid.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (name, e) in invalid {
        log_warnings(e.warnings.iter());
        tracing::error!("[{name}] {e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn print_rows(rows: Vec<(&'static str, String, String)>) {
    let width = rows
        .iter()
        .map(|(n, v, _)| n.len() + v.len() + 1)
        .max()
        .unwrap_or(0);
    for (name, value, origin) in rows {
        let assignment = format!("{name}={value}");
        println!("{assignment:<width$}  # {origin}");
    }
}
