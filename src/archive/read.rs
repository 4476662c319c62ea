//! Reading a stored backup back: stored bytes -> decrypt -> decompress -> tar stream, each
//! layer recognised by its first bytes (not by the name), all streaming.
//!
//! age authenticates every 64 KiB chunk and marks the last one, so damage or a cut is an
//! error where it happens. OpenPGP (SEIPD v1) is read in streaming mode: its MDC covers the
//! whole message and is checked at the end, so a damaged message is reported when the
//! stream ends (rPGP's default would hold up to 1 GiB in memory to check it first).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc;

use age::secrecy::SecretString;
use pgp::composed::{Deserializable, Message, SignedSecretKey, TheRing};
use pgp::types::Password;

use crate::manifest::TarCounts;

/// Read buffer in front of each layer.
const READ_BUF: usize = 256 << 10;

/// Passphrases and secret keys that open encrypted backups (from `AGE_PASSPHRASE`,
/// `AGE_IDENTITIES`, `GPG_PASSPHRASE`, `GPG_SECRET_KEY_RING`, `GPG_SECRET_KEY_PASSPHRASE`).
#[derive(Clone, Default)]
pub struct Keys {
    pub age_passphrase: Option<String>,
    /// An age identity file (`AGE-SECRET-KEY-1...` lines) or an unencrypted SSH private key.
    pub age_identities: Option<String>,
    pub gpg_passphrase: Option<String>,
    /// ASCII-armored OpenPGP secret keys.
    pub gpg_secret_keys: Option<String>,
    pub gpg_key_passphrase: Option<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "***" } else { "-" };
        f.debug_struct("Keys")
            .field("age_passphrase", &set(&self.age_passphrase))
            .field("age_identities", &set(&self.age_identities))
            .field("gpg_passphrase", &set(&self.gpg_passphrase))
            .field("gpg_secret_keys", &set(&self.gpg_secret_keys))
            .finish()
    }
}

/// Parses age identities: an identity file or an SSH private key.
pub fn age_identities(text: &str) -> Result<Vec<Box<dyn age::Identity>>, String> {
    if text.contains("-----BEGIN") {
        let identity = age::ssh::Identity::from_buffer(text.as_bytes(), None)
            .map_err(|e| format!("not an SSH private key: {e}"))?;
        if let age::ssh::Identity::Encrypted(_) = identity {
            return Err("the SSH key is protected by a passphrase; use an unprotected copy".into());
        }
        if let age::ssh::Identity::Unsupported(k) = identity {
            return Err(format!("unsupported SSH key: {k:?}"));
        }
        return Ok(vec![Box::new(identity)]);
    }
    let file = age::IdentityFile::from_buffer(text.as_bytes())
        .map_err(|e| format!("not an age identity file: {e}"))?;
    let identities = file
        .into_identities()
        .map_err(|e| format!("not an age identity file: {e}"))?;
    if identities.is_empty() {
        return Err("holds no AGE-SECRET-KEY-1... line".into());
    }
    Ok(identities)
}

/// Parses every secret key in an armored OpenPGP keyring.
pub fn gpg_secret_keys(text: &str) -> Result<Vec<SignedSecretKey>, String> {
    let (keys, _) = SignedSecretKey::from_armor_many(text.as_bytes())
        .map_err(|e| format!("not an ASCII-armored OpenPGP secret key: {e}"))?;
    let keys: Vec<SignedSecretKey> = keys
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a secret key does not parse: {e}"))?;
    if keys.is_empty() {
        return Err("holds no secret key".into());
    }
    Ok(keys)
}

/// Why a backup could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// It is encrypted and no key that could open it is configured.
    #[error("{0}")]
    NoKey(String),
    /// A key is configured but does not open it.
    #[error("{0}")]
    WrongKey(String),
    /// The stored bytes are not what they should be.
    #[error("{0}")]
    Damaged(String),
    #[error("reading the backup failed: {0}")]
    Io(#[from] io::Error),
}

/// How a stored backup is encrypted, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Age,
    AgeArmored,
    Pgp,
    Zstd,
    Gzip,
    Plain,
}

fn sniff(head: &[u8]) -> Layer {
    if head.starts_with(b"age-encryption.org/") {
        Layer::Age
    } else if head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
        Layer::AgeArmored
    } else if head.starts_with(b"-----BEGIN PGP MESSAGE-----")
        || head.first().is_some_and(|b| b & 0x80 != 0)
    {
        Layer::Pgp
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Layer::Zstd
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Layer::Gzip
    } else {
        Layer::Plain
    }
}

fn peek(r: &mut impl BufRead) -> io::Result<Layer> {
    Ok(sniff(r.fill_buf()?))
}

/// The tar stream inside `stored`: decrypted with `keys` when encrypted, decompressed.
pub fn open(
    stored: impl Read + Send + 'static,
    keys: &Keys,
) -> Result<Box<dyn Read + Send>, OpenError> {
    let mut input = BufReader::with_capacity(READ_BUF, stored);
    let plain: Box<dyn Read + Send> = match peek(&mut input)? {
        Layer::Age => Box::new(open_age(input, keys)?),
        Layer::AgeArmored => Box::new(open_age(
            BufReader::new(age::armor::ArmoredReader::new(input)),
            keys,
        )?),
        Layer::Pgp => open_pgp(Opaque(input), keys)?,
        _ => Box::new(input),
    };
    let mut plain = BufReader::with_capacity(READ_BUF, plain);
    let tar: Box<dyn Read + Send> = match peek(&mut plain)? {
        Layer::Zstd => Box::new(zstd::Decoder::with_buffer(plain).map_err(OpenError::Io)?),
        Layer::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(plain)),
        _ => Box::new(plain),
    };
    Ok(Box::new(Prefetch::start(tar)))
}

/// Decryption and decompression on a thread of their own, ahead of the reader (tar parsing
/// and writing files), as `zstd -dc | tar -x` runs two processes: two cores instead of one.
/// Memory: [`PREFETCH`] buffers of [`READ_BUF`].
struct Prefetch {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

/// Buffers decoded ahead of the reader.
const PREFETCH: usize = 4;

impl Prefetch {
    fn start(mut inner: Box<dyn Read + Send>) -> Prefetch {
        let (tx, rx) = mpsc::sync_channel(PREFETCH);
        let spawned = std::thread::Builder::new()
            .name("dunnage-decode".into())
            .spawn(move || {
                loop {
                    let mut buf = vec![0; READ_BUF];
                    let item = fill(&mut inner, &mut buf).map(|n| {
                        buf.truncate(n);
                        buf
                    });
                    let last = !matches!(&item, Ok(b) if !b.is_empty());
                    // An empty buffer is the end marker; a reader that went away stops us.
                    if tx.send(item).is_err() || last {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            let (tx, rx) = mpsc::sync_channel(1);
            let _ = tx.send(Err(e));
            return Prefetch {
                rx,
                current: Vec::new(),
                pos: 0,
                ended: false,
            };
        }
        Prefetch {
            rx,
            current: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

/// Reads until `buf` is full or the input ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Read for Prefetch {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) if buf.is_empty() => self.ended = true,
                Ok(Ok(buf)) => {
                    self.current = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("the decoding thread stopped")),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn open_age<R: BufRead + Send + 'static>(
    input: R,
    keys: &Keys,
) -> Result<impl Read + Send + 'static, OpenError> {
    let decryptor = age::Decryptor::new_buffered(input)
        .map_err(|e| OpenError::Damaged(format!("not a readable age file: {e}")))?;
    let mut identities: Vec<Box<dyn age::Identity>> = Vec::new();
    if decryptor.is_scrypt() {
        let Some(passphrase) = &keys.age_passphrase else {
            return Err(OpenError::NoKey(
                "the backup is encrypted with an age passphrase; set AGE_PASSPHRASE".into(),
            ));
        };
        let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.clone()));
        identity.set_max_work_factor(22);
        identities.push(Box::new(identity));
    } else {
        let Some(text) = &keys.age_identities else {
            return Err(OpenError::NoKey(
                "the backup is encrypted to age public keys; set AGE_IDENTITIES (or \
                 AGE_IDENTITIES_FILE) to a matching identity file or SSH private key"
                    .into(),
            ));
        };
        identities =
            age_identities(text).map_err(|e| OpenError::NoKey(format!("AGE_IDENTITIES: {e}")))?;
    }
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref()))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                OpenError::WrongKey(format!(
                    "the configured age key does not open this backup: {e}"
                ))
            }
            e => OpenError::Damaged(format!("the age header is not valid: {e}")),
        })
}

fn open_pgp<R: BufRead + fmt::Debug + Send + 'static>(
    input: R,
    keys: &Keys,
) -> Result<Box<dyn Read + Send>, OpenError> {
    let (message, _) = Message::from_reader(input)
        .map_err(|e| OpenError::Damaged(format!("not a readable OpenPGP message: {e}")))?;
    let secret_keys = match &keys.gpg_secret_keys {
        Some(text) => gpg_secret_keys(text)
            .map_err(|e| OpenError::NoKey(format!("GPG_SECRET_KEY_RING: {e}")))?,
        None => Vec::new(),
    };
    if keys.gpg_passphrase.is_none() && secret_keys.is_empty() {
        return Err(OpenError::NoKey(
            "the backup is encrypted with OpenPGP; set GPG_PASSPHRASE or GPG_SECRET_KEY_RING"
                .into(),
        ));
    }
    let message_password = keys.gpg_passphrase.as_deref().map(Password::from);
    let key_password = Password::from(keys.gpg_key_passphrase.as_deref().unwrap_or(""));
    let ring = TheRing {
        secret_keys: secret_keys.iter().collect(),
        key_passwords: vec![&key_password],
        message_password: message_password.iter().collect(),
        decrypt_options: pgp::composed::DecryptionOptions::new()
            .set_seipdv1_read_mode(pgp::types::Seipdv1ReadMode::Streaming),
        ..Default::default()
    };
    let (message, _) = message.decrypt_the_ring(ring, true).map_err(|e| {
        OpenError::WrongKey(format!(
            "the configured OpenPGP key or passphrase does not open this backup: {e}"
        ))
    })?;
    let message = message
        .decompress()
        .map_err(|e| OpenError::Damaged(format!("the OpenPGP message does not decompress: {e}")))?;
    Ok(Box::new(PgpReader(message)))
}

/// A reader rPGP accepts (it wants `Debug`).
struct Opaque<R>(R);

impl<R> fmt::Debug for Opaque<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stored backup")
    }
}

impl<R: Read> Read for Opaque<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: BufRead> BufRead for Opaque<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.0.consume(n)
    }
}

/// rPGP's message as a plain `Read` (it owns its input).
struct PgpReader(Message<'static>);

impl Read for PgpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Reads every entry of the tar stream `tar` to its end (and the stream after the last
/// entry, so the decompressor and the decryption check their final frames), counting.
pub fn walk(tar: impl Read) -> io::Result<TarCounts> {
    let mut counted = Counted {
        inner: tar,
        bytes: 0,
    };
    let mut counts = TarCounts::default();
    {
        let mut archive = tar::Archive::new(&mut counted);
        let mut buf = vec![0; READ_BUF];
        for entry in archive.entries()? {
            let mut entry = entry?;
            counts.entries += 1;
            if entry.header().entry_type().is_file() {
                counts.files += 1;
                loop {
                    match entry.read(&mut buf)? {
                        0 => break,
                        n => counts.file_bytes += n as u64,
                    }
                }
            }
        }
    }
    io::copy(&mut counted, &mut io::sink())?;
    counts.bytes = counted.bytes;
    Ok(counts)
}

struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Codec, Encryption, write_archive};
    use crate::progress::Progress;
    use age::secrecy::ExposeSecret;
    use std::sync::Arc;

    /// A small tree archived with `codec` and `encryption`: the stored bytes and the counts.
    fn stored(codec: Codec, encryption: &Encryption) -> (Vec<u8>, TarCounts) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.bin"), vec![7u8; 300_000]).unwrap();
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        let (out, stats) = write_archive(
            &[dir.path().to_path_buf()],
            None,
            codec,
            encryption,
            Vec::new(),
            Arc::new(Progress::default()),
        )
        .unwrap();
        let counts = TarCounts {
            entries: stats.entries,
            files: stats.files,
            file_bytes: stats.file_bytes,
            bytes: stats.tar_bytes,
        };
        (out, counts)
    }

    fn read_back(bytes: Vec<u8>, keys: &Keys) -> Result<TarCounts, OpenError> {
        let tar = open(io::Cursor::new(bytes), keys)?;
        walk(tar).map_err(OpenError::Io)
    }

    #[test]
    fn every_codec_and_method_reads_back_to_the_counts_written() {
        let identity = age::x25519::Identity::generate();
        let gzip = Codec::Gzip {
            level: 6,
            threads: 1,
        };
        let zstd = Codec::Zstd {
            level: 3,
            threads: 1,
        };
        let cases = [
            (Codec::None, Encryption::None, Keys::default()),
            (gzip, Encryption::None, Keys::default()),
            (
                zstd,
                Encryption::AgeRecipients(vec![identity.to_public().to_string()]),
                Keys {
                    age_identities: Some(identity.to_string().expose_secret().to_owned()),
                    ..Keys::default()
                },
            ),
            (
                gzip,
                Encryption::GpgPassphrase("pw".into()),
                Keys {
                    gpg_passphrase: Some("pw".into()),
                    ..Keys::default()
                },
            ),
        ];
        for (codec, encryption, keys) in cases {
            let (bytes, written) = stored(codec, &encryption);
            let read = read_back(bytes, &keys).unwrap_or_else(|e| panic!("{encryption:?}: {e}"));
            assert_eq!(read, written, "{codec} {encryption:?}");
            assert_eq!(read.entries, 4);
            assert_eq!(read.file_bytes, 300_001);
        }
    }

    #[test]
    fn missing_or_wrong_keys_and_cut_archives_are_told_apart() {
        let identity = age::x25519::Identity::generate();
        let enc = Encryption::AgeRecipients(vec![identity.to_public().to_string()]);
        let (bytes, _) = stored(
            Codec::Zstd {
                level: 3,
                threads: 1,
            },
            &enc,
        );
        let no_key = read_back(bytes.clone(), &Keys::default()).err().unwrap();
        assert!(
            matches!(&no_key, OpenError::NoKey(m) if m.contains("AGE_IDENTITIES")),
            "{no_key}"
        );
        let other = age::x25519::Identity::generate();
        let wrong = Keys {
            age_identities: Some(other.to_string().expose_secret().to_owned()),
            ..Keys::default()
        };
        assert!(matches!(
            read_back(bytes.clone(), &wrong),
            Err(OpenError::WrongKey(_))
        ));
        let right = Keys {
            age_identities: Some(identity.to_string().expose_secret().to_owned()),
            ..Keys::default()
        };
        // Cut short: age refuses the missing final chunk.
        let cut = bytes[..bytes.len() - 100].to_vec();
        assert!(matches!(read_back(cut, &right), Err(OpenError::Io(_))));
        // A plain zstd archive cut short: the frame is incomplete.
        let (plain, _) = stored(
            Codec::Zstd {
                level: 3,
                threads: 1,
            },
            &Encryption::None,
        );
        let cut = plain[..plain.len() / 2].to_vec();
        assert!(read_back(cut, &Keys::default()).is_err());
        // OpenPGP without any key says what to set.
        let (pgp, _) = stored(Codec::None, &Encryption::GpgPassphrase("pw".into()));
        let e = read_back(pgp, &Keys::default()).err().unwrap();
        assert!(
            matches!(&e, OpenError::NoKey(m) if m.contains("GPG_PASSPHRASE")),
            "{e}"
        );
    }

    #[test]
    fn key_files_are_checked() {
        assert!(age_identities("AGE-SECRET-KEY-1NOTAKEY").is_err());
        assert!(age_identities("# only a comment\n").is_err());
        let id = age::x25519::Identity::generate();
        assert_eq!(
            age_identities(id.to_string().expose_secret())
                .unwrap()
                .len(),
            1
        );
        assert!(
            gpg_secret_keys(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n"
            )
            .is_err()
        );
        assert!(
            !format!(
                "{:?}",
                Keys {
                    gpg_passphrase: Some("hunter2".into()),
                    ..Keys::default()
                }
            )
            .contains("hunter2")
        );
    }
}
