//! The manifest stored next to every backup (`NAME.sha256`), written once the archive (or
//! every part of it) is stored.
//!
//! It is a `sha256sum` checksum file, so `sha256sum -c NAME.sha256` in the folder holding
//! the backup checks the stored bytes without dunnage; GNU `sha256sum` skips the `#` lines,
//! which carry the rest as one line of JSON: size, the tar's entry and byte counts,
//! compression, encryption method and recipients (public keys and fingerprints only, never
//! a secret), the dunnage version, the sources and the parts.

use serde::{Deserialize, Serialize};

/// How thoroughly `verify` checks a backup: the listing's sizes against the manifest,
/// the stored bytes' SHA-256, or reading every entry of the decrypted archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Size,
    Hash,
    Read,
}

impl Level {
    pub fn parse(raw: &str) -> Option<Level> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "size" => Some(Level::Size),
            "hash" => Some(Level::Hash),
            "read" => Some(Level::Read),
            _ => None,
        }
    }
}

/// The manifest format written by this version.
pub const FORMAT: u32 = 1;

const JSON_LINE: &str = "# manifest: ";

/// One stored object: the archive itself, or one part of a split archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What the tar stream inside holds (before compression and encryption).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarCounts {
    /// Records: files, folders, links, special files.
    pub entries: u64,
    /// Regular files with content.
    pub files: u64,
    /// Bytes of file content.
    pub file_bytes: u64,
    /// Bytes of the whole tar stream.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The backup's name (the archive's, without a part number).
    pub name: String,
    /// When the run started (RFC 3339).
    pub created: String,
    pub dunnage: String,
    pub schedule: String,
    pub sources: Vec<String>,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// `none`, `age-passphrase`, `age-recipients`, `gpg-passphrase` or `gpg-keyring`.
    pub encryption: String,
    /// Public keys (age) or key fingerprints (OpenPGP) it is encrypted to.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The stored bytes: all parts together.
    pub size: u64,
    /// SHA-256 of the stored bytes, all parts together.
    pub sha256: String,
    /// The stored objects in order: one (named as the backup) unless split.
    pub parts: Vec<Part>,
    pub tar: TarCounts,
}

/// Lower-case hex, as `sha256sum` writes digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
#[error("not a dunnage manifest: {0}")]
pub struct ManifestError(String);

impl Manifest {
    /// The file's text: a comment, the JSON line, then one `sha256sum` line per object.
    pub fn render(&self) -> String {
        let mut text = format!(
            "# dunnage backup manifest. Check the stored bytes with: sha256sum -c {}.sha256\n\
             {JSON_LINE}{}\n",
            self.name,
            serde_json::to_string(self).expect("plain data serialises")
        );
        for part in &self.parts {
            text.push_str(&format!("{}  {}\n", part.sha256, part.name));
        }
        text
    }

    /// Reads a manifest written by [`Manifest::render`] (any later format is refused).
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let json = text
            .lines()
            .find_map(|l| l.strip_prefix(JSON_LINE))
            .ok_or_else(|| ManifestError("it has no manifest line".into()))?;
        let manifest: Manifest =
            serde_json::from_str(json).map_err(|e| ManifestError(e.to_string()))?;
        if manifest.format > FORMAT {
            return Err(ManifestError(format!(
                "format {} is newer than this dunnage reads ({FORMAT}); upgrade dunnage",
                manifest.format
            )));
        }
        if manifest.parts.is_empty()
            || manifest.parts.iter().map(|p| p.size).sum::<u64>() != manifest.size
        {
            return Err(ManifestError("its parts do not add up to its size".into()));
        }
        Ok(manifest)
    }

    /// Whether the archive is stored as numbered parts.
    pub fn is_split(&self) -> bool {
        self.parts.len() > 1 || self.parts.first().is_some_and(|p| p.name != self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "backup-1.tar.zst".into(),
            created: "2026-12-01T03:00:00+00:00".into(),
            dunnage: "0.1.0".into(),
            schedule: "default".into(),
            sources: vec!["/backup".into()],
            compression: "zstd".into(),
            encryption: "none".into(),
            recipients: vec![],
            size: 30,
            sha256: "ab".repeat(32),
            parts: vec![
                Part {
                    name: "backup-1.tar.zst.001".into(),
                    size: 20,
                    sha256: "01".repeat(32),
                },
                Part {
                    name: "backup-1.tar.zst.002".into(),
                    size: 10,
                    sha256: "02".repeat(32),
                },
            ],
            tar: TarCounts {
                entries: 3,
                files: 2,
                file_bytes: 10,
                bytes: 3072,
            },
        }
    }

    #[test]
    fn it_reads_back_what_it_writes_and_lists_each_part_for_sha256sum() {
        let m = sample();
        let text = m.render();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert!(m.is_split());
        let sums: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            sums,
            [
                format!("{}  backup-1.tar.zst.001", "01".repeat(32)),
                format!("{}  backup-1.tar.zst.002", "02".repeat(32))
            ]
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        assert!(Manifest::parse("abc  x.tar\n").is_err());
        let mut newer = sample();
        newer.format = FORMAT + 1;
        let e = Manifest::parse(&newer.render()).unwrap_err().to_string();
        assert!(e.contains("upgrade"), "{e}");
        let mut short = sample();
        short.size = 31;
        assert!(Manifest::parse(&short.render()).is_err());
    }
}
