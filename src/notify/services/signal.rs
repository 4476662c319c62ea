//! Signal notifications: shoutrrr's `signal://` URL and a signal-cli REST API `/v2/send`
//! request (one per kind of recipient: numbers together, each group on its own).

use serde_json::json;

use super::{HttpService, Message, Parts, Request, https, titled};

pub(super) struct Signal {
    base: String,
    source: String,
    numbers: Vec<String>,
    groups: Vec<String>,
    credentials: Option<(String, String)>,
    token: Option<String>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Signal, String> {
    p.require_host("the Signal API server")?;
    if p.segments.len() < 2 {
        return Err(
            "expected signal://[user:password@]host[:port]/SOURCE_PHONE/RECIPIENT[/...]".into(),
        );
    }
    let source = p.segments[0].clone();
    let mut numbers = Vec::new();
    let mut groups = Vec::new();
    for r in p.segments[1..].iter().flat_map(|s| s.split(',')) {
        if r.is_empty() {
            continue;
        }
        if r.starts_with("group.") {
            groups.push(r.to_owned());
        } else {
            numbers.push(r.to_owned());
        }
    }
    let disable_tls = p.options.bool(&["disabletls"], false)?;
    let credentials = p
        .password
        .clone()
        .filter(|_| !p.user.is_empty())
        .map(|pw| (p.user.clone(), pw));
    Ok(Signal {
        base: https(p, disable_tls),
        source,
        numbers,
        groups,
        credentials,
        token: p.options.take(&["token"]).filter(|t| !t.is_empty()),
    })
}

impl HttpService for Signal {
    fn name(&self) -> &'static str {
        "Signal"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let url = format!("{}/v2/send", self.base);
        let text = titled(msg, "");
        let mut batches: Vec<Vec<String>> = self.groups.iter().map(|g| vec![g.clone()]).collect();
        if !self.numbers.is_empty() {
            batches.insert(0, self.numbers.clone());
        }
        batches
            .into_iter()
            .map(|recipients| {
                let body =
                    json!({"message": text, "number": self.source, "recipients": recipients});
                let mut r = Request::post_json(&url, &body)?;
                match (&self.token, &self.credentials) {
                    (Some(token), _) => r = r.header("Authorization", format!("Bearer {token}")),
                    (None, Some(c)) => r.basic_auth = Some(c.clone()),
                    (None, None) => {}
                }
                Ok(r)
            })
            .collect()
    }
}
