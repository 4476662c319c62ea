//! IFTTT notifications: shoutrrr's `ifttt://` URL and the requests its API expects.

use serde_json::json;

use super::{HttpService, Message, Parts, Request, percent};

pub(super) struct Ifttt {
    key: String,
    events: Vec<String>,
    values: [String; 3],
    message_value: u8,
    title_value: u8,
}

pub(super) fn parse(p: &mut Parts) -> Result<Ifttt, String> {
    p.require_host("the webhook key")?;
    let events = p.options.list(&["events"], ',');
    if events.is_empty() {
        return Err("the events option is required (ifttt://KEY/?events=name)".into());
    }
    let message_value = p.options.number::<u8>(&["messagevalue"])?.unwrap_or(2);
    let title_value = p.options.number::<u8>(&["titlevalue"])?.unwrap_or(0);
    if !(1..=3).contains(&message_value) {
        return Err("option messagevalue must be 1, 2 or 3".into());
    }
    if title_value > 3 || title_value == message_value {
        return Err("option titlevalue must be 0 (off) or 1-3, other than messagevalue".into());
    }
    let values = [
        p.options.take(&["value1"]).unwrap_or_default(),
        p.options.take(&["value2"]).unwrap_or_default(),
        p.options.take(&["value3"]).unwrap_or_default(),
    ];
    Ok(Ifttt {
        key: p.host.clone(),
        events,
        values,
        message_value,
        title_value,
    })
}

impl HttpService for Ifttt {
    fn name(&self) -> &'static str {
        "IFTTT"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let Ifttt {
            key,
            events,
            values,
            message_value,
            title_value,
        } = self;
        let mut v = values.clone();
        if *title_value > 0 {
            v[*title_value as usize - 1] = msg.title.clone();
        }
        v[*message_value as usize - 1] = msg.body.clone();
        let body = json!({"value1": v[0], "value2": v[1], "value3": v[2]});
        events
            .iter()
            .map(|event| {
                let event = percent(event);
                Request::post_json(
                    &format!(
                        "https://maker.ifttt.com/trigger/{event}/with/key/{}",
                        percent(key)
                    ),
                    &body,
                )
            })
            .collect()
    }
}
