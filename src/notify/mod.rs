//! Telling people how runs went.
//!
//! - `health`: pings to a monitoring service (`BACKUP_HEALTHCHECK_URL`).
//! - Notifications (`NOTIFICATION_URLS`, `NOTIFICATION_LEVEL`): `address` reads the
//!   shoutrrr-style URLs, `services` turns a message into each service's HTTP requests,
//!   `email` sends over SMTP, `message` writes the title and body (ours, or the user's
//!   templates), `capture` keeps the run's log lines for them.
//!
//! Nothing here changes a run's outcome: a notification that cannot be delivered is logged
//! and counted, and all of them together never take longer than [`DEADLINE`].

mod address;
pub mod capture;
mod email;
mod health;
mod message;
pub(crate) mod services;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::report::Outcome;
pub use health::HealthCheck;
pub use message::Templates;
pub use services::Service;

/// What is sent: a title and a plain-text body.
#[derive(Debug, Clone)]
pub struct Message {
    pub title: String,
    pub body: String,
    pub outcome: Outcome,
}

use crate::net::retry::RetryPolicy;
use crate::report::RunStats;
use services::{Check, Kind, Request};

/// The longest one request to a notification service may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest all notifications of one run may take, retries included.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Test hook: every host name a notification service uses resolves to this address
/// (`127.0.0.1:PORT`), so tests can receive what would go to discord.com and the like.
pub const TEST_RESOLVE_VAR: &str = "DUNNAGE_TEST_NOTIFY_RESOLVE";

/// Which runs notify (`NOTIFICATION_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Failed runs only (the default).
    Error,
    /// Failed runs and runs that need attention.
    Warn,
    /// Every run.
    Info,
}

impl Level {
    pub fn parse(raw: &str) -> Option<Level> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            _ => None,
        }
    }

    pub fn wants(self, outcome: Outcome) -> bool {
        match self {
            Level::Error => outcome == Outcome::Failure,
            Level::Warn => outcome != Outcome::Success,
            Level::Info => true,
        }
    }
}

/// Notification settings of one schedule, validated when the configuration is read.
#[derive(Clone)]
pub struct Settings {
    /// The URLs as given (secret), `EMAIL_*` already turned into an `smtp://` URL.
    urls: Vec<String>,
    pub level: Level,
    /// `NOTIFICATION_CA_CERT`: PEM of a private CA, trusted besides the system's.
    pub ca_cert: Option<String>,
    pub templates: Templates,
    /// The schedule's variables that are not secret, with their values (templates' `.Config`).
    config_values: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(|u| address::redact(u))
                    .collect::<Vec<_>>(),
            )
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Keeps the URLs that parse; the others come back as errors naming the URL (redacted)
    /// and what is wrong. `None` when no URL is usable.
    pub fn new(
        urls: Vec<String>,
        level: Level,
        ca_cert: Option<String>,
        templates: Templates,
    ) -> (Option<Settings>, Vec<String>) {
        let mut usable = Vec::new();
        let mut errors = Vec::new();
        for url in urls {
            match services::parse(&url) {
                Ok(_) => usable.push(url),
                Err(e) => errors.push(format!("{}: {e}", address::redact(&url))),
            }
        }
        let settings = (!usable.is_empty()).then(|| Settings {
            urls: usable,
            level,
            ca_cert,
            templates,
            config_values: Vec::new(),
        });
        (settings, errors)
    }

    /// The same settings with the schedule's non-secret variables for templates.
    pub fn with_config_values(mut self, values: Vec<(&'static str, String)>) -> Settings {
        self.config_values = values;
        self
    }

    pub fn services(&self) -> Vec<Service> {
        self.urls
            .iter()
            .filter_map(|u| services::parse(u).ok())
            .collect()
    }
}

/// Sends the run's notification when its level asks for one. Returns how many services
/// could not be reached (0 when nothing was due).
pub async fn notify(settings: &Settings, stats: &RunStats) -> usize {
    if !settings.level.wants(stats.outcome()) {
        return 0;
    }
    let log = capture::current_log();
    let msg = settings
        .templates
        .render(stats, &settings.config_values, &log);
    send_all(settings, &msg).await
}

/// Sends `msg` to every service at once, within [`DEADLINE`], logging each outcome.
/// Returns how many failed.
pub async fn send_all(settings: &Settings, msg: &Message) -> usize {
    let results = send_each(settings, msg).await;
    for (service, result) in &results {
        match result {
            Ok(()) => tracing::info!("notification sent to {service}"),
            Err(e) => tracing::error!("notification to {service} failed: {e}"),
        }
    }
    results.iter().filter(|(_, r)| r.is_err()).count()
}

/// Sends `msg` to every service at once, within [`DEADLINE`]: for each, its name with the
/// redacted URL, and the outcome.
pub async fn send_each(settings: &Settings, msg: &Message) -> Vec<(String, Result<(), String>)> {
    let services = settings.services();
    let label = |s: &Service| format!("{} ({})", s.name(), s.redacted);
    let client = match client(settings.ca_cert.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            return services
                .iter()
                .map(|s| (label(s), Err(e.clone())))
                .collect();
        }
    };
    let sends = services.iter().map(|s| {
        let client = &client;
        async move {
            let mut msg = msg.clone();
            if let Some(t) = &s.title {
                msg.title = t.clone();
            }
            let result = tokio::time::timeout(DEADLINE, deliver(s, &msg, client, settings))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}s", DEADLINE.as_secs())));
            (label(s), result)
        }
    });
    futures_util::future::join_all(sends).await
}

fn client(ca_cert: Option<&str>) -> Result<reqwest::Client, String> {
    crate::net::tls::install_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("dunnage/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_cert {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("NOTIFICATION_CA_CERT: {e}"))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(addr) = std::env::var(TEST_RESOLVE_VAR)
        .ok()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        builder = builder.dns_resolver(Arc::new(Fixed(addr)));
    }
    builder.build().map_err(|e| e.to_string())
}

/// Resolves every name to one address (the test hook).
struct Fixed(SocketAddr);

impl reqwest::dns::Resolve for Fixed {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = self.0;
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
    }
}

/// A failed request; `transient` ones are retried.
#[derive(Debug)]
struct SendError {
    message: String,
    transient: bool,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

async fn deliver(
    service: &Service,
    msg: &Message,
    client: &reqwest::Client,
    settings: &Settings,
) -> Result<(), String> {
    // A secret echoed into an error or the log never leaves in a notification.
    let msg = &Message {
        title: crate::secrets::redact(&msg.title).into_owned(),
        body: crate::secrets::redact(&msg.body).into_owned(),
        outcome: msg.outcome,
    };
    match &service.kind {
        Kind::Smtp(smtp) => {
            smtp.send(msg, settings.ca_cert.as_deref(), REQUEST_TIMEOUT)
                .await
        }
        Kind::Matrix(m) => matrix(client, m, msg).await,
        Kind::Mqtt(m) => {
            m.publish(msg, settings.ca_cert.as_deref(), REQUEST_TIMEOUT)
                .await
        }
        Kind::Local { stdout: true } => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}\n{}", msg.title, msg.body).map_err(|e| e.to_string())
        }
        Kind::Local { stdout: false } => {
            tracing::info!("notification: {}\n{}", msg.title, msg.body);
            Ok(())
        }
        Kind::Http(http) => {
            for request in http.requests(msg)? {
                send(client, &request, service.name()).await?;
            }
            Ok(())
        }
    }
}

/// Sends one request with retries (connection failures, 5xx, 429) and checks the answer.
async fn send(
    client: &reqwest::Client,
    r: &Request,
    what: &str,
) -> Result<serde_json::Value, String> {
    let policy = RetryPolicy::with_timeout(DEADLINE / 2);
    policy
        .run(
            &format!("notification to {what}"),
            |e: &SendError| e.transient,
            || attempt(client, r),
        )
        .await
        .map_err(|e| e.message)
}

async fn attempt(client: &reqwest::Client, r: &Request) -> Result<serde_json::Value, SendError> {
    let mut req = client.request(r.method.clone(), r.url.clone());
    for (k, v) in &r.headers {
        req = req.header(k, v);
    }
    if let Some((user, pass)) = &r.basic_auth {
        req = req.basic_auth(user, Some(pass));
    }
    if let Some((content_type, body)) = &r.body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.clone());
    }
    let response = req.send().await.map_err(|e| SendError {
        // The URL may hold a token: say what failed without it.
        message: crate::net::error_chain(&e.without_url()),
        transient: true,
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let detail: String = text.chars().take(300).collect();
        return Err(SendError {
            message: format!("the service answered {status}: {}", detail.trim()),
            transient: status.is_server_error() || status.as_u16() == 429,
        });
    }
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if let Check::Field(field, expected) = &r.check {
        if json.get(field) != Some(expected) {
            let detail: String = text.chars().take(300).collect();
            return Err(SendError {
                message: format!("the service refused the message: {}", detail.trim()),
                transient: false,
            });
        }
    }
    Ok(json)
}

/// Matrix: log in (unless the secret is an access token), find the rooms (join aliases,
/// or every joined room when none are given), send an `m.text` message to each.
async fn matrix(
    client: &reqwest::Client,
    m: &services::Matrix,
    msg: &Message,
) -> Result<(), String> {
    let api = format!("{}/_matrix/client/v3", m.base);
    let token = if m.user.is_empty() {
        m.secret.clone()
    } else {
        let login = post(
            &format!("{api}/login"),
            &serde_json::json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": m.user},
                "password": m.secret,
            }),
            None,
        )?;
        let answer = send(client, &login, "Matrix").await?;
        answer["access_token"]
            .as_str()
            .ok_or("the homeserver's login answer has no access_token")?
            .to_owned()
    };
    let rooms: Vec<String> = if m.rooms.is_empty() {
        let mut r = Request {
            method: reqwest::Method::GET,
            url: reqwest::Url::parse(&format!("{api}/joined_rooms")).map_err(|e| e.to_string())?,
            headers: Vec::new(),
            basic_auth: None,
            body: None,
            check: Check::Status,
        };
        r.headers
            .push(("Authorization".into(), format!("Bearer {token}")));
        let answer = send(client, &r, "Matrix").await?;
        answer["joined_rooms"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        let mut ids = Vec::new();
        for room in &m.rooms {
            // Joining is how an alias (#room:server) becomes a room id, and harmless
            // for a room the account is already in.
            let room = if room.starts_with('#') || room.starts_with('!') {
                room.clone()
            } else {
                format!("#{room}")
            };
            let join = post(
                &format!("{api}/join/{}", encode(&room)),
                &serde_json::json!({}),
                Some(&token),
            )?;
            let answer = send(client, &join, "Matrix").await?;
            ids.push(
                answer["room_id"]
                    .as_str()
                    .ok_or(format!("joining {room} gave no room_id"))?
                    .to_owned(),
            );
        }
        ids
    };
    if rooms.is_empty() {
        return Err("the account is in no room and no rooms option is given".into());
    }
    let text = if msg.title.is_empty() {
        msg.body.clone()
    } else {
        format!("{}\n\n{}", msg.title, msg.body)
    };
    for (i, room) in rooms.iter().enumerate() {
        let txn = format!("dunnage-{}-{i}", jiff::Timestamp::now().as_nanosecond());
        let mut r = post(
            &format!(
                "{api}/rooms/{}/send/m.room.message/{}",
                encode(room),
                encode(&txn)
            ),
            &serde_json::json!({"msgtype": "m.text", "body": text}),
            Some(&token),
        )?;
        r.method = reqwest::Method::PUT;
        send(client, &r, "Matrix").await?;
    }
    Ok(())
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, services::SEGMENT).to_string()
}

fn post(url: &str, body: &serde_json::Value, token: Option<&str>) -> Result<Request, String> {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
    }
    Ok(Request {
        method: reqwest::Method::POST,
        url: reqwest::Url::parse(url).map_err(|e| e.to_string())?,
        headers,
        basic_auth: None,
        body: Some(("application/json".into(), body.to_string().into_bytes())),
        check: Check::Status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_choose_which_outcomes_notify() {
        use Outcome::*;
        let wants = |l: Level| [Success, Warning, Failure].map(|o| l.wants(o));
        assert_eq!(wants(Level::Error), [false, false, true]);
        assert_eq!(wants(Level::Warn), [false, true, true]);
        assert_eq!(wants(Level::Info), [true, true, true]);
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("debug"), None);
    }

    #[test]
    fn settings_keep_the_usable_urls_and_report_every_bad_one_redacted() {
        let (settings, e) = Settings::new(
            vec![
                "smtp://u:hunter2@mail/?from=a@b.c".into(),
                "discord://tok@123".into(),
                "fax://secret@x".into(),
            ],
            Level::Error,
            None,
            Templates::default(),
        );
        assert_eq!(settings.unwrap().services().len(), 1, "discord stays");
        assert_eq!(e.len(), 2);
        assert!(
            e[0].starts_with("smtp://***@mail/?from=a@b.c: "),
            "{}",
            e[0]
        );
        assert!(e[1].contains("fax://***@x") && e[1].contains("unknown notification service"));
        assert!(!e.join(" ").contains("hunter2") && !e.join(" ").contains("secret"));
    }
}
