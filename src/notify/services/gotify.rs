//! Gotify notifications: shoutrrr's `gotify://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Outcome, Parts, Request, https, percent};

pub(super) struct Gotify {
    base: String,
    token: String,
    priority: Option<i64>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Gotify, String> {
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
    Ok(Gotify {
        base,
        token,
        priority: p.options.number(&["priority"])?,
    })
}

impl HttpService for Gotify {
    fn name(&self) -> &'static str {
        "Gotify"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Gotify {
            base,
            token,
            priority,
        } = self;
        let priority = priority.unwrap_or(match msg.outcome {
            Outcome::Failure => 8,
            Outcome::Warning => 5,
            Outcome::Success => 2,
        });
        let body = json!({"title": msg.title, "message": msg.body, "priority": priority});
        Ok(vec![
            Request::post_json(&format!("{base}/message"), &body)?.header("X-Gotify-Key", token),
        ])
    }
}
