//! Join notifications: shoutrrr's `join://` URL and the requests its API expects.

use reqwest::Method;
use serde_json::json;

use super::{HttpService, Message, Parts, Request, opt};

pub(super) struct Join {
    key: String,
    devices: Vec<String>,
    icon: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Join, String> {
    let key = p
        .password
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("the API key is missing (join://shoutrrr:API_KEY@join/?devices=...)")?;
    let devices = p.options.list(&["devices"], ',');
    if devices.is_empty() {
        return Err("the devices option is required".into());
    }
    Ok(Join {
        key,
        devices,
        icon: p.options.take(&["icon"]).and_then(opt),
    })
}

impl HttpService for Join {
    fn name(&self) -> &'static str {
        "Join"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Join { key, devices, icon } = self;
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
        Ok(vec![r.expect("success", json!(true))])
    }
}
