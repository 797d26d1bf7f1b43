//! When a commit reaches the disk: `[store] sync` in node.toml.
//!
//! - [`SyncMode::Always`] (the default): redb's own file backend, which calls `fdatasync`
//!   in every commit before the commit returns. What the node acknowledged survives a
//!   power cut or an OS crash.
//! - [`SyncMode::Interval`]: [`IntervalSync`] passes every write through before the commit
//!   returns, so what the node acknowledged is in the kernel's page cache and survives
//!   `kill -9` and a restart of the node. The store's applier syncs the file every interval
//!   while it is written to, the value log just before it (the kv layer's `sync_in_order`),
//!   and the backend syncs it once more when the store closes. A power cut or an OS crash loses up to
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A file backend whose `sync_data` only notes that the file needs a sync. The store's
/// applier syncs it every interval, through a handle of its own, after the value log
/// (`kv`); the backend syncs it once more when it is dropped, as the store closes.
#[derive(Debug)]
pub(super) struct IntervalSync {
    file: FileBackend,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// A second handle on the same file: `fdatasync` on it flushes what either wrote.
    file: File,
    state: Mutex<State>,
    failed: SyncFailure,
    /// The store directory: `STORE-DAMAGED` after a failed sync, [`BOOT_MARKER`] removed
    /// after a successful last one.
    dir: PathBuf,
}

#[derive(Debug, Default)]
struct State {
    /// Written to since the backend was opened.
    dirty: bool,
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
    /// Over `file`, already locked; `sync_file` is a second handle on it for the last sync
    /// (the same file but in tests).
    fn new(file: FileBackend, sync_file: File, failed: SyncFailure, dir: PathBuf) -> Self {
        let shared = Arc::new(Shared {
            file: sync_file,
            state: Mutex::new(State::default()),
            failed,
            dir,
        });
        Self { file, shared }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// Sync what is left, unless a sync failed (redb's own drop, in either mode, asks for a
    /// sync too; the store has synced the value log by then). Closed with everything synced,
    /// the machine going down now loses nothing: the boot record goes.
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut st = lock(&shared.state);
        if st.dirty && !shared.failed.happened() {
            match shared.file.sync_data() {
                Ok(()) => {
                    st.dirty = false;
                    st.synced += 1;
                }
                Err(e) => record_failure(&shared.dir, &shared.failed, &e),
            }
        }
        if !shared.failed.happened()
            && let Err(e) = remove_durably(&shared.dir, &shared.dir.join(BOOT_MARKER))
        {
            tracing::warn!(error = %e, "store: could not remove {BOOT_MARKER}; a start after a reboot will be refused until the operator accepts it");
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
/// lock and before redb reads or writes anything: refuse after a failed sync in this process
/// (`failed`); sync the value log beside it (a failure recorded as a failed sync); with
/// `check`, refuse a start after the machine went down with the store open in interval mode
/// (see [`check_record`]); record an interval-mode open; or, in `"always"` mode, sync the
/// file and drop the record.
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
    // After a failed sync in this process (a reopen after an I/O error): no sync of either
    // file again, and no writes.
    if let Some(e) = failed.error() {
        return Err(OpenError::Io(e));
    }
    // What a killed process left of the value log in the page cache reaches the disk before
    // anything can sync this file, whose pages may point into it: redb's own commits and
    // recovery in `always` mode, the `always` open below, the store's syncs in `interval`
    // mode. A failure is a failed sync: the next start is refused, not fooled by a sync on a
    // new handle that succeeds after the kernel dropped the pages.
    let log = dir.join(super::kv::VALUES_FILE);
    let synced = match File::open(&log) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = synced {
        let e = io::Error::new(e.kind(), format!("value log {}: {e}", log.display()));
        record_failure(dir, failed, &e);
        return Err(OpenError::Io(e));
    }
    let boot = boot_id();
    if check && let Some(why) = check_record(dir, boot.as_deref())? {
        return Err(OpenError::Refused(why));
    }
    match sync {
        SyncMode::Always => {
            if dir.join(BOOT_MARKER).exists() {
                // What an interval-mode run left unsynced goes to disk before the record. A
                // failure is a failed sync, recorded: a later start must not pass on a sync
                // that succeeds on a new handle after the kernel dropped the pages.
                if let Err(e) = second.sync_data() {
                    record_failure(dir, failed, &e);
                    return Err(OpenError::Io(e));
                }
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
                failed.clone(),
                dir.to_path_buf(),
            )))
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

    fn open_file(dir: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("f"))
            .unwrap()
    }

    /// An interval-sync backend on `dir/f`, its last sync made on `sync_file` (by default a
    /// second handle on the file).
    fn backend_syncing(dir: &Path, failed: SyncFailure, sync_file: Option<File>) -> IntervalSync {
        let file = open_file(dir);
        let second = sync_file.unwrap_or_else(|| file.try_clone().unwrap());
        let locked = FileBackend::new(file).unwrap();
        IntervalSync::new(locked, second, failed, dir.to_path_buf())
    }

    fn backend(dir: &Path, failed: SyncFailure) -> IntervalSync {
        backend_syncing(dir, failed, None)
    }

    #[test]
    fn a_commit_returns_without_syncing_and_the_drop_syncs_what_was_written_then_drops_the_record()
    {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join(BOOT_MARKER);
        // Nothing written: nothing to sync, and the record goes.
        std::fs::write(&record, "boot b\n").unwrap();
        let b = backend(dir.path(), SyncFailure::default());
        let shared = b.shared.clone();
        drop(b);
        assert_eq!(lock(&shared.state).synced, 0, "a sync with nothing written");
        assert!(!record.exists(), "closed with everything synced");

        std::fs::write(&record, "boot b\n").unwrap();
        let b = backend(dir.path(), SyncFailure::default());
        let shared = b.shared.clone();
        b.set_len(4096).unwrap();
        b.write(0, b"last").unwrap();
        b.sync_data(false).unwrap();
        assert!(lock(&shared.state).dirty, "sync_data only notes the write");
        assert_eq!(lock(&shared.state).synced, 0);
        assert_eq!(&b.read(0, 4).unwrap(), b"last");
        drop(b);
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
            failed.clone(),
            Some(File::from(std::os::fd::OwnedFd::from(write))),
        );
        b.sync_data(false).unwrap();
        let shared = b.shared.clone();
        drop(b);
        assert!(failed.happened());
        assert_eq!(lock(&shared.state).synced, 0);
        let damaged =
            std::fs::read_to_string(dir.path().join(crate::store::DAMAGED_MARKER)).unwrap();
        assert!(damaged.starts_with(SYNC_FAILED), "{damaged}");
        assert!(damaged.contains("may not be on disk"), "{damaged}");
        assert!(record.exists(), "a reboot now is refused");
        // A reopened file shares the failure: every commit fails, and its drop syncs nothing.
        let again = backend(dir.path(), failed.clone());
        for _ in 0..2 {
            let e = again.sync_data(false).unwrap_err();
            assert!(e.to_string().contains("restart the node"), "{e}");
        }
        let shared = again.shared.clone();
        lock(&shared.state).dirty = true;
        drop(again);
        assert_eq!(lock(&shared.state).synced, 0);
        assert!(record.exists());
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

    /// The value log is synced before redb's file can be: a failure refuses the open and,
    /// as any failed sync, later starts (and every reopen in this process).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_value_log_that_fails_its_sync_at_open_refuses_the_open_and_later_starts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // fdatasync on /dev/null fails (EINVAL), as on a disk that fails a write-back.
        std::os::unix::fs::symlink("/dev/null", d.join(crate::store::kv::VALUES_FILE)).unwrap();
        let mut failed = SyncFailure::default();
        for sync in [
            SyncMode::Always,
            SyncMode::Interval(Duration::from_millis(250)),
        ] {
            failed = SyncFailure::default();
            let _ = std::fs::remove_file(d.join(crate::store::DAMAGED_MARKER));
            let Err(OpenError::Io(e)) = open_backend(d, &d.join("f"), sync, &failed, true) else {
                panic!("opened with a value log that cannot be synced ({sync:?})");
            };
            assert!(e.to_string().contains("value log"), "{e}");
            assert!(failed.happened());
            let damaged = std::fs::read_to_string(d.join(crate::store::DAMAGED_MARKER)).unwrap();
            assert!(damaged.starts_with(SYNC_FAILED), "{damaged}");
        }
        // Once failed, no reopen in this process, even with the log fine again.
        std::fs::remove_file(d.join(crate::store::kv::VALUES_FILE)).unwrap();
        let Err(OpenError::Io(e)) = open_backend(d, &d.join("f"), SyncMode::Always, &failed, false)
        else {
            panic!("reopened after a failed sync");
        };
        assert!(e.to_string().contains("restart the node"), "{e}");
    }

    /// An `always` open after an interval-mode run syncs what that run left: a failure there
    /// is a failed sync too, recorded, and the record of the run stays.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_sync_when_always_mode_takes_over_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // fdatasync on /dev/null fails (EINVAL), as on a disk that fails a write-back.
        std::os::unix::fs::symlink("/dev/null", d.join("f")).unwrap();
        std::fs::write(d.join(BOOT_MARKER), "boot b\n").unwrap();
        let failed = SyncFailure::default();
        let Err(OpenError::Io(_)) = open_backend(d, &d.join("f"), SyncMode::Always, &failed, false)
        else {
            panic!("opened over a failed sync");
        };
        assert!(failed.happened());
        let damaged = std::fs::read_to_string(d.join(crate::store::DAMAGED_MARKER)).unwrap();
        assert!(damaged.starts_with(SYNC_FAILED), "{damaged}");
        assert!(d.join(BOOT_MARKER).exists());
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
