//! When a commit reaches the disk: `[store] sync` in node.toml.
//!
//! - [`SyncMode::Always`] (the default): redb's own file backend, which calls `fdatasync`
//!   in every commit before the commit returns. What the node acknowledged survives a
//!   power cut or an OS crash.
//! - [`SyncMode::Interval`]: [`IntervalSync`] passes every write through before the commit
//!   returns, so what the node acknowledged is in the kernel's page cache and survives
//!   `kill -9` and a restart of the node. The file is synced by a thread of its own every
//!   interval, and once more when the store closes. A power cut or an OS crash loses up to
//!   one interval (plus the sync in progress) of acknowledged messages, and may leave a
//!   file that fails the check at the next start, because redb reuses pages it believes are
//!   on disk. This is the trade NATS JetStream's `sync_interval` and Kafka's
//!   `log.flush.interval.ms` make.
//!
//! Two things keep that from passing unnoticed:
//! - A failed sync fails every later commit of the process, reopened file or not (Linux
//!   reports a writeback error once; a page whose write failed may later be read back
//!   stale), and the close is then not recorded as clean, so the next start checks every
//!   page.
//! - While the store is open in this mode, [`BOOT_MARKER`] beside it holds the kernel's
//!   boot id. A start after an unclean stop under another boot id means the machine went
//!   down with the node: the store refuses to start until the operator accepts what may
//!   be missing ([`check_boot`]).
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
    failed: SyncFailure,
}

#[derive(Debug, Default)]
struct State {
    /// Written to since the last sync began.
    dirty: bool,
    stop: bool,
    /// Syncs done, for tests.
    synced: u64,
}

/// The first failed sync of the store file in this process, shared by every backend the
/// store opens on it (a reopen after an I/O error included) and by its clean-close record.
#[derive(Debug, Clone, Default)]
pub(crate) struct SyncFailure(Arc<Mutex<Option<(io::ErrorKind, String)>>>);

impl SyncFailure {
    /// Whether a sync has failed.
    pub(crate) fn happened(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn set(&self, e: &io::Error) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some((e.kind(), e.to_string()));
        }
    }

    /// The error a commit fails with after the failure.
    fn error(&self) -> Option<io::Error> {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.as_ref().map(|(kind, why)| {
            io::Error::new(
                *kind,
                format!(
                    "a background sync of the store file failed ({why}): what was acknowledged \
                     since the sync before may not be on disk, so the store takes no more \
                     writes; restart the node (its start checks every page)"
                ),
            )
        })
    }

    #[cfg(test)]
    pub(crate) fn fail_for_tests(&self) {
        self.set(&io::Error::other("EIO (injected by a test)"));
    }
}

impl IntervalSync {
    /// Lock `file` (as redb's own backend does) and start the syncer thread.
    pub(super) fn new(
        file: File,
        every: Duration,
        failed: SyncFailure,
    ) -> Result<Self, redb::DatabaseError> {
        let second = file.try_clone().map_err(redb::StorageError::Io)?;
        let file = FileBackend::new(file)?;
        let shared = Arc::new(Shared {
            file: second,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            failed,
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

/// Every `every` (on a fixed schedule: a slow sync does not push the next one back), sync
/// the file if it was written to; once more when told to stop. Nothing after a failure.
fn syncer(shared: &Shared, every: Duration) {
    let mut next = std::time::Instant::now() + every;
    let mut st = lock(&shared.state);
    loop {
        let wait = next.saturating_duration_since(std::time::Instant::now());
        st = shared
            .wake
            .wait_timeout_while(st, wait, |s| !s.stop)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        let stop = st.stop;
        if !stop && std::time::Instant::now() < next {
            continue;
        }
        next += every;
        if st.dirty && !shared.failed.happened() {
            st.dirty = false;
            drop(st);
            let result = shared.file.sync_data();
            st = lock(&shared.state);
            match result {
                Ok(()) => st.synced += 1,
                Err(e) => {
                    tracing::error!(error = %e, "store: syncing the file to disk failed; the store takes no more writes until the node restarts");
                    shared.failed.set(&e);
                }
            }
        }
        if stop {
            return;
        }
        // Behind by more than an interval (a sync that took that long): from now on.
        let now = std::time::Instant::now();
        if next < now {
            next = now + every;
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
        if let Some(e) = self.shared.failed.error() {
            return Err(e);
        }
        lock(&self.shared.state).dirty = true;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write(offset, data)
    }
}

impl Drop for IntervalSync {
    /// Stop the syncer, which syncs what is left first: this waits for one `fdatasync` of
    /// up to an interval's writes (redb's own drop, in either mode, syncs too).
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

/// Beside the store file while it is open with `sync = "interval"`: the kernel's boot id
/// at the open.
pub const BOOT_MARKER: &str = "SYNC-INTERVAL-BOOT";

/// This boot of the machine (Linux: `/proc/sys/kernel/random/boot_id`); None elsewhere.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Write `text` to `path` and make it and its directory entry durable.
fn write_durably(dir: &std::path::Path, path: &std::path::Path, text: &str) -> io::Result<()> {
    let mut f = File::create(path)?;
    io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    File::open(dir)?.sync_all()
}

/// How the reason [`check_boot`] writes into `STORE-DAMAGED` begins.
pub(super) const RESTARTED: &str = "the machine restarted";

/// At open, before redb touches the file. When the store was last opened with
/// `sync = "interval"` under another boot of the machine and did not close cleanly, what it
/// acknowledged in its last interval may be gone with the page cache: writes the reason
/// into `STORE-DAMAGED` (which refuses every start until the operator deletes it) and
/// returns it (`boot` is this boot's id; None: not known here, no check). Then records, for
/// the next start, how the store is open now.
pub(super) fn check_boot(
    dir: &std::path::Path,
    closed_cleanly: bool,
    sync: SyncMode,
    boot: Option<&str>,
) -> io::Result<Option<String>> {
    let marker = dir.join(BOOT_MARKER);
    let recorded = match std::fs::read_to_string(&marker) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let lost = match (&recorded, boot) {
        (Some(text), Some(now)) if !closed_cleanly => {
            let then = text
                .lines()
                .find_map(|l| l.strip_prefix("boot "))
                .unwrap_or("?");
            (then != now).then(|| {
                format!(
                    "{RESTARTED} (boot {then}, now {now}) while this store was open \
                     with store.sync = \"interval\" and before it was closed: what it \
                     acknowledged in its last sync interval may be missing, and the sequence \
                     numbers after it will be given again (deploy/README.md, \"Store \
                     durability\")"
                )
            })
        }
        _ => None,
    };
    if let Some(why) = &lost {
        // First the refusal, durably: the record below no longer tells.
        write_durably(dir, &dir.join(super::DAMAGED_MARKER), &format!("{why}\n"))?;
    }
    match sync {
        SyncMode::Interval(every) => write_durably(
            dir,
            &marker,
            &format!(
                "boot {}\nsync_interval_ms {}\n",
                boot.unwrap_or("unknown"),
                every.as_millis()
            ),
        )?,
        SyncMode::Always if recorded.is_some() => {
            std::fs::remove_file(&marker)?;
            File::open(dir)?.sync_all()?;
        }
        SyncMode::Always => {}
    }
    Ok(lost)
}

/// [`check_boot`] with this machine's boot id.
pub(super) fn check_this_boot(
    dir: &std::path::Path,
    closed_cleanly: bool,
    sync: SyncMode,
) -> io::Result<Option<String>> {
    check_boot(dir, closed_cleanly, sync, boot_id().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dir: &std::path::Path, every: Duration, failed: SyncFailure) -> IntervalSync {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("f"))
            .unwrap();
        IntervalSync::new(file, every, failed).unwrap()
    }

    fn synced(b: &IntervalSync) -> u64 {
        lock(&b.shared.state).synced
    }

    /// An interval no test waits for: only a drop syncs.
    const NEVER: Duration = Duration::from_secs(3600);

    #[test]
    fn a_commit_returns_without_syncing_and_the_thread_syncs_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let held = backend(dir.path(), NEVER, SyncFailure::default());
        held.sync_data(false).unwrap();
        assert!(
            lock(&held.shared.state).dirty,
            "sync_data only notes the write"
        );
        assert_eq!(synced(&held), 0);
        drop(held);

        let b = backend(
            dir.path(),
            Duration::from_millis(20),
            SyncFailure::default(),
        );
        b.set_len(4096).unwrap();
        b.write(0, b"written").unwrap();
        // Nothing was noted since the start: the thread has nothing to sync.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(synced(&b), 0, "a sync with nothing written");
        b.sync_data(false).unwrap();
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
        let b = backend(dir.path(), NEVER, SyncFailure::default());
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
        assert!(!shared.failed.happened());
    }

    #[test]
    fn after_a_failed_sync_every_commit_of_every_backend_on_the_file_fails_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let failed = SyncFailure::default();
        let b = backend(dir.path(), NEVER, failed.clone());
        b.sync_data(false).unwrap();
        failed.fail_for_tests();
        for _ in 0..2 {
            let e = b.sync_data(false).unwrap_err();
            assert!(e.to_string().contains("EIO"), "{e}");
            assert!(e.to_string().contains("restart the node"), "{e}");
        }
        // Nothing more is synced after the failure, the last drop included.
        let shared = b.shared.clone();
        drop(b);
        assert_eq!(lock(&shared.state).synced, 0);
        // A reopened file shares the failure.
        let again = backend(dir.path(), NEVER, failed.clone());
        assert!(again.sync_data(false).is_err());
        assert!(failed.happened());
    }

    #[test]
    fn a_start_after_the_machine_went_down_with_an_interval_synced_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let every = SyncMode::Interval(Duration::from_millis(250));
        let marker = d.join(BOOT_MARKER);
        // Opened in interval mode: recorded.
        assert_eq!(check_boot(d, false, every, Some("boot-1")).unwrap(), None);
        let text = std::fs::read_to_string(&marker).unwrap();
        assert_eq!(text, "boot boot-1\nsync_interval_ms 250\n");
        // kill -9 and a start under the same boot: the page cache had it all.
        assert_eq!(check_boot(d, false, every, Some("boot-1")).unwrap(), None);
        // A clean close, then another boot: synced at the close.
        assert_eq!(check_boot(d, true, every, Some("boot-2")).unwrap(), None);
        // An unclean stop, then another boot: refused, whichever mode it opens in now.
        let damaged = d.join(crate::store::DAMAGED_MARKER);
        for now in [every, SyncMode::Always] {
            // Open under boot-2 (after a clean close), then the machine goes down with it.
            assert_eq!(check_boot(d, true, every, Some("boot-2")).unwrap(), None);
            let why = check_boot(d, false, now, Some("boot-3")).unwrap().unwrap();
            assert!(why.starts_with(RESTARTED), "{why}");
            assert!(why.contains("boot boot-2, now boot-3"), "{why}");
            assert!(why.contains("last sync interval may be missing"), "{why}");
            // The refusal stays (the store refuses while STORE-DAMAGED is there), and the
            // next start under this boot, once the operator accepts, finds nothing new.
            assert_eq!(
                std::fs::read_to_string(&damaged).unwrap(),
                format!("{why}\n")
            );
            std::fs::remove_file(&damaged).unwrap();
            assert_eq!(check_boot(d, false, every, Some("boot-3")).unwrap(), None);
            assert!(!damaged.exists());
            check_boot(d, false, now, Some("boot-3")).unwrap();
        }
        // Opened with sync = "always": no record, so no refusal later.
        assert!(!marker.exists());
        assert_eq!(
            check_boot(d, false, SyncMode::Always, Some("boot-4")).unwrap(),
            None
        );
        // A boot id this system cannot tell: no check.
        check_boot(d, false, every, Some("boot-4")).unwrap();
        assert_eq!(check_boot(d, false, every, None).unwrap(), None);
        assert!(
            std::fs::read_to_string(&marker)
                .unwrap()
                .contains("boot unknown")
        );
        // This machine's own id, twice: the same.
        check_this_boot(d, false, every).unwrap();
        assert_eq!(check_this_boot(d, false, every).unwrap(), None);
    }
}
