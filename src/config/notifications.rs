//! Notification settings: `NOTIFICATION_URLS`, `NOTIFICATION_LEVEL`, the deprecated
//! `EMAIL_*` variables (turned into an `smtp://` URL), `NOTIFICATION_CA_CERT` and the
//! template folder.

use std::path::Path;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::notify::{Level, Settings, Templates};

use super::Parser;

/// Splits `NOTIFICATION_URLS` at the commas that start a new URL (`,scheme://`), so that a
/// comma inside a URL (`to=a@x,b@y`) needs no encoding; encoded commas work too.
pub fn split_urls(raw: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in raw.split(',') {
        if piece.trim().is_empty() {
            continue;
        }
        let starts_url = piece
            .trim_start()
            .split_once("://")
            .is_some_and(|(scheme, _)| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
            });
        match urls.last_mut() {
            Some(last) if !starts_url => {
                last.push(',');
                last.push_str(piece);
            }
            _ => urls.push(piece.to_owned()),
        }
    }
    urls.into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Parser<'_> {
    /// The notification settings. A problem with them is never a reason to skip a backup:
    /// each is a warning at start (and an error in `dunnage check`), and the services that
    /// are usable still get notified.
    pub(super) fn notifications(&mut self) -> (Option<Settings>, Vec<String>) {
        let before = self.problems.len();
        let settings = self.notification_settings();
        let problems: Vec<String> = self
            .problems
            .split_off(before)
            .iter()
            .map(|p| p.to_string())
            .collect();
        for p in &problems {
            self.warnings.push(format!(
                "notifications: {p} (backups still run; `dunnage check` fails until this is fixed)"
            ));
        }
        (settings, problems)
    }

    fn notification_settings(&mut self) -> Option<Settings> {
        let mut urls = self
            .optional("NOTIFICATION_URLS")
            .map(|raw| split_urls(&raw))
            .unwrap_or_default();
        if let Some(url) = self.email_url() {
            urls.push(url);
        }
        let level = {
            let raw = self.string("NOTIFICATION_LEVEL");
            Level::parse(&raw).unwrap_or_else(|| {
                self.problem(
                    "NOTIFICATION_LEVEL",
                    &raw,
                    "expected error (failures only), warn (failures and runs with \
                     warnings) or info (every run)",
                );
                Level::Error
            })
        };
        let ca_cert = self.certificate("NOTIFICATION_CA_CERT");
        let dir = self.path("NOTIFICATION_TEMPLATES_DIR");
        if urls.is_empty() {
            return None;
        }
        let templates = Templates::load(Path::new(&dir)).unwrap_or_else(|e| {
            self.problem("NOTIFICATION_TEMPLATES_DIR", &dir.display().to_string(), e);
            Templates::default()
        });
        // What templates see as `.Config`: every variable that is not secret.
        let values = crate::registry::VARIABLES
            .iter()
            .filter(|spec| !spec.secret)
            .map(|spec| {
                let value = self.vars.get(spec.name).or(spec.default).unwrap_or("");
                (spec.name, value.to_owned())
            })
            .collect();
        let (settings, errors) = Settings::new(urls, level, ca_cert, templates);
        for e in errors {
            self.problem("NOTIFICATION_URLS", "(redacted)", e);
        }
        settings.map(|s| s.with_config_values(values))
    }

    /// The deprecated `EMAIL_*` settings as the `smtp://` URL the reference builds from them.
    fn email_url(&mut self) -> Option<String> {
        let to = self.optional("EMAIL_NOTIFICATION_RECIPIENT")?;
        self.warnings.push(
            "EMAIL_NOTIFICATION_RECIPIENT and the other EMAIL_* variables are deprecated; \
             add an smtp:// URL to NOTIFICATION_URLS instead"
                .into(),
        );
        let Some(host) = self.optional("EMAIL_SMTP_HOST") else {
            self.problem(
                "EMAIL_SMTP_HOST",
                "",
                "EMAIL_NOTIFICATION_RECIPIENT is set; the mail server's host name is needed too",
            );
            return None;
        };
        let port = self.number("EMAIL_SMTP_PORT", 1..=65535).unwrap_or(587);
        let user = self.string("EMAIL_SMTP_USERNAME");
        let password = self.string("EMAIL_SMTP_PASSWORD");
        let from = self.string("EMAIL_NOTIFICATION_SENDER");
        let credentials = if user.is_empty() && password.is_empty() {
            String::new()
        } else {
            format!("{}:{}@", enc(&user), enc(&password))
        };
        let url = format!(
            "smtp://{credentials}{host}:{port}/?from={}&to={}",
            enc(&from),
            enc(&to)
        );
        // Report problems against the variables the user wrote, not the URL.
        if let Err(e) = crate::notify::services::parse(&url) {
            self.problem("EMAIL_NOTIFICATION_RECIPIENT", &to, e);
            return None;
        }
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_where_a_new_url_starts() {
        assert_eq!(
            split_urls("smtp://h/?from=a@b&to=c@d,e@f, discord://t@1,generic+https://x/y?a=1%2C2"),
            [
                "smtp://h/?from=a@b&to=c@d,e@f",
                "discord://t@1",
                "generic+https://x/y?a=1%2C2"
            ]
        );
        assert!(split_urls(" , ").is_empty());
    }
}
