//! Lark / Feishu notifications: shoutrrr's `lark://` URL and a custom bot webhook, signed
//! when the bot has a secret.

use base64::Engine;
use serde_json::json;

use super::{HttpService, Message, Parts, Request, percent, titled};

pub(super) struct Lark {
    host: String,
    token: String,
    secret: Option<String>,
    link: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Lark, String> {
    p.require_host("the bot host (open.larksuite.com or open.feishu.cn)")?;
    let token = p
        .segments
        .first()
        .cloned()
        .filter(|t| !t.is_empty())
        .ok_or("the bot token is missing (lark://HOST/TOKEN)")?;
    Ok(Lark {
        host: p.authority(),
        token,
        secret: p.options.take(&["secret"]).filter(|s| !s.is_empty()),
        link: p.options.take(&["link"]).filter(|s| !s.is_empty()),
    })
}

/// Lark's signature: HMAC-SHA256 keyed with "TIMESTAMP\nSECRET" over nothing, base64.
fn sign(timestamp: i64, secret: &str) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        format!("{timestamp}\n{secret}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, b"").as_ref())
}

impl HttpService for Lark {
    fn name(&self) -> &'static str {
        "Lark"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let mut text = titled(msg, "");
        if let Some(link) = &self.link {
            text.push('\n');
            text.push_str(link);
        }
        let mut body = json!({"msg_type": "text", "content": {"text": text}});
        if let Some(secret) = &self.secret {
            let now = jiff::Timestamp::now().as_second();
            body["timestamp"] = now.to_string().into();
            body["sign"] = sign(now, secret).into();
        }
        let url = format!(
            "https://{}/open-apis/bot/v2/hook/{}",
            self.host,
            percent(&self.token)
        );
        Ok(vec![
            Request::post_json(&url, &body)?.expect("code", json!(0)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_larks_recipe() {
        // HMAC-SHA256(key = "1700000000\nsecret", message = ""), base64: computed with
        // Python's hmac module.
        assert_eq!(
            sign(1_700_000_000, "secret"),
            "fiWS2+gh28DOydAv7hzONH/mDn9+b1Y4Y5ivXWXy8vA="
        );
    }
}
