//! The clean-shutdown record, which lets a start skip the full page check. Checking every
//! page of the store file against its checksum takes about a second per gigabyte, ~9 s for
//! a million messages, too long for every start (issue #12: under 2 s). So a store closed
//! cleanly, with the file released by this process, writes `CLEAN-SHUTDOWN` beside the file:
//! its length, modification and change times, inode and device. The modification time is first set one
//! second back, a time no later write can produce (the kernel stamps a write with the
//! current time, in ticks of a few milliseconds, so a write right after the close could
//! otherwise carry the same stamp). The next start takes the record away
//! and skips the check only when the file is exactly as the record says. Then nothing
//! has written to it since this node did. A crash, a copy, a restore, or any write by
//! another program (a stray write, a tool that "fixes" the file) means a full check, as
//! before. Damage from the disk itself while the node was down, with no write through the
//! file system, is left to the disk's and file system's own checksums, as with
//! PostgreSQL's and NATS's start-ups. Must never let a start skip the check on a file that
//! changed after the record was written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::DbSlot;

/// The record's file name, in the store directory.
pub const CLEAN_MARKER: &str = "CLEAN-SHUTDOWN";

/// What identifies the file as last written: length, modification time and change time
/// (ns; no program can set the change time back), inode, device.
fn fingerprint(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "bluewire store closed cleanly: len {} mtime {}.{:09} ctime {}.{:09} ino {} dev {}\n",
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
        m.dev()
    )
}

/// Write the marker file `path` in `dir` with `text`, and make it and its directory entry
/// durable (the records beside the store file: this one, `STORE-DAMAGED`, the sync record).
pub(super) fn write_durably(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Remove the marker file `path` in `dir` if it is there, durably.
pub(super) fn remove_durably(dir: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes the record away (durably) and says whether it vouches for the file at `path` as
/// it is now. Missing, unreadable or different: `false` (check the file).
pub(super) fn take(dir: &Path, path: &Path) -> bool {
    let marker = dir.join(CLEAN_MARKER);
    let Ok(recorded) = std::fs::read_to_string(&marker) else {
        return false;
    };
    let removed = remove_durably(dir, &marker).is_ok();
    // A record that could not be removed would vouch again after a crash: never trust it.
    removed
        && std::fs::metadata(path)
            .map(|m| fingerprint(&m) == recorded)
            .unwrap_or(false)
}

/// Writes the record once the file is closed. Set `writer_done` when the writer has
/// committed everything and exited normally; without it (a panic), no record.
pub(super) struct CleanClose {
    pub(super) slot: DbSlot,
    pub(super) dir: PathBuf,
    pub(super) path: PathBuf,
    pub(super) writer_done: Arc<AtomicBool>,
}

impl Drop for CleanClose {
    fn drop(&mut self) {
        // A store dropped while unwinding did not shut down cleanly.
        if !self.writer_done.load(Ordering::Acquire) || std::thread::panicking() {
            return;
        }
        // The last handle to the file: redb writes its clean header as it drops. A reader
        // still holding it (or a file closed after an I/O error) means no record.
        let Some(db) = self.slot.take() else { return };
        let Ok(db) = Arc::try_unwrap(db) else { return };
        // The applier and the syncer stopped first, so the file is closed on return.
        db.close();
        // With `sync = "interval"`, a sync that failed (the last one, as the file closed,
        // included) leaves pages that may not be on disk: no record.
        if self.slot.sync_failed.happened() {
            tracing::warn!(
                "the store file could not be synced; no clean shutdown recorded, the next start checks every page"
            );
            return;
        }
        // Locked as redb locks it, until the record is written: a process that opened the
        // file since redb let go (it would write to it) means no record.
        let Ok(file) = std::fs::File::options().write(true).open(&self.path) else {
            return;
        };
        if file.try_lock().is_err() {
            return;
        }
        let Some(when) =
            std::time::SystemTime::now().checked_sub(std::time::Duration::from_secs(1))
        else {
            return;
        };
        if file.set_modified(when).is_err() {
            return;
        }
        let Ok(print) = file.metadata().map(|m| fingerprint(&m)) else {
            return;
        };
        let marker = self.dir.join(CLEAN_MARKER);
        if let Err(e) = write_durably(&self.dir, &marker, &print) {
            let _ = std::fs::remove_file(&marker);
            tracing::warn!(error = %e, "could not record the clean shutdown; the next start checks every page");
        }
        drop(file);
    }
}
