//! API tokens (`DUNNAGE_API_TOKENS`, `_FILE` works): who may call the API, what for, and
//! which profiles (schedules) they see. Tokens are kept only as SHA-256 hashes and compared
//! in constant time; a configured value may itself be a hash (`sha256:<hex>`), so the
//! secret need not be stored at all.
//!
//! One token per line (or `;`-separated): `TOKEN [scopes=read,run,...] [profiles=a,b]`.
//! Without `scopes` a token may only read; without `profiles` it sees every profile.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Run,
    Restore,
    Delete,
    Admin,
}

impl Scope {
    fn parse(raw: &str) -> Option<Scope> {
        Some(match raw {
            "read" => Scope::Read,
            "run" => Scope::Run,
            "restore" => Scope::Restore,
            "delete" => Scope::Delete,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }
}

/// One configured token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    hash: [u8; 32],
    scopes: Vec<Scope>,
    /// `None`: every profile.
    profiles: Option<Vec<String>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("scopes", &self.scopes)
            .field("profiles", &self.profiles)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether it may do `scope` (admin may do everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// Whether it sees the profile `name`.
    pub fn sees(&self, name: &str) -> bool {
        self.profiles
            .as_ref()
            .is_none_or(|p| p.iter().any(|n| n == name))
    }
}

/// Every configured token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<Token>);

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Tokens {
    /// Parses the variable's value; every problem at once, never showing a token.
    pub fn parse(raw: &str) -> Result<Tokens, Vec<String>> {
        let mut tokens = Vec::new();
        let mut problems = Vec::new();
        let entries = raw
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        for (n, entry) in entries.enumerate() {
            match parse_entry(entry) {
                Ok(token) => tokens.push(token),
                Err(why) => problems.push(format!("token {}: {why}", n + 1)),
            }
        }
        if tokens.is_empty() && problems.is_empty() {
            problems.push("lists no token".into());
        }
        if problems.is_empty() {
            Ok(Tokens(tokens))
        } else {
            Err(problems)
        }
    }

    /// The token whose hash matches `presented`, comparing every configured hash in
    /// constant time (no early exit on the first match either).
    pub fn check(&self, presented: &str) -> Option<&Token> {
        let presented = hash(presented);
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.hash.ct_eq(&presented)) {
                found = Some(token);
            }
        }
        found
    }
}

fn parse_entry(entry: &str) -> Result<Token, String> {
    let mut words = entry.split_whitespace();
    let secret = words.next().ok_or("empty")?;
    let hash = match secret.strip_prefix("sha256:") {
        Some(hex) => decode_hex(hex).ok_or("sha256: must be followed by 64 hex digits")?,
        None if secret.len() < 16 => {
            return Err("shorter than 16 characters; use a long random value".into());
        }
        None => hash(secret),
    };
    let mut scopes = vec![Scope::Read];
    let mut profiles = None;
    for word in words {
        match word.split_once('=') {
            Some(("scopes", list)) => {
                scopes = list
                    .split(',')
                    .map(|s| {
                        Scope::parse(s.trim()).ok_or_else(|| {
                            format!(
                                "unknown scope {s:?}; expected read, run, restore, delete or admin"
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            Some(("profiles", list)) => {
                profiles = Some(list.split(',').map(|p| p.trim().to_owned()).collect());
            }
            _ => return Err(format!("{word:?} is not scopes=... or profiles=...")),
        }
    }
    Ok(Token {
        hash,
        scopes,
        profiles,
    })
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_tokens_match_with_their_scopes_and_profiles() {
        let secret = "shop-panel-token-1234";
        let hashed: String = hash("hashed-token-abcdefgh")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tokens = Tokens::parse(&format!(
            "{secret} scopes=read,run profiles=shop\n# a comment\nsha256:{hashed} scopes=admin"
        ))
        .unwrap();
        let shop = tokens.check(secret).unwrap();
        assert!(shop.allows(Scope::Run) && !shop.allows(Scope::Delete));
        assert!(shop.sees("shop") && !shop.sees("blog"));
        let admin = tokens.check("hashed-token-abcdefgh").unwrap();
        assert!(admin.allows(Scope::Delete) && admin.sees("blog"));
        assert!(tokens.check("wrong-token-0000000").is_none());
        assert!(!format!("{tokens:?}").contains(secret));
    }

    #[test]
    fn bad_entries_are_named_without_the_token() {
        let e = Tokens::parse(
            "short\nlong-enough-token-123 scopes=read,fly\nx-long-enough-token sha=1",
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[1].contains("fly"), "{e:?}");
        assert!(
            e.iter().all(|p| !p.contains("long-enough-token-123")),
            "{e:?}"
        );
        assert!(Tokens::parse("  \n").is_err());
        assert!(Tokens::parse("sha256:abc").is_err());
    }
}
