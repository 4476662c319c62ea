//! WeCom (WeChat Work) notifications: shoutrrr's `wecom://` URL and a group bot webhook.

use serde_json::json;

use super::{HttpService, Message, Parts, Request, clip, titled};

pub(super) struct WeCom {
    key: String,
    mentioned: Vec<String>,
    mentioned_mobiles: Vec<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<WeCom, String> {
    p.require_host("the webhook key (wecom://KEY)")?;
    Ok(WeCom {
        key: p.host.clone(),
        mentioned: p.options.list(&["mentioned_list"], ','),
        mentioned_mobiles: p.options.list(&["mentioned_mobile_list"], ','),
    })
}

impl HttpService for WeCom {
    fn name(&self) -> &'static str {
        "WeCom"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let mut r = Request::post_json(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send",
            &json!({"msgtype": "text", "text": {
                "content": clip(&titled(msg, ""), 4096),
                "mentioned_list": self.mentioned,
                "mentioned_mobile_list": self.mentioned_mobiles,
            }}),
        )?;
        r.url.query_pairs_mut().append_pair("key", &self.key);
        Ok(vec![r.expect("errcode", json!(0))])
    }
}
