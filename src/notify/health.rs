//! Health pings (`BACKUP_HEALTHCHECK_URL`): a monitoring service hears when a run starts
//! and how it ended, and raises an alarm when a ping is missing or says failed.
//!
//! Two styles, chosen from the URL:
//! - healthchecks.io style (any URL): `URL/start` when a run begins, `URL` on success,
//!   `URL/fail` with the error and warnings as the body on failure.
//! - Uptime Kuma push style (path contains `/api/push/`): `status=up` or `status=down` with
//!   `msg`, no start ping (Kuma has none).
//!
//! A ping never changes a run's outcome and never waits longer than [`PING_TIMEOUT`].

use std::time::Duration;

use reqwest::Url;

use crate::report::RunStats;

/// The longest a ping may take (a slow service must not hold up the next run).
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the failure report sent with `/fail` (healthchecks.io keeps 10 kB).
const REPORT_LIMIT: usize = 10_000;

pub struct HealthCheck {
    url: Url,
    client: reqwest::Client,
}

impl HealthCheck {
    pub fn new(url: Url) -> Self {
        crate::net::tls::install_provider();
        let client = reqwest::Client::builder()
            .timeout(PING_TIMEOUT)
            .build()
            .expect("a client with default settings");
        Self { url, client }
    }

    fn kuma(&self) -> bool {
        self.url.path().contains("/api/push/")
    }

    /// `URL/suffix`, keeping the query.
    fn with_suffix(&self, suffix: &str) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(suffix);
        }
        url
    }

    /// The run begins. Returns false when the ping could not be delivered.
    pub async fn started(&self) -> bool {
        if self.kuma() {
            return true;
        }
        self.send(self.with_suffix("start"), None).await
    }

    /// The run ended: success when the backup is stored in every destination. A failure
    /// report ends with the tail of the run's `log`.
    pub async fn finished(&self, stats: &RunStats, log: &str) -> bool {
        let ok = stats.complete();
        if self.kuma() {
            let mut url = self.url.clone();
            let msg = if ok {
                "OK".to_owned()
            } else {
                summary(stats, "")
                    .lines()
                    .next()
                    .unwrap_or("failed")
                    .to_owned()
            };
            url.query_pairs_mut()
                .append_pair("status", if ok { "up" } else { "down" })
                .append_pair("msg", &msg);
            return self.send(url, None).await;
        }
        if ok {
            self.send(self.url.clone(), None).await
        } else {
            self.send(self.with_suffix("fail"), Some(summary(stats, log)))
                .await
        }
    }

    async fn send(&self, url: Url, body: Option<String>) -> bool {
        let shown = redacted(&url);
        let request = match body {
            Some(body) => self.client.post(url).body(body),
            None => self.client.get(url),
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!("health ping to {shown} answered {}", r.status());
                false
            }
            Err(e) => {
                tracing::warn!(
                    "health ping to {shown} failed: {}",
                    // The URL's path is the secret: the error must not repeat it.
                    crate::net::error_chain(&e.without_url())
                );
                false
            }
        }
    }
}

/// The URL for logs: the ping URL carries its secret in the path (a UUID or token), so
/// only the host is shown.
fn redacted(url: &Url) -> String {
    format!(
        "{}://{}/(redacted)",
        url.scheme(),
        url.host_str().unwrap_or("?")
    )
}

/// What went wrong, for the monitoring service: the error, the warnings, then the end of
/// the log (cut from the front to fit).
fn summary(stats: &RunStats, log: &str) -> String {
    let mut text = String::new();
    if let Some(e) = &stats.error {
        text.push_str(&format!("[{}] backup failed: {e}\n", stats.schedule));
    }
    for d in &stats.destinations {
        if let Some(e) = &d.error {
            text.push_str(&format!(
                "[{}] {}: storing failed: {e}\n",
                stats.schedule, d.backend
            ));
        }
    }
    for w in &stats.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    if !log.is_empty() && text.len() < REPORT_LIMIT {
        let room = REPORT_LIMIT - text.len();
        let mut start = log.len().saturating_sub(room.saturating_sub(6));
        while !log.is_char_boundary(start) {
            start += 1;
        }
        text.push_str("\nlog:\n");
        text.push_str(&log[start..]);
    }
    if text.len() > REPORT_LIMIT {
        let mut cut = REPORT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
