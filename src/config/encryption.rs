//! `AGE_*` and `GPG_*`: how archives are encrypted. Fail closed: a key that does not
//! parse, a keyring without a usable key, no key at all, or two methods is an invalid
//! configuration; never a plain backup when encryption was asked for.

use super::Parser;
use crate::archive::read::{self, Keys};
use crate::archive::{Encryption, age_recipient, recipient_fingerprints};

const METHODS: [&str; 4] = [
    "GPG_PASSPHRASE",
    "GPG_PUBLIC_KEY_RING",
    "AGE_PASSPHRASE",
    "AGE_PUBLIC_KEYS",
];

/// What a run with `AGE_PASSPHRASE` needs for a moment: scrypt at 2^18 (256 MiB) and the
/// rest of the process (measured peak 267 MiB), with some room.
const SCRYPT_NEEDS: u64 = 320 << 20;

impl Parser<'_> {
    /// A container whose memory limit scrypt does not fit in would be killed at the start
    /// of every run: say so now, with the way out.
    fn check_scrypt_fits(&mut self, limit: Option<u64>) {
        if let Some(limit) = limit.filter(|l| *l < SCRYPT_NEEDS) {
            self.problem(
                "AGE_PASSPHRASE",
                "",
                format!(
                    "a passphrase needs about 320 MiB for a moment (scrypt, work factor 2^18 as \
                     the reference), more than this container's memory limit of {} MiB: raise \
                     the limit or use AGE_PUBLIC_KEYS",
                    limit >> 20
                ),
            );
        }
    }

    pub(super) fn encryption(&mut self) -> Encryption {
        let set: Vec<&str> = METHODS
            .into_iter()
            .filter(|m| self.optional(m).is_some())
            .collect();
        match set.as_slice() {
            [] => Encryption::None,
            ["GPG_PASSPHRASE"] => {
                Encryption::GpgPassphrase(self.optional("GPG_PASSPHRASE").unwrap_or_default())
            }
            ["GPG_PUBLIC_KEY_RING"] => self.gpg_keyring(),
            ["AGE_PASSPHRASE"] | ["AGE_PUBLIC_KEYS"] => self.age(),
            [first, rest @ ..] => {
                let value = self.optional(rest[0]).unwrap_or_default();
                self.problem(
                    rest[0],
                    &value,
                    format!(
                        "{first} is set too: an archive is encrypted one way; set one of {}",
                        set.join(", ")
                    ),
                );
                Encryption::None
            }
        }
    }

    /// What opens encrypted backups for restore and verify: the passphrases used for
    /// backups, `AGE_IDENTITIES` and `GPG_SECRET_KEY_RING` (each checked now).
    pub(super) fn keys(&mut self) -> Keys {
        let age_identities = self.optional("AGE_IDENTITIES");
        if let Some(text) = &age_identities
            && let Err(why) = read::age_identities(text)
        {
            self.problem("AGE_IDENTITIES", "", why);
        }
        let gpg_secret_keys = self.optional("GPG_SECRET_KEY_RING");
        if let Some(text) = &gpg_secret_keys
            && let Err(why) = read::gpg_secret_keys(text)
        {
            self.problem("GPG_SECRET_KEY_RING", "", why);
        }
        Keys {
            age_passphrase: self.optional("AGE_PASSPHRASE"),
            age_identities,
            gpg_passphrase: self.optional("GPG_PASSPHRASE"),
            gpg_secret_keys,
            gpg_key_passphrase: self.optional("GPG_SECRET_KEY_PASSPHRASE"),
        }
    }

    fn gpg_keyring(&mut self) -> Encryption {
        let ring = self.optional("GPG_PUBLIC_KEY_RING").unwrap_or_default();
        match recipient_fingerprints(&ring) {
            Ok(fingerprints) => Encryption::GpgKeyring { ring, fingerprints },
            Err(why) => {
                let shown: String = ring.chars().take(40).collect();
                self.problem("GPG_PUBLIC_KEY_RING", &shown, why);
                Encryption::None
            }
        }
    }

    fn age(&mut self) -> Encryption {
        let passphrase = self.optional("AGE_PASSPHRASE");
        let keys = self.optional("AGE_PUBLIC_KEYS");
        match (passphrase, keys) {
            (None, None) | (Some(_), Some(_)) => Encryption::None,
            (Some(passphrase), None) => {
                self.check_scrypt_fits(crate::resources::memory_limit());
                Encryption::AgePassphrase(passphrase)
            }
            (None, Some(raw)) => {
                let keys: Vec<String> = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect();
                if keys.is_empty() {
                    self.problem("AGE_PUBLIC_KEYS", &raw, "lists no key");
                }
                for (i, key) in keys.iter().enumerate() {
                    if let Err(why) = age_recipient(key) {
                        let shown: String = key.chars().take(24).collect();
                        self.problem(
                            "AGE_PUBLIC_KEYS",
                            &raw,
                            format!("key {} ({shown}...): {why}", i + 1),
                        );
                    }
                }
                Encryption::AgeRecipients(keys)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::archive::Encryption;
    use crate::config::{Config, ConfigError, Vars};

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars("default", &Vars::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn a_passphrase_that_scrypt_cannot_fit_is_refused() {
        let vars = Vars::from_pairs([("AGE_PASSPHRASE", "pw")]);
        let mut p = crate::config::Parser::new(&vars);
        p.check_scrypt_fits(Some(256 << 20));
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems[0].to_string().contains("AGE_PUBLIC_KEYS"));
        p.check_scrypt_fits(Some(512 << 20));
        p.check_scrypt_fits(None);
        assert_eq!(p.problems.len(), 1);
    }

    #[test]
    fn age_settings_fail_closed() {
        let key = age::x25519::Identity::generate().to_public().to_string();
        let ssh =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICv6LUDx3groZ0BmY2ew+M8mopwTCPRZaK6NMBwuWHls";
        let c = config(&[("AGE_PUBLIC_KEYS", &format!("{key}, {ssh}"))]).unwrap();
        assert_eq!(
            c.encryption,
            Encryption::AgeRecipients(vec![key.clone(), ssh.into()])
        );
        assert!(
            c.filename
                .render(&jiff::Zoned::now())
                .unwrap()
                .ends_with(".tar.gz.age")
        );
        let c = config(&[("AGE_PASSPHRASE", "correct horse")]).unwrap();
        assert_eq!(
            c.encryption,
            Encryption::AgePassphrase("correct horse".into())
        );

        for (pairs, want) in [
            (
                vec![("AGE_PUBLIC_KEYS", "age1notakey")],
                "key 1 (age1notakey...)",
            ),
            (vec![("AGE_PUBLIC_KEYS", "pgp:ABCDEF")], "expected an age1"),
            (vec![("AGE_PUBLIC_KEYS", " , ")], "lists no key"),
            (
                vec![
                    ("AGE_PUBLIC_KEYS", key.as_str()),
                    ("AGE_PASSPHRASE", "s3cr3t"),
                ],
                "encrypted one way",
            ),
            (
                vec![
                    ("GPG_PASSPHRASE", "s3cr3t"),
                    ("AGE_PUBLIC_KEYS", key.as_str()),
                ],
                "encrypted one way",
            ),
            (
                vec![("GPG_PUBLIC_KEY_RING", "not a keyring")],
                "no -----BEGIN PGP PUBLIC KEY BLOCK-----",
            ),
        ] {
            let err = config(&pairs).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
    }
}
