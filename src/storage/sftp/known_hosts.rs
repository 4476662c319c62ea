//! OpenSSH `known_hosts` files, read the way `ssh` reads them (sshd(8), "SSH_KNOWN_HOSTS
//! FILE FORMAT"): an optional marker (`@revoked`, `@cert-authority`), host patterns
//! (comma-separated; `*` and `?` wildcards, `!` negation, `[host]:port`, hashed `|1|salt|hash`),
//! the key type, the base64 key and a comment. Fields are separated by spaces or tabs.
//!
//! Every line must parse: a file that is not a known_hosts file is refused when the
//! configuration is read, not when the first backup is uploaded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use russh::keys::{Algorithm, PublicKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug)]
struct Line {
    marker: Marker,
    patterns: String,
    key: PublicKey,
}

/// A parsed known_hosts file.
#[derive(Debug)]
pub struct KnownHosts {
    lines: Vec<Line>,
}

/// What the file says about the key a server presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Listed for this host.
    Trusted,
    /// Listed on an `@revoked` line: never accepted.
    Revoked,
    /// The host is listed, with other keys only.
    Changed,
    /// The host is not listed.
    Unknown,
}

impl KnownHosts {
    /// Reads `path`; a missing file is an empty list.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| "is not a text file".to_owned())?;
                Self::parse(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self { lines: Vec::new() }),
            Err(e) => Err(format!("cannot be read: {e}")),
        }
    }

    /// Parses the text of a known_hosts file; the error names the first bad line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            lines.push(parse_line(line).map_err(|why| format!("line {}: {why}", number + 1))?);
        }
        Ok(Self { lines })
    }

    /// The plain (not revoked, not CA) keys listed for `host` and `port`.
    pub fn keys_for(&self, host: &str, port: u16) -> Vec<&PublicKey> {
        let name = lookup_name(host, port);
        self.lines
            .iter()
            .filter(|l| l.marker == Marker::None && matches_host(&l.patterns, &name))
            .map(|l| &l.key)
            .collect()
    }

    /// Whether `key` is on any `@revoked` line (a revoked key is never accepted, for any host).
    fn revoked(&self, key: &PublicKey) -> bool {
        self.lines
            .iter()
            .any(|l| l.marker == Marker::Revoked && l.key.key_data() == key.key_data())
    }

    pub fn verdict(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        if self.revoked(key) {
            return Verdict::Revoked;
        }
        let listed = self.keys_for(host, port);
        if listed.is_empty() {
            Verdict::Unknown
        } else if listed.iter().any(|k| k.key_data() == key.key_data()) {
            Verdict::Trusted
        } else {
            Verdict::Changed
        }
    }

    /// The host key algorithms to offer, in russh's order of preference, limited to the
    /// types listed for this host: a server with ed25519 and RSA keys, listed here only
    /// with its RSA key, must be asked for the RSA one. Empty when none are listed.
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let listed = self.keys_for(host, port);
        russh::Preferred::DEFAULT
            .key
            .iter()
            .filter(|a| listed.iter().any(|k| same_key_type(&k.algorithm(), a)))
            .cloned()
            .collect()
    }
}

/// RSA keys sign with SHA-512, SHA-256 or SHA-1: one key type, three algorithms.
fn same_key_type(key: &Algorithm, offered: &Algorithm) -> bool {
    match (key, offered) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => key == offered,
    }
}

fn parse_line(line: &str) -> Result<Line, String> {
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let mut first = fields.next().unwrap_or_default();
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => {
            return Err(format!(
                "unknown marker {m} (known: @revoked, @cert-authority)"
            ));
        }
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next().unwrap_or_default();
    }
    let (Some(kind), Some(data)) = (fields.next(), fields.next()) else {
        return Err(
            "not a known_hosts entry (expected: host patterns, key type, base64 key; \
             ssh-keyscan prints them)"
                .to_owned(),
        );
    };
    if Algorithm::new(kind).is_err() {
        return Err(format!(
            "not a known_hosts entry ({:?} is not an SSH key type)",
            kind.chars().take(40).collect::<String>()
        ));
    }
    let key = PublicKey::from_openssh(&format!("{kind} {data}"))
        .map_err(|e| format!("the {kind} key does not parse: {e}"))?;
    Ok(Line {
        marker,
        patterns: first.to_owned(),
        key,
    })
}

/// The name a host is listed under: `host`, or `[host]:port` for another port than 22.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// OpenSSH's rule: some positive pattern matches and no negated one does.
fn matches_host(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if pattern_matches(negated, name) {
                return false;
            }
        } else if pattern_matches(pattern, name) {
            matched = true;
        }
    }
    matched
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    wildcard(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes())
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, as `ssh-keygen -H` writes.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// `*` matches any run of characters, `?` one character.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| wildcard(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICv6LUDx3groZ0BmY2ew+M8mopwTCPRZaK6NMBwuWHls";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC57QxpiMIeE8w42jFAxoeaZkvum5lwfKBhb2X+fneKL";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).expect("test key")
    }

    #[test]
    fn hosts_match_by_name_port_wildcard_negation_and_hash() {
        let file = KnownHosts::parse(&format!(
            "# comment\n\
             files.example.org,10.0.0.1 {ED25519}\n\
             [backup.example.org]:2222\t{ED25519} comment here\n\
             *.internal,!bad.internal {ED25519}\n\
             |1|yLNgBpB/ML9akH6PWLT+zkevUWo=|ThtkfEKtdMJwWj9Gi0mPHULVeYE= {ED25519}\n"
        ))
        .expect("parses");
        let k = key(ED25519);
        for (host, port, want) in [
            ("files.example.org", 22, Verdict::Trusted),
            ("FILES.example.org", 22, Verdict::Trusted),
            ("files.example.org", 2222, Verdict::Unknown),
            ("backup.example.org", 2222, Verdict::Trusted),
            ("backup.example.org", 22, Verdict::Unknown),
            ("db.internal", 22, Verdict::Trusted),
            ("bad.internal", 22, Verdict::Unknown),
            // The hashed line is `ssh-keygen -H` of "localhost".
            ("localhost", 22, Verdict::Trusted),
            ("localhost2", 22, Verdict::Unknown),
        ] {
            assert_eq!(file.verdict(host, port, &k), want, "{host}:{port}");
        }
        assert_eq!(
            file.verdict("files.example.org", 22, &key(OTHER)),
            Verdict::Changed
        );
    }

    #[test]
    fn a_revoked_key_is_refused_even_when_listed() {
        let file = KnownHosts::parse(&format!(
            "files.example.org {ED25519}\n@revoked * {ED25519}\nfiles.example.org {OTHER}\n"
        ))
        .expect("parses");
        assert_eq!(
            file.verdict("files.example.org", 22, &key(ED25519)),
            Verdict::Revoked
        );
        assert_eq!(
            file.verdict("files.example.org", 22, &key(OTHER)),
            Verdict::Trusted
        );
    }

    #[test]
    fn lines_that_are_not_entries_are_refused_with_their_number() {
        for (text, want) in [
            ("hello world\n", "line 1: not a known_hosts entry"),
            (
                &format!("# ok\nhost {ED25519}\nhost ssh-ed25519 AAAAnotakey\n"),
                "line 3: the ssh-ed25519 key does not parse",
            ),
            (
                &format!("@trusted host {ED25519}\n"),
                "line 1: unknown marker @trusted",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\n",
                "line 1: not a known_hosts entry",
            ),
        ] {
            let err = KnownHosts::parse(text).expect_err(text);
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn only_the_listed_key_types_are_offered() {
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDtVYSrb+dVo+w1iuFZIY4AXtXp0NenKcvV5YuxhqX1gmuEghJsFqRY3JE4Tld5DVU14e/JmZm77VWRZFT2kl1WIRKO+x2Q+k6ufFUOS6vdPSSmRq+oUliKajiTamNR1LaS/hObgLTXIRLRrEmFRtHjssG5XT1hAlYfYWNIlzx+bQ==";
        let file = KnownHosts::parse(&format!("h {rsa}\nother {ED25519}\n")).expect("parses");
        let names: Vec<String> = file
            .algorithms_for("h", 22)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(names, ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
        assert_eq!(file.algorithms_for("other", 22).len(), 1);
        assert!(file.algorithms_for("nobody", 22).is_empty());
    }
}
