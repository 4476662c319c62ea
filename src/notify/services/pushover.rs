//! Pushover notifications: shoutrrr's `pushover://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Outcome, Parts, Request, clip};

pub(super) struct Pushover {
    token: String,
    user: String,
    devices: Vec<String>,
    priority: Option<i32>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Pushover, String> {
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
    Ok(Pushover {
        token,
        user: p.host.clone(),
        devices: p.options.list(&["devices"], ','),
        priority,
    })
}

impl HttpService for Pushover {
    fn name(&self) -> &'static str {
        "Pushover"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Pushover {
            token,
            user,
            devices,
            priority,
        } = self;
        let failed = msg.outcome == Outcome::Failure;
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
        Ok(vec![
            Request::post_form("https://api.pushover.net/1/messages.json", &fields)?
                .expect("status", json!(1)),
        ])
    }
}
