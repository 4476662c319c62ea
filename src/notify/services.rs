//! The services `NOTIFICATION_URLS` can address, in shoutrrr's URL formats, and the HTTP
//! requests each one's API documents. Parsing happens once, when the configuration is
//! read; building a request is pure (unit-tested here), sending lives in `notify::deliver`.

use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

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
    Http(Http),
    Matrix(Matrix),
    Smtp(Box<Smtp>),
}

impl Service {
    /// A short name for logs: the URL scheme's service.
    pub fn name(&self) -> &'static str {
        match &self.kind {
            Kind::Http(h) => h.name(),
            Kind::Matrix(_) => "Matrix",
            Kind::Smtp(_) => "Email",
        }
    }
}

/// The schemes we know, for the "unknown scheme" error.
pub const SCHEMES: &str = "bark, discord, generic, generic+http, generic+https, gotify, \
    googlechat, ifttt, join, mattermost, matrix, ntfy, opsgenie, pushbullet, pushover, \
    rocketchat, slack, smtp, teams, telegram, zulip";

/// Parses one service URL. Errors say what is wrong without repeating the URL (the caller
/// shows it redacted).
pub fn parse(raw: &str) -> Result<Service, String> {
    let redacted = super::address::redact(raw);
    let mut parts = Parts::parse(raw.trim())?;
    let title = parts.options.take(&["title"]).filter(|t| !t.is_empty());
    let kind = match parts.scheme.as_str() {
        "smtp" => Kind::Smtp(Box::new(Smtp::from_parts(&mut parts)?)),
        "matrix" => Kind::Matrix(Matrix::from_parts(&mut parts)?),
        "generic" | "generic+http" | "generic+https" => Kind::Http(generic(&mut parts, raw)?),
        "bark" => Kind::Http(bark(&mut parts)?),
        "discord" => Kind::Http(discord(&mut parts)?),
        "gotify" => Kind::Http(gotify(&mut parts)?),
        "googlechat" | "hangouts" => Kind::Http(googlechat(&mut parts)?),
        "ifttt" => Kind::Http(ifttt(&mut parts)?),
        "join" => Kind::Http(join(&mut parts)?),
        "mattermost" => Kind::Http(mattermost(&mut parts)?),
        "ntfy" => Kind::Http(ntfy(&mut parts)?),
        "opsgenie" => Kind::Http(opsgenie(&mut parts)?),
        "pushbullet" => Kind::Http(pushbullet(&mut parts)?),
        "pushover" => Kind::Http(pushover(&mut parts)?),
        "rocketchat" => Kind::Http(rocketchat(&mut parts)?),
        "slack" => Kind::Http(slack(&mut parts)?),
        "teams" => Kind::Http(teams(&mut parts)?),
        "telegram" => Kind::Http(telegram(&mut parts)?),
        "zulip" => Kind::Http(zulip(&mut parts)?),
        other => {
            return Err(format!(
                "unknown notification service {other:?}; known: {SCHEMES}"
            ));
        }
    };
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

/// Services that are one or more plain HTTP requests.
pub enum Http {
    Bark {
        base: String,
        device_key: String,
        extra: Map<String, Value>,
    },
    Discord {
        id: String,
        token: String,
        username: Option<String>,
        avatar: Option<String>,
        colors: [u32; 3],
        raw: bool,
    },
    Generic {
        url: Url,
        method: Method,
        content_type: String,
        json: bool,
        title_key: String,
        message_key: String,
        headers: Vec<(String, String)>,
        extra: Vec<(String, String)>,
    },
    Gotify {
        base: String,
        token: String,
        priority: Option<i64>,
    },
    GoogleChat {
        url: String,
    },
    Ifttt {
        key: String,
        events: Vec<String>,
        values: [String; 3],
        message_value: u8,
        title_value: u8,
    },
    Join {
        key: String,
        devices: Vec<String>,
        icon: Option<String>,
    },
    Mattermost {
        base: String,
        token: String,
        username: Option<String>,
        channel: Option<String>,
        icon: Option<String>,
    },
    Ntfy {
        url: String,
        credentials: Option<(String, String)>,
        priority: Option<String>,
        headers: Vec<(String, String)>,
    },
    OpsGenie {
        base: String,
        key: String,
        fields: Map<String, Value>,
    },
    Pushbullet {
        token: String,
        targets: Vec<(&'static str, String)>,
    },
    Pushover {
        token: String,
        user: String,
        devices: Vec<String>,
        priority: Option<i32>,
    },
    RocketChat {
        base: String,
        tokens: (String, String),
        username: Option<String>,
        channel: Option<String>,
    },
    Slack {
        /// `None`: the webhook (`hooks.slack.com`); `Some`: the bot API token.
        bot_token: Option<String>,
        webhook: String,
        channel: Option<String>,
        botname: Option<String>,
        color: Option<String>,
        icon: Option<String>,
        thread: Option<String>,
    },
    Teams {
        url: String,
        color: Option<String>,
    },
    Telegram {
        token: String,
        chats: Vec<String>,
        notification: bool,
        preview: bool,
        parse_mode: Option<String>,
    },
    Zulip {
        base: String,
        bot: (String, String),
        stream: Option<String>,
        topic: Option<String>,
    },
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

impl Http {
    pub fn name(&self) -> &'static str {
        match self {
            Http::Bark { .. } => "Bark",
            Http::Discord { .. } => "Discord",
            Http::Generic { .. } => "Generic webhook",
            Http::Gotify { .. } => "Gotify",
            Http::GoogleChat { .. } => "Google Chat",
            Http::Ifttt { .. } => "IFTTT",
            Http::Join { .. } => "Join",
            Http::Mattermost { .. } => "Mattermost",
            Http::Ntfy { .. } => "Ntfy",
            Http::OpsGenie { .. } => "OpsGenie",
            Http::Pushbullet { .. } => "Pushbullet",
            Http::Pushover { .. } => "Pushover",
            Http::RocketChat { .. } => "Rocket.Chat",
            Http::Slack { .. } => "Slack",
            Http::Teams { .. } => "Teams",
            Http::Telegram { .. } => "Telegram",
            Http::Zulip { .. } => "Zulip",
        }
    }

    /// The requests that deliver `msg`, in order.
    pub fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let failed = msg.outcome == Outcome::Failure;
        let warned = msg.outcome == Outcome::Warning;
        Ok(match self {
            Http::Bark {
                base,
                device_key,
                extra,
            } => {
                let mut body = extra.clone();
                body.insert("title".into(), msg.title.clone().into());
                body.insert("body".into(), msg.body.clone().into());
                body.insert("device_key".into(), device_key.clone().into());
                vec![
                    Request::post_json(&format!("{base}/push"), &Value::Object(body))?
                        .expect("code", json!(200)),
                ]
            }
            Http::Discord {
                id,
                token,
                username,
                avatar,
                colors,
                raw,
            } => {
                let url = format!("https://discord.com/api/webhooks/{id}/{token}");
                if *raw {
                    let mut r = Request::new(Method::POST, &url)?;
                    r.body = Some(("application/json".into(), msg.body.clone().into_bytes()));
                    return Ok(vec![r]);
                }
                let color = colors[msg.outcome as usize];
                let mut body = json!({"embeds": [{
                    "title": clip(&msg.title, 256),
                    "description": clip(&msg.body, 4000),
                    "color": color,
                }]});
                set(&mut body, "username", username);
                set(&mut body, "avatar_url", avatar);
                vec![Request::post_json(&url, &body)?]
            }
            Http::Generic {
                url,
                method,
                content_type,
                json,
                title_key,
                message_key,
                headers,
                extra,
            } => {
                let body = if *json {
                    let mut map = Map::new();
                    for (k, v) in extra {
                        map.insert(k.clone(), v.clone().into());
                    }
                    map.insert(title_key.clone(), msg.title.clone().into());
                    map.insert(message_key.clone(), msg.body.clone().into());
                    Value::Object(map).to_string()
                } else {
                    msg.body.clone()
                };
                let mut r = Request::new(method.clone(), url.as_str())?;
                r.body = Some((content_type.clone(), body.into_bytes()));
                r.headers = headers.clone();
                vec![r]
            }
            Http::Gotify {
                base,
                token,
                priority,
            } => {
                let priority = priority.unwrap_or(match msg.outcome {
                    Outcome::Failure => 8,
                    Outcome::Warning => 5,
                    Outcome::Success => 2,
                });
                let body = json!({"title": msg.title, "message": msg.body, "priority": priority});
                vec![
                    Request::post_json(&format!("{base}/message"), &body)?
                        .header("X-Gotify-Key", token),
                ]
            }
            Http::GoogleChat { url } => {
                vec![Request::post_json(url, &json!({"text": titled(msg, "*")}))?]
            }
            Http::Ifttt {
                key,
                events,
                values,
                message_value,
                title_value,
            } => {
                let mut v = values.clone();
                if *title_value > 0 {
                    v[*title_value as usize - 1] = msg.title.clone();
                }
                v[*message_value as usize - 1] = msg.body.clone();
                let body = json!({"value1": v[0], "value2": v[1], "value3": v[2]});
                events
                    .iter()
                    .map(|event| {
                        let event = percent(event);
                        Request::post_json(
                            &format!(
                                "https://maker.ifttt.com/trigger/{event}/with/key/{}",
                                percent(key)
                            ),
                            &body,
                        )
                    })
                    .collect::<Result<_, _>>()?
            }
            Http::Join { key, devices, icon } => {
                let mut r = Request::new(
                    Method::POST,
                    "https://joinjoaomgcd.appspot.com/_ah/api/messaging/v1/sendPush",
                )?;
                {
                    let mut q = r.url.query_pairs_mut();
                    q.append_pair("deviceIds", &devices.join(","))
                        .append_pair("apikey", key)
                        .append_pair("text", &msg.body)
                        .append_pair("title", &msg.title);
                    if let Some(i) = icon {
                        q.append_pair("icon", i);
                    }
                }
                vec![r.expect("success", json!(true))]
            }
            Http::Mattermost {
                base,
                token,
                username,
                channel,
                icon,
            } => {
                let mut body = json!({"text": titled(msg, "**")});
                set(&mut body, "username", username);
                set(&mut body, "channel", channel);
                set(&mut body, "icon_url", icon);
                vec![Request::post_json(
                    &format!("{base}/hooks/{}", percent(token)),
                    &body,
                )?]
            }
            Http::Ntfy {
                url,
                credentials,
                priority,
                headers,
            } => {
                let mut r = Request::new(Method::POST, url)?;
                r.body = Some((
                    "text/plain; charset=utf-8".into(),
                    msg.body.clone().into_bytes(),
                ));
                r.basic_auth = credentials.clone();
                r.headers = headers.clone();
                let priority = priority.clone().unwrap_or_else(|| {
                    match msg.outcome {
                        Outcome::Failure => "high",
                        Outcome::Warning | Outcome::Success => "default",
                    }
                    .into()
                });
                let r = r.header("Title", &msg.title).header("Priority", priority);
                vec![if failed || warned {
                    r.header("Tags", "warning")
                } else {
                    r
                }]
            }
            Http::OpsGenie { base, key, fields } => {
                let mut body = fields.clone();
                body.insert("message".into(), clip(&msg.title, 130).into());
                body.insert("description".into(), clip(&msg.body, 15000).into());
                body.entry("priority").or_insert_with(|| {
                    match msg.outcome {
                        Outcome::Failure => "P2",
                        Outcome::Warning => "P3",
                        Outcome::Success => "P5",
                    }
                    .into()
                });
                vec![
                    Request::post_json(&format!("{base}/v2/alerts"), &Value::Object(body))?
                        .header("Authorization", format!("GenieKey {key}")),
                ]
            }
            Http::Pushbullet { token, targets } => {
                let push = |target: Option<&(&str, String)>| {
                    let mut body = json!({"type": "note", "title": msg.title, "body": msg.body});
                    if let Some((field, value)) = target {
                        body[*field] = value.clone().into();
                    }
                    Request::post_json("https://api.pushbullet.com/v2/pushes", &body)
                        .map(|r| r.header("Access-Token", token))
                };
                if targets.is_empty() {
                    vec![push(None)?]
                } else {
                    targets
                        .iter()
                        .map(|t| push(Some(t)))
                        .collect::<Result<_, _>>()?
                }
            }
            Http::Pushover {
                token,
                user,
                devices,
                priority,
            } => {
                let title = clip(&msg.title, 250);
                let message = clip(&msg.body, 1024);
                let devices = devices.join(",");
                let priority = priority.unwrap_or(if failed { 1 } else { 0 }).to_string();
                let mut fields = vec![
                    ("token", token.as_str()),
                    ("user", user.as_str()),
                    ("title", title.as_str()),
                    ("message", message.as_str()),
                    ("priority", priority.as_str()),
                ];
                if !devices.is_empty() {
                    fields.push(("device", devices.as_str()));
                }
                vec![
                    Request::post_form("https://api.pushover.net/1/messages.json", &fields)?
                        .expect("status", json!(1)),
                ]
            }
            Http::RocketChat {
                base,
                tokens,
                username,
                channel,
            } => {
                let mut body = json!({"text": titled(msg, "*")});
                set(&mut body, "alias", username);
                set(&mut body, "channel", channel);
                let url = format!("{base}/hooks/{}/{}", percent(&tokens.0), percent(&tokens.1));
                vec![Request::post_json(&url, &body)?]
            }
            Http::Slack {
                bot_token,
                webhook,
                channel,
                botname,
                color,
                icon,
                thread,
            } => {
                let color = color.clone().unwrap_or_else(|| {
                    match msg.outcome {
                        Outcome::Failure => "danger",
                        Outcome::Warning => "warning",
                        Outcome::Success => "good",
                    }
                    .into()
                });
                let mut body = json!({
                    "text": msg.title,
                    "attachments": [{"text": msg.body, "color": color, "fallback": msg.title}],
                });
                set(&mut body, "channel", channel);
                set(&mut body, "username", botname);
                if let Some(i) = icon {
                    let key = if i.starts_with("http://") || i.starts_with("https://") {
                        "icon_url"
                    } else {
                        "icon_emoji"
                    };
                    body[key] = i.clone().into();
                }
                set(&mut body, "thread_ts", thread);
                match bot_token {
                    Some(token) => vec![
                        Request::post_json("https://slack.com/api/chat.postMessage", &body)?
                            .header("Authorization", format!("Bearer {token}"))
                            .expect("ok", json!(true)),
                    ],
                    None => vec![Request::post_json(
                        &format!("https://hooks.slack.com/services/{webhook}"),
                        &body,
                    )?],
                }
            }
            Http::Teams { url, color } => {
                let color = color.clone().unwrap_or_else(|| {
                    match msg.outcome {
                        Outcome::Failure => "D70000",
                        Outcome::Warning => "FFC000",
                        Outcome::Success => "2EB886",
                    }
                    .into()
                });
                let body = json!({
                    "@type": "MessageCard",
                    "@context": "https://schema.org/extensions",
                    "summary": msg.title,
                    "title": msg.title,
                    "themeColor": color,
                    "markdown": false,
                    "text": msg.body.replace('\n', "<br>"),
                });
                vec![Request::post_json(url, &body)?]
            }
            Http::Telegram {
                token,
                chats,
                notification,
                preview,
                parse_mode,
            } => {
                let (text, mode) = match parse_mode {
                    Some(mode) => (clip(&msg.body, 4096), Some(mode.clone())),
                    None => (
                        clip(
                            &format!(
                                "<b>{}</b>\n{}",
                                html_escape(&msg.title),
                                html_escape(&msg.body)
                            ),
                            4096,
                        ),
                        Some("HTML".to_owned()),
                    ),
                };
                let url = format!("https://api.telegram.org/bot{token}/sendMessage");
                chats
                    .iter()
                    .map(|chat| {
                        let (id, thread) = match chat.split_once(':') {
                            Some((id, t)) if t.parse::<i64>().is_ok() => {
                                (id, t.parse::<i64>().ok())
                            }
                            _ => (chat.as_str(), None),
                        };
                        let mut body = json!({
                            "chat_id": id,
                            "text": text,
                            "disable_notification": !notification,
                            "disable_web_page_preview": !preview,
                        });
                        if let Some(m) = &mode {
                            body["parse_mode"] = m.clone().into();
                        }
                        if let Some(t) = thread {
                            body["message_thread_id"] = t.into();
                        }
                        Request::post_json(&url, &body).map(|r| r.expect("ok", json!(true)))
                    })
                    .collect::<Result<_, _>>()?
            }
            Http::Zulip {
                base,
                bot,
                stream,
                topic,
            } => {
                let topic = topic.clone().unwrap_or_else(|| clip(&msg.title, 60));
                let stream = stream.clone().unwrap_or_default();
                let mut r = Request::post_form(
                    &format!("{base}/api/v1/messages"),
                    &[
                        ("type", "stream"),
                        ("to", &stream),
                        ("topic", &topic),
                        ("content", &msg.body),
                    ],
                )?
                .expect("result", json!("success"));
                r.basic_auth = Some(bot.clone());
                vec![r]
            }
        })
    }
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

fn bark(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the Bark server")?;
    let device_key = p
        .password
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("the device key is missing (bark://:DEVICE_KEY@host)".to_owned())?;
    let scheme = p.options.string(&["scheme"], "https");
    if scheme != "http" && scheme != "https" {
        return Err(format!("option scheme={scheme:?}: expected http or https"));
    }
    let path = p.segments.join("/");
    let base = if path.is_empty() {
        format!("{scheme}://{}", p.authority())
    } else {
        format!("{scheme}://{}/{path}", p.authority())
    };
    let mut extra = Map::new();
    for key in ["sound", "icon", "group", "url", "category", "copy"] {
        if let Some(v) = p.options.take(&[key]).filter(|v| !v.is_empty()) {
            extra.insert(key.into(), v.into());
        }
    }
    if let Some(b) = p.options.number::<i64>(&["badge"])? {
        extra.insert("badge".into(), b.into());
    }
    Ok(Http::Bark {
        base,
        device_key,
        extra,
    })
}

fn discord(p: &mut Parts) -> Result<Http, String> {
    if p.user.is_empty() || p.host.is_empty() {
        return Err("expected discord://TOKEN@WEBHOOK_ID".into());
    }
    let raw_path = matches!(p.segments.first().map(String::as_str), Some("raw" | "json"));
    let raw = p.options.bool(&["json"], false)? || raw_path;
    Ok(Http::Discord {
        id: p.host.clone(),
        token: p.user.clone(),
        username: p.options.take(&["username"]).and_then(opt),
        avatar: p.options.take(&["avatar", "avatarurl"]).and_then(opt),
        colors: [
            color(&mut p.options, &["color"], 0x50D9FF)?,
            color(&mut p.options, &["colorwarn"], 0xFFC441)?,
            color(&mut p.options, &["colorerror"], 0xD60510)?,
        ],
        raw: {
            // shoutrrr's other message options have no meaning for one message.
            for k in ["colorinfo", "colordebug", "splitlines"] {
                p.options.take(&[k]);
            }
            raw
        },
    })
}

fn generic(p: &mut Parts, raw: &str) -> Result<Http, String> {
    p.require_host("the webhook host")?;
    let o = &mut p.options;
    let forced = match p.scheme.as_str() {
        "generic+http" => Some(true),
        "generic+https" => Some(false),
        _ => None,
    };
    let disable_tls = o.bool(&["disabletls"], false)?;
    let plain_http = forced.unwrap_or(disable_tls);
    let method = o.string(&["method"], "POST").to_ascii_uppercase();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("option method={method:?} is not an HTTP method"))?;
    let content_type = o.string(&["contenttype"], "application/json");
    let template = o.take(&["template"]).unwrap_or_default();
    let json = match template.to_ascii_lowercase().as_str() {
        "" => false,
        "json" => true,
        other => {
            return Err(format!(
                "option template={other:?}: only json (a JSON object) or no template (the \
                 message as the body) is supported"
            ));
        }
    };
    let title_key = o.string(&["titlekey"], "title");
    let message_key = o.string(&["messagekey"], "message");
    let mut headers = Vec::new();
    let mut extra = Vec::new();
    let mut query = Vec::new();
    for (k, v) in o.take_rest() {
        if let Some(h) = k.strip_prefix('@') {
            headers.push((header_name(h), v));
        } else if let Some(e) = k.strip_prefix('$') {
            extra.push((e.to_owned(), v));
        } else {
            // Reserved names are passed on with a leading underscore.
            let k = k.strip_prefix('_').unwrap_or(&k).to_owned();
            query.push((k, v));
        }
    }
    // Keep the path exactly as written (case, encoding).
    let parsed = Url::parse(raw.trim()).map_err(|e| format!("not a valid URL: {e}"))?;
    let mut url = Url::parse(&format!(
        "{}://{}{}",
        if plain_http { "http" } else { "https" },
        p.authority(),
        parsed.path()
    ))
    .map_err(|e| format!("not a valid webhook URL: {e}"))?;
    if !parsed.username().is_empty() {
        let _ = url.set_username(parsed.username());
        let _ = url.set_password(parsed.password());
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(Http::Generic {
        url,
        method,
        content_type,
        json,
        title_key,
        message_key,
        headers,
        extra,
    })
}

/// `@authorization` -> `Authorization`, `@xApiKey` -> `X-Api-Key`.
fn header_name(key: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in key.chars() {
        if c.is_ascii_uppercase() && !start && !out.ends_with('-') {
            out.push('-');
        }
        if start || out.ends_with('-') {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
        start = false;
    }
    out
}

fn gotify(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the Gotify server")?;
    let token = p
        .segments
        .pop()
        .ok_or("the application token is missing (gotify://host/TOKEN)")?;
    let valid = token.len() == 15
        && token.starts_with('A')
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
    if !valid {
        return Err(
            "the application token is not a Gotify token (15 characters starting with A)".into(),
        );
    }
    let disable_tls = p.options.bool(&["disabletls"], false)?;
    let mut base = https(p, disable_tls);
    for s in &p.segments {
        base.push('/');
        base.push_str(&percent(s));
    }
    Ok(Http::Gotify {
        base,
        token,
        priority: p.options.number(&["priority"])?,
    })
}

fn googlechat(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the Google Chat host")?;
    let key = p.options.take(&["key"]).unwrap_or_default();
    let token = p.options.take(&["token"]).unwrap_or_default();
    if key.is_empty() || token.is_empty() {
        return Err("key and token options are required (copy them from the webhook URL)".into());
    }
    let path: Vec<String> = p.segments.iter().map(|s| percent(s)).collect();
    let mut url = Url::parse(&format!("https://{}/{}", p.authority(), path.join("/")))
        .map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .append_pair("key", &key)
        .append_pair("token", &token);
    Ok(Http::GoogleChat { url: url.into() })
}

fn ifttt(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the webhook key")?;
    let events = p.options.list(&["events"], ',');
    if events.is_empty() {
        return Err("the events option is required (ifttt://KEY/?events=name)".into());
    }
    let message_value = p.options.number::<u8>(&["messagevalue"])?.unwrap_or(2);
    let title_value = p.options.number::<u8>(&["titlevalue"])?.unwrap_or(0);
    if !(1..=3).contains(&message_value) {
        return Err("option messagevalue must be 1, 2 or 3".into());
    }
    if title_value > 3 || title_value == message_value {
        return Err("option titlevalue must be 0 (off) or 1-3, other than messagevalue".into());
    }
    let values = [
        p.options.take(&["value1"]).unwrap_or_default(),
        p.options.take(&["value2"]).unwrap_or_default(),
        p.options.take(&["value3"]).unwrap_or_default(),
    ];
    Ok(Http::Ifttt {
        key: p.host.clone(),
        events,
        values,
        message_value,
        title_value,
    })
}

fn join(p: &mut Parts) -> Result<Http, String> {
    let key = p
        .password
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("the API key is missing (join://shoutrrr:API_KEY@join/?devices=...)")?;
    let devices = p.options.list(&["devices"], ',');
    if devices.is_empty() {
        return Err("the devices option is required".into());
    }
    Ok(Http::Join {
        key,
        devices,
        icon: p.options.take(&["icon"]).and_then(opt),
    })
}

fn mattermost(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the Mattermost server")?;
    if p.segments.is_empty() {
        return Err("the webhook token is missing (mattermost://host/TOKEN[/channel])".into());
    }
    let disable_tls = p.options.bool(&["disabletls"], false)?;
    Ok(Http::Mattermost {
        base: https(p, disable_tls),
        token: p.segments[0].clone(),
        username: opt(p.user.clone()),
        channel: p
            .segments
            .get(1)
            .cloned()
            .or_else(|| p.options.take(&["channel"]))
            .and_then(opt),
        icon: p.options.take(&["icon"]).and_then(opt),
    })
}

fn ntfy(p: &mut Parts) -> Result<Http, String> {
    let host = if p.host.is_empty() {
        "ntfy.sh".to_owned()
    } else {
        p.authority()
    };
    let topic = p.segments.join("/");
    if topic.is_empty() {
        return Err("the topic is missing (ntfy://[user:pass@]host/TOPIC)".into());
    }
    let scheme = p.options.string(&["scheme"], "https");
    if scheme != "http" && scheme != "https" {
        return Err(format!("option scheme={scheme:?}: expected http or https"));
    }
    let credentials = p
        .password
        .clone()
        .filter(|pw| !pw.is_empty())
        .map(|pw| (p.user.clone(), pw));
    let o = &mut p.options;
    let priority = o.take(&["priority"]).and_then(opt);
    if let Some(pr) = &priority {
        let ok = matches!(
            pr.as_str(),
            "1" | "2" | "3" | "4" | "5" | "min" | "low" | "default" | "high" | "max" | "urgent"
        );
        if !ok {
            return Err(format!(
                "option priority={pr:?}: expected 1-5 or min, low, default, high, max"
            ));
        }
    }
    let mut headers = Vec::new();
    for (key, header) in [
        ("tags", "Tags"),
        ("click", "Click"),
        ("attach", "Attach"),
        ("filename", "Filename"),
        ("email", "Email"),
        ("icon", "Icon"),
    ] {
        if let Some(v) = o.take(&[key]).filter(|v| !v.is_empty()) {
            headers.push((header.to_owned(), v));
        }
    }
    if let Some(v) = o.take(&["delay", "at", "in"]).filter(|v| !v.is_empty()) {
        headers.push(("Delay".into(), v));
    }
    if let Some(v) = o.take(&["actions"]).filter(|v| !v.is_empty()) {
        headers.push(("Actions".into(), v));
    }
    if !o.bool(&["cache"], true)? {
        headers.push(("Cache".into(), "no".into()));
    }
    if !o.bool(&["firebase"], true)? {
        headers.push(("Firebase".into(), "no".into()));
    }
    let path: Vec<String> = p.segments.iter().map(|s| percent(s)).collect();
    Ok(Http::Ntfy {
        url: format!("{scheme}://{host}/{}", path.join("/")),
        credentials,
        priority,
        headers,
    })
}

fn opsgenie(p: &mut Parts) -> Result<Http, String> {
    let host = if p.host.is_empty() {
        "api.opsgenie.com".to_owned()
    } else {
        p.authority()
    };
    let key = p
        .segments
        .first()
        .cloned()
        .ok_or("the API key is missing (opsgenie://api.opsgenie.com/API_KEY)")?;
    let o = &mut p.options;
    let mut fields = Map::new();
    for key in ["alias", "entity", "source", "user", "note", "description"] {
        if let Some(v) = o.take(&[key]).filter(|v| !v.is_empty()) {
            fields.insert(key.into(), v.into());
        }
    }
    if let Some(pr) = o.take(&["priority"]).filter(|v| !v.is_empty()) {
        if !matches!(pr.as_str(), "P1" | "P2" | "P3" | "P4" | "P5") {
            return Err(format!("option priority={pr:?}: expected P1 to P5"));
        }
        fields.insert("priority".into(), pr.into());
    }
    let tags = o.list(&["tags"], ',');
    if !tags.is_empty() {
        fields.insert("tags".into(), tags.into());
    }
    let actions = o.list(&["actions"], ',');
    if !actions.is_empty() {
        fields.insert("actions".into(), actions.into());
    }
    for (key, field) in [("responders", "responders"), ("visibleto", "visibleTo")] {
        let list = o.list(&[key], ',');
        if list.is_empty() {
            continue;
        }
        let entries = list
            .iter()
            .map(|r| responder(r))
            .collect::<Result<Vec<_>, _>>()?;
        fields.insert(field.into(), entries.into());
    }
    if let Some(details) = o.take(&["details"]).filter(|v| !v.is_empty()) {
        let mut map = Map::new();
        for pair in details.split(',') {
            let (k, v) = pair.split_once('=').ok_or(format!(
                "option details: expected key=value pairs, got {pair:?}"
            ))?;
            map.insert(k.trim().into(), v.trim().into());
        }
        fields.insert("details".into(), Value::Object(map));
    }
    Ok(Http::OpsGenie {
        base: format!("https://{host}"),
        key,
        fields,
    })
}

/// `team:ops`, `user:a@b.c`, `escalation:name`, `schedule:name`; `type:id:UUID` by id.
fn responder(r: &str) -> Result<Value, String> {
    let (kind, rest) = r.split_once(':').ok_or(format!(
        "responder {r:?}: expected TYPE:NAME, e.g. team:ops"
    ))?;
    if !matches!(kind, "team" | "user" | "escalation" | "schedule") {
        return Err(format!(
            "responder {r:?}: type must be team, user, escalation or schedule"
        ));
    }
    Ok(match rest.strip_prefix("id:") {
        Some(id) => json!({"type": kind, "id": id}),
        None if kind == "user" => json!({"type": kind, "username": rest}),
        None => json!({"type": kind, "name": rest}),
    })
}

fn pushbullet(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the access token")?;
    // The fragment (#channel) is not part of the parsed path: channels are given as
    // `%23channel` or with the `channel` option.
    let mut targets = Vec::new();
    for s in &p.segments {
        if let Some(c) = s.strip_prefix('#') {
            targets.push(("channel_tag", c.to_owned()));
        } else if s.contains('@') {
            targets.push(("email", s.clone()));
        } else {
            targets.push(("device_iden", s.clone()));
        }
    }
    Ok(Http::Pushbullet {
        token: p.host.clone(),
        targets,
    })
}

fn pushover(p: &mut Parts) -> Result<Http, String> {
    let token = p
        .password
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or("the API token is missing (pushover://shoutrrr:TOKEN@USER_KEY/)")?;
    p.require_host("the user key")?;
    let priority = p.options.number::<i32>(&["priority"])?;
    if priority.is_some_and(|p| !(-2..=2).contains(&p)) {
        return Err("option priority must be from -2 to 2".into());
    }
    Ok(Http::Pushover {
        token,
        user: p.host.clone(),
        devices: p.options.list(&["devices"], ','),
        priority,
    })
}

fn rocketchat(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the Rocket.Chat server")?;
    if p.segments.len() < 2 {
        return Err("the webhook tokens are missing (rocketchat://host/TOKEN_A/TOKEN_B)".into());
    }
    let channel = p.segments.get(2).cloned().map(|c| {
        if c.starts_with('@') || c.starts_with('#') {
            c
        } else {
            format!("#{c}")
        }
    });
    Ok(Http::RocketChat {
        base: https(p, false),
        tokens: (p.segments[0].clone(), p.segments[1].clone()),
        username: opt(p.user.clone()),
        channel,
    })
}

fn slack(p: &mut Parts) -> Result<Http, String> {
    let o = &mut p.options;
    let mut botname = o.take(&["botname", "username"]).and_then(opt);
    let color = o.take(&["color"]).and_then(opt);
    let icon = o.take(&["icon"]).and_then(opt);
    let thread = o.take(&["thread_ts", "threadts"]).and_then(opt);
    let mut channel = o.take(&["channel"]).and_then(opt);
    let (bot_token, webhook) = match (p.user.as_str(), p.password.as_deref()) {
        ("xoxb" | "xoxp", Some(rest)) if !rest.is_empty() => {
            // slack://xoxb:TOKEN@CHANNEL
            if p.host.is_empty() {
                return Err("the channel is missing (slack://xoxb:TOKEN@CHANNEL)".into());
            }
            channel = Some(p.host.clone());
            (Some(format!("{}-{rest}", p.user)), String::new())
        }
        ("hook", Some(rest)) if !rest.is_empty() => {
            // slack://hook:T000-B000-XXXX@webhook
            if p.host != "webhook" && !p.host.is_empty() {
                channel = channel.or(Some(p.host.clone()));
            }
            (None, rest.replace('-', "/"))
        }
        _ => {
            // The legacy form: slack://[botname@]T000/B000/XXXX
            if p.segments.len() != 2 || p.host.is_empty() {
                return Err("expected slack://hook:WEBHOOK_TOKEN@webhook, \
                            slack://xoxb:BOT_TOKEN@CHANNEL or slack://[botname@]A/B/C"
                    .into());
            }
            if !p.user.is_empty() {
                botname = Some(p.user.clone());
            }
            (
                None,
                format!("{}/{}/{}", p.host, p.segments[0], p.segments[1]),
            )
        }
    };
    if bot_token.is_none() && webhook.split('/').filter(|s| !s.is_empty()).count() != 3 {
        return Err("the webhook token must have three parts (T000/B000/XXXX)".into());
    }
    Ok(Http::Slack {
        bot_token,
        webhook,
        channel,
        botname,
        color,
        icon,
        thread,
    })
}

fn teams(p: &mut Parts) -> Result<Http, String> {
    let host = p
        .options
        .take(&["host"])
        .and_then(opt)
        .ok_or("the host option is required (teams://...?host=ORG.webhook.office.com)")?;
    let color = p
        .options
        .take(&["color"])
        .and_then(opt)
        .map(|c| c.trim_start_matches('#').to_owned());
    if p.user.is_empty() || p.host.is_empty() || p.segments.len() < 2 {
        return Err("expected teams://GROUP@TENANT/ALT_ID/GROUP_OWNER[/EXTRA]?host=...".into());
    }
    let path = if host == "outlook.office.com" {
        "webhook"
    } else {
        "webhookb2"
    };
    let tail: Vec<String> = p.segments.iter().map(|s| percent(s)).collect();
    Ok(Http::Teams {
        url: format!(
            "https://{host}/{path}/{}@{}/IncomingWebhook/{}",
            percent(&p.user),
            percent(&p.host),
            tail.join("/")
        ),
        color,
    })
}

fn telegram(p: &mut Parts) -> Result<Http, String> {
    let token = format!("{}:{}", p.user, p.password.clone().unwrap_or_default());
    let valid = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.chars().all(|c| c.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if !valid {
        return Err(
            "the bot token is missing or malformed (telegram://BOT_ID:SECRET@telegram?chats=...)"
                .into(),
        );
    }
    let chats = p.options.list(&["chats", "channels"], ',');
    if chats.is_empty() {
        return Err("the chats option is required (chat ids or @channel names)".into());
    }
    let parse_mode = match p
        .options
        .take(&["parsemode"])
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "none" => None,
        "markdown" => Some("Markdown".to_owned()),
        "markdownv2" => Some("MarkdownV2".to_owned()),
        "html" => Some("HTML".to_owned()),
        other => {
            return Err(format!(
                "option parsemode={other:?}: expected None, Markdown, MarkdownV2 or HTML"
            ));
        }
    };
    Ok(Http::Telegram {
        token,
        chats,
        notification: p.options.bool(&["notification"], true)?,
        preview: p.options.bool(&["preview"], true)?,
        parse_mode,
    })
}

fn zulip(p: &mut Parts) -> Result<Http, String> {
    p.require_host("the Zulip server")?;
    let key = p.password.clone().unwrap_or_default();
    if p.user.is_empty() || key.is_empty() {
        return Err("the bot e-mail and key are missing (zulip://BOT_MAIL:BOT_KEY@host)".into());
    }
    let stream = p.options.take(&["stream"]).and_then(opt);
    if stream.is_none() {
        return Err("the stream option is required".into());
    }
    let topic = p.options.take(&["topic"]).and_then(opt);
    if topic.as_ref().is_some_and(|t| t.chars().count() > 60) {
        return Err("option topic is longer than Zulip's 60 characters".into());
    }
    Ok(Http::Zulip {
        base: https(p, false),
        bot: (p.user.clone(), key),
        stream,
        topic,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(outcome: Outcome) -> Message {
        Message {
            title: "Backup failed".into(),
            body: "line 1\nline <2>".into(),
            outcome,
        }
    }

    fn one(url: &str) -> Request {
        let service = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let Kind::Http(h) = service.kind else {
            panic!("not http")
        };
        let mut r = h.requests(&msg(Outcome::Failure)).unwrap();
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    fn body(r: &Request) -> Value {
        serde_json::from_slice(&r.body.as_ref().unwrap().1).unwrap()
    }

    fn form(r: &Request) -> Vec<(String, String)> {
        ::url::form_urlencoded::parse(&r.body.as_ref().unwrap().1)
            .into_owned()
            .collect()
    }

    #[test]
    fn unknown_schemes_and_options_are_refused() {
        let e = parse("fax://1234").err().unwrap();
        assert!(e.contains("unknown notification service \"fax\""), "{e}");
        let e = parse("discord://t@1?colour=1").err().unwrap();
        assert!(e.contains("unknown option colour"), "{e}");
        assert!(parse("not a url").is_err());
    }

    #[test]
    fn discord_posts_an_embed_to_the_webhook() {
        let r = one("discord://tok3n@1234567?username=Backups");
        assert_eq!(
            r.url.as_str(),
            "https://discord.com/api/webhooks/1234567/tok3n"
        );
        let b = body(&r);
        assert_eq!(b["embeds"][0]["title"], "Backup failed");
        assert_eq!(b["embeds"][0]["description"], "line 1\nline <2>");
        assert_eq!(b["embeds"][0]["color"], 0xD60510);
        assert_eq!(b["username"], "Backups");
    }

    #[test]
    fn slack_webhook_bot_and_legacy_forms() {
        let r = one("slack://hook:T0000-B0000-XXXX@webhook?botname=dunnage");
        assert_eq!(
            r.url.as_str(),
            "https://hooks.slack.com/services/T0000/B0000/XXXX"
        );
        assert_eq!(body(&r)["username"], "dunnage");
        assert_eq!(body(&r)["attachments"][0]["color"], "danger");
        let r = one("slack://xoxb:123-456-abc@C0123");
        assert_eq!(r.url.as_str(), "https://slack.com/api/chat.postMessage");
        assert!(
            r.headers
                .contains(&("Authorization".into(), "Bearer xoxb-123-456-abc".into()))
        );
        assert_eq!(body(&r)["channel"], "C0123");
        assert_eq!(r.check, Check::Field("ok", json!(true)));
        let r = one("slack://bot@T0000/B0000/XXXX");
        assert_eq!(
            r.url.as_str(),
            "https://hooks.slack.com/services/T0000/B0000/XXXX"
        );
        assert!(parse("slack://T0000/B0000").is_err());
    }

    #[test]
    fn telegram_escapes_html_and_sends_to_each_chat() {
        let s = parse(
            "telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@chan,-100:7",
        )
        .unwrap();
        let Kind::Http(h) = s.kind else { panic!() };
        let rs = h.requests(&msg(Outcome::Failure)).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(
            rs[0].url.as_str(),
            "https://api.telegram.org/bot110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"
        );
        let b = body(&rs[0]);
        assert_eq!(b["chat_id"], "@chan");
        assert_eq!(b["text"], "<b>Backup failed</b>\nline 1\nline &lt;2&gt;");
        assert_eq!(b["parse_mode"], "HTML");
        assert_eq!(body(&rs[1])["message_thread_id"], 7);
        assert!(parse("telegram://nonsense@telegram?chats=1").is_err());
        assert!(parse("telegram://1:abc@telegram").is_err());
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
    fn generic_webhooks_plain_json_headers_and_forwarded_query() {
        let r = one("generic+https://hooks.example.org:8443/in/Path?foo=bar&_method=x");
        assert_eq!(
            r.url.as_str(),
            "https://hooks.example.org:8443/in/Path?foo=bar&method=x"
        );
        assert_eq!(r.body.as_ref().unwrap().1, b"line 1\nline <2>");
        let r = one(
            "generic://h.example/in?template=json&titlekey=subject&@xApiKey=s3cret&$env=prod&method=PUT&disabletls=yes",
        );
        assert_eq!(r.url.as_str(), "http://h.example/in");
        assert_eq!(r.method, Method::PUT);
        assert!(r.headers.contains(&("X-Api-Key".into(), "s3cret".into())));
        let b = body(&r);
        assert_eq!(b["subject"], "Backup failed");
        assert_eq!(b["message"], "line 1\nline <2>");
        assert_eq!(b["env"], "prod");
        assert_eq!(header_name("authorization"), "Authorization");
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
