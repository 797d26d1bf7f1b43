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
//!   A failed sync also writes `STORE-DAMAGED`, so every later start is refused until the
//!   operator accepts what may be missing.
//! - While the store is open in this mode, [`BOOT_MARKER`] beside it holds the kernel's
//!   boot id (Linux); the close removes it once the last sync succeeded. Found at a start
//!   under another boot id, it means the machine went down with the node: the start is
//!   refused the same way ([`open_backend`]).
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::StorageBackend;
use redb::backends::FileBackend;

use super::clean::{remove_durably, write_durably};

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
    /// The store directory: `STORE-DAMAGED` after a failed sync, [`BOOT_MARKER`] removed
    /// after a successful last one.
    dir: PathBuf,
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

    /// Record the failure (the first one is kept).
    fn set(&self, e: &io::Error) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some((e.kind(), e.to_string()));
        }
    }

    /// The error a commit fails with after the failure.
    pub(super) fn error(&self) -> Option<io::Error> {
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
    /// Over `file`, already locked; `sync_file` is a second handle on it for the syncer
    /// thread (the same file but in tests).
    fn new(
        file: FileBackend,
        sync_file: File,
        every: Duration,
        failed: SyncFailure,
        dir: PathBuf,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            file: sync_file,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            failed,
            dir,
        });
        let for_thread = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("bluewire-sync".into())
            .spawn(move || syncer(&for_thread, every))?;
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
    let mut next = Instant::now() + every;
    let mut st = lock(&shared.state);
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        st = shared
            .wake
            .wait_timeout_while(st, wait, |s| !s.stop)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        let stop = st.stop;
        if !stop && Instant::now() < next {
            continue;
        }
        if st.dirty && !shared.failed.happened() {
            st.dirty = false;
            drop(st);
            let result = shared.file.sync_data();
            st = lock(&shared.state);
            match result {
                Ok(()) => st.synced += 1,
                Err(e) => failed(shared, &e),
            }
        }
        if stop {
            // Closed with everything synced: the machine going down now loses nothing.
            if !shared.failed.happened()
                && let Err(e) = remove_durably(&shared.dir, &shared.dir.join(BOOT_MARKER))
            {
                tracing::warn!(error = %e, "store: could not remove {BOOT_MARKER}; a start after a reboot will be refused until the operator accepts it");
            }
            return;
        }
        next = next_sync(next, Instant::now(), every);
    }
}

/// When the sync after the one due at `due` is, `now` being when that one finished: one
/// interval later (a fixed schedule, so a slow sync does not push the next ones back),
/// unless that has passed already (the sync took more than an interval): then one
/// interval from now, never at once.
fn next_sync(due: Instant, now: Instant, every: Duration) -> Instant {
    let next = due + every;
    if next < now { now + every } else { next }
}

/// After a failed sync: the refusal of later starts first (`STORE-DAMAGED`), then the
/// refusal of commits.
fn failed(shared: &Shared, e: &io::Error) {
    record_failure(&shared.dir, &shared.failed, e);
}

/// A failed sync of the store's file or of its journal: `STORE-DAMAGED` in `dir` first (later
/// starts are refused), then `failed` (later commits are).
pub(super) fn record_failure(dir: &Path, failed: &SyncFailure, e: &io::Error) {
    tracing::error!(error = %e, "store: syncing the file to disk failed; the store takes no more writes, and starts are refused until the operator accepts what may be missing");
    let note = format!(
        "{SYNC_FAILED} ({e}): what the node acknowledged since the sync before may not be on \
         disk (deploy/README.md, \"Store durability\")\n"
    );
    let marker = dir.join(super::DAMAGED_MARKER);
    if let Err(w) = write_durably(dir, &marker, &note) {
        tracing::error!(error = %w, marker = %marker.display(), "store: could not record the failed sync; do not start the node on this store without a check");
    }
    failed.set(e);
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
/// at the open. Removed when the store closes with everything synced.
pub const BOOT_MARKER: &str = "SYNC-INTERVAL-BOOT";

/// How `STORE-DAMAGED` begins when the machine went down with an interval-synced store open.
pub(super) const RESTARTED: &str = "the machine restarted";
/// How `STORE-DAMAGED` begins after a failed background sync.
pub(super) const SYNC_FAILED: &str = "a background sync of the store file failed";

/// This boot of the machine (Linux: `/proc/sys/kernel/random/boot_id`); None elsewhere.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Why opening the store file failed.
#[derive(Debug)]
pub(super) enum OpenError {
    Db(redb::DatabaseError),
    Io(io::Error),
    /// The machine went down with the store open in interval mode: the reason, also written
    /// to `STORE-DAMAGED`.
    Refused(String),
}

impl From<redb::DatabaseError> for OpenError {
    fn from(e: redb::DatabaseError) -> Self {
        OpenError::Db(e)
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// The backend the store file is opened with.
#[derive(Debug)]
pub(super) enum Backend {
    Always(FileBackend),
    Interval(IntervalSync),
}

impl StorageBackend for Backend {
    fn len(&self) -> Result<u64, io::Error> {
        match self {
            Backend::Always(b) => b.len(),
            Backend::Interval(b) => b.len(),
        }
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        match self {
            Backend::Always(b) => b.read(offset, len),
            Backend::Interval(b) => b.read(offset, len),
        }
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        match self {
            Backend::Always(b) => b.set_len(len),
            Backend::Interval(b) => b.set_len(len),
        }
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        match self {
            Backend::Always(b) => b.sync_data(eventual),
            Backend::Interval(b) => b.sync_data(eventual),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        match self {
            Backend::Always(b) => b.write(offset, data),
            Backend::Interval(b) => b.write(offset, data),
        }
    }
}

/// Open and lock the store file at `path` (as redb's own `create` does), then, holding the
/// lock and before redb reads or writes anything: with `check`, refuse a start after the
/// machine went down with the store open in interval mode (see [`check_record`]); record
/// an interval-mode open; or, in `"always"` mode, sync the file and drop the record.
pub(super) fn open_backend(
    dir: &Path,
    path: &Path,
    sync: SyncMode,
    failed: &SyncFailure,
    check: bool,
) -> Result<Backend, OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let second = file.try_clone()?;
    let locked = FileBackend::new(file)?;
    let boot = boot_id();
    if check && let Some(why) = check_record(dir, boot.as_deref())? {
        return Err(OpenError::Refused(why));
    }
    match sync {
        SyncMode::Always => {
            if dir.join(BOOT_MARKER).exists() {
                // What an interval-mode run left unsynced goes to disk before the record.
                second.sync_data()?;
                remove_durably(dir, &dir.join(BOOT_MARKER))?;
            }
            Ok(Backend::Always(locked))
        }
        SyncMode::Interval(every) => {
            if let Some(boot) = &boot {
                write_durably(
                    dir,
                    &dir.join(BOOT_MARKER),
                    &format!("boot {boot}\nsync_interval_ms {}\n", every.as_millis()),
                )?;
            }
            Ok(Backend::Interval(IntervalSync::new(
                locked,
                second,
                every,
                failed.clone(),
                dir.to_path_buf(),
            )?))
        }
    }
}

/// When [`BOOT_MARKER`] is there (an interval-mode store that did not close with
/// everything synced) from another boot than `boot`, what it acknowledged in its last
/// interval may be gone with the page cache: writes the reason to `STORE-DAMAGED` (which
/// refuses every start until the operator deletes it), then removes the record, and returns
/// the reason. From this boot (the node was killed; the page cache has it all), or with no
/// boot id known here: nothing.
pub(super) fn check_record(dir: &Path, boot: Option<&str>) -> io::Result<Option<String>> {
    let marker = dir.join(BOOT_MARKER);
    let Some(now) = boot else { return Ok(None) };
    let text = match std::fs::read_to_string(&marker) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let then = text
        .lines()
        .find_map(|l| l.strip_prefix("boot "))
        .unwrap_or("?");
    if then == now {
        return Ok(None);
    }
    let why = format!(
        "{RESTARTED} (boot {then}, now {now}) while this store was open with store.sync = \
         \"interval\": what it acknowledged in its last sync interval may be missing, and the \
         sequence numbers after it will be given again (deploy/README.md, \"Store durability\")"
    );
    // First the refusal, durably: then the record no longer tells.
    write_durably(dir, &dir.join(super::DAMAGED_MARKER), &format!("{why}\n"))?;
    remove_durably(dir, &marker)?;
    Ok(Some(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_keep_a_fixed_schedule_and_a_late_one_never_makes_the_next_immediate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let every = ms(100);
        // On time, or slow but within the interval: the schedule holds.
        assert_eq!(next_sync(t0, t0 + ms(10), every), t0 + ms(100));
        assert_eq!(next_sync(t0, t0 + ms(99), every), t0 + ms(100));
        assert_eq!(next_sync(t0, t0 + ms(100), every), t0 + ms(100));
        // Took longer than an interval: one interval from when it ended, not at once and not
        // a burst of syncs catching up.
        assert_eq!(next_sync(t0, t0 + ms(101), every), t0 + ms(201));
        assert_eq!(next_sync(t0, t0 + ms(250), every), t0 + ms(350));
    }

    fn open_file(dir: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("f"))
            .unwrap()
    }

    /// An interval-sync backend on `dir/f`, its syncer syncing `sync_file` (by default a
    /// second handle on the file).
    fn backend_syncing(
        dir: &Path,
        every: Duration,
        failed: SyncFailure,
        sync_file: Option<File>,
    ) -> IntervalSync {
        let file = open_file(dir);
        let second = sync_file.unwrap_or_else(|| file.try_clone().unwrap());
        let locked = FileBackend::new(file).unwrap();
        IntervalSync::new(locked, second, every, failed, dir.to_path_buf()).unwrap()
    }

    fn backend(dir: &Path, every: Duration, failed: SyncFailure) -> IntervalSync {
        backend_syncing(dir, every, failed, None)
    }

    fn synced(b: &IntervalSync) -> u64 {
        lock(&b.shared.state).synced
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: never");
            std::thread::sleep(Duration::from_millis(5));
        }
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
        wait_until("a sync", || synced(&b) == 1);
        assert!(!lock(&b.shared.state).dirty);
        assert_eq!(&b.read(0, 7).unwrap(), b"written");
        // One sync per interval with writes, not one per interval.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(synced(&b), 1);
    }

    #[test]
    fn dropping_the_backend_syncs_what_is_left_at_once_then_drops_the_boot_record() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join(BOOT_MARKER);
        std::fs::write(&record, "boot b\n").unwrap();
        let b = backend(dir.path(), NEVER, SyncFailure::default());
        let shared = b.shared.clone();
        b.set_len(4096).unwrap();
        b.write(0, b"last").unwrap();
        b.sync_data(false).unwrap();
        let t = Instant::now();
        drop(b);
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the drop waited an interval"
        );
        let st = lock(&shared.state);
        assert_eq!((st.synced, st.dirty), (1, false));
        assert!(!shared.failed.happened());
        assert!(!record.exists(), "closed with everything synced");
    }

    #[test]
    fn a_failed_sync_fails_every_later_commit_refuses_later_starts_and_keeps_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join(BOOT_MARKER);
        std::fs::write(&record, "boot b\n").unwrap();
        let failed = SyncFailure::default();
        // fdatasync on a pipe fails (EINVAL), as on a disk that fails a write-back.
        let (_read, write) = std::io::pipe().unwrap();
        let b = backend_syncing(
            dir.path(),
            Duration::from_millis(10),
            failed.clone(),
            Some(File::from(std::os::fd::OwnedFd::from(write))),
        );
        b.sync_data(false).unwrap();
        wait_until("the failure", || failed.happened());
        for _ in 0..2 {
            let e = b.sync_data(false).unwrap_err();
            assert!(e.to_string().contains("restart the node"), "{e}");
        }
        let damaged =
            std::fs::read_to_string(dir.path().join(crate::store::DAMAGED_MARKER)).unwrap();
        assert!(damaged.starts_with(SYNC_FAILED), "{damaged}");
        assert!(damaged.contains("may not be on disk"), "{damaged}");
        // Nothing more is synced, the last drop included, and the record stays.
        let shared = b.shared.clone();
        drop(b);
        assert_eq!(lock(&shared.state).synced, 0);
        assert!(record.exists());
        // A reopened file shares the failure.
        let again = backend(dir.path(), NEVER, failed.clone());
        assert!(again.sync_data(false).is_err());
    }

    #[test]
    fn a_record_from_another_boot_refuses_the_start_once_and_is_replaced_by_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let record = d.join(BOOT_MARKER);
        let damaged = d.join(crate::store::DAMAGED_MARKER);
        // No record: nothing to say.
        assert_eq!(check_record(d, Some("boot-1")).unwrap(), None);
        // A record of this boot (the node was killed; the page cache had it all).
        std::fs::write(&record, "boot boot-1\nsync_interval_ms 250\n").unwrap();
        assert_eq!(check_record(d, Some("boot-1")).unwrap(), None);
        assert!(record.exists());
        // Not known here: no check.
        assert_eq!(check_record(d, None).unwrap(), None);
        // Another boot: refused, the reason kept in STORE-DAMAGED, the record gone.
        let why = check_record(d, Some("boot-2")).unwrap().unwrap();
        assert!(why.starts_with(RESTARTED), "{why}");
        assert!(why.contains("boot boot-1, now boot-2"), "{why}");
        assert!(why.contains("last sync interval may be missing"), "{why}");
        assert_eq!(
            std::fs::read_to_string(&damaged).unwrap(),
            format!("{why}\n")
        );
        assert!(!record.exists());
        assert_eq!(check_record(d, Some("boot-2")).unwrap(), None);
        // A damaged record refuses too.
        std::fs::write(&record, "garbage").unwrap();
        let why = check_record(d, Some("boot-2")).unwrap().unwrap();
        assert!(why.contains("boot ?, now boot-2"), "{why}");
    }

    #[test]
    fn a_record_that_cannot_be_read_or_removed_is_an_error_not_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = d.join("x");
        // Missing: nothing to remove. A file: removed.
        remove_durably(d, &path).unwrap();
        std::fs::write(&path, "x").unwrap();
        remove_durably(d, &path).unwrap();
        assert!(!path.exists());
        // Something in the way (a directory) is an error, for removing and for reading the
        // record alike: a start must not pass over a record it could not read.
        std::fs::create_dir(&path).unwrap();
        assert!(remove_durably(d, &path).is_err());
        std::fs::create_dir(d.join(BOOT_MARKER)).unwrap();
        assert!(check_record(d, Some("boot-1")).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn opening_records_an_interval_mode_store_and_always_mode_drops_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = d.join("f");
        let record = d.join(BOOT_MARKER);
        let failed = SyncFailure::default();
        let every = SyncMode::Interval(Duration::from_millis(250));
        let b = open_backend(d, &path, every, &failed, true).unwrap();
        let text = std::fs::read_to_string(&record).unwrap();
        assert!(
            text.starts_with("boot ") && text.ends_with("sync_interval_ms 250\n"),
            "{text}"
        );
        // Locked: another open is refused before it touches the record.
        assert!(matches!(
            open_backend(d, &path, SyncMode::Always, &failed, true),
            Err(OpenError::Db(redb::DatabaseError::DatabaseAlreadyOpen))
        ));
        assert!(record.exists());
        drop(b);
        assert!(!record.exists(), "a clean close removes it");
        // As after a kill in this boot: no refusal.
        std::fs::write(&record, &text).unwrap();
        drop(open_backend(d, &path, every, &failed, true).unwrap());
        assert!(!d.join(crate::store::DAMAGED_MARKER).exists());
        std::fs::write(&record, &text).unwrap();
        let b = open_backend(d, &d.join("h"), SyncMode::Always, &failed, true).unwrap();
        assert!(matches!(b, Backend::Always(_)));
        assert!(!record.exists(), "an always-mode open syncs and removes it");
    }
}
