//! The value log: the large values of the tables that keep them out of redb's B-tree (the
//! message records and batch signatures, [`super::TableDefinition::spilled`]). The applier
//! appends each such value to `bluewire.values` beside the redb file and writes into redb a
//! pointer to it (where it starts, how long it is, its CRC-32), in the same transaction that
//! records how far the log is taken (`values_end`). A read resolves a pointer with one
//! positioned read, through the kernel's page cache, and checks the CRC.
//!
//! Why: redb rewrites every page on a changed key's path in each commit, copying the values on
//! those pages; a receiver's store was mostly message records, and its tail at 1,000 msg/s
//! halved with them out of the B-tree (BENCHMARKS.md, "What redb costs a receiver's tail").
//!
//! Owns: the file's format (values back to back, nothing else: a value is found only through
//! its pointer), the pointer's format, and the log's end.
//!
//! It must never: let a sync of redb's file reach the disk with a pointer past what the log
//! has on disk. Where redb's commits sync its file (`always`), the applier syncs what it
//! appended before redb's commit. Where they do not (`interval`), the log is synced once, just
//! before each sync of redb's file, with no apply between the two (the kv layer's
//! `sync_in_order`), at open (a killed process may have left any of it in the page cache
//! only) and at close. Between two syncs the kernel may still write redb's pages back before
//! the log's; that is one more way in which a power cut in interval mode leaves a store the
//! next start refuses (deploy/README.md, "Store durability"). It must also never hand out
//! bytes whose CRC does not match, or write over or cut off bytes anything may point to
//! (bytes past `values_end` at open, from applies redb never took, are left where they are
//! and the log goes on after them: the journal replays those commits, and a redb file
//! restored beside a newer log finds its log whole).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use redb::StorageError;

/// The log's file name, in the store's directory.
pub(crate) const FILE: &str = "bluewire.values";

/// Whether redb holding `value` would read it as a pointer into the log.
pub(super) fn is_pointer(value: &[u8]) -> bool {
    Pointer::decode(value).is_some()
}

/// A pointer: these four bytes, where the value starts (u64), its length (u32) and its
/// CRC-32 (u32), little-endian. A value that would read as a pointer is never kept inline:
/// the applier moves it to the log whatever its size, and a direct write refuses it (neither
/// happens in the store: protobuf records never start with a zero byte, and a signature
/// that long is no signature).
const MAGIC: [u8; 4] = *b"\0BWv";
const POINTER_LEN: usize = 20;
/// Values up to this long stay in redb: a pointer would save little, and a read would cost
/// a system call.
const INLINE_MAX: usize = 64;

/// Where a value is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pointer {
    at: u64,
    len: u32,
    crc: u32,
}

impl Pointer {
    fn encode(&self) -> [u8; POINTER_LEN] {
        let mut p = [0u8; POINTER_LEN];
        p[..4].copy_from_slice(&MAGIC);
        p[4..12].copy_from_slice(&self.at.to_le_bytes());
        p[12..16].copy_from_slice(&self.len.to_le_bytes());
        p[16..].copy_from_slice(&self.crc.to_le_bytes());
        p
    }

    /// The pointer `stored` is, if it is one.
    fn decode(stored: &[u8]) -> Option<Self> {
        if stored.len() != POINTER_LEN || stored[..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(stored[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(Self {
            at: u64::from_le_bytes(stored[4..12].try_into().unwrap_or([0; 8])),
            len: u32_at(12),
            crc: u32_at(16),
        })
    }
}

/// The value log of one open store.
pub(crate) struct ValueLog {
    file: File,
    path: PathBuf,
    /// Where the next apply appends, and how far a pointer may reach: everything before it
    /// is written (redb may not have taken the newest of it yet, or ever; those bytes are
    /// then wasted, never written over, since a commit that reported a failure may still
    /// have reached redb's file).
    end: AtomicU64,
    /// How far the log is on disk: the end as of the last `fdatasync`.
    synced: AtomicU64,
    /// `fdatasync`s made, for tests.
    #[cfg(test)]
    syncs: AtomicU64,
    /// Set by a test: every `fdatasync` fails, as on a disk that fails a write-back.
    #[cfg(test)]
    pub(super) fail_syncs: std::sync::atomic::AtomicBool,
}

impl ValueLog {
    /// The log in `dir`, created if missing, going on from its end, which must be at least
    /// `recorded_end` (what redb's file says it has taken): a shorter log lost bytes redb
    /// points to, and is refused. Nothing of it counts as synced: the caller syncs it
    /// ([`ValueLog::sync_written`]) before anything else, since a process killed before its
    /// sync may have left any of it in the page cache only, the bytes redb points to included
    /// (with `interval`, the log is synced only before redb's file is) and bytes past
    /// `recorded_end` that a later commit may record as taken.
    pub(super) fn open(dir: &Path, recorded_end: u64) -> Result<Self, StorageError> {
        let path = dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::Io)?;
        // Its directory entry synced, so that a pointer redb syncs never names a file the
        // machine going down loses: at every open, not only the one that creates it, since a
        // process killed between the creation and the sync leaves the entry unsynced.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StorageError::Io)?;
        let len = file.metadata().map_err(StorageError::Io)?.len();
        if len < recorded_end {
            return Err(StorageError::Corrupted(format!(
                "the value log {} holds {len} bytes, and the store file points into it up to \
                 byte {recorded_end}: it is missing or cut short (the data directory was copied \
                 or restored without it, or it was replaced, or, with store.sync = \"interval\", \
                 the machine went down between two syncs). Restore the data directory from a \
                 backup, or put the value log back",
                path.display()
            )));
        }
        let log = Self {
            file,
            path,
            end: AtomicU64::new(len),
            synced: AtomicU64::new(0),
            #[cfg(test)]
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicBool::new(false),
        };
        if len > recorded_end {
            tracing::debug!(
                log = %log.path.display(),
                bytes = len - recorded_end,
                "value log: bytes past what the store file took (applies a crash or a failed commit interrupted) are left unused"
            );
        }
        Ok(log)
    }

    /// `fdatasync` what was written since the last one, if anything was. The caller keeps
    /// writes out meanwhile (the applier's lock, or an open or a close that has the log to
    /// itself).
    pub(super) fn sync_written(&self) -> Result<(), StorageError> {
        let end = self.end.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        #[cfg(test)]
        {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            if self.fail_syncs.load(Ordering::Relaxed) {
                return Err(self.io(std::io::Error::other("EIO (injected by a test)")));
            }
        }
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.synced.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Bytes written and not synced yet.
    #[cfg(test)]
    pub(super) fn unsynced(&self) -> u64 {
        self.end.load(Ordering::Acquire) - self.synced.load(Ordering::Acquire)
    }

    /// `fdatasync`s made.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Values for the next apply, appended from the log's end.
    pub(super) fn batch(&self) -> Batch {
        Batch {
            start: self.end.load(Ordering::Acquire),
            buf: Vec::new(),
        }
    }

    /// Write `batch` into the log (not synced: see [`ValueLog::sync_written`]); returns the
    /// log's end with it, for redb's transaction to record. Reads may reach it from now on:
    /// redb's commit shows its pointers to new reads before the applier returns. A failed
    /// write leaves the end where it was, so the next apply writes the whole batch again.
    pub(super) fn write(&self, batch: &Batch) -> Result<u64, StorageError> {
        if !batch.buf.is_empty() {
            self.file
                .write_all_at(&batch.buf, batch.start)
                .map_err(|e| self.io(e))?;
        }
        self.end.fetch_max(batch.end(), Ordering::AcqRel);
        Ok(batch.end())
    }

    /// The value `stored` points to, read and checked; `None` when `stored` is the value
    /// itself.
    pub(super) fn resolve(&self, stored: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let Some(p) = Pointer::decode(stored) else {
            return Ok(None);
        };
        let end = p.at.checked_add(u64::from(p.len));
        if end.is_none_or(|end| end > self.end.load(Ordering::Acquire)) {
            return Err(StorageError::Corrupted(format!(
                "a record points to bytes {}..+{} of the value log {}, past its end (the store \
                 file is damaged); restore the data directory from a backup",
                p.at,
                p.len,
                self.path.display()
            )));
        }
        let mut buf = vec![0u8; p.len as usize];
        self.file
            .read_exact_at(&mut buf, p.at)
            .map_err(|e| self.io(e))?;
        if crc32fast::hash(&buf) != p.crc {
            return Err(StorageError::Corrupted(format!(
                "the value at byte {} of the value log {} fails its checksum (the disk damaged \
                 it); restore the data directory from a backup",
                p.at,
                self.path.display()
            )));
        }
        Ok(Some(Bytes::from(buf)))
    }

    fn io(&self, e: std::io::Error) -> StorageError {
        StorageError::Io(std::io::Error::new(
            e.kind(),
            format!("value log {}: {e}", self.path.display()),
        ))
    }
}

/// What redb's raw bytes `stored` stand for in the store in `dir` (closed): the value a
/// pointer reaches in its log, or the bytes themselves. For tests that read redb's file.
#[cfg(test)]
pub(crate) fn raw_value(dir: &Path, stored: &[u8]) -> Vec<u8> {
    ValueLog::open(dir, 0)
        .unwrap()
        .resolve(stored)
        .unwrap()
        .map_or_else(|| stored.to_vec(), |v| v.to_vec())
}

/// One apply's values, laid out as they will be in the log.
pub(super) struct Batch {
    start: u64,
    buf: Vec<u8>,
}

impl Batch {
    /// Whether nothing was put in the log.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What redb stores for `value`: a pointer to where it will be in the log, or the value
    /// itself when it is small.
    pub(super) fn put(&mut self, value: &Bytes) -> Bytes {
        let Ok(len) = u32::try_from(value.len()) else {
            return value.clone();
        };
        if value.len() <= INLINE_MAX && !is_pointer(value) {
            return value.clone();
        }
        let p = Pointer {
            at: self.end(),
            len,
            crc: crc32fast::hash(value),
        };
        self.buf.extend_from_slice(value);
        Bytes::copy_from_slice(&p.encode())
    }

    fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }
}

/// The log's end redb's file records, read with the rest of `APPLIED`.
pub(super) const END_KEY: &str = "values_end";

#[cfg(test)]
mod tests {
    use super::*;

    fn val(n: usize, b: u8) -> Bytes {
        Bytes::from(vec![b; n])
    }

    #[test]
    fn a_pointer_is_its_own_bytes_back_and_nothing_else_is_one() {
        let p = Pointer {
            at: 0x0102_0304_0506_0708,
            len: 0x0a0b_0c0d,
            crc: 0xdead_beef,
        };
        assert_eq!(Pointer::decode(&p.encode()), Some(p));
        let mut short = p.encode().to_vec();
        short.pop();
        assert_eq!(Pointer::decode(&short), None);
        let mut long = p.encode().to_vec();
        long.push(0);
        assert_eq!(Pointer::decode(&long), None);
        let mut other = p.encode();
        other[1] = b'X';
        assert_eq!(Pointer::decode(&other), None);
    }

    #[test]
    fn small_values_stay_inline_and_large_ones_are_read_back_from_where_they_were_put() {
        let d = tempfile::tempdir().unwrap();
        let log = ValueLog::open(d.path(), 0).unwrap();
        let mut b = log.batch();
        let small = val(INLINE_MAX, 1);
        assert_eq!(b.put(&small), small);
        // A small value that reads as a pointer goes to the log all the same.
        let fake = Bytes::copy_from_slice(
            &Pointer {
                at: 0,
                len: 5,
                crc: 0,
            }
            .encode(),
        );
        let pfake = b.put(&fake);
        assert_ne!(pfake, fake);
        let (x, y) = (val(INLINE_MAX + 1, 2), val(3000, 3));
        let (px, py) = (b.put(&x), b.put(&y));
        assert_eq!((px.len(), py.len()), (POINTER_LEN, POINTER_LEN));
        // Not readable before it is written.
        assert!(log.resolve(&py).is_err());
        let end = log.write(&b).unwrap();
        assert_eq!(end, (POINTER_LEN + x.len() + y.len()) as u64);
        assert_eq!(log.resolve(&pfake).unwrap(), Some(fake));
        assert_eq!(log.resolve(&px).unwrap(), Some(x.clone()));
        assert_eq!(log.resolve(&py).unwrap(), Some(y.clone()));
        assert_eq!(log.resolve(&small).unwrap(), None);
        // The next batch goes on from the end.
        let mut b = log.batch();
        let z = val(100, 4);
        let pz = b.put(&z);
        log.write(&b).unwrap();
        assert_eq!(log.resolve(&pz).unwrap(), Some(z));
        assert_eq!(log.resolve(&px).unwrap(), Some(x));
    }

    #[test]
    fn an_apply_redb_never_took_is_left_and_gone_past_at_open_and_a_lost_end_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let log = ValueLog::open(d.path(), 0).unwrap();
        let mut b = log.batch();
        let kept = b.put(&val(500, 7));
        let end = log.write(&b).unwrap();
        let mut b = log.batch();
        b.put(&val(800, 8));
        log.write(&b).unwrap();
        drop(log);
        let path = d.path().join(FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1300);
        // redb took only the first apply: the second's bytes stay, and the log goes on after.
        let log = ValueLog::open(d.path(), end).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1300);
        assert_eq!(log.resolve(&kept).unwrap(), Some(val(500, 7)));
        let mut b = log.batch();
        let next = b.put(&val(100, 9));
        assert_eq!(log.write(&b).unwrap(), 1400);
        assert_eq!(log.resolve(&next).unwrap(), Some(val(100, 9)));
        drop(log);
        let e = ValueLog::open(d.path(), 1401).err().unwrap();
        assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
        assert!(e.to_string().contains("Restore the data directory"), "{e}");
        // The file as it was: the refusal changed nothing.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1400);
    }

    #[test]
    fn a_write_syncs_nothing_until_asked_and_after_an_open_the_whole_log_is_unsynced() {
        let d = tempfile::tempdir().unwrap();
        let log = ValueLog::open(d.path(), 0).unwrap();
        log.sync_written().unwrap();
        assert_eq!(log.syncs(), 0, "an empty log: nothing to sync");
        // Nothing to put: nothing written, nothing synced, the end where it was.
        assert_eq!(log.write(&log.batch()).unwrap(), 0);
        log.sync_written().unwrap();
        assert_eq!(log.syncs(), 0);
        let mut b = log.batch();
        b.put(&val(500, 1));
        let end = log.write(&b).unwrap();
        assert_eq!(
            (log.syncs(), log.unsynced()),
            (0, 500),
            "written, not synced"
        );
        log.sync_written().unwrap();
        assert_eq!((log.syncs(), log.unsynced()), (1, 0));
        log.sync_written().unwrap();
        assert_eq!(log.syncs(), 1, "nothing written since");
        drop(log);
        // Whatever a killed process left in the page cache, taken by redb or not, counts as
        // unsynced after an open, so that the sync the store makes then covers it.
        for recorded in [end, end - 1] {
            let log = ValueLog::open(d.path(), recorded).unwrap();
            assert_eq!(log.unsynced(), 500, "open at {recorded}");
            log.sync_written().unwrap();
            assert_eq!((log.syncs(), log.unsynced()), (1, 0), "open at {recorded}");
            assert_eq!(log.write(&log.batch()).unwrap(), end);
        }
    }

    #[test]
    fn a_failed_sync_leaves_what_it_did_not_cover_unsynced() {
        let d = tempfile::tempdir().unwrap();
        let log = ValueLog::open(d.path(), 0).unwrap();
        let mut b = log.batch();
        b.put(&val(300, 2));
        log.write(&b).unwrap();
        log.fail_syncs.store(true, Ordering::Relaxed);
        let e = log.sync_written().unwrap_err();
        assert!(e.to_string().contains(FILE), "{e}");
        assert_eq!(log.unsynced(), 300);
        log.fail_syncs.store(false, Ordering::Relaxed);
        log.sync_written().unwrap();
        assert_eq!(log.unsynced(), 0);
    }

    #[test]
    fn a_damaged_value_or_a_pointer_past_the_end_is_an_error_never_other_bytes() {
        let d = tempfile::tempdir().unwrap();
        let log = ValueLog::open(d.path(), 0).unwrap();
        let mut b = log.batch();
        let p = b.put(&val(200, 9));
        log.write(&b).unwrap();
        log.file.write_all_at(&[0], 10).unwrap();
        let e = log.resolve(&p).unwrap_err();
        assert!(e.to_string().contains("fails its checksum"), "{e}");
        let past = Pointer {
            at: 150,
            len: 51,
            crc: 0,
        };
        let e = log.resolve(&past.encode()).unwrap_err();
        assert!(e.to_string().contains("past its end"), "{e}");
        let overflow = Pointer {
            at: u64::MAX,
            len: 1,
            crc: 0,
        };
        assert!(log.resolve(&overflow.encode()).is_err());
    }
}
