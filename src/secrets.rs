//! Every configured secret value, and the one function that takes them out of text. A
//! server may echo credentials in an error answer, a library may print a URL with its
//! password: whatever the source, what we log (stderr, the run's captured log) and what we
//! send (notifications) passes through [`redact`].

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shorter values are not taken out: `1` or `abc` would mangle every line.
const MIN_LEN: usize = 4;

/// Remembers `values` (and their percent-encoded forms) for [`redact`].
pub fn register<'a>(values: impl IntoIterator<Item = &'a str>) {
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for value in values {
        let encoded =
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        for v in [value.to_owned(), encoded] {
            if v.len() >= MIN_LEN && !secrets.contains(&v) {
                secrets.push(v);
            }
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), "***"));
        }
    }
    out
}

/// A writer that redacts what passes through it: the log's stderr.
pub struct Redacting<W>(pub W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(redact(text).as_bytes()),
            Err(_) => self.0.write_all(buf),
        }?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_and_their_encodings_are_taken_out() {
        register(["hunter2 pw", "abc", "s3cr3t-longer"]);
        assert_eq!(
            redact("401: bad password hunter2 pw (hunter2%20pw) for s3cr3t-longer; abc"),
            "401: bad password *** (***) for ***; abc"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        let mut out = Vec::new();
        std::io::Write::write_all(&mut Redacting(&mut out), b"echo s3cr3t-longer\n").unwrap();
        assert_eq!(out, b"echo ***\n");
    }
}
