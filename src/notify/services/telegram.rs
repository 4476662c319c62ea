//! Telegram notifications: shoutrrr's `telegram://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Parts, Request, clip, html_escape};

pub(super) struct Telegram {
    token: String,
    chats: Vec<String>,
    notification: bool,
    preview: bool,
    parse_mode: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Telegram, String> {
    let token = format!("{}:{}", p.user, p.password.clone().unwrap_or_default());
    let valid = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.chars().all(|c| c.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if !valid {
        return Err(
            "the bot token is missing or malformed (telegram://BOT_ID:SECRET@telegram?chats=...)"
                .into(),
        );
    }
    let chats = p.options.list(&["chats", "channels"], ',');
    if chats.is_empty() {
        return Err("the chats option is required (chat ids or @channel names)".into());
    }
    let parse_mode = match p
        .options
        .take(&["parsemode"])
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "none" => None,
        "markdown" => Some("Markdown".to_owned()),
        "markdownv2" => Some("MarkdownV2".to_owned()),
        "html" => Some("HTML".to_owned()),
        other => {
            return Err(format!(
                "option parsemode={other:?}: expected None, Markdown, MarkdownV2 or HTML"
            ));
        }
    };
    Ok(Telegram {
        token,
        chats,
        notification: p.options.bool(&["notification"], true)?,
        preview: p.options.bool(&["preview"], true)?,
        parse_mode,
    })
}

impl HttpService for Telegram {
    fn name(&self) -> &'static str {
        "Telegram"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Telegram {
            token,
            chats,
            notification,
            preview,
            parse_mode,
        } = self;
        let (text, mode) = match parse_mode {
            Some(mode) => (clip(&msg.body, 4096), Some(mode.clone())),
            None => (
                clip(
                    &format!(
                        "<b>{}</b>\n{}",
                        html_escape(&msg.title),
                        html_escape(&msg.body)
                    ),
                    4096,
                ),
                Some("HTML".to_owned()),
            ),
        };
        let url = format!("https://api.telegram.org/bot{token}/sendMessage");
        chats
            .iter()
            .map(|chat| {
                let (id, thread) = match chat.split_once(':') {
                    Some((id, t)) if t.parse::<i64>().is_ok() => (id, t.parse::<i64>().ok()),
                    _ => (chat.as_str(), None),
                };
                let mut body = json!({
                    "chat_id": id,
                    "text": text,
                    "disable_notification": !notification,
                    "disable_web_page_preview": !preview,
                });
                if let Some(m) = &mode {
                    body["parse_mode"] = m.clone().into();
                }
                if let Some(t) = thread {
                    body["message_thread_id"] = t.into();
                }
                Request::post_json(&url, &body).map(|r| r.expect("ok", json!(true)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn telegram_escapes_html_and_sends_to_each_chat() {
        let s = parse(
            "telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@chan,-100:7",
        )
        .unwrap();
        let Kind::Http(h) = s.kind else { panic!() };
        let rs = h.requests(&msg(Outcome::Failure)).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(
            rs[0].url.as_str(),
            "https://api.telegram.org/bot110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"
        );
        let b = body(&rs[0]);
        assert_eq!(b["chat_id"], "@chan");
        assert_eq!(b["text"], "<b>Backup failed</b>\nline 1\nline &lt;2&gt;");
        assert_eq!(b["parse_mode"], "HTML");
        assert_eq!(body(&rs[1])["message_thread_id"], 7);
        assert!(parse("telegram://nonsense@telegram?chats=1").is_err());
        assert!(parse("telegram://1:abc@telegram").is_err());
    }
}
