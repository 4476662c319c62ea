//! OpsGenie notifications: shoutrrr's `opsgenie://` URL and the requests its API expects.

use serde_json::Map;
use serde_json::Value;
use serde_json::json;

use super::{HttpService, Message, Outcome, Parts, Request, clip};

pub(super) struct OpsGenie {
    base: String,
    key: String,
    fields: Map<String, Value>,
}

pub(super) fn parse(p: &mut Parts) -> Result<OpsGenie, String> {
    let host = if p.host.is_empty() {
        "api.opsgenie.com".to_owned()
    } else {
        p.authority()
    };
    let key = p
        .segments
        .first()
        .cloned()
        .ok_or("the API key is missing (opsgenie://api.opsgenie.com/API_KEY)")?;
    let o = &mut p.options;
    let mut fields = Map::new();
    for key in ["alias", "entity", "source", "user", "note", "description"] {
        if let Some(v) = o.take(&[key]).filter(|v| !v.is_empty()) {
            fields.insert(key.into(), v.into());
        }
    }
    if let Some(pr) = o.take(&["priority"]).filter(|v| !v.is_empty()) {
        if !matches!(pr.as_str(), "P1" | "P2" | "P3" | "P4" | "P5") {
            return Err(format!("option priority={pr:?}: expected P1 to P5"));
        }
        fields.insert("priority".into(), pr.into());
    }
    let tags = o.list(&["tags"], ',');
    if !tags.is_empty() {
        fields.insert("tags".into(), tags.into());
    }
    let actions = o.list(&["actions"], ',');
    if !actions.is_empty() {
        fields.insert("actions".into(), actions.into());
    }
    for (key, field) in [("responders", "responders"), ("visibleto", "visibleTo")] {
        let list = o.list(&[key], ',');
        if list.is_empty() {
            continue;
        }
        let entries = list
            .iter()
            .map(|r| responder(r))
            .collect::<Result<Vec<_>, _>>()?;
        fields.insert(field.into(), entries.into());
    }
    if let Some(details) = o.take(&["details"]).filter(|v| !v.is_empty()) {
        let mut map = Map::new();
        for pair in details.split(',') {
            let (k, v) = pair.split_once('=').ok_or(format!(
                "option details: expected key=value pairs, got {pair:?}"
            ))?;
            map.insert(k.trim().into(), v.trim().into());
        }
        fields.insert("details".into(), Value::Object(map));
    }
    Ok(OpsGenie {
        base: format!("https://{host}"),
        key,
        fields,
    })
}

/// `team:ops`, `user:a@b.c`, `escalation:name`, `schedule:name`; `type:id:UUID` by id.
fn responder(r: &str) -> Result<Value, String> {
    let (kind, rest) = r.split_once(':').ok_or(format!(
        "responder {r:?}: expected TYPE:NAME, e.g. team:ops"
    ))?;
    if !matches!(kind, "team" | "user" | "escalation" | "schedule") {
        return Err(format!(
            "responder {r:?}: type must be team, user, escalation or schedule"
        ));
    }
    Ok(match rest.strip_prefix("id:") {
        Some(id) => json!({"type": kind, "id": id}),
        None if kind == "user" => json!({"type": kind, "username": rest}),
        None => json!({"type": kind, "name": rest}),
    })
}

impl HttpService for OpsGenie {
    fn name(&self) -> &'static str {
        "OpsGenie"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let OpsGenie { base, key, fields } = self;
        let mut body = fields.clone();
        body.insert("message".into(), clip(&msg.title, 130).into());
        body.insert("description".into(), clip(&msg.body, 15000).into());
        body.entry("priority").or_insert_with(|| {
            match msg.outcome {
                Outcome::Failure => "P2",
                Outcome::Warning => "P3",
                Outcome::Success => "P5",
            }
            .into()
        });
        Ok(vec![
            Request::post_json(&format!("{base}/v2/alerts"), &Value::Object(body))?
                .header("Authorization", format!("GenieKey {key}")),
        ])
    }
}
