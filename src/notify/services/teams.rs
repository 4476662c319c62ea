//! Teams notifications: shoutrrr's `teams://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Outcome, Parts, Request, opt, percent};

pub(super) struct Teams {
    url: String,
    color: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Teams, String> {
    let host = p
        .options
        .take(&["host"])
        .and_then(opt)
        .ok_or("the host option is required (teams://...?host=ORG.webhook.office.com)")?;
    let color = p
        .options
        .take(&["color"])
        .and_then(opt)
        .map(|c| c.trim_start_matches('#').to_owned());
    if p.user.is_empty() || p.host.is_empty() || p.segments.len() < 2 {
        return Err("expected teams://GROUP@TENANT/ALT_ID/GROUP_OWNER[/EXTRA]?host=...".into());
    }
    let path = if host == "outlook.office.com" {
        "webhook"
    } else {
        "webhookb2"
    };
    let tail: Vec<String> = p.segments.iter().map(|s| percent(s)).collect();
    Ok(Teams {
        url: format!(
            "https://{host}/{path}/{}@{}/IncomingWebhook/{}",
            percent(&p.user),
            percent(&p.host),
            tail.join("/")
        ),
        color,
    })
}

impl HttpService for Teams {
    fn name(&self) -> &'static str {
        "Teams"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Teams { url, color } = self;
        let color = color.clone().unwrap_or_else(|| {
            match msg.outcome {
                Outcome::Failure => "D70000",
                Outcome::Warning => "FFC000",
                Outcome::Success => "2EB886",
            }
            .into()
        });
        let body = json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": msg.title,
            "title": msg.title,
            "themeColor": color,
            "markdown": false,
            "text": msg.body.replace('\n', "<br>"),
        });
        Ok(vec![Request::post_json(url, &body)?])
    }
}
