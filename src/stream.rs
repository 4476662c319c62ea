//! The byte stream that connects the archive stage to the destinations.
//!
//! The archive stage is synchronous code (file reads, tar, compression) running on a blocking
//! thread; destinations are async. [`ChunkWriter`] is the bridge: an [`std::io::Write`] that
//! cuts the output into chunks of a fixed size and sends them through a bounded channel. The
//! memory held between the stages is therefore at most `chunk_size * (capacity + 2)`, whatever
//! the archive size: a slow destination makes the archive stage wait, it never makes it buffer.

use std::io::{self, Write};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use std::future::Future as _;

use futures_util::Stream;
use tokio::sync::mpsc;

/// The archive as a stream of chunks. An `Err` item means the producer failed: the consumer
/// must discard what it received instead of publishing it.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Size of one chunk handed to destinations.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Chunks that may wait in the channel.
pub const CHANNEL_CHUNKS: usize = 4;

/// Creates a connected writer (for a blocking thread) and stream (for an async consumer).
pub fn channel() -> (ChunkWriter, ByteStream) {
    channel_with(CHUNK_SIZE, CHANNEL_CHUNKS)
}

pub fn channel_with(chunk_size: usize, capacity: usize) -> (ChunkWriter, ByteStream) {
    let (tx, rx) = mpsc::channel(capacity);
    let writer = ChunkWriter {
        buf: BytesMut::with_capacity(chunk_size),
        chunk_size,
        tx,
        finished: false,
    };
    (
        writer,
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

/// The sending side of [`channel`]. Must be used from a blocking thread, never from async code.
///
/// Only [`ChunkWriter::finish`] ends the stream normally. A writer dropped without it (the
/// producer failed, returned early or panicked) ends the stream with an error, so no
/// destination can mistake a truncated archive for a complete one.
pub struct ChunkWriter {
    buf: BytesMut,
    chunk_size: usize,
    tx: mpsc::Sender<io::Result<Bytes>>,
    finished: bool,
}

impl ChunkWriter {
    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        self.tx.blocking_send(item).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the destination stopped reading the archive",
            )
        })
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(self.chunk_size);
        self.send(Ok(chunk))
    }

    /// Sends what is buffered and closes the stream normally.
    pub fn finish(mut self) -> io::Result<()> {
        self.finished = true;
        self.send_buffered()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        if !self.finished {
            // If the consumer is gone it has failed already; nothing more to tell it.
            let _ = self.send(Err(io::Error::other(
                "the archive stream ended before the archive was complete",
            )));
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk_size {
            self.send_buffered()?;
        }
        Ok(n)
    }

    /// Chunks are sent when full or at [`ChunkWriter::finish`]; an early flush would only
    /// make chunks smaller.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `stream` at most `bytes_per_second` on average (a chunk may go at once; the next waits
/// until the total is back under the rate). Every destination of a fan-out gets the same
/// pace, so this caps each upload.
pub fn throttle(stream: ByteStream, bytes_per_second: u64) -> ByteStream {
    Box::pin(Throttled {
        inner: stream,
        rate: bytes_per_second.max(1) as f64,
        started: None,
        sent: 0,
        wait: None,
        pending: None,
    })
}

struct Throttled {
    inner: ByteStream,
    rate: f64,
    started: Option<tokio::time::Instant>,
    sent: u64,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    pending: Option<io::Result<Bytes>>,
}

impl Stream for Throttled {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if let Some(wait) = self.wait.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
            return Poll::Ready(self.pending.take());
        }
        let item = match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => item,
            other => return other,
        };
        let started = *self.started.get_or_insert_with(tokio::time::Instant::now);
        let Ok(chunk) = &item else {
            return Poll::Ready(Some(item));
        };
        // When the bytes before this chunk were due: wait until then.
        let due = started + std::time::Duration::from_secs_f64(self.sent as f64 / self.rate);
        self.sent += chunk.len() as u64;
        if due <= tokio::time::Instant::now() {
            return Poll::Ready(Some(item));
        }
        let mut wait = Box::pin(tokio::time::sleep_until(due));
        if wait.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(item));
        }
        self.wait = Some(wait);
        self.pending = Some(item);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_arrive_in_order_and_full_sized() {
        let (mut w, mut s) = channel_with(4, 1);
        let producer = tokio::task::spawn_blocking(move || {
            w.write_all(b"abcdefghij")?;
            w.finish()
        });
        let mut got = Vec::new();
        while let Some(chunk) = s.next().await {
            got.push(chunk.unwrap());
        }
        producer.await.unwrap().unwrap();
        assert_eq!(got, [&b"abcd"[..], b"efgh", b"ij"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unfinished_writer_ends_the_stream_with_an_error() {
        for panics in [false, true] {
            let (mut w, mut s) = channel_with(4, 1);
            let producer = tokio::task::spawn_blocking(move || {
                w.write_all(b"abcdef").unwrap();
                if panics {
                    panic!("producer bug");
                }
            });
            assert_eq!(s.next().await.unwrap().unwrap(), &b"abcd"[..]);
            let err = s.next().await.unwrap().unwrap_err();
            assert!(err.to_string().contains("before the archive was complete"));
            assert!(s.next().await.is_none());
            assert_eq!(producer.await.is_err(), panics);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gone_consumer_stops_the_producer() {
        let (mut w, s) = channel_with(4, 1);
        drop(s);
        let err = tokio::task::spawn_blocking(move || w.write_all(&[0; 64]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
