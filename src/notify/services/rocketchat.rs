//! Rocket.Chat notifications: shoutrrr's `rocketchat://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Parts, Request, https, opt, percent, set, titled};

pub(super) struct RocketChat {
    base: String,
    tokens: (String, String),
    username: Option<String>,
    channel: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<RocketChat, String> {
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
    Ok(RocketChat {
        base: https(p, false),
        tokens: (p.segments[0].clone(), p.segments[1].clone()),
        username: opt(p.user.clone()),
        channel,
    })
}

impl HttpService for RocketChat {
    fn name(&self) -> &'static str {
        "Rocket.Chat"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let RocketChat {
            base,
            tokens,
            username,
            channel,
        } = self;
        let mut body = json!({"text": titled(msg, "*")});
        set(&mut body, "alias", username);
        set(&mut body, "channel", channel);
        let url = format!("{base}/hooks/{}/{}", percent(&tokens.0), percent(&tokens.1));
        Ok(vec![Request::post_json(&url, &body)?])
    }
}
