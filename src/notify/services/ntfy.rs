//! Ntfy notifications: shoutrrr's `ntfy://` URL and the requests its API expects.

use reqwest::Method;

use super::{HttpService, Message, Outcome, Parts, Request, opt, percent};

pub(super) struct Ntfy {
    url: String,
    credentials: Option<(String, String)>,
    priority: Option<String>,
    headers: Vec<(String, String)>,
}

pub(super) fn parse(p: &mut Parts) -> Result<Ntfy, String> {
    let host = if p.host.is_empty() {
        "ntfy.sh".to_owned()
    } else {
        p.authority()
    };
    let topic = p.segments.join("/");
    if topic.is_empty() {
        return Err("the topic is missing (ntfy://[user:pass@]host/TOPIC)".into());
    }
    let scheme = p.options.string(&["scheme"], "https");
    if scheme != "http" && scheme != "https" {
        return Err(format!("option scheme={scheme:?}: expected http or https"));
    }
    let credentials = p
        .password
        .clone()
        .filter(|pw| !pw.is_empty())
        .map(|pw| (p.user.clone(), pw));
    let o = &mut p.options;
    let priority = o.take(&["priority"]).and_then(opt);
    if let Some(pr) = &priority {
        let ok = matches!(
            pr.as_str(),
            "1" | "2" | "3" | "4" | "5" | "min" | "low" | "default" | "high" | "max" | "urgent"
        );
        if !ok {
            return Err(format!(
                "option priority={pr:?}: expected 1-5 or min, low, default, high, max"
            ));
        }
    }
    let mut headers = Vec::new();
    for (key, header) in [
        ("tags", "Tags"),
        ("click", "Click"),
        ("attach", "Attach"),
        ("filename", "Filename"),
        ("email", "Email"),
        ("icon", "Icon"),
    ] {
        if let Some(v) = o.take(&[key]).filter(|v| !v.is_empty()) {
            headers.push((header.to_owned(), v));
        }
    }
    if let Some(v) = o.take(&["delay", "at", "in"]).filter(|v| !v.is_empty()) {
        headers.push(("Delay".into(), v));
    }
    if let Some(v) = o.take(&["actions"]).filter(|v| !v.is_empty()) {
        headers.push(("Actions".into(), v));
    }
    if !o.bool(&["cache"], true)? {
        headers.push(("Cache".into(), "no".into()));
    }
    if !o.bool(&["firebase"], true)? {
        headers.push(("Firebase".into(), "no".into()));
    }
    let path: Vec<String> = p.segments.iter().map(|s| percent(s)).collect();
    Ok(Ntfy {
        url: format!("{scheme}://{host}/{}", path.join("/")),
        credentials,
        priority,
        headers,
    })
}

impl HttpService for Ntfy {
    fn name(&self) -> &'static str {
        "Ntfy"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Ntfy {
            url,
            credentials,
            priority,
            headers,
        } = self;
        let failed = msg.outcome == Outcome::Failure;
        let warned = msg.outcome == Outcome::Warning;
        let mut r = Request::new(Method::POST, url)?;
        r.body = Some((
            "text/plain; charset=utf-8".into(),
            msg.body.clone().into_bytes(),
        ));
        r.basic_auth = credentials.clone();
        r.headers = headers.clone();
        let priority = priority.clone().unwrap_or_else(|| {
            match msg.outcome {
                Outcome::Failure => "high",
                Outcome::Warning | Outcome::Success => "default",
            }
            .into()
        });
        let r = r.header("Title", &msg.title).header("Priority", priority);
        Ok(vec![if failed || warned {
            r.header("Tags", "warning")
        } else {
            r
        }])
    }
}
