//! Discord notifications: shoutrrr's `discord://` URL and the requests its API expects.

use reqwest::Method;
use serde_json::json;

use super::{HttpService, Message, Parts, Request, clip, color, opt, set};

pub(super) struct Discord {
    id: String,
    token: String,
    username: Option<String>,
    avatar: Option<String>,
    colors: [u32; 3],
    raw: bool,
}

pub(super) fn parse(p: &mut Parts) -> Result<Discord, String> {
    if p.user.is_empty() || p.host.is_empty() {
        return Err("expected discord://TOKEN@WEBHOOK_ID".into());
    }
    let raw_path = matches!(p.segments.first().map(String::as_str), Some("raw" | "json"));
    let raw = p.options.bool(&["json"], false)? || raw_path;
    Ok(Discord {
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

impl HttpService for Discord {
    fn name(&self) -> &'static str {
        "Discord"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Discord {
            id,
            token,
            username,
            avatar,
            colors,
            raw,
        } = self;
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
        Ok(vec![Request::post_json(&url, &body)?])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

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
}
