//! Mattermost notifications: shoutrrr's `mattermost://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Parts, Request, https, opt, percent, set, titled};

pub(super) struct Mattermost {
    base: String,
    token: String,
    username: Option<String>,
    channel: Option<String>,
    icon: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Mattermost, String> {
    p.require_host("the Mattermost server")?;
    if p.segments.is_empty() {
        return Err("the webhook token is missing (mattermost://host/TOKEN[/channel])".into());
    }
    let disable_tls = p.options.bool(&["disabletls"], false)?;
    Ok(Mattermost {
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

impl HttpService for Mattermost {
    fn name(&self) -> &'static str {
        "Mattermost"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Mattermost {
            base,
            token,
            username,
            channel,
            icon,
        } = self;
        let mut body = json!({"text": titled(msg, "**")});
        set(&mut body, "username", username);
        set(&mut body, "channel", channel);
        set(&mut body, "icon_url", icon);
        Ok(vec![Request::post_json(
            &format!("{base}/hooks/{}", percent(token)),
            &body,
        )?])
    }
}
