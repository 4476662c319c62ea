//! Twilio SMS notifications: shoutrrr's `twilio://` URL and one Messages API request per
//! recipient.

use super::{HttpService, Message, Parts, Request, clip, percent, titled};

pub(super) struct Twilio {
    sid: String,
    token: String,
    from: String,
    to: Vec<String>,
}

/// E.164 with the usual separators removed: `+1 (555) 123-4567` -> `+15551234567`.
fn phone(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect()
}

pub(super) fn parse(p: &mut Parts) -> Result<Twilio, String> {
    let token = p.password.clone().unwrap_or_default();
    if p.user.is_empty() || token.is_empty() || p.host.is_empty() || p.segments.is_empty() {
        return Err("expected twilio://ACCOUNT_SID:AUTH_TOKEN@FROM_NUMBER/TO_NUMBER[/...]".into());
    }
    Ok(Twilio {
        sid: p.user.clone(),
        token,
        from: phone(&p.host),
        to: p
            .segments
            .iter()
            .map(|s| phone(s))
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

impl HttpService for Twilio {
    fn name(&self) -> &'static str {
        "Twilio"
    }

    fn requests(&self, msg: &Message) -> Result<Vec<Request>, String> {
        let url = format!(
            "https://api.twilio.com/2010-04-01/Accounts/{}/Messages.json",
            percent(&self.sid)
        );
        // A Messaging Service SID (MG...) sends instead of a number.
        let from_field = if self.from.starts_with("MG") {
            "MessagingServiceSid"
        } else {
            "From"
        };
        let body = clip(&titled(msg, ""), 1600);
        self.to
            .iter()
            .map(|to| {
                let mut r = Request::post_form(
                    &url,
                    &[
                        ("To", to.as_str()),
                        (from_field, self.from.as_str()),
                        ("Body", body.as_str()),
                    ],
                )?;
                r.basic_auth = Some((self.sid.clone(), self.token.clone()));
                Ok(r)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_lose_their_separators() {
        assert_eq!(phone("+1 (555) 123-4567"), "+15551234567");
        assert_eq!(phone("+1.555.123.4567"), "+15551234567");
    }
}
