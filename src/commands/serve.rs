//! The scheduler's HTTP side (`DUNNAGE_API_LISTEN`): `GET /healthz` for liveness probes and
//! the image's HEALTHCHECK, `GET /metrics` for Prometheus. Plain HTTP on loopback or a unix
//! socket; TLS belongs to a reverse proxy in front (docs/how-to/api.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::config::Vars;
use crate::metrics::Metrics;
use crate::schedule::shutdown_requested;

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

/// Serves until `shutdown`; an address that cannot be bound is an error at once.
pub async fn serve(
    listen: Listen,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(metrics);
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
        Listen::Unix(path) => {
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
            tracing::info!("API listening on {listen}");
            let served = axum::serve(socket, app)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| e.to_string());
            let _ = std::fs::remove_file(path);
            served
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
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
}
