//! Genericwebhook notifications: shoutrrr's `generic://` URL and the requests its API expects.

use reqwest::Method;
use reqwest::Url;
use serde_json::Map;
use serde_json::Value;

use super::{HttpService, Message, Parts, Request};

pub(super) struct Generic {
    url: Url,
    method: Method,
    content_type: String,
    json: bool,
    title_key: String,
    message_key: String,
    headers: Vec<(String, String)>,
    extra: Vec<(String, String)>,
}

pub(super) fn parse(p: &mut Parts, raw: &str) -> Result<Generic, String> {
    p.require_host("the webhook host")?;
    let o = &mut p.options;
    let forced = match p.scheme.as_str() {
        "generic+http" => Some(true),
        "generic+https" => Some(false),
        _ => None,
    };
    let disable_tls = o.bool(&["disabletls"], false)?;
    let plain_http = forced.unwrap_or(disable_tls);
    let method = o.string(&["method"], "POST").to_ascii_uppercase();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("option method={method:?} is not an HTTP method"))?;
    let content_type = o.string(&["contenttype"], "application/json");
    let template = o.take(&["template"]).unwrap_or_default();
    let json = match template.to_ascii_lowercase().as_str() {
        "" => false,
        "json" => true,
        other => {
            return Err(format!(
                "option template={other:?}: only json (a JSON object) or no template (the \
                 message as the body) is supported"
            ));
        }
    };
    let title_key = o.string(&["titlekey"], "title");
    let message_key = o.string(&["messagekey"], "message");
    let mut headers = Vec::new();
    let mut extra = Vec::new();
    let mut query = Vec::new();
    for (k, v) in o.take_rest() {
        if let Some(h) = k.strip_prefix('@') {
            headers.push((header_name(h), v));
        } else if let Some(e) = k.strip_prefix('$') {
            extra.push((e.to_owned(), v));
        } else {
            // Reserved names are passed on with a leading underscore.
            let k = k.strip_prefix('_').unwrap_or(&k).to_owned();
            query.push((k, v));
        }
    }
    // Keep the path exactly as written (case, encoding).
    let parsed = Url::parse(raw.trim()).map_err(|e| format!("not a valid URL: {e}"))?;
    let mut url = Url::parse(&format!(
        "{}://{}{}",
        if plain_http { "http" } else { "https" },
        p.authority(),
        parsed.path()
    ))
    .map_err(|e| format!("not a valid webhook URL: {e}"))?;
    if !parsed.username().is_empty() {
        let _ = url.set_username(parsed.username());
        let _ = url.set_password(parsed.password());
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(Generic {
        url,
        method,
        content_type,
        json,
        title_key,
        message_key,
        headers,
        extra,
    })
}

/// `@authorization` -> `Authorization`, `@xApiKey` -> `X-Api-Key`.
fn header_name(key: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in key.chars() {
        if c.is_ascii_uppercase() && !start && !out.ends_with('-') {
            out.push('-');
        }
        if start || out.ends_with('-') {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
        start = false;
    }
    out
}

impl HttpService for Generic {
    fn name(&self) -> &'static str {
        "Generic webhook"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Generic {
            url,
            method,
            content_type,
            json,
            title_key,
            message_key,
            headers,
            extra,
        } = self;
        let body = if *json {
            let mut map = Map::new();
            for (k, v) in extra {
                map.insert(k.clone(), v.clone().into());
            }
            map.insert(title_key.clone(), msg.title.clone().into());
            map.insert(message_key.clone(), msg.body.clone().into());
            Value::Object(map).to_string()
        } else {
            msg.body.clone()
        };
        let mut r = Request::new(method.clone(), url.as_str())?;
        r.body = Some((content_type.clone(), body.into_bytes()));
        r.headers = headers.clone();
        Ok(vec![r])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn generic_webhooks_plain_json_headers_and_forwarded_query() {
        let r = one("generic+https://hooks.example.org:8443/in/Path?foo=bar&_method=x");
        assert_eq!(
            r.url.as_str(),
            "https://hooks.example.org:8443/in/Path?foo=bar&method=x"
        );
        assert_eq!(r.body.as_ref().unwrap().1, b"line 1\nline <2>");
        let r = one(
            "generic://h.example/in?template=json&titlekey=subject&@xApiKey=s3cret&$env=prod&method=PUT&disabletls=yes",
        );
        assert_eq!(r.url.as_str(), "http://h.example/in");
        assert_eq!(r.method, Method::PUT);
        assert!(r.headers.contains(&("X-Api-Key".into(), "s3cret".into())));
        let b = body(&r);
        assert_eq!(b["subject"], "Backup failed");
        assert_eq!(b["message"], "line 1\nline <2>");
        assert_eq!(b["env"], "prod");
        assert_eq!(header_name("authorization"), "Authorization");
    }
}
