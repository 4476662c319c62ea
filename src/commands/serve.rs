//! The scheduler's HTTP side (`DUNNAGE_API_LISTEN`): `GET /healthz` for liveness probes,
//! `GET /metrics` for Prometheus, and Akeeba Backup's JSON API at `*.php` for hosting panels
//! (tokens from `DUNNAGE_API_TOKENS`). Plain HTTP on loopback or a unix socket; TLS belongs to
//! a reverse proxy in front.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use super::akeeba::{Akeeba, Answer};
use crate::config::Vars;
use crate::metrics::Metrics;
use crate::schedule::shutdown_requested;
use crate::tokens::Tokens;

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "http://{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `DUNNAGE_API_TOKENS` (or its `_FILE`) from the process environment: no tokens when unset.
pub fn tokens_setting(env: &Vars) -> Result<Tokens, String> {
    let raw = match (
        env.get("DUNNAGE_API_TOKENS"),
        env.get("DUNNAGE_API_TOKENS_FILE"),
    ) {
        (Some(v), _) if !v.trim().is_empty() => v.to_owned(),
        (_, Some(path)) if !path.trim().is_empty() => std::fs::read_to_string(path.trim())
            .map_err(|e| format!("DUNNAGE_API_TOKENS_FILE={path}: cannot read it: {e}"))?,
        _ => return Ok(Tokens::default()),
    };
    Tokens::parse(&raw).map_err(|problems| format!("DUNNAGE_API_TOKENS: {}", problems.join("; ")))
}

/// `DUNNAGE_API_LISTEN` from the process environment: a port (on 127.0.0.1), an address
/// `HOST:PORT`, or `unix:/path/to.sock`. `None` when unset: no server.
pub fn listen_setting(env: &Vars) -> Result<Option<Listen>, String> {
    let Some(raw) = env
        .get("DUNNAGE_API_LISTEN")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let bad = || {
        format!(
            "DUNNAGE_API_LISTEN={raw:?}: expected a port (8080, on 127.0.0.1), an address \
             (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080) or unix:/path/to/api.sock"
        )
    };
    if let Some(path) = raw.strip_prefix("unix:") {
        return match path {
            p if p.starts_with('/') => Ok(Some(Listen::Unix(PathBuf::from(p)))),
            _ => Err(bad()),
        };
    }
    if let Ok(port) = raw.parse::<u16>() {
        return Ok(Some(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))));
    }
    raw.parse::<SocketAddr>()
        .map(|a| Some(Listen::Tcp(a)))
        .map_err(|_| bad())
}

/// What the handlers share.
pub struct Api {
    pub profiles: Arc<super::profiles::Profiles>,
    pub runs: Arc<super::runs::Runs>,
    pub metrics: Arc<Metrics>,
    /// `DUNNAGE_API_TOKENS`; without it every authenticated call is refused.
    pub tokens: Tokens,
    pub akeeba: Akeeba,
}

/// Serves until `shutdown`; an address that cannot be bound is an error at once.
pub async fn serve(
    listen: Listen,
    api: Arc<Api>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .merge(super::rest::routes())
        .fallback(akeeba_endpoint)
        .with_state(api);
    let stop = async move { shutdown_requested(&mut shutdown).await };
    match &listen {
        Listen::Tcp(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    "the API listens on {addr}, beyond this host: put a reverse proxy with TLS \
                     in front of it"
                );
            }
            let socket = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("DUNNAGE_API_LISTEN: cannot listen on {addr}: {e}"))?;
            tracing::info!("API listening on {listen}");
            axum::serve(socket, app)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| e.to_string())
        }
        Listen::Unix(path) => serve_unix(path, app, stop).await,
    }
}

/// Serves `app` on a unix socket at `path` until `stop`. The socket file is ours from bind
/// on: it is removed when this ends, and also when it is dropped unfinished (the process
/// ending before the server has wound down), so no stale file is left behind.
async fn serve_unix(
    path: &std::path::Path,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // A socket file left by a process that died would make bind fail.
    if std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    {
        let _ = std::fs::remove_file(path);
    }
    let socket = tokio::net::UnixListener::bind(path).map_err(|e| {
        format!(
            "DUNNAGE_API_LISTEN: cannot listen on {}: {e}",
            path.display()
        )
    })?;
    let _remove_at_end = SocketFile(path.to_path_buf());
    tracing::info!("API listening on unix:{}", path.display());
    axum::serve(socket, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| e.to_string())
}

/// A socket file this process bound; dropping it removes the file.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `dunnage healthcheck` (the image's HEALTHCHECK): `GET /healthz` of the running
/// scheduler's API; true when it answers 200 within `timeout`.
pub fn probe(listen: &Listen, timeout: std::time::Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    fn ask(mut stream: impl Read + Write) -> std::io::Result<String> {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }
    let answer = match listen {
        Listen::Tcp(addr) => std::net::TcpStream::connect_timeout(addr, timeout).and_then(|s| {
            s.set_read_timeout(Some(timeout))?;
            ask(s)
        }),
        Listen::Unix(path) => std::os::unix::net::UnixStream::connect(path).and_then(|s| {
            s.set_read_timeout(Some(timeout))?;
            ask(s)
        }),
    }
    .map_err(|e| format!("the API at {listen} does not answer: {e}"))?;
    match answer.get(9..12) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "the API at {listen} answered {}",
            answer.lines().next().unwrap_or("nothing")
        )),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn render_metrics(State(api): State<Arc<Api>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.metrics.render(),
    )
}

/// Akeeba's JSON API at any `*.php` path (`index.php`, `remote.php`, ...): parameters from
/// the query string (GET) or the query string and the form body (POST), the secret word from
/// `X-Akeeba-Auth` or `_akeebaAuth` (query or body).
async fn akeeba_endpoint(State(api): State<Arc<Api>>, request: Request) -> Response {
    if !request.uri().path().ends_with(".php") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (parts, body) = request.into_parts();
    let mut params: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if parts.method == Method::POST {
        let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
            return json_answer(400, "the request body is too large".into());
        };
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    } else if parts.method != Method::GET {
        return json_answer(405, "Unknown method".into());
    }
    let secret = parts
        .headers
        .get("x-akeeba-auth")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get("_akeebaAuth").cloned());
    let Some(token) = secret.as_deref().and_then(|s| api.tokens.check(s)) else {
        return json_answer(503, "Access denied".into());
    };
    let method = params.get("method").cloned().unwrap_or_default();
    match api.akeeba.call(token, &method, &params).await {
        Answer::Json(status, data) => json_answer(status, data),
        Answer::NotFound => StatusCode::NOT_FOUND.into_response(),
        Answer::Raw { name, size, body } => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", name.replace('"', "")),
                ),
            ],
            Body::from_stream(body),
        )
            .into_response(),
    }
}

/// `{"status": .., "data": ..}` with HTTP 200, as Akeeba's server answers; no `#` in it
/// (its clients cut bodies at `###`), so every `#` (only ever inside a string) is escaped.
fn json_answer(status: u16, data: serde_json::Value) -> Response {
    let text = serde_json::json!({"status": status, "data": data})
        .to_string()
        .replace('#', "\\u0023");
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(value: &str) -> Result<Option<Listen>, String> {
        listen_setting(&Vars::from_pairs([("DUNNAGE_API_LISTEN", value)]))
    }

    #[test]
    fn ports_addresses_and_sockets_parse_and_others_are_named() {
        assert_eq!(setting("").unwrap(), None);
        assert_eq!(
            setting("8080").unwrap(),
            Some(Listen::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            setting("[::1]:9").unwrap(),
            Some(Listen::Tcp("[::1]:9".parse().unwrap()))
        );
        assert_eq!(
            setting("unix:/run/dunnage.sock").unwrap(),
            Some(Listen::Unix("/run/dunnage.sock".into()))
        );
        for bad in ["localhost:80", "unix:relative.sock", "99999", "http://x"] {
            let e = setting(bad).unwrap_err();
            assert!(e.contains("DUNNAGE_API_LISTEN") && e.contains(bad), "{e}");
        }
    }

    /// The CI flake: the process ended (its runtime shut down) before the server task had
    /// seen the shutdown, and the socket file stayed behind.
    #[test]
    fn the_socket_file_is_removed_when_the_server_is_dropped_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = watch::channel(false);
        rt.block_on(async {
            let app = Router::new().route("/healthz", get(healthz));
            let stop = async move { shutdown_requested(&mut rx).await };
            let socket = path.clone();
            tokio::spawn(async move { serve_unix(&socket, app, stop).await });
            while !path.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        tx.send(true).unwrap();
        drop(rt);
        assert!(!path.exists(), "the socket file is left behind");
    }
}
