//! OpenPGP encryption (`GPG_PASSPHRASE`, `GPG_PUBLIC_KEY_RING`) with rPGP, as GnuPG 2.2 and
//! 2.4 read it: SEIPD version 1 (with MDC), AES-256, a passphrase through an iterated and
//! salted S2K, or the session key wrapped for every recipient key.
//!
//! rPGP's message builder pulls its input from a `Read`, so the encryptor runs on its own
//! thread behind a bounded channel: the compressor writes into [`PgpWriter`], the thread
//! reads from the channel and writes the message into the stream. Memory: the channel's
//! few buffers. The message is only complete once [`PgpWriter::finish`] sent the end and
//! the thread wrote the last packet; a writer dropped without it makes the thread fail, so
//! a cut-short message is never passed on as complete.
//!
//! rPGP has no key policy: which keys of a certificate may be encrypted to is decided here.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

use pgp::composed::{ArmorOptions, MessageBuilder, PublicOrSecret, SignedPublicKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, StringToKey};

/// Buffers between the compressor and the encrypting thread.
const IN_FLIGHT: usize = 4;

/// A key the session key is encrypted to.
enum Target {
    Subkey(pgp::composed::SignedPublicSubKey),
    Primary(SignedPublicKey),
}

impl Target {
    fn fingerprint(&self) -> String {
        match self {
            Target::Subkey(k) => k.key.fingerprint().to_string(),
            Target::Primary(k) => k.primary_key.fingerprint().to_string(),
        }
    }
}

/// Every certificate in an armored keyring (several armored blocks pasted together keep
/// every key), each with the keys to encrypt to: its valid encryption-capable subkeys,
/// else an encryption-capable primary key. Errors name the certificate.
fn targets(ring: &str) -> Result<Vec<Target>, String> {
    const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    let starts: Vec<usize> = ring.match_indices(BEGIN).map(|(i, _)| i).collect();
    let blocks: Vec<&str> = starts
        .iter()
        .enumerate()
        .map(|(n, &start)| &ring[start..starts.get(n + 1).copied().unwrap_or(ring.len())])
        .collect();
    if blocks.is_empty() {
        return Err(format!(
            "no {BEGIN} in it (an ASCII-armored public keyring is expected)"
        ));
    }
    let mut targets = Vec::new();
    for block in blocks {
        let (keys, _) = PublicOrSecret::from_armor_many(block.as_bytes())
            .map_err(|e| format!("a key block does not parse: {e}"))?;
        for key in keys {
            let key = match key.map_err(|e| format!("a key does not parse: {e}"))? {
                PublicOrSecret::Public(key) => key,
                PublicOrSecret::Secret(_) => {
                    return Err("it holds a secret key: give only public keys".into());
                }
            };
            targets.extend(encryption_keys(key)?);
        }
    }
    if targets.is_empty() {
        return Err("it holds no key".into());
    }
    Ok(targets)
}

fn encryption_keys(key: SignedPublicKey) -> Result<Vec<Target>, String> {
    let fingerprint = key.primary_key.fingerprint().to_string();
    if !key.details.revocation_signatures.is_empty() {
        return Err(format!("the key {fingerprint} is revoked"));
    }
    let now = std::time::SystemTime::now();
    let subkeys: Vec<Target> = key
        .public_subkeys
        .iter()
        .filter(|sub| {
            let Some(binding) = sub.signatures.last() else {
                return false;
            };
            let flags = binding.key_flags();
            let expired = binding.key_expiration_time().is_some_and(|valid_for| {
                let created: std::time::SystemTime = sub.key.created_at().into();
                created + std::time::Duration::from(valid_for) < now
            });
            (flags.encrypt_comms() || flags.encrypt_storage())
                && sub.key.algorithm().can_encrypt()
                && !expired
                && sub.verify_bindings(&key.primary_key).is_ok()
        })
        .cloned()
        .map(Target::Subkey)
        .collect();
    if !subkeys.is_empty() {
        return Ok(subkeys);
    }
    if key.primary_key.algorithm().can_encrypt() {
        return Ok(vec![Target::Primary(key)]);
    }
    Err(format!(
        "the key {fingerprint} has no valid encryption-capable key (no encryption subkey, \
         and its primary key can only sign)"
    ))
}

/// The fingerprints of the keys a keyring's archives are encrypted to, checking it.
pub fn recipient_fingerprints(ring: &str) -> Result<Vec<String>, String> {
    Ok(targets(ring)?.iter().map(Target::fingerprint).collect())
}

/// What the thread needs to build the message.
#[derive(Clone)]
pub(super) enum Pgp {
    Passphrase(String),
    Keyring(String),
}

/// The compressor's side of the encrypting thread.
pub(super) struct PgpWriter<W> {
    chunks: Option<mpsc::SyncSender<Msg>>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

enum Msg {
    Data(Vec<u8>),
    End,
}

impl<W: Write + Send + 'static> PgpWriter<W> {
    pub(super) fn new(how: Pgp, out: W) -> io::Result<Self> {
        if let Pgp::Keyring(ring) = &how {
            // Checked by the configuration already; a failure here stops before any byte.
            targets(ring).map_err(io::Error::other)?;
        }
        let (tx, rx) = mpsc::sync_channel(IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("openpgp".into())
            .spawn(move || encrypt(how, ChannelReader::new(rx), out))?;
        Ok(Self {
            chunks: Some(tx),
            thread: Some(thread),
        })
    }

    /// Ends the message (the last packets are written) and returns `W`.
    pub(super) fn finish(mut self) -> io::Result<W> {
        if let Some(tx) = self.chunks.take() {
            // A send error means the thread ended: its result says why.
            let _ = tx.send(Msg::End);
        }
        self.join()
    }

    fn join(&mut self) -> io::Result<W> {
        let thread = self.thread.take().expect("joined once");
        thread
            .join()
            .map_err(|_| io::Error::other("the OpenPGP encryptor panicked"))?
    }
}

impl<W> Write for PgpWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let tx = self.chunks.as_ref().expect("not finished");
        tx.send(Msg::Data(buf.to_vec()))
            .map_err(|_| io::Error::other("the OpenPGP encryptor stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn encrypt<W: Write>(how: Pgp, input: ChannelReader, mut out: W) -> io::Result<W> {
    let mut rng = rand::rngs::OsRng;
    let builder = MessageBuilder::from_reader("", input);
    let mut builder = builder.seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    let result = match how {
        Pgp::Passphrase(passphrase) => {
            builder
                .encrypt_with_password(StringToKey::new_default(&mut rng), &passphrase.into())
                .map_err(io::Error::other)?;
            // Binary, as the reference writes symmetric archives.
            builder.to_writer(rng, &mut out)
        }
        Pgp::Keyring(ring) => {
            for target in targets(&ring).map_err(io::Error::other)? {
                match &target {
                    Target::Subkey(k) => builder.encrypt_to_key(&mut rng, k),
                    Target::Primary(k) => builder.encrypt_to_key(&mut rng, &k.primary_key),
                }
                .map_err(io::Error::other)?;
            }
            // ASCII-armored, as the reference writes archives for a keyring.
            builder.to_armored_writer(rng, ArmorOptions::default(), &mut out)
        }
    };
    result.map_err(|e| io::Error::other(format!("OpenPGP: {e}")))?;
    Ok(out)
}

/// The thread's input: the compressor's chunks until `End`; a sender gone without `End`
/// (the run failed) is an error, never the end of the message.
struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Msg>) -> Self {
        Self {
            rx,
            current: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(chunk)) => (self.current, self.pos) = (chunk, 0),
                Ok(Msg::End) => self.ended = true,
                Err(_) => {
                    return Err(io::Error::other(
                        "the archive stopped before its end: the message is not completed",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_cut_short_is_an_error_not_an_ending() {
        let mut writer = PgpWriter::new(Pgp::Passphrase("p".into()), Vec::new()).unwrap();
        writer.write_all(b"the first part").unwrap();
        // The archive stage failed: the sender goes away without the end.
        writer.chunks.take();
        assert!(writer.join().is_err());

        let mut writer = PgpWriter::new(Pgp::Passphrase("p".into()), Vec::new()).unwrap();
        writer.write_all(b"all of it").unwrap();
        assert!(!writer.finish().unwrap().is_empty());
    }

    #[test]
    fn keyrings_without_keys_are_refused() {
        assert!(
            recipient_fingerprints("hello")
                .unwrap_err()
                .contains("no -----BEGIN")
        );
    }
}
