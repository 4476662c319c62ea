//! Reading shoutrrr-style service URLs: the parts every service needs (credentials, host,
//! path segments, options) and a redacted form that is safe to show.

use percent_encoding::percent_decode_str;
use reqwest::Url;

/// A service URL taken apart. Options are read with [`Options`]; an option that no service
/// reads is an error, so a typo never silently does nothing.
pub struct Parts {
    pub scheme: String,
    /// Decoded user name (empty when absent).
    pub user: String,
    /// Decoded password, when the URL has one.
    pub password: Option<String>,
    /// As written (case kept: some services put tokens there).
    pub host: String,
    pub port: Option<u16>,
    /// Decoded, non-empty path segments.
    pub segments: Vec<String>,
    pub options: Options,
}

impl Parts {
    pub fn parse(raw: &str) -> Result<Parts, String> {
        let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let segments = url
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        let host = url.host_str().unwrap_or("").to_owned();
        Ok(Parts {
            scheme: url.scheme().to_ascii_lowercase(),
            user: decode(url.username()),
            password: url.password().map(decode),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port(),
            segments,
            options: Options::from_url(&url),
        })
    }

    /// `host` or `host:port`, as a URL authority.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    pub fn require_host(&self, what: &str) -> Result<(), String> {
        if self.host.is_empty() {
            return Err(format!("{what} is missing (the URL has no host part)"));
        }
        Ok(())
    }
}

/// The query options of a service URL, names case-insensitive as in shoutrrr.
pub struct Options {
    /// (lower-case name, value, name as written).
    pairs: Vec<(String, String, String)>,
    used: Vec<bool>,
}

impl Options {
    fn from_url(url: &Url) -> Options {
        let pairs: Vec<(String, String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned(), k.into_owned()))
            .collect();
        let used = vec![false; pairs.len()];
        Options { pairs, used }
    }

    /// The last value given for any of `keys` (aliases), marking them read.
    pub fn take(&mut self, keys: &[&str]) -> Option<String> {
        let mut found = None;
        for (i, (k, v, _)) in self.pairs.iter().enumerate() {
            if keys.contains(&k.as_str()) {
                self.used[i] = true;
                found = Some(v.clone());
            }
        }
        found
    }

    /// A non-empty value, or `default`.
    pub fn string(&mut self, keys: &[&str], default: &str) -> String {
        self.take(keys)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    }

    /// A comma (or `sep`) separated list; empty items dropped.
    pub fn list(&mut self, keys: &[&str], sep: char) -> Vec<String> {
        self.take(keys)
            .map(|v| {
                v.split(sep)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// yes/no, true/false, 1/0, on/off.
    pub fn bool(&mut self, keys: &[&str], default: bool) -> Result<bool, String> {
        match self.take(keys) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "" => Ok(default),
                "yes" | "true" | "1" | "on" | "y" => Ok(true),
                "no" | "false" | "0" | "off" | "n" => Ok(false),
                _ => Err(format!(
                    "option {}={v:?} is not a boolean; expected yes or no",
                    keys[0]
                )),
            },
        }
    }

    pub fn number<T: std::str::FromStr>(&mut self, keys: &[&str]) -> Result<Option<T>, String> {
        match self.take(keys).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("option {}={v:?} is not a number", keys[0])),
        }
    }

    /// Options nobody read, names as written, in the order given (for services that
    /// forward them); they count as read from now on.
    pub fn take_rest(&mut self) -> Vec<(String, String)> {
        let rest = self
            .pairs
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((_, v, k), _)| (k.clone(), v.clone()))
            .collect();
        self.used.iter_mut().for_each(|u| *u = true);
        rest
    }

    /// Fails when an option was not read: a misspelt option must not be ignored.
    pub fn finish(&self) -> Result<(), String> {
        let unknown: Vec<&str> = self
            .pairs
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((_, _, k), _)| k.as_str())
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown option {}", unknown.join(", ")))
        }
    }
}

/// Option names whose values are not secret and may be shown in errors.
const PLAIN_OPTIONS: &[&str] = &[
    "title",
    "subject",
    "events",
    "devices",
    "rooms",
    "chats",
    "channels",
    "channel",
    "stream",
    "topic",
    "priority",
    "encryption",
    "auth",
    "from",
    "fromaddress",
    "fromname",
    "to",
    "toaddresses",
    "clienthost",
    "usestarttls",
    "usehtml",
    "disabletls",
    "scheme",
    "host",
    "template",
    "contenttype",
    "method",
    "messagekey",
    "titlekey",
    "color",
    "username",
    "tags",
    "parsemode",
    "notification",
    "preview",
];

/// `raw` with credentials, path (tokens often live there) and secret-looking option values
/// replaced by `***`. Services whose host is the key (IFTTT, Pushbullet, Pushover) have it
/// hidden too. Never fails: unparseable input shows only its scheme.
pub fn redact(raw: &str) -> String {
    let Ok(url) = Url::parse(raw) else {
        let scheme = raw.split("://").next().filter(|s| s.len() < raw.len());
        return match scheme {
            Some(s) => format!("{s}://***"),
            None => "***".into(),
        };
    };
    let scheme = url.scheme();
    let mut out = format!("{scheme}://");
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str("***@");
    }
    let host_is_key = matches!(
        scheme,
        "ifttt" | "pushbullet" | "pushover" | "wecom" | "notifiarr"
    );
    match url.host_str() {
        Some(_) if host_is_key => out.push_str("***"),
        Some(h) => out.push_str(h),
        None => {}
    }
    if let Some(p) = url.port() {
        out.push_str(&format!(":{p}"));
    }
    if url.path().trim_matches('/').is_empty() {
        out.push_str(url.path());
    } else {
        out.push_str("/***");
    }
    let query: Vec<String> = url
        .query_pairs()
        .map(|(k, v)| {
            if PLAIN_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) {
                format!("{k}={v}")
            } else {
                format!("{k}=***")
            }
        })
        .collect();
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_decode_credentials_and_segments() {
        let p = Parts::parse("telegram://123%3A:AB%2Fc@telegram/x%20y/?Chats=%40a,b").unwrap();
        assert_eq!(p.user, "123:");
        assert_eq!(p.password.as_deref(), Some("AB/c"));
        assert_eq!(p.host, "telegram");
        assert_eq!(p.segments, ["x y"]);
        let mut o = p.options;
        assert_eq!(o.list(&["chats"], ','), ["@a", "b"]);
        assert!(o.finish().is_ok());
    }

    #[test]
    fn unknown_options_are_errors_and_booleans_are_checked() {
        let mut o = Parts::parse("ntfy://h/t?titel=x&cache=maybe")
            .unwrap()
            .options;
        assert!(o.bool(&["cache"], true).is_err());
        assert_eq!(o.finish().unwrap_err(), "unknown option titel");
    }

    #[test]
    fn redaction_hides_credentials_paths_and_secret_options() {
        assert_eq!(
            redact("smtp://user:hunter2@mail.example:587/?from=a@b&to=c@d"),
            "smtp://***@mail.example:587/?from=a@b&to=c@d"
        );
        assert_eq!(
            redact("gotify://push.example/Asecrettoken12?priority=5"),
            "gotify://push.example/***?priority=5"
        );
        assert_eq!(
            redact("googlechat://chat.googleapis.com/v1/spaces/X/messages?key=k1&token=t1"),
            "googlechat://chat.googleapis.com/***?key=***&token=***"
        );
        assert_eq!(redact("ifttt://key123/?events=a"), "ifttt://***/?events=a");
        assert_eq!(redact("nonsense"), "***");
        assert_eq!(redact("foo://[bad"), "foo://***");
    }
}
