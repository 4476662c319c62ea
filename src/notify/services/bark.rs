//! Bark notifications: shoutrrr's `bark://` URL and the requests its API expects.

use serde_json::Map;
use serde_json::Value;
use serde_json::json;

use super::{HttpService, Message, Parts, Request};

pub(super) struct Bark {
    base: String,
    device_key: String,
    extra: Map<String, Value>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Bark, String> {
    p.require_host("the Bark server")?;
    let device_key = p
        .password
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("the device key is missing (bark://:DEVICE_KEY@host)".to_owned())?;
    let scheme = p.options.string(&["scheme"], "https");
    if scheme != "http" && scheme != "https" {
        return Err(format!("option scheme={scheme:?}: expected http or https"));
    }
    let path = p.segments.join("/");
    let base = if path.is_empty() {
        format!("{scheme}://{}", p.authority())
    } else {
        format!("{scheme}://{}/{path}", p.authority())
    };
    let mut extra = Map::new();
    for key in ["sound", "icon", "group", "url", "category", "copy"] {
        if let Some(v) = p.options.take(&[key]).filter(|v| !v.is_empty()) {
            extra.insert(key.into(), v.into());
        }
    }
    if let Some(b) = p.options.number::<i64>(&["badge"])? {
        extra.insert("badge".into(), b.into());
    }
    Ok(Bark {
        base,
        device_key,
        extra,
    })
}

impl HttpService for Bark {
    fn name(&self) -> &'static str {
        "Bark"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Bark {
            base,
            device_key,
            extra,
        } = self;
        let mut body = extra.clone();
        body.insert("title".into(), msg.title.clone().into());
        body.insert("body".into(), msg.body.clone().into());
        body.insert("device_key".into(), device_key.clone().into());
        Ok(vec![
            Request::post_json(&format!("{base}/push"), &Value::Object(body))?
                .expect("code", json!(200)),
        ])
    }
}
