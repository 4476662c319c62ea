//! Encryption stage: one more [`Write`] between the compressor and the stream, so the
//! archive is encrypted in the same streaming pass (no temporary copy, fixed memory).
//!
//! age: the file key is wrapped for every recipient (X25519 `age1...`, `ssh-ed25519`,
//! `ssh-rsa`) or for a passphrase (scrypt, work factor pinned to the reference's 2^18:
//! 256 MiB for about a second, once per run, before the first byte is written). The payload
//! is age's STREAM of 64 KiB chunks; its last chunk is marked final, so a file cut short
//! never decrypts. [`Encryptor::finish`] writes that chunk: an archive is only complete
//! (and only then committed) when it returned.

use std::fmt;
use std::io::{self, Write};

use age::secrecy::SecretString;

use super::openpgp::{Pgp, PgpWriter};

/// The reference's scrypt work factor (age's Go library default): N = 2^18.
pub const AGE_SCRYPT_LOG_N: u8 = 18;

/// How archives are encrypted, validated by the configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum Encryption {
    None,
    /// `AGE_PASSPHRASE`.
    AgePassphrase(String),
    /// `AGE_PUBLIC_KEYS`: each one parsed by [`age_recipient`].
    AgeRecipients(Vec<String>),
    /// `GPG_PASSPHRASE`.
    GpgPassphrase(String),
    /// `GPG_PUBLIC_KEY_RING` and the fingerprints of the keys it encrypts to.
    GpgKeyring {
        ring: String,
        fingerprints: Vec<String>,
    },
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::None => f.write_str("None"),
            Encryption::AgePassphrase(_) => f.write_str("AgePassphrase(***)"),
            Encryption::AgeRecipients(keys) => f.debug_tuple("AgeRecipients").field(keys).finish(),
            Encryption::GpgPassphrase(_) => f.write_str("GpgPassphrase(***)"),
            Encryption::GpgKeyring { fingerprints, .. } => {
                f.debug_tuple("GpgKeyring").field(fingerprints).finish()
            }
        }
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::None => f.write_str("not encrypted"),
            Encryption::AgePassphrase(_) => f.write_str("age, passphrase"),
            Encryption::AgeRecipients(keys) => write!(f, "age, {} recipient(s)", keys.len()),
            Encryption::GpgPassphrase(_) => f.write_str("OpenPGP, passphrase"),
            Encryption::GpgKeyring { fingerprints, .. } => {
                write!(f, "OpenPGP, keys {}", fingerprints.join(", "))
            }
        }
    }
}

impl Encryption {
    /// The method's name in manifests.
    pub fn method(&self) -> &'static str {
        match self {
            Encryption::None => "none",
            Encryption::AgePassphrase(_) => "age-passphrase",
            Encryption::AgeRecipients(_) => "age-recipients",
            Encryption::GpgPassphrase(_) => "gpg-passphrase",
            Encryption::GpgKeyring { .. } => "gpg-keyring",
        }
    }

    /// Who can decrypt, without a secret: age public keys or OpenPGP fingerprints.
    pub fn recipients(&self) -> Vec<String> {
        match self {
            Encryption::AgeRecipients(keys) => keys.clone(),
            Encryption::GpgKeyring { fingerprints, .. } => fingerprints.clone(),
            _ => Vec::new(),
        }
    }

    /// Appended to the archive's name: `.age` or `.gpg` (as the reference).
    pub fn suffix(&self) -> &'static str {
        match self {
            Encryption::None => "",
            Encryption::AgePassphrase(_) | Encryption::AgeRecipients(_) => ".age",
            Encryption::GpgPassphrase(_) | Encryption::GpgKeyring { .. } => ".gpg",
        }
    }
}

/// One `AGE_PUBLIC_KEYS` entry as a recipient: `age1...`, `ssh-ed25519 ...` or `ssh-rsa ...`.
pub fn age_recipient(key: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let key = key.trim();
    if key.starts_with("age1") {
        key.parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("not an age X25519 public key: {e}"))
    } else if key.starts_with("ssh-") {
        key.parse::<age::ssh::Recipient>()
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("not an ssh-ed25519 or ssh-rsa public key: {e:?}"))
    } else {
        Err("expected an age1... key, or an ssh-ed25519 or ssh-rsa public key".into())
    }
}

/// The encrypting writer in front of `W`.
pub(super) enum Encryptor<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
    Pgp(PgpWriter<W>),
}

impl<W: Write + Send + 'static> Encryptor<W> {
    pub(super) fn new(encryption: &Encryption, out: W) -> io::Result<Self> {
        let encryptor = match encryption {
            Encryption::None => return Ok(Encryptor::Plain(out)),
            Encryption::GpgPassphrase(p) => {
                return Ok(Encryptor::Pgp(PgpWriter::new(
                    Pgp::Passphrase(p.clone()),
                    out,
                )?));
            }
            Encryption::GpgKeyring { ring, .. } => {
                return Ok(Encryptor::Pgp(PgpWriter::new(
                    Pgp::Keyring(ring.clone()),
                    out,
                )?));
            }
            Encryption::AgePassphrase(passphrase) => {
                let mut recipient =
                    age::scrypt::Recipient::new(SecretString::from(passphrase.clone()));
                recipient.set_work_factor(AGE_SCRYPT_LOG_N);
                age::Encryptor::with_recipients(std::iter::once(&recipient as _))
            }
            Encryption::AgeRecipients(keys) => {
                let recipients = keys
                    .iter()
                    .map(|k| age_recipient(k).map_err(io::Error::other))
                    .collect::<io::Result<Vec<_>>>()?;
                age::Encryptor::with_recipients(
                    recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
                )
            }
        }
        .map_err(|e| io::Error::other(format!("age: {e}")))?;
        Ok(Encryptor::Age(encryptor.wrap_output(out)?))
    }

    /// Writes what completes the encrypted file (age's final chunk) and returns `W`.
    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Encryptor::Plain(out) => Ok(out),
            Encryptor::Age(writer) => writer.finish(),
            Encryptor::Pgp(writer) => writer.finish(),
        }
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encryptor::Plain(out) => out.write(buf),
            Encryptor::Age(writer) => writer.write(buf),
            Encryptor::Pgp(writer) => writer.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encryptor::Plain(out) => out.write_all(buf),
            Encryptor::Age(writer) => writer.write_all(buf),
            Encryptor::Pgp(writer) => writer.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encryptor::Plain(out) => out.flush(),
            Encryptor::Age(writer) => writer.flush(),
            Encryptor::Pgp(writer) => writer.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decrypt(identity: &dyn age::Identity, data: &[u8]) -> io::Result<Vec<u8>> {
        let decryptor = age::Decryptor::new(data).map_err(io::Error::other)?;
        let mut reader = decryptor
            .decrypt(std::iter::once(identity))
            .map_err(io::Error::other)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn age_round_trips_and_a_missing_final_chunk_never_decrypts() {
        let identity = age::x25519::Identity::generate();
        let enc = Encryption::AgeRecipients(vec![identity.to_public().to_string()]);
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = Encryptor::new(&enc, Vec::new()).unwrap();
        writer.write_all(&plain).unwrap();
        let sealed = writer.finish().unwrap();
        assert_eq!(decrypt(&identity, &sealed).unwrap(), plain);

        // Cut short (the final chunk missing): refused.
        let cut = sealed[..sealed.len() - 1000].to_vec();
        assert!(
            decrypt(&identity, &cut).is_err(),
            "a truncated file decrypts"
        );
    }

    #[test]
    fn recipients_of_every_kind_parse_and_others_are_refused() {
        let x = age::x25519::Identity::generate().to_public().to_string();
        assert!(age_recipient(&x).is_ok());
        let ssh =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICv6LUDx3groZ0BmY2ew+M8mopwTCPRZaK6NMBwuWHls c";
        assert!(age_recipient(ssh).is_ok());
        for bad in ["age1nope", "pgp-key", "ssh-dss AAAAB3NzaC1kc3M="] {
            assert!(age_recipient(bad).is_err(), "{bad}");
        }
        assert_eq!(Encryption::AgePassphrase("p".into()).suffix(), ".age");
        assert!(!format!("{:?}", Encryption::AgePassphrase("hunter2".into())).contains("hunter2"));
    }
}
