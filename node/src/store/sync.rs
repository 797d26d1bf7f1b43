//! When a commit reaches the disk: `[store] sync` in node.toml.
//!
//! - [`SyncMode::Always`] (the default): redb's own file backend, which calls `fdatasync`
//!   in every commit before the commit returns. What the node acknowledged survives a
//!   power cut or an OS crash.
//! - [`SyncMode::Interval`]: [`IntervalSync`] passes every write through before the commit
//!   returns, so what the node acknowledged is in the kernel's page cache and survives
//!   `kill -9` and a restart of the node. The file is synced by a thread of its own every
//!   interval, and once more when the store closes. A power cut or an OS crash loses up to
//!   one interval of acknowledged messages. It may also leave a file that fails the check
//!   at the next start, because redb reuses pages it believes are on disk. This is the
//!   trade NATS JetStream's `sync_interval` and Kafka's `log.flush.interval.ms` make.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use redb::StorageBackend;
use redb::backends::FileBackend;

/// How the store makes its commits durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` in every commit.
    #[default]
    Always,
    /// Writes reach the OS in every commit; the file is synced this often.
    Interval(Duration),
}

/// A file backend whose `sync_data` only notes that the file needs a sync; a thread of its
/// own syncs it every interval (and when the backend is dropped).
#[derive(Debug)]
pub(super) struct IntervalSync {
    file: FileBackend,
    shared: Arc<Shared>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    /// A second handle on the same file: `fdatasync` on it flushes what either wrote.
    file: File,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Written to since the last sync began.
    dirty: bool,
    stop: bool,
    /// A sync failed: what was written since the sync before may not be on disk. Every
    /// later commit fails with it, so the store reopens the file (as after any I/O error).
    failed: Option<(io::ErrorKind, String)>,
    /// Syncs done, for tests.
    synced: u64,
}

impl IntervalSync {
    /// Lock `file` (as redb's own backend does) and start the syncer thread.
    pub(super) fn new(file: File, every: Duration) -> Result<Self, redb::DatabaseError> {
        let second = file.try_clone().map_err(redb::StorageError::Io)?;
        let file = FileBackend::new(file)?;
        let shared = Arc::new(Shared {
            file: second,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let for_thread = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("bluewire-store-sync".into())
            .spawn(move || syncer(&for_thread, every))
            .map_err(redb::StorageError::Io)?;
        Ok(Self {
            file,
            shared,
            syncer: Some(syncer),
        })
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every `every`, sync the file if it was written to; once more when told to stop.
fn syncer(shared: &Shared, every: Duration) {
    let mut st = lock(&shared.state);
    loop {
        st = shared
            .wake
            .wait_timeout_while(st, every, |s| !s.stop)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        let stop = st.stop;
        if st.dirty && st.failed.is_none() {
            st.dirty = false;
            drop(st);
            let result = shared.file.sync_data();
            st = lock(&shared.state);
            match result {
                Ok(()) => st.synced += 1,
                Err(e) => {
                    tracing::error!(error = %e, "store: syncing the file to disk failed; the next commit fails and the store reopens the file");
                    st.failed = Some((e.kind(), e.to_string()));
                }
            }
        }
        if stop {
            return;
        }
    }
}

impl StorageBackend for IntervalSync {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    /// What redb wrote is already in the page cache: note that the file needs a sync, or
    /// fail if an earlier background sync did.
    fn sync_data(&self, _eventual: bool) -> Result<(), io::Error> {
        let mut st = lock(&self.shared.state);
        if let Some((kind, why)) = &st.failed {
            return Err(io::Error::new(
                *kind,
                format!(
                    "an earlier background sync of the store file failed ({why}): what was \
                     written since the sync before may not be on disk"
                ),
            ));
        }
        st.dirty = true;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write(offset, data)
    }
}

impl Drop for IntervalSync {
    /// Stop the syncer, which syncs what is left first.
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.syncer.take()
            && t.join().is_err()
        {
            tracing::error!("store: the sync thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dir: &std::path::Path, every: Duration) -> IntervalSync {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("f"))
            .unwrap();
        IntervalSync::new(file, every).unwrap()
    }

    fn synced(b: &IntervalSync) -> u64 {
        lock(&b.shared.state).synced
    }

    #[test]
    fn a_commit_returns_without_syncing_and_the_thread_syncs_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(dir.path(), Duration::from_millis(20));
        b.set_len(4096).unwrap();
        b.write(0, b"written").unwrap();
        // Nothing was written since the start: the thread has nothing to sync.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(synced(&b), 0, "a sync with nothing written");
        b.sync_data(false).unwrap();
        assert!(
            lock(&b.shared.state).dirty,
            "sync_data only notes the write"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while synced(&b) == 0 {
            assert!(std::time::Instant::now() < deadline, "never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!lock(&b.shared.state).dirty);
        assert_eq!(&b.read(0, 7).unwrap(), b"written");
        // One sync per interval with writes, not one per interval.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(synced(&b), 1);
    }

    #[test]
    fn dropping_the_backend_syncs_what_is_left_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // An interval no test waits for: only the drop can sync.
        let b = backend(dir.path(), Duration::from_secs(3600));
        let shared = b.shared.clone();
        b.set_len(4096).unwrap();
        b.write(0, b"last").unwrap();
        b.sync_data(false).unwrap();
        let t = std::time::Instant::now();
        drop(b);
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the drop waited an interval"
        );
        let st = lock(&shared.state);
        assert_eq!((st.synced, st.dirty), (1, false));
    }

    #[test]
    fn after_a_failed_sync_every_commit_fails_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(dir.path(), Duration::from_secs(3600));
        lock(&b.shared.state).failed = Some((io::ErrorKind::Other, "EIO".into()));
        for _ in 0..2 {
            let e = b.sync_data(false).unwrap_err();
            assert!(e.to_string().contains("EIO"), "{e}");
            assert!(e.to_string().contains("may not be on disk"), "{e}");
        }
        assert!(!lock(&b.shared.state).dirty);
    }
}
