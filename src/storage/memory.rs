//! Test seams: an in-memory destination that keeps the [`Storage`] contract (what every
//! backend must behave like), and a decorator that makes any destination fail or slow.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::staged::Staged;
use super::{Backend, Entry, ErrorKind, Storage, StorageError, Stored, partial};
use crate::stream::ByteStream;

type Objects = Arc<Mutex<BTreeMap<String, (Bytes, jiff::Timestamp)>>>;

/// A folder in memory. Unfinished uploads are visible under their partial name until they
/// are committed or removed, as on a real server.
#[derive(Default, Clone)]
pub struct MemoryStorage {
    objects: Objects,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every name in the folder, unfinished uploads included.
    pub fn names(&self) -> Vec<String> {
        self.objects.lock().expect("lock").keys().cloned().collect()
    }

    /// Stores `name` as if it had been written at `modified` (for stale partials, retention).
    pub fn insert(&self, name: &str, data: &[u8], modified: jiff::Timestamp) {
        self.objects
            .lock()
            .expect("lock")
            .insert(name.to_owned(), (Bytes::copy_from_slice(data), modified));
    }

    fn not_found(name: &str) -> StorageError {
        StorageError::new(
            ErrorKind::NotFound,
            format!("reading {name}"),
            "no such object",
        )
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn backend(&self) -> Backend {
        Backend::Local
    }

    async fn put(&self, name: &str, mut data: ByteStream) -> Result<Stored, StorageError> {
        let location = format!("memory:{name}");
        if self.objects.lock().expect("lock").contains_key(name) {
            return Err(StorageError::exists(&location));
        }
        let entries: Vec<Entry> = self.entries();
        partial::remove_stale(self, &entries).await;
        let temp = partial::name(name);
        let staged = {
            let (objects, temp) = (self.objects.clone(), temp.clone());
            Staged::new(format!("the unfinished {temp} in memory"), async move {
                objects.lock().expect("lock").remove(&temp);
                Ok(())
            })
        };
        let mut buffer = BytesMut::new();
        while let Some(item) = data.next().await {
            match item {
                Ok(chunk) => {
                    buffer.extend_from_slice(&chunk);
                    self.insert(&temp, &buffer, jiff::Timestamp::now());
                }
                Err(e) => {
                    staged.discard().await;
                    return Err(StorageError::incomplete(e));
                }
            }
        }
        let bytes = buffer.len() as u64;
        let committed = {
            let mut objects = self.objects.lock().expect("lock");
            let free = !objects.contains_key(name);
            if free {
                objects.remove(&temp);
                objects.insert(name.to_owned(), (buffer.freeze(), jiff::Timestamp::now()));
            }
            free
        };
        if !committed {
            staged.discard().await;
            return Err(StorageError::exists(&location));
        }
        staged.keep();
        Ok(Stored { location, bytes })
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        let mut entries = self.entries();
        entries.retain(|e| !partial::is_partial(&e.name));
        Ok(entries)
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        match self.objects.lock().expect("lock").remove(name) {
            Some(_) => Ok(()),
            None => Err(Self::not_found(name)),
        }
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        let data = self
            .objects
            .lock()
            .expect("lock")
            .get(name)
            .map(|(data, _)| data.clone())
            .ok_or_else(|| Self::not_found(name))?;
        Ok(Box::pin(futures_util::stream::iter([Ok(data)])))
    }
}

impl MemoryStorage {
    fn entries(&self) -> Vec<Entry> {
        self.objects
            .lock()
            .expect("lock")
            .iter()
            .map(|(name, (data, modified))| Entry {
                name: name.clone(),
                size: data.len() as u64,
                modified: *modified,
            })
            .collect()
    }
}

/// Wraps a destination: the next `failures` requests fail as transient (connection
/// refused) before reaching it, and every request waits `delay` first.
pub struct Faulty<S> {
    pub inner: S,
    failures: AtomicUsize,
    delay: Duration,
}

impl<S: Storage> Faulty<S> {
    pub fn new(inner: S, failures: usize, delay: Duration) -> Self {
        Self {
            inner,
            failures: AtomicUsize::new(failures),
            delay,
        }
    }

    async fn gate(&self, what: &str) -> Result<(), StorageError> {
        tokio::time::sleep(self.delay).await;
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StorageError::io(
                what,
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Storage> Storage for Faulty<S> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn put(&self, name: &str, data: ByteStream) -> Result<Stored, StorageError> {
        self.gate(&format!("uploading {name}")).await?;
        self.inner.put(name, data).await
    }

    async fn list(&self) -> Result<Vec<Entry>, StorageError> {
        self.gate("listing").await?;
        self.inner.list().await
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.gate(&format!("deleting {name}")).await?;
        self.inner.delete(name).await
    }

    async fn get(&self, name: &str) -> Result<ByteStream, StorageError> {
        self.gate(&format!("reading {name}")).await?;
        self.inner.get(name).await
    }
}
