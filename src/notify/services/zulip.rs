//! Zulip notifications: shoutrrr's `zulip://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Parts, Request, clip, https, opt};

pub(super) struct Zulip {
    base: String,
    bot: (String, String),
    stream: Option<String>,
    topic: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Zulip, String> {
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
    Ok(Zulip {
        base: https(p, false),
        bot: (p.user.clone(), key),
        stream,
        topic,
    })
}

impl HttpService for Zulip {
    fn name(&self) -> &'static str {
        "Zulip"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Zulip {
            base,
            bot,
            stream,
            topic,
        } = self;
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
        Ok(vec![r])
    }
}
