//! Archive stage: walk the sources -> tar stream -> compression, written to any [`Write`].
//!
//! This is synchronous code meant for a blocking thread; `run` connects its output to the
//! destinations through [`crate::stream`]. Memory is fixed: one read buffer, one write
//! buffer, and the compressor's own working set (which depends on level and threads, never
//! on the data size).

mod compress;
mod encrypt;
pub mod extract;
mod openpgp;
pub mod read;
mod tarball;

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use compress::Codec;
use compress::Compressor;
use encrypt::Encryptor;
pub use encrypt::{Encryption, age_recipient};
pub use openpgp::recipient_fingerprints;
use regex::bytes::Regex;
use tarball::TarWalker;

use crate::progress::Progress;

/// Buffer between the tar records and the compressor, so 512-byte headers reach it in
/// batches. File bodies larger than this pass through without a copy.
const WRITE_BUF: usize = 256 << 10;

/// What one archive contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Records written (files, folders, links, special files).
    pub entries: u64,
    /// Regular files whose content was stored.
    pub files: u64,
    /// Bytes of file content read.
    pub file_bytes: u64,
    /// Bytes of the tar stream (before compression).
    pub tar_bytes: u64,
    /// Files that vanished or changed while being read, one message each.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("the source folder {} does not exist", .0.display())]
    SourceMissing(PathBuf),
    #[error("writing the archive stream failed: {0}")]
    Output(io::Error),
}

/// Writes a complete archive of `sources` to `out`, returning `out` and what was stored.
///
/// On error nothing more is written and `out` is dropped unfinished: callers must treat what
/// reached it as garbage (the [`crate::stream::ChunkWriter`] does this by itself).
pub fn write_archive<W: Write + Send + 'static>(
    sources: &[PathBuf],
    exclude: Option<&Regex>,
    codec: Codec,
    encryption: &Encryption,
    out: W,
    progress: Arc<Progress>,
) -> Result<(W, ArchiveStats), ArchiveError> {
    for source in sources {
        if !source.exists() {
            return Err(ArchiveError::SourceMissing(source.clone()));
        }
    }
    let encryptor = Encryptor::new(encryption, out).map_err(ArchiveError::Output)?;
    let mut compressor = Compressor::new(codec, encryptor).map_err(ArchiveError::Output)?;
    match write_tar(sources, exclude, &mut compressor, progress) {
        Ok(stats) => {
            // Compressor, then encryptor: only when both finished is the archive whole.
            let encryptor = compressor.finish().map_err(ArchiveError::Output)?;
            let out = encryptor.finish().map_err(ArchiveError::Output)?;
            Ok((out, stats))
        }
        Err(e) => {
            compressor.abort();
            Err(e)
        }
    }
}

fn write_tar<W: Write>(
    sources: &[PathBuf],
    exclude: Option<&Regex>,
    out: W,
    progress: Arc<Progress>,
) -> Result<ArchiveStats, ArchiveError> {
    let counted = Counting {
        inner: out,
        bytes: 0,
    };
    let mut walker = TarWalker::new(
        BufWriter::with_capacity(WRITE_BUF, counted),
        exclude,
        progress,
    );
    for source in sources {
        walker.add_tree(Path::new(source))?;
    }
    let (buffered, mut stats) = walker.finish()?;
    let counted = buffered
        .into_inner()
        .map_err(|e| ArchiveError::Output(e.into_error()))?;
    stats.tar_bytes = counted.bytes;
    Ok(stats)
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
