//! Pushbullet notifications: shoutrrr's `pushbullet://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Parts, Request};

pub(super) struct Pushbullet {
    token: String,
    targets: Vec<(&'static str, String)>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Pushbullet, String> {
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
    Ok(Pushbullet {
        token: p.host.clone(),
        targets,
    })
}

impl HttpService for Pushbullet {
    fn name(&self) -> &'static str {
        "Pushbullet"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Pushbullet { token, targets } = self;
        let push = |target: Option<&(&str, String)>| {
            let mut body = json!({"type": "note", "title": msg.title, "body": msg.body});
            if let Some((field, value)) = target {
                body[*field] = value.clone().into();
            }
            Request::post_json("https://api.pushbullet.com/v2/pushes", &body)
                .map(|r| r.header("Access-Token", token))
        };
        Ok(if targets.is_empty() {
            vec![push(None)?]
        } else {
            targets
                .iter()
                .map(|t| push(Some(t)))
                .collect::<Result<_, _>>()?
        })
    }
}
