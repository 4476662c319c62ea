//! Compression stage: gzip (parallel, standard single-member gzip output), zstd (multi-threaded
//! libzstd) or none. Every codec is a [`Write`] in front of the next stage.

use std::fmt;
use std::io::{self, Write};

use gzp::ZWriter;
use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};

/// gzip block handed to one worker. Blocks are compressed independently (no shared
/// dictionary), so larger blocks cost less ratio; 1 MiB loses well under 1% against pigz.
const GZIP_BLOCK: usize = 1 << 20;

/// Input per zstd worker job. libzstd's default (4x the window, 8 MiB at level 3) keeps about
/// four jobs of input and output buffers alive, ~110 MiB with two workers; 4 MiB jobs halve
/// that at the same speed and an archive 0.07% larger (measured on the benchmark dataset).
const ZSTD_JOB: u32 = 4 << 20;

/// How the tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip { level: u32, threads: u32 },
    Zstd { level: u32, threads: u32 },
}

impl Codec {
    /// Peak memory one gzip worker adds, rounded up (measured on the benchmark's database
    /// file: 21 MiB with 1 worker, 55 MiB with 8).
    pub fn gzip_worker_memory() -> u64 {
        6 << 20
    }

    /// Peak memory one zstd worker adds at `level`, rounded up. Measured on the benchmark's
    /// database file, 1 worker against 4 or 8: level 3 8 MiB each, 9 17 MiB, 15 74 MiB,
    /// 19 about 100 MiB (the window and the match finder's tables grow with the level).
    pub fn zstd_worker_memory(level: u32) -> u64 {
        const MIB: u64 = 1 << 20;
        match level {
            0..=3 => 10 * MIB,
            4..=9 => 20 * MIB,
            10..=15 => 80 * MIB,
            _ => 112 * MIB,
        }
    }

    /// The format's name in manifests.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip { .. } => "gzip",
            Codec::Zstd { .. } => "zstd",
        }
    }

    /// The archive's extension, as `{{ .Extension }}` renders it.
    pub fn extension(&self) -> &'static str {
        match self {
            Codec::None => "tar",
            Codec::Gzip { .. } => "tar.gz",
            Codec::Zstd { .. } => "tar.zst",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::None => f.write_str("none"),
            Codec::Gzip { level, threads } => write!(f, "gz level {level}, {threads} threads"),
            Codec::Zstd { level, threads } => write!(f, "zst level {level}, {threads} threads"),
        }
    }
}

/// A running compressor writing into `W`.
pub(crate) enum Compressor<W: Write + Send + 'static> {
    None(W),
    /// `broken` is set once a write failed: gzp has then shut its threads down itself, and
    /// calling `finish` on it again would panic.
    Gzip {
        gz: ParCompress<'static, Gzip, W>,
        broken: bool,
    },
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write + Send + 'static> Compressor<W> {
    pub(crate) fn new(codec: Codec, out: W) -> io::Result<Self> {
        Ok(match codec {
            Codec::None => Compressor::None(out),
            Codec::Gzip { level, threads } => {
                let gz = ParCompressBuilder::<Gzip>::new()
                    .num_threads(threads.max(1) as usize)
                    .and_then(|b| b.buffer_size(GZIP_BLOCK))
                    .map_err(io::Error::other)?
                    .compression_level(flate2::Compression::new(level))
                    .from_writer(out);
                Compressor::Gzip { gz, broken: false }
            }
            Codec::Zstd { level, threads } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level as i32)?;
                if threads > 1 {
                    enc.multithread(threads)?;
                    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
                }
                // Lets `zstd -l` and decoders see the frame is whole when it is.
                enc.include_checksum(true)?;
                Compressor::Zstd(enc)
            }
        })
    }

    /// Writes the trailer and returns the next stage.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip { broken: true, .. } => Err(io::Error::other(
                "the gzip stage failed earlier; the archive is incomplete",
            )),
            Compressor::Gzip { mut gz, .. } => gz.finish().map_err(gzp_error),
            Compressor::Zstd(enc) => enc.finish(),
        }
    }

    /// Stops the compressor after a failure; whatever it still had is discarded.
    pub(crate) fn abort(self) {
        if let Compressor::Gzip { mut gz, broken } = self {
            // A healthy ParCompress panics in Drop when its final flush fails; finishing it
            // here (ignoring the outcome) joins its threads without that panic.
            if !broken {
                let _ = gz.finish();
            }
        }
    }
}

fn gzp_error(e: gzp::GzpError) -> io::Error {
    match e {
        gzp::GzpError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip { gz, broken } => gz.write(buf).inspect_err(|_| *broken = true),
            Compressor::Zstd(enc) => enc.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            // A gzp flush ends a block early and a zstd flush ends a zstd block early: both
            // only make the output worse, and nothing downstream needs it.
            Compressor::Gzip { .. } | Compressor::Zstd(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(codec: Codec, data: &[u8]) -> Vec<u8> {
        let mut c = Compressor::new(codec, Vec::new()).unwrap();
        c.write_all(data).unwrap();
        let packed = c.finish().unwrap();
        let mut out = Vec::new();
        match codec {
            Codec::None => out = packed,
            Codec::Gzip { .. } => {
                flate2::read::MultiGzDecoder::new(&packed[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Codec::Zstd { .. } => out = zstd::decode_all(&packed[..]).unwrap(),
        }
        out
    }

    #[test]
    fn every_codec_round_trips_across_many_blocks() {
        let data: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip {
                level: 1,
                threads: 1,
            },
            Codec::Gzip {
                level: 6,
                threads: 3,
            },
            Codec::Zstd {
                level: 3,
                threads: 1,
            },
            Codec::Zstd {
                level: 3,
                threads: 2,
            },
        ] {
            assert!(roundtrip(codec, &data) == data, "{codec}");
            assert!(roundtrip(codec, b"").is_empty(), "{codec}");
        }
    }

    #[test]
    fn a_failing_writer_is_reported_not_panicked() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = vec![7u8; 3 << 20];
        for codec in [
            Codec::Gzip {
                level: 1,
                threads: 2,
            },
            Codec::Zstd {
                level: 1,
                threads: 2,
            },
        ] {
            // The failure surfaces either in a write or in finish, and abort after a failed
            // write is safe; neither may panic.
            let mut c = Compressor::new(codec, Broken).unwrap();
            if c.write_all(&data).is_ok() {
                assert!(c.finish().is_err(), "{codec}");
            } else {
                c.abort();
            }
            let mut c = Compressor::new(codec, Broken).unwrap();
            let _ = c.write_all(&data);
            assert!(c.finish().is_err(), "{codec}");
        }
    }
}
