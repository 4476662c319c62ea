//! Docker: stop the containers labeled for it while their volumes are archived, and start
//! them again as soon as the sources have been read, also when the run fails.
//!
//! Crash safety: the containers a run is about to stop are written to a state file in
//! `BACKUP_STATE_DIR` *before* any is stopped, and the file is removed only once all are
//! running again. [`recover`] (called when dunnage starts, and after an aborted run) starts
//! whatever a crashed run left stopped, so a `kill -9` in the middle of a backup does not
//! leave the application down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
};

/// The label that marks containers to stop (and start again).
pub const STOP_LABEL: &str = "docker-volume-backup.stop-during-backup";
/// The label that marks containers to stop and leave stopped.
pub const NO_RESTART_LABEL: &str = "docker-volume-backup.stop-during-backup-no-restart";
/// With `EXEC_LABEL`, the label that puts a container in scope for exec hooks.
pub const EXEC_SCOPE_LABEL: &str = "docker-volume-backup.exec-label";
/// Socket used when `DOCKER_HOST` is unset.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
const STATE_FILE: &str = "stopped-containers";

/// Docker settings of one schedule.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The schedule's name: its state file is its own.
    pub schedule: String,
    /// `DOCKER_HOST`, if set.
    pub host: Option<String>,
    /// `BACKUP_STOP_DURING_BACKUP_LABEL`.
    pub stop_label: String,
    /// `BACKUP_STOP_DURING_BACKUP_NO_RESTART_LABEL`.
    pub no_restart_label: Option<String>,
    /// `BACKUP_STOP_TIMEOUT`: how long a container gets to stop before it is killed.
    pub stop_timeout: Duration,
    /// `BACKUP_STATE_DIR`.
    pub state_dir: PathBuf,
    /// `EXEC_LABEL`: only containers labeled `docker-volume-backup.exec-label=<this>` run
    /// exec hooks.
    pub exec_label: Option<String>,
    /// `EXEC_FORWARD_OUTPUT`: also copy hook output, unchanged, to dunnage's own output.
    pub exec_forward_output: bool,
    /// `EXEC_TIMEOUT`: a hook running longer is killed and fails its phase.
    pub exec_timeout: Duration,
    /// `BACKUP_RETRY_TIMEOUT`: how long a hook the container runtime could not start, or a
    /// container it could not start again, is tried again.
    pub retry: crate::net::RetryPolicy,
}

/// Hook output kept for error messages (the end of it).
const HOOK_OUTPUT_KEPT: usize = 4096;

/// A phase of a run that exec hooks attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Archive,
    Process,
    Copy,
    Prune,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Archive => "archive",
            Phase::Process => "process",
            Phase::Copy => "copy",
            Phase::Prune => "prune",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Rendered whole by `explain_connect` (not a `source`: the chain would repeat it).
    #[error(
        "cannot reach the Docker engine at {host}: {}",
        explain_connect(host, cause)
    )]
    Connect {
        host: String,
        cause: bollard::errors::Error,
    },
    #[error("{what}: {source}")]
    Api {
        what: String,
        source: bollard::errors::Error,
    },
    #[error("container {0} has both the {STOP_LABEL} and the {NO_RESTART_LABEL} label; keep one")]
    BothLabels(String),
    #[error("state file {}: {source}", path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Stop(String),
    #[error("{phase} hook in container {container} ({command:?}) {outcome}; output:\n{output}")]
    Hook {
        phase: String,
        container: String,
        command: String,
        outcome: String,
        output: String,
    },
}

/// A container this run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub id: String,
    pub name: String,
    pub restart: bool,
}

/// How long one container was down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downtime {
    pub name: String,
    /// `None` for containers left stopped (`no-restart`) or that failed to start.
    pub down_for: Option<Duration>,
    pub error: Option<String>,
}

/// A connected engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    config: DockerConfig,
}

/// How a hook runs: `sh -c SCRIPT sh COMMAND SECONDS`. A watchdog inside the container
/// kills the hook at the timeout, so a hung dump does not keep running after the run gave
/// up on it (best effort: it needs `sleep`). When the hook ends first, the watchdog kills
/// its `sleep` and both are reaped before the exec ends: nothing of ours stays in the app
/// container, not even a zombie (its PID 1 may never reap), and the watchdog never holds
/// the output open.
const HOOK_WATCHDOG: &str = "\"$0\" -c \"$1\" & h=$!; \
    ( sleep \"$2\" & z=$!; trap 'kill $z 2>/dev/null; wait $z; exit 0' TERM; \
      wait $z; kill -9 $h 2>/dev/null ) </dev/null >/dev/null 2>&1 & w=$!; \
    wait $h; s=$?; kill $w 2>/dev/null; wait $w 2>/dev/null; exit $s";

/// One chunk of a hook's output: into the run log, kept (its tail) for the error message,
/// and with `EXEC_FORWARD_OUTPUT` passed through to our stdout/stderr as the reference
/// does (secrets taken out, as everywhere).
fn pass_on(
    container: &str,
    chunk: bollard::container::LogOutput,
    forward: bool,
    output: &mut String,
) {
    use std::io::Write as _;
    let text = chunk.to_string();
    for line in text.lines() {
        tracing::info!("[{container}] {line}");
    }
    if forward {
        let shown = crate::secrets::redact(&text);
        let _ = match chunk {
            bollard::container::LogOutput::StdErr { .. } => {
                std::io::stderr().write_all(shown.as_bytes())
            }
            _ => std::io::stdout().write_all(shown.as_bytes()),
        };
    }
    output.push_str(&text);
    if output.len() > 4 * HOOK_OUTPUT_KEPT {
        *output = tail(output);
    }
}

/// The cause of a failed connection in one sentence where it is a common one (the socket's
/// permissions, no socket, nothing listening), instead of the HTTP client's "client error".
fn explain_connect(host: &str, source: &bollard::errors::Error) -> String {
    let socket = host.strip_prefix("unix://").unwrap_or(host);
    if let bollard::errors::Error::SocketNotFoundError(_) = source {
        return format!(
            "there is no socket at {socket}: mount the engine's socket there \
             (-v /var/run/docker.sock:/var/run/docker.sock:ro) or fix DOCKER_HOST"
        );
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            let uid = nix::unistd::getuid();
            match io.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    let group = std::fs::metadata(socket)
                        .map(|m| {
                            format!(
                                " (its group is gid {})",
                                std::os::unix::fs::MetadataExt::gid(&m)
                            )
                        })
                        .unwrap_or_default();
                    return format!(
                        "permission denied on the socket {socket}{group}: dunnage runs as uid \
                         {uid}; run it as root, give it the socket's group (compose: \
                         group_add), or point DOCKER_HOST at a socket proxy"
                    );
                }
                std::io::ErrorKind::NotFound => {
                    return format!(
                        "there is no socket at {socket}: mount the engine's socket there \
                         (-v /var/run/docker.sock:/var/run/docker.sock:ro) or fix DOCKER_HOST"
                    );
                }
                std::io::ErrorKind::ConnectionRefused => {
                    return format!(
                        "nothing accepts connections at {host}: is the engine (or the socket \
                         proxy) running? fix DOCKER_HOST otherwise"
                    );
                }
                _ => {}
            }
        }
        cause = c.source();
    }
    crate::net::error_chain(source)
}

impl DockerConfig {
    /// Whether runs may talk to an engine (and so stop containers): `DOCKER_HOST` is set or
    /// the default socket exists.
    pub fn may_stop(&self) -> bool {
        self.host.is_some() || Path::new(DEFAULT_SOCKET).exists()
    }

    /// This schedule's state file (containers to start again after a crash).
    fn state_file(&self) -> PathBuf {
        self.state_dir
            .join(format!("{STATE_FILE}-{}", self.schedule.replace('/', "_")))
    }
}

impl Engine {
    /// Connects when `DOCKER_HOST` is set or the default socket exists; `Ok(None)` (Docker
    /// features off, said once in the log) when neither.
    pub async fn connect(config: &DockerConfig) -> Result<Option<Engine>, DockerError> {
        let host = match &config.host {
            Some(h) => h.clone(),
            None if Path::new(DEFAULT_SOCKET).exists() => format!("unix://{DEFAULT_SOCKET}"),
            None => {
                tracing::info!(
                    "Docker features are off: DOCKER_HOST is unset and {DEFAULT_SOCKET} does not exist"
                );
                return Ok(None);
            }
        };
        let connect_err = |cause| DockerError::Connect {
            host: host.clone(),
            cause,
        };
        // Older engines (Debian's 20.10 speaks API 1.41) reject a newer client version.
        let docker = Docker::connect_with_host(&host)
            .map_err(connect_err)?
            .negotiate_version()
            .await
            .map_err(connect_err)?;
        docker.ping().await.map_err(connect_err)?;
        Ok(Some(Engine {
            docker,
            config: config.clone(),
        }))
    }

    /// Every running container: (id, name, labels).
    async fn running(&self) -> Result<Vec<(String, String, HashMap<String, String>)>, DockerError> {
        let filters = HashMap::from([("status".to_owned(), vec!["running".to_owned()])]);
        let list = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|source| DockerError::Api {
                what: "listing running containers".into(),
                source,
            })?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_else(|| id.chars().take(12).collect());
                Some((id, name, c.labels.unwrap_or_default()))
            })
            .collect())
    }

    /// Stops every running container labeled for this schedule, concurrently. The ones to
    /// start again are recorded in the state file first. On error, what was stopped is
    /// started again before returning.
    pub async fn stop_labeled(&self) -> Result<(Vec<Stopped>, Instant), DockerError> {
        let mut stopped = Vec::new();
        for (id, name, labels) in self.running().await? {
            let restart = labels.get(STOP_LABEL) == Some(&self.config.stop_label);
            let no_restart = self
                .config
                .no_restart_label
                .as_ref()
                .is_some_and(|v| labels.get(NO_RESTART_LABEL) == Some(v));
            match (restart, no_restart) {
                (true, true) => return Err(DockerError::BothLabels(name)),
                (true, false) | (false, true) => stopped.push(Stopped { id, name, restart }),
                (false, false) => {}
            }
        }

        let started = Instant::now();
        if stopped.is_empty() {
            return Ok((stopped, started));
        }
        write_state(&self.config.state_file(), &stopped)?;
        let t = i32::try_from(self.config.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let results = futures_util::future::join_all(stopped.iter().map(|c| async move {
            tracing::info!("stopping container {}", c.name);
            let options = StopContainerOptionsBuilder::default().t(t).build();
            self.docker
                .stop_container(&c.id, Some(options))
                .await
                .map_err(|e| format!("{}: {e}", c.name))
        }))
        .await;
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if !errors.is_empty() {
            self.start_again(&stopped, started).await;
            return Err(DockerError::Stop(format!(
                "stopping containers failed: {}",
                errors.join("; ")
            )));
        }
        Ok((stopped, started))
    }

    /// Runs the `pre` or `post` hooks of `phase` in every running container that has one
    /// (and, with `EXEC_LABEL`, the matching exec-label), concurrently. The whole label value
    /// is run by `sh -c`, so pipes and `&&` work. `archive` is exported to the hook as
    /// `COMMAND_RUNTIME_ARCHIVE_FILEPATH`. Fails with the container, the command and the end
    /// of its output when a hook exits non-zero, cannot be started or times out.
    pub async fn run_hooks(
        &self,
        phase: Phase,
        post: bool,
        archive: &str,
    ) -> Result<(), DockerError> {
        let when = if post { "post" } else { "pre" };
        let key = format!("docker-volume-backup.{}-{when}", phase.name());
        // Deprecated aliases of archive-pre/post.
        let alias = (phase == Phase::Archive).then(|| format!("docker-volume-backup.exec-{when}"));
        let mut hooks = Vec::new();
        for (id, name, labels) in self.running().await? {
            let in_scope = self
                .config
                .exec_label
                .as_ref()
                .is_none_or(|v| labels.get(EXEC_SCOPE_LABEL) == Some(v));
            if !in_scope {
                continue;
            }
            let found = [Some(&key), alias.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|k| labels.get(k).map(|cmd| (k, cmd)));
            if let Some((k, command)) = found {
                let user = labels.get(&format!("{k}.user")).cloned();
                hooks.push((id, name, command.clone(), user));
            }
        }
        let phase_name = format!("{}-{when}", phase.name());
        let results =
            futures_util::future::join_all(hooks.iter().map(|(id, name, command, user)| {
                self.exec_hook(&phase_name, id, name, command, user.as_deref(), archive)
            }))
            .await;
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    /// Runs one hook. When the container runtime could not start it at all (see
    /// [`exec_never_started`]) it is run again within the schedule's retry budget: nothing of it
    /// ran, and a run should not fail on the engine's bad moment.
    async fn exec_hook(
        &self,
        phase: &str,
        id: &str,
        container: &str,
        command: &str,
        user: Option<&str>,
        archive: &str,
    ) -> Result<(), DockerError> {
        tracing::info!("running {phase} hook in {container}: {command}");
        self.config
            .retry
            .run(
                &format!("{phase} hook in {container}"),
                |f: &HookFailure| f.not_started,
                || self.exec_once(id, container, command, user, archive),
            )
            .await
            .map_err(|f| DockerError::Hook {
                phase: phase.to_owned(),
                container: container.to_owned(),
                command: command.to_owned(),
                outcome: f.outcome,
                output: tail(&f.output),
            })
    }

    /// One attempt at a hook: create the exec, collect its output, read its exit code.
    async fn exec_once(
        &self,
        id: &str,
        container: &str,
        command: &str,
        user: Option<&str>,
        archive: &str,
    ) -> Result<(), HookFailure> {
        use futures_util::StreamExt;
        let timeout = self.config.exec_timeout;
        let fail = |outcome: String, output: &str| HookFailure {
            outcome,
            output: output.to_owned(),
            not_started: false,
        };
        let watchdog = Duration::from_secs(timeout.as_secs().max(1));
        let config = ExecConfig {
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                HOOK_WATCHDOG.into(),
                "sh".into(),
                command.into(),
                watchdog.as_secs().to_string(),
            ]),
            user: user.map(str::to_owned),
            env: Some(vec![format!("COMMAND_RUNTIME_ARCHIVE_FILEPATH={archive}")]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let started = Instant::now();
        let exec = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(|e| fail(format!("could not be created: {e}"), ""))?;
        let mut output = String::new();
        let forward = self.config.exec_forward_output;
        let collect = async {
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| format!("could not be started: {e}"))?
            {
                while let Some(item) = stream.next().await {
                    let chunk = item.map_err(|e| format!("output stream failed: {e}"))?;
                    pass_on(container, chunk, forward, &mut output);
                }
            }
            Ok::<(), String>(())
        };
        let timed_out = || format!("ran longer than EXEC_TIMEOUT ({timeout:?}) and was killed");
        match tokio::time::timeout(timeout, collect).await {
            Err(_) => return Err(fail(timed_out(), &output)),
            Ok(Err(e)) => return Err(fail(e, &output)),
            Ok(Ok(())) => {}
        }
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| fail(format!("exit code unknown: {e}"), &output))?;
        match inspect.exit_code {
            Some(0) => Ok(()),
            // The watchdog's `kill -9`, or else something else's: the container stopping
            // meanwhile (its processes go with it), the kernel's OOM killer (a
            // memory-limited container), or a person.
            Some(137) if started.elapsed() >= watchdog => Err(fail(timed_out(), &output)),
            Some(137) => Err(fail(
                "was killed (SIGKILL) before EXEC_TIMEOUT: its container stopped meanwhile, \
                 ran out of memory, or something killed it"
                    .into(),
                &output,
            )),
            Some(code) if exec_never_started(code, &output) => Err(HookFailure {
                outcome: format!("could not be started by the container runtime (exit {code})"),
                output,
                not_started: true,
            }),
            Some(code) => Err(fail(format!("exited with status {code}"), &output)),
            None => Err(fail("ended without an exit code".into(), &output)),
        }
    }

    /// Starts again the containers `stop_labeled` stopped (except `no-restart` ones),
    /// concurrently, and clears the state file once all are running.
    pub async fn start_again(&self, stopped: &[Stopped], since: Instant) -> Vec<Downtime> {
        let downtimes = futures_util::future::join_all(stopped.iter().map(|c| async move {
            if !c.restart {
                tracing::info!("container {} stays stopped (no-restart label)", c.name);
                return Downtime {
                    name: c.name.clone(),
                    down_for: None,
                    error: None,
                };
            }
            // A runtime hiccup (see `runtime_hiccup`) is tried again: the app is down.
            let started = self
                .config
                .retry
                .run(
                    &format!("starting container {} again", c.name),
                    |e: &bollard::errors::Error| {
                        matches!(e, bollard::errors::Error::DockerResponseServerError {
                            status_code: 500, message
                        } if runtime_hiccup(message))
                    },
                    || {
                        self.docker
                            .start_container(&c.id, None::<StartContainerOptions>)
                    },
                )
                .await;
            // Starting a container that is already running (started by hand after a
            // crash) succeeds: bollard maps the engine's 304 to Ok.
            match started {
                // Removed meanwhile: nothing left to start, and it must not keep the state
                // file (and a warning on every run) alive forever.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    tracing::warn!("container {} no longer exists; nothing to start", c.name);
                    Downtime {
                        name: c.name.clone(),
                        down_for: None,
                        error: None,
                    }
                }
                Ok(()) => {
                    let down_for = since.elapsed();
                    tracing::info!("started container {} again after {down_for:.2?}", c.name);
                    Downtime {
                        name: c.name.clone(),
                        down_for: Some(down_for),
                        error: None,
                    }
                }
                Err(e) => {
                    tracing::error!("could not start container {} again: {e}", c.name);
                    Downtime {
                        name: c.name.clone(),
                        down_for: None,
                        error: Some(e.to_string()),
                    }
                }
            }
        }))
        .await;
        if downtimes.iter().all(|d| d.error.is_none()) {
            clear_state(&self.config.state_file());
        }
        downtimes
    }
}

/// Starts containers that a crashed or aborted run of this schedule left stopped, according
/// to its state file in `config.state_dir` (and the one file all schedules shared before
/// runs could overlap). Returns the names started.
pub async fn recover(config: &DockerConfig) -> Result<Vec<String>, DockerError> {
    let legacy = config.state_dir.join(STATE_FILE);
    let mut stopped: Vec<Stopped> = Vec::new();
    let mut found = Vec::new();
    for path in [config.state_file(), legacy.clone()] {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(DockerError::State { path, source }),
        };
        found.push(path);
        stopped.extend(
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(id, _)| !stopped.iter().any(|s| s.id == *id))
                .map(|(id, name)| Stopped {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    restart: true,
                })
                .collect::<Vec<_>>(),
        );
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let Some(engine) = Engine::connect(config).await? else {
        return Ok(Vec::new());
    };
    tracing::warn!(
        "an earlier run was interrupted while {} container(s) were stopped; starting them again",
        stopped.len()
    );
    let downtimes = engine.start_again(&stopped, Instant::now()).await;
    let failed: Vec<_> = downtimes.iter().filter_map(|d| d.error.as_ref()).collect();
    if failed.is_empty() {
        clear_state(&legacy);
        Ok(stopped.into_iter().map(|s| s.name).collect())
    } else {
        Err(DockerError::Stop(format!(
            "recovery could not start every container: {}",
            failed
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }
}

/// Records the containers to start again, durably, before any is stopped.
fn write_state(path: &Path, stopped: &[Stopped]) -> Result<(), DockerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let state_err = |source| DockerError::State {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(state_err)?;
    let text: String = stopped
        .iter()
        .filter(|s| s.restart)
        .map(|s| format!("{} {}\n", s.id, s.name))
        .collect();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(state_err)
}

/// The end of `text`, at most `HOOK_OUTPUT_KEPT` bytes, cut at a character boundary.
fn tail(text: &str) -> String {
    let mut start = text.len().saturating_sub(HOOK_OUTPUT_KEPT);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// A hook attempt that failed: why, the output so far, and whether its process never
/// started (so running it again is safe).
#[derive(Debug)]
struct HookFailure {
    outcome: String,
    output: String,
    not_started: bool,
}

impl std::fmt::Display for HookFailure {
    /// One line for the retry log: the outcome and the output's last line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.outcome)?;
        match self.output.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(last) => write!(f, ": {}", last.trim()),
            None => Ok(()),
        }
    }
}

/// Whether an exec ended with `code` and `output` because the container runtime could not
/// start its process (see [`runtime_hiccup`]): nothing of the hook ran, so running it again
/// is safe. A runtime refusal that will not pass (no `sh` in the image, a user that does not
/// exist) is not one, nor is the hook's own output.
fn exec_never_started(code: i64, output: &str) -> bool {
    code == 126
        && output.trim_start().starts_with("OCI runtime exec failed")
        && runtime_hiccup(output)
}

/// Whether an engine message says the container runtime (runc) failed for a reason that
/// passes: its handshake with its init process broke ("read init-p: connection reset by
/// peer", "error writing config to pipe: broken pipe"; seen on loaded hosts) or it could
/// not fork.
fn runtime_hiccup(message: &str) -> bool {
    const PASSING: [&str; 3] = [
        "connection reset by peer",
        "broken pipe",
        "resource temporarily unavailable",
    ];
    let text = message.to_ascii_lowercase();
    text.contains("oci runtime") && PASSING.iter().any(|m| text.contains(m))
}

fn clear_state(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_runtime_that_could_not_start_the_process_is_a_hiccup() {
        // Both seen from Debian's Docker 20.10 (runc 1.1) on a loaded CI host.
        for passing in [
            "OCI runtime exec failed: exec failed: unable to start container process: read \
             init-p: connection reset by peer: unknown\r\n",
            "OCI runtime exec failed: exec failed: unable to start container process: error \
             writing config to pipe: broken pipe: unknown\n",
            "OCI runtime exec failed: exec failed: unable to start container process: \
             fork/exec /proc/self/exe: resource temporarily unavailable: unknown",
        ] {
            assert!(exec_never_started(126, passing), "{passing}");
            assert!(
                !exec_never_started(1, passing),
                "only the runtime's own exit code"
            );
        }
        for lasting in [
            // No shell in the image, a user that does not exist: trying again cannot help.
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \
             \"sh\": executable file not found in $PATH: unknown",
            "unable to find user nobody2: no matching entries in passwd file",
            // The hook's own command failing the same way is the hook's result.
            "sh: ./dump.sh: Permission denied",
            "pg_dump: connection reset by peer",
            "",
        ] {
            assert!(!exec_never_started(126, lasting), "{lasting}");
        }
    }

    #[test]
    fn starting_a_container_is_tried_again_only_on_a_runtime_hiccup() {
        // As Docker 20.10 and 28 word a failed start.
        assert!(runtime_hiccup(
            "failed to create shim task: OCI runtime create failed: runc create failed: unable \
             to start container process: read init-p: connection reset by peer: unknown"
        ));
        assert!(runtime_hiccup(
            "OCI runtime create failed: container_linux.go:380: starting container process \
             caused: process_linux.go:545: container init caused: broken pipe: unknown"
        ));
        for lasting in [
            "driver failed programming external connectivity on endpoint app: Bind for \
             0.0.0.0:80 failed: port is already allocated",
            "OCI runtime create failed: runc create failed: unable to start container process: \
             exec: \"/entrypoint.sh\": permission denied: unknown",
            "error while mounting volume: connection reset by peer",
        ] {
            assert!(!runtime_hiccup(lasting), "{lasting}");
        }
    }

    #[test]
    fn a_retried_attempt_is_one_log_line_naming_the_last_output_line() {
        let f = HookFailure {
            outcome: "could not be started by the container runtime (exit 126)".into(),
            output: "OCI runtime exec failed: read init-p: connection reset by peer\r\n\n".into(),
            not_started: true,
        };
        assert_eq!(
            f.to_string(),
            "could not be started by the container runtime (exit 126): OCI runtime exec \
             failed: read init-p: connection reset by peer"
        );
    }
}
