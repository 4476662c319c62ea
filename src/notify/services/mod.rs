//! The services `NOTIFICATION_URLS` can address, in shoutrrr's URL formats, and the HTTP
//! requests each one's API documents. Each HTTP service is one module here holding its
//! settings, its URL parsing and its requests. Parsing happens once, when the
//! configuration is read; building a request is pure (unit-tested here), sending lives in
//! `notify::deliver`.

mod bark;
mod discord;
mod generic;
mod googlechat;
mod gotify;
mod ifttt;
mod join;
mod lark;
mod mattermost;
mod mqtt;
mod notifiarr;
mod ntfy;
mod opsgenie;
mod pagerduty;
mod pushbullet;
mod pushover;
mod rocketchat;
mod signal;
mod slack;
mod teams;
mod telegram;
mod twilio;
mod wecom;
mod zulip;

use reqwest::{Method, Url};
use serde_json::Value;

use super::address::{Options, Parts};
use super::email::Smtp;

use super::{Message, Outcome};

/// One entry of `NOTIFICATION_URLS`.
pub struct Service {
    /// The URL with its secrets replaced by `***`, for logs and errors.
    pub redacted: String,
    /// The `title` option: replaces the rendered title.
    pub title: Option<String>,
    pub kind: Kind,
}

pub enum Kind {
    Http(Box<dyn HttpService>),
    Matrix(Matrix),
    Smtp(Box<Smtp>),
    /// `logger://` (our log) and `stdout://` (standard output).
    Local {
        stdout: bool,
    },
    Mqtt(Box<mqtt::Mqtt>),
}

impl Service {
    /// A short name for logs: the URL scheme's service.
    pub fn name(&self) -> &'static str {
        match &self.kind {
            Kind::Http(h) => h.name(),
            Kind::Matrix(_) => "Matrix",
            Kind::Smtp(_) => "Email",
            Kind::Local { stdout: false } => "Logger",
            Kind::Local { stdout: true } => "Stdout",
            Kind::Mqtt(_) => "MQTT",
        }
    }
}

/// Reads one service's settings from its URL (the raw URL for services that keep its
/// path exactly as written).
type Parser = fn(&mut Parts, &str) -> Result<Kind, String>;

fn http<S: HttpService + 'static>(service: Result<S, String>) -> Result<Kind, String> {
    service.map(|s| Kind::Http(Box::new(s)))
}

/// Every scheme we know and its parser: the one list the "unknown scheme" error and the
/// dispatch both read.
const SERVICES: &[(&str, Parser)] = &[
    ("bark", |p, _| http(bark::parse(p))),
    ("discord", |p, _| http(discord::parse(p))),
    ("generic", |p, raw| http(generic::parse(p, raw))),
    ("generic+http", |p, raw| http(generic::parse(p, raw))),
    ("generic+https", |p, raw| http(generic::parse(p, raw))),
    ("googlechat", |p, _| http(googlechat::parse(p))),
    ("gotify", |p, _| http(gotify::parse(p))),
    ("hangouts", |p, _| http(googlechat::parse(p))),
    ("ifttt", |p, _| http(ifttt::parse(p))),
    ("join", |p, _| http(join::parse(p))),
    ("lark", |p, _| http(lark::parse(p))),
    ("logger", |_, _| Ok(Kind::Local { stdout: false })),
    ("mattermost", |p, _| http(mattermost::parse(p))),
    ("matrix", |p, _| Matrix::from_parts(p).map(Kind::Matrix)),
    ("mqtt", |p, _| {
        mqtt::parse(p).map(|m| Kind::Mqtt(Box::new(m)))
    }),
    ("mqtts", |p, _| {
        mqtt::parse(p).map(|m| Kind::Mqtt(Box::new(m)))
    }),
    ("notifiarr", |p, _| http(notifiarr::parse(p))),
    ("ntfy", |p, _| http(ntfy::parse(p))),
    ("opsgenie", |p, _| http(opsgenie::parse(p))),
    ("pagerduty", |p, _| http(pagerduty::parse(p))),
    ("pushbullet", |p, _| http(pushbullet::parse(p))),
    ("pushover", |p, _| http(pushover::parse(p))),
    ("rocketchat", |p, _| http(rocketchat::parse(p))),
    ("signal", |p, _| http(signal::parse(p))),
    ("slack", |p, _| http(slack::parse(p))),
    ("smtp", |p, _| {
        Smtp::from_parts(p).map(|s| Kind::Smtp(Box::new(s)))
    }),
    ("stdout", |_, _| Ok(Kind::Local { stdout: true })),
    ("teams", |p, _| http(teams::parse(p))),
    ("telegram", |p, _| http(telegram::parse(p))),
    ("twilio", |p, _| http(twilio::parse(p))),
    ("wecom", |p, _| http(wecom::parse(p))),
    ("zulip", |p, _| http(zulip::parse(p))),
];

/// The schemes we know, for the "unknown scheme" error.
pub fn schemes() -> String {
    let names: Vec<&str> = SERVICES.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

/// Parses one service URL. Errors say what is wrong without repeating the URL (the caller
/// shows it redacted).
pub fn parse(raw: &str) -> Result<Service, String> {
    let redacted = super::address::redact(raw);
    let mut parts = Parts::parse(raw.trim())?;
    let title = parts.options.take(&["title"]).filter(|t| !t.is_empty());
    let scheme = parts.scheme.clone();
    let Some((_, parser)) = SERVICES.iter().find(|(name, _)| *name == scheme) else {
        return Err(format!(
            "unknown notification service {scheme:?}; known: {}",
            schemes()
        ));
    };
    let kind = parser(&mut parts, raw)?;
    parts.options.finish()?;
    Ok(Service {
        redacted,
        title,
        kind,
    })
}

/// One HTTP request, ready to send, and how to tell that the service accepted it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub basic_auth: Option<(String, String)>,
    /// Content type and bytes.
    pub body: Option<(String, Vec<u8>)>,
    pub check: Check,
}

/// What a successful answer looks like beyond a 2xx status.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Status,
    /// The JSON answer has this field with this value (Slack `ok: true`, Pushover
    /// `status: 1`, ...).
    Field(&'static str, Value),
}

impl Request {
    fn new(method: Method, url: &str) -> Result<Request, String> {
        Ok(Request {
            method,
            url: Url::parse(url).map_err(|e| format!("cannot build the request URL: {e}"))?,
            headers: Vec::new(),
            basic_auth: None,
            body: None,
            check: Check::Status,
        })
    }

    fn post_json(url: &str, body: &Value) -> Result<Request, String> {
        let mut r = Request::new(Method::POST, url)?;
        r.body = Some(("application/json".into(), body.to_string().into_bytes()));
        Ok(r)
    }

    fn post_form(url: &str, fields: &[(&str, &str)]) -> Result<Request, String> {
        let mut r = Request::new(Method::POST, url)?;
        let mut form = ::url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            form.append_pair(k, v);
        }
        r.body = Some((
            "application/x-www-form-urlencoded".into(),
            form.finish().into_bytes(),
        ));
        Ok(r)
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn expect(mut self, field: &'static str, value: Value) -> Self {
        self.check = Check::Field(field, value);
        self
    }
}

/// A service that is one or more plain HTTP requests: its settings, parsed from the URL
/// in its own module, and the requests that deliver a message.
pub trait HttpService: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// The requests that deliver `msg`, in order.
    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String>;
}

/// Cuts `s` to at most `max` characters (APIs reject longer fields), marking the cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `*title*` on its own line above the body, for chat services without a title field.
fn titled(msg: &Message, bold: &str) -> String {
    if msg.title.is_empty() {
        msg.body.clone()
    } else {
        format!("{bold}{}{bold}\n{}", msg.title, msg.body)
    }
}

fn https(parts: &Parts, disable_tls: bool) -> String {
    let scheme = if disable_tls { "http" } else { "https" };
    format!("{scheme}://{}", parts.authority())
}

fn opt(v: String) -> Option<String> {
    Some(v).filter(|v| !v.is_empty())
}

/// Characters escaped in a URL path segment: all but RFC 3986's unreserved ones.
pub(super) const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Sets `key` in a JSON object when `value` is given.
fn set(body: &mut Value, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        body[key] = v.clone().into();
    }
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn color(o: &mut Options, keys: &[&str], default: u32) -> Result<u32, String> {
    match o.take(keys).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => {
            let t = v.trim_start_matches('#');
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16),
                None if v.starts_with('#') => u32::from_str_radix(t, 16),
                None => t.parse(),
            };
            parsed.map_err(|_| format!("option {}={v:?} is not a colour (0xRRGGBB)", keys[0]))
        }
    }
}

/// Matrix needs a conversation (log in, resolve aliases, send), run by `notify::deliver`.
pub struct Matrix {
    pub base: String,
    pub user: String,
    /// The password, or the access token when there is no user.
    pub secret: String,
    pub rooms: Vec<String>,
}

impl Matrix {
    fn from_parts(p: &mut Parts) -> Result<Matrix, String> {
        p.require_host("the homeserver")?;
        let secret = p.password.clone().unwrap_or_default();
        if secret.is_empty() {
            return Err("the password or access token is missing \
                        (matrix://USER:PASSWORD@host or matrix://:TOKEN@host)"
                .into());
        }
        let disable_tls = p.options.bool(&["disabletls"], false)?;
        Ok(Matrix {
            base: https(p, disable_tls),
            user: p.user.clone(),
            secret,
            rooms: p.options.list(&["rooms", "room"], ','),
        })
    }
}

/// What the services' tests share: a message and the parts of a request.
#[cfg(test)]
mod testing {
    pub(super) use super::{Check, Kind, Request, parse};
    pub(super) use crate::notify::{Message, Outcome};
    pub(super) use serde_json::{Value, json};

    pub(super) fn msg(outcome: Outcome) -> Message {
        Message {
            title: "Backup failed".into(),
            body: "line 1\nline <2>".into(),
            outcome,
        }
    }

    /// The one request `url`'s service sends for a failure.
    pub(super) fn one(url: &str) -> Request {
        let service = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let Kind::Http(h) = service.kind else {
            panic!("not http")
        };
        let mut r = h.requests(&msg(Outcome::Failure)).unwrap();
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    pub(super) fn body(r: &Request) -> Value {
        serde_json::from_slice(&r.body.as_ref().unwrap().1).unwrap()
    }

    pub(super) fn form(r: &Request) -> Vec<(String, String)> {
        ::url::form_urlencoded::parse(&r.body.as_ref().unwrap().1)
            .into_owned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[test]
    fn unknown_schemes_and_options_are_refused() {
        let e = parse("fax://1234").err().unwrap();
        assert!(e.contains("unknown notification service \"fax\""), "{e}");
        let e = parse("discord://t@1?colour=1").err().unwrap();
        assert!(e.contains("unknown option colour"), "{e}");
        assert!(parse("not a url").is_err());
    }

    #[test]
    fn form_services_send_their_fields() {
        let r = one("pushover://shoutrrr:apptoken@userkey/?devices=a,b&priority=-1");
        assert_eq!(r.url.as_str(), "https://api.pushover.net/1/messages.json");
        let f = form(&r);
        assert!(f.contains(&("token".into(), "apptoken".into())));
        assert!(f.contains(&("user".into(), "userkey".into())));
        assert!(f.contains(&("device".into(), "a,b".into())));
        assert!(f.contains(&("priority".into(), "-1".into())));
        let r = one("zulip://bot%40example.org:k3y@chat.example.org/?stream=ops&topic=backups");
        assert_eq!(r.url.as_str(), "https://chat.example.org/api/v1/messages");
        assert_eq!(r.basic_auth, Some(("bot@example.org".into(), "k3y".into())));
        assert!(form(&r).contains(&("to".into(), "ops".into())));
        assert!(form(&r).contains(&("topic".into(), "backups".into())));
    }

    #[test]
    fn self_hosted_services_use_https_unless_told() {
        let r = one("gotify://push.example/sub/AbCdEfGhIjKlMnO?priority=9");
        assert_eq!(r.url.as_str(), "https://push.example/sub/message");
        assert!(
            r.headers
                .contains(&("X-Gotify-Key".into(), "AbCdEfGhIjKlMnO".into()))
        );
        assert_eq!(body(&r)["priority"], 9);
        assert!(parse("gotify://push.example/short").is_err());
        let r = one("mattermost://bot@chat.example:8065/t0ken/ops?disabletls=yes");
        assert_eq!(r.url.as_str(), "http://chat.example:8065/hooks/t0ken");
        assert_eq!(body(&r)["channel"], "ops");
        let r = one("rocketchat://rc.example/tA/tB/@admin");
        assert_eq!(r.url.as_str(), "https://rc.example/hooks/tA/tB");
        assert_eq!(body(&r)["channel"], "@admin");
        let r = one("ntfy://u:p@ntfy.example/backups?tags=floppy_disk&cache=no");
        assert_eq!(r.url.as_str(), "https://ntfy.example/backups");
        assert_eq!(r.basic_auth, Some(("u".into(), "p".into())));
        assert!(r.headers.contains(&("Priority".into(), "high".into())));
        assert!(r.headers.contains(&("Cache".into(), "no".into())));
        let r = one("bark://:devkey@bark.example/?sound=alarm&badge=1");
        assert_eq!(r.url.as_str(), "https://bark.example/push");
        assert_eq!(body(&r)["device_key"], "devkey");
        assert_eq!(body(&r)["badge"], 1);
    }

    #[test]
    fn the_other_apis() {
        let r = one("opsgenie://api.eu.opsgenie.com/k3y?responders=team:ops,user:a@b.c&tags=x,y");
        assert_eq!(r.url.as_str(), "https://api.eu.opsgenie.com/v2/alerts");
        assert!(
            r.headers
                .contains(&("Authorization".into(), "GenieKey k3y".into()))
        );
        let b = body(&r);
        assert_eq!(b["message"], "Backup failed");
        assert_eq!(b["responders"][1]["username"], "a@b.c");
        assert_eq!(b["priority"], "P2");
        let r = one(
            "teams://11111111-2222-3333-4444-555555555555@66666666-7777-8888-9999-000000000000/abc/def?host=org.webhook.office.com",
        );
        assert_eq!(
            r.url.as_str(),
            "https://org.webhook.office.com/webhookb2/11111111-2222-3333-4444-555555555555@66666666-7777-8888-9999-000000000000/IncomingWebhook/abc/def"
        );
        assert_eq!(body(&r)["@type"], "MessageCard");
        let r = one("googlechat://chat.googleapis.com/v1/spaces/FOO/messages?key=k&token=t");
        assert_eq!(
            r.url.as_str(),
            "https://chat.googleapis.com/v1/spaces/FOO/messages?key=k&token=t"
        );
        assert_eq!(body(&r)["text"], "*Backup failed*\nline 1\nline <2>");
        let r = one("ifttt://hookkey/?events=backup&value1=dunnage&titlevalue=3");
        assert_eq!(
            r.url.as_str(),
            "https://maker.ifttt.com/trigger/backup/with/key/hookkey"
        );
        assert_eq!(
            body(&r),
            json!({"value1": "dunnage", "value2": "line 1\nline <2>", "value3": "Backup failed"})
        );
        let r = one("join://shoutrrr:apikey@join/?devices=d1,d2");
        assert!(r.url.query().unwrap().contains("deviceIds=d1%2Cd2"));
        let r = one("pushbullet://tok/dev1");
        assert!(r.headers.contains(&("Access-Token".into(), "tok".into())));
        assert_eq!(body(&r)["device_iden"], "dev1");
    }
}
