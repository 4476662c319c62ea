//! GoogleChat notifications: shoutrrr's `googlechat://` URL and the requests its API expects.

use reqwest::Url;
use serde_json::json;

use super::{HttpService, Message, Parts, Request, percent, titled};

pub(super) struct GoogleChat {
    url: String,
}

pub(super) fn parse(p: &mut Parts) -> Result<GoogleChat, String> {
    p.require_host("the Google Chat host")?;
    let key = p.options.take(&["key"]).unwrap_or_default();
    let token = p.options.take(&["token"]).unwrap_or_default();
    if key.is_empty() || token.is_empty() {
        return Err("key and token options are required (copy them from the webhook URL)".into());
    }
    let path: Vec<String> = p.segments.iter().map(|s| percent(s)).collect();
    let mut url = Url::parse(&format!("https://{}/{}", p.authority(), path.join("/")))
        .map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .append_pair("key", &key)
        .append_pair("token", &token);
    Ok(GoogleChat { url: url.into() })
}

impl HttpService for GoogleChat {
    fn name(&self) -> &'static str {
        "Google Chat"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let GoogleChat { url } = self;
        Ok(vec![Request::post_json(
            url,
            &json!({"text": titled(msg, "*")}),
        )?])
    }
}
