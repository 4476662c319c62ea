//! Slack notifications: shoutrrr's `slack://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Outcome, Parts, Request, opt, set};

pub(super) struct Slack {
    /// `None`: the webhook (`hooks.slack.com`); `Some`: the bot API token.
    bot_token: Option<String>,
    webhook: String,
    channel: Option<String>,
    botname: Option<String>,
    color: Option<String>,
    icon: Option<String>,
    thread: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Slack, String> {
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
    Ok(Slack {
        bot_token,
        webhook,
        channel,
        botname,
        color,
        icon,
        thread,
    })
}

impl HttpService for Slack {
    fn name(&self) -> &'static str {
        "Slack"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Slack {
            bot_token,
            webhook,
            channel,
            botname,
            color,
            icon,
            thread,
        } = self;
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
        Ok(match bot_token {
            Some(token) => vec![
                Request::post_json("https://slack.com/api/chat.postMessage", &body)?
                    .header("Authorization", format!("Bearer {token}"))
                    .expect("ok", json!(true)),
            ],
            None => vec![Request::post_json(
                &format!("https://hooks.slack.com/services/{webhook}"),
                &body,
            )?],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

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
}
