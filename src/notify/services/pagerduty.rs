//! PagerDuty notifications: shoutrrr's `pagerduty://` URL and an Events API v2 event.

use serde_json::json;

use super::{HttpService, Message, Outcome, Parts, Request, clip};

pub(super) struct PagerDuty {
    base: String,
    key: String,
    severity: Option<String>,
    source: String,
    action: String,
}

pub(super) fn parse(p: &mut Parts) -> Result<PagerDuty, String> {
    let host = if p.host.is_empty() {
        "events.pagerduty.com".to_owned()
    } else {
        p.authority()
    };
    let key = p
        .segments
        .first()
        .cloned()
        .filter(|k| !k.is_empty())
        .ok_or("the integration key is missing (pagerduty://[host]/INTEGRATION_KEY)")?;
    let severity = p.options.take(&["severity"]).filter(|v| !v.is_empty());
    if let Some(s) = &severity {
        if !matches!(s.as_str(), "critical" | "error" | "warning" | "info") {
            return Err(format!(
                "option severity={s:?}: expected critical, error, warning or info"
            ));
        }
    }
    let action = p.options.string(&["action"], "trigger");
    if !matches!(action.as_str(), "trigger" | "acknowledge" | "resolve") {
        return Err(format!(
            "option action={action:?}: expected trigger, acknowledge or resolve"
        ));
    }
    Ok(PagerDuty {
        base: format!("https://{host}"),
        key,
        severity,
        source: p.options.string(&["source"], "dunnage"),
        action,
    })
}

impl HttpService for PagerDuty {
    fn name(&self) -> &'static str {
        "PagerDuty"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let severity = self.severity.clone().unwrap_or_else(|| {
            match msg.outcome {
                Outcome::Failure => "error",
                Outcome::Warning => "warning",
                Outcome::Success => "info",
            }
            .into()
        });
        let body = json!({
            "routing_key": self.key,
            "event_action": self.action,
            "payload": {
                "summary": clip(&msg.title, 1024),
                "source": self.source,
                "severity": severity,
                "custom_details": {"message": msg.body},
            },
        });
        let url = format!("{}/v2/enqueue", self.base);
        Ok(vec![Request::post_json(&url, &body)?])
    }
}
