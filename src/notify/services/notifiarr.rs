//! Notifiarr notifications: shoutrrr's `notifiarr://` URL and a passthrough notification
//! (forwarded to a Discord channel when one is given).

use serde_json::{Value, json};

use super::{HttpService, Message, Outcome, Parts, Request, percent};

pub(super) struct Notifiarr {
    key: String,
    name: String,
    channel: Option<u64>,
    color: Option<String>,
    thumbnail: Option<String>,
    image: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Notifiarr, String> {
    p.require_host("the API key (notifiarr://API_KEY)")?;
    let channel = match p.options.take(&["channel"]).filter(|c| !c.is_empty()) {
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            format!("option channel={c:?}: expected a Discord channel id (digits)")
        })?),
        None => None,
    };
    let color = p.options.take(&["color"]).filter(|c| !c.is_empty());
    if let Some(c) = &color {
        if c.len() != 6 || !c.chars().all(|ch| ch.is_ascii_hexdigit()) {
            return Err(format!(
                "option color={c:?}: expected six hex digits, e.g. FF0000"
            ));
        }
    }
    Ok(Notifiarr {
        key: p.host.clone(),
        name: p.options.string(&["name"], "dunnage"),
        channel,
        color,
        thumbnail: p.options.take(&["thumbnail"]).filter(|v| !v.is_empty()),
        image: p.options.take(&["image"]).filter(|v| !v.is_empty()),
    })
}

impl HttpService for Notifiarr {
    fn name(&self) -> &'static str {
        "Notifiarr"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let mut body = json!({"notification": {"name": self.name, "update": Value::Null}});
        if let Some(channel) = self.channel {
            let color = self.color.clone().unwrap_or_else(|| {
                match msg.outcome {
                    Outcome::Failure => "D60510",
                    Outcome::Warning => "FFC441",
                    Outcome::Success => "50D9FF",
                }
                .into()
            });
            body["discord"] = json!({
                "ids": {"channel": channel},
                "color": color,
                "images": {"thumbnail": self.thumbnail, "image": self.image},
                "text": {"title": msg.title, "description": msg.body},
            });
        }
        let url = format!(
            "https://notifiarr.com/api/v1/notification/passthrough/{}",
            percent(&self.key)
        );
        Ok(vec![Request::post_json(&url, &body)?])
    }
}
