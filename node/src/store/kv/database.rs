//! The redb file with the journal in front of it: replay at open, commits, the applier and
//! the journal's syncer.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redb::{Durability, StorageError, TableError};

use super::super::journal::{self, JournalError, Segment};
use super::super::overlay::{Cmp, Entry, Overlay, Run};
use super::table::{Own, ReadTransaction, Snapshot, TxKind, WriteTransaction};
use super::values::{self, ValueLog};
use super::{APPLIED, APPLIED_KEY, MAX_APPLY_FAILURES, MAX_PENDING_BYTES, Spec, other};

/// When the journal is synced and applied.
#[derive(Clone)]
pub(in crate::store) struct Policy {
    /// Commit through the journal. Without it every write transaction goes straight into
    /// redb (as the opening one does), and the journal is only replayed at open.
    pub journal: bool,
    /// `fdatasync` the journal in every durable commit (`[store] sync = "always"`).
    pub always: bool,
    /// Otherwise a thread syncs it this often, and the applier syncs redb's file (the value
    /// log first) as often.
    pub sync_every: Option<Duration>,
    /// How often the applier takes what is pending into redb.
    pub apply_every: Duration,
    /// A segment is closed past this size or age, and deleted once redb has taken it.
    pub rotate_bytes: u64,
    pub rotate_age: Duration,
    /// Make what redb has taken durable (a real sync of redb's file where its commits do not
    /// sync; nothing where they do): before a segment it covers is deleted, and, with
    /// `sync_every`, once an interval while redb's file has been written to. Always called
    /// through [`Inner::sync_in_order`] or [`sync_files`], the value log first.
    pub sync_base: Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>,
    /// Told of a failed sync of the journal (by its syncer), of the value log or of redb's
    /// file (by the applier, at open or at close): what was acknowledged since the last sync
    /// may be lost. It must make later commits fail and keep redb's file from being synced
    /// again (the store's backend, `sync::SyncFailure`).
    pub on_sync_failure: Arc<dyn Fn(&std::io::Error) + Send + Sync>,
    /// Why commits must fail (a failed sync of the store, in this process), if they must.
    pub poisoned: Arc<dyn Fn() -> Option<std::io::Error> + Send + Sync>,
}

struct State {
    segment: Segment,
    opened: Instant,
    /// Closed segments, oldest first, with the last commit each holds.
    closed: Vec<(u64, u64)>,
    next_commit: u64,
    overlay: Overlay,
    /// Bytes of the frames in the overlay.
    pending_bytes: usize,
    /// Applies that failed in a row.
    apply_failures: u32,
    /// Why commits fail from now on (a failed append or sync: the journal can no longer be
    /// trusted to hold what it acknowledges).
    failed: Option<String>,
    /// redb's file as of its last commit, shared by the transactions begun since
    /// ([`Database::begin_read`]); `None` once redb commits again.
    snapshot: Option<Arc<Snapshot>>,
}

pub(super) struct Inner {
    redb: redb::Database,
    /// Where the spilled tables' large values are.
    pub(super) values: Arc<ValueLog>,
    dir: PathBuf,
    policy: Policy,
    state: Mutex<State>,
    specs: Mutex<HashMap<&'static str, Spec>>,
    /// Taken by the one write transaction in progress.
    writing: (Mutex<bool>, Condvar),
    /// One apply at a time; also held from the value log's sync through redb's file's, so that
    /// no apply runs between the two.
    applying: Mutex<()>,
    /// redb's file was written to since its last sync (read only with `sync_every`).
    base_dirty: AtomicBool,
    /// When redb's file was last synced.
    base_synced_at: Mutex<Instant>,
    /// Why a sync of the value log or of redb's file failed, if one did: redb takes no more
    /// commits and its file is never synced again in this process (the log may have lost
    /// pages redb points to).
    sync_failed: Mutex<Option<String>>,
    /// Set to stop the applier and the syncer, see [`Database::close`].
    stop: Arc<(Mutex<bool>, Condvar)>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(super) fn register(&self, spec: Spec) {
        lock(&self.specs).entry(spec.name).or_insert(spec);
    }

    /// Whether commits can go on (no failed sync or append, here or of the store's file).
    pub(super) fn usable(&self) -> Result<(), StorageError> {
        if let Some(e) = (self.policy.poisoned)() {
            return Err(StorageError::Io(e));
        }
        if let Some(why) = &*lock(&self.sync_failed) {
            return Err(other(format!(
                "a sync of the store failed ({why}): what was acknowledged since the sync \
                 before may not be on disk, so the store takes no more writes; restart the node"
            )));
        }
        match &lock(&self.state).failed {
            Some(why) => Err(other(format!(
                "the store's journal failed earlier ({why}); the store opens its file again"
            ))),
            None => Ok(()),
        }
    }

    pub(super) fn end_write(&self) {
        let (busy, cv) = &self.writing;
        *lock(busy) = false;
        cv.notify_one();
    }

    pub(super) fn commit(
        &self,
        own: HashMap<&'static str, Own>,
        durable: bool,
    ) -> Result<(), StorageError> {
        self.usable()?;
        let mut st = lock(&self.state);
        let commit = st.next_commit;
        let mut tables: Vec<(&'static str, Cmp, Vec<Entry>)> = own
            .into_iter()
            .map(|(name, o)| {
                let entries = o.writes.into_iter().map(|(k, v)| (k.bytes, v)).collect();
                (name, o.cmp, entries)
            })
            .collect();
        tables.sort_by_key(|t| t.0);
        let frame = journal::encode_frame(
            commit,
            tables.iter().flat_map(|(name, _, entries)| {
                entries
                    .iter()
                    .map(move |(k, v)| (*name, k.as_ref(), v.as_deref()))
            }),
        );
        if st.pending_bytes >= MAX_PENDING_BYTES {
            return Err(other(format!(
                "{} MiB of commits are waiting for the store's file to take them (is it \
                 failing? see the log); retry later",
                MAX_PENDING_BYTES >> 20
            )));
        }
        // Appended under the lock (commit numbers in file order); synced outside it, so reads
        // and the applier go on meanwhile. A commit is in the overlay, and so visible, only
        // once it is as durable as asked: one write transaction at a time keeps the order.
        let synced = st.segment.append(&frame).and_then(|()| {
            if durable && self.policy.always {
                st.segment.sync_handle().map(Some)
            } else {
                Ok(None)
            }
        });
        let handle = match synced {
            Ok(h) => h,
            Err(e) => {
                st.failed = Some(e.to_string());
                return Err(other(e));
            }
        };
        st.next_commit += 1;
        if let Some(file) = handle {
            drop(st);
            if let Err(e) = file.sync_data() {
                let mut st = lock(&self.state);
                st.failed = Some(e.to_string());
                return Err(StorageError::Io(e));
            }
            st = lock(&self.state);
        }
        st.pending_bytes += frame.len();
        st.overlay = st
            .overlay
            .with(Run::new(commit, tables).with_bytes(frame.len()));
        Ok(())
    }

    /// One round of the applier: [`Inner::apply`], counting failures in a row; after
    /// [`MAX_APPLY_FAILURES`] of them, commits fail too.
    pub(super) fn apply_step(&self) {
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let applied = self.apply();
            self.sync_if_due();
            applied
        }))
        .unwrap_or_else(|_| {
            Err(other(
                "redb panicked while taking the journal (a damaged page?)",
            ))
        });
        if lock(&self.sync_failed).is_some() {
            // Commits fail already (`usable`); counting these would also stop the journal's
            // syncer, which still holds what was acknowledged since the last sync.
            return;
        }
        let mut st = lock(&self.state);
        match applied {
            Ok(()) => st.apply_failures = 0,
            Err(e) => {
                st.apply_failures += 1;
                let n = st.apply_failures;
                if n.is_power_of_two() {
                    tracing::error!(error = %e, failures = n, "applying the journal to the store file failed; retrying");
                }
                if n >= MAX_APPLY_FAILURES && st.failed.is_none() {
                    st.failed = Some(format!(
                        "the store file has not taken the journal in {n} tries ({e})"
                    ));
                }
            }
        }
    }

    /// Start a new segment when the current one is big or old enough: created (and, with
    /// `always`, synced) outside the lock; the old one synced too, so that a commit that did
    /// not ask for a sync of its own is on disk before any commit after it is.
    fn rotate(&self) {
        let (due, generation) = {
            let st = lock(&self.state);
            let due = st.failed.is_none()
                && (st.segment.len() >= self.policy.rotate_bytes
                    || st.opened.elapsed() >= self.policy.rotate_age);
            (due, st.segment.generation() + 1)
        };
        if !due {
            return;
        }
        let next = match Segment::create(&self.dir, generation, self.policy.always) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "could not start a new journal segment; appending to the current one");
                return;
            }
        };
        let mut st = lock(&self.state);
        if self.policy.always
            && let Err(e) = st.segment.sync_handle().and_then(|f| {
                f.sync_data().map_err(|source| JournalError::Io {
                    path: self.dir.clone(),
                    source,
                })
            })
        {
            st.failed = Some(e.to_string());
            return;
        }
        let last = st.next_commit - 1;
        let old = std::mem::replace(&mut st.segment, next);
        st.closed.push((old.generation(), last));
        st.opened = Instant::now();
    }

    /// Take everything pending into redb in one transaction, drop it from the overlay, and
    /// delete the segments it covers once redb's file has them on disk.
    fn apply(&self) -> Result<(), StorageError> {
        let _one = lock(&self.applying);
        if let Some(why) = &*lock(&self.sync_failed) {
            return Err(other(format!(
                "a sync of the store failed earlier ({why}); the store file takes nothing more"
            )));
        }
        if lock(&self.state).overlay.is_empty() {
            return Ok(());
        }
        self.rotate();
        let snapshot = lock(&self.state).overlay.clone();
        let Some(upto) = snapshot.runs().last().map(|r| r.commit()) else {
            return Ok(());
        };
        let specs = lock(&self.specs).clone();
        let taken = apply_runs(
            &self.redb,
            &specs,
            &snapshot,
            upto,
            &self.values,
            true,
            self.policy.always,
        );
        // Even a failed commit may have reached redb's file.
        self.base_dirty.store(true, Ordering::Release);
        taken?;
        let covered: Vec<u64> = {
            let mut st = lock(&self.state);
            st.overlay = st.overlay.without_upto(upto);
            // In the same step: a read then sees either the runs and any redb snapshot, or
            // redb as it has them and not the runs.
            st.snapshot = None;
            st.pending_bytes = st.overlay.runs().iter().map(|r| r.bytes()).sum();
            st.closed
                .iter()
                .take_while(|(_, last)| *last <= upto)
                .map(|(g, _)| *g)
                .collect()
        };
        if let Some(&newest) = covered.last() {
            self.sync_in_order().map_err(StorageError::Io)?;
            journal::remove_below(&self.dir, newest + 1).map_err(other)?;
            lock(&self.state).closed.retain(|(g, _)| *g > newest);
        }
        Ok(())
    }
}

impl Inner {
    /// Sync redb's file as it is now, the value log first (see [`sync_files`]). The caller
    /// holds `applying`, so that no apply writes the log between the two syncs. A failure is
    /// reported (`on_sync_failure`: `STORE-DAMAGED`, and commits fail) and final: redb takes
    /// no more commits and its file is not synced again, since the log may have lost pages
    /// redb's file points to, and a sync that succeeds after a failed one proves nothing of
    /// the pages the failure dropped.
    fn sync_in_order(&self) -> std::io::Result<()> {
        if let Some(why) = &*lock(&self.sync_failed) {
            return Err(std::io::Error::other(format!(
                "a sync of the store failed earlier ({why})"
            )));
        }
        // Failed elsewhere (the journal's syncer, the store's backend): reported there once.
        if let Some(e) = (self.policy.poisoned)() {
            *lock(&self.sync_failed) = Some(e.to_string());
            return Err(e);
        }
        // Cleared first: a direct commit meanwhile marks it again, for the next interval.
        self.base_dirty.store(false, Ordering::Release);
        match sync_files(&self.values, &self.policy) {
            Ok(()) => {
                *lock(&self.base_synced_at) = Instant::now();
                Ok(())
            }
            Err(e) => {
                (self.policy.on_sync_failure)(&e);
                *lock(&self.sync_failed) = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// With `sync_every`: sync redb's file, the value log first, once an interval while it
    /// has been written to. Under load the applier's deletion of journal segments (about once
    /// a second) does it already; this covers the rest: a quiet node, and the direct commits
    /// of the store's opening transaction.
    fn sync_if_due(&self) {
        let Some(every) = self.policy.sync_every else {
            return;
        };
        let due = || {
            self.base_dirty.load(Ordering::Acquire) && lock(&self.base_synced_at).elapsed() >= every
        };
        if !due() {
            return;
        }
        let _one = lock(&self.applying);
        // Again under the lock: an apply may have synced meanwhile.
        if due() {
            // Reported inside; commits fail from now on.
            let _ = self.sync_in_order();
        }
    }

    /// Sync the journal's current segment (outside the state lock, so commits go on);
    /// nothing once the journal has failed.
    fn sync_journal(&self) -> std::io::Result<()> {
        let file = {
            let st = lock(&self.state);
            if st.failed.is_some() {
                return Ok(());
            }
            st.segment.sync_handle()
        };
        let file = file.map_err(|e| match e {
            JournalError::Io { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        })?;
        file.sync_data()
    }

    /// Mark redb's file as written to outside the applier (a direct commit): reads begun
    /// from now on take a new snapshot of it.
    pub(super) fn wrote_base(&self) {
        self.base_dirty.store(true, Ordering::Release);
        lock(&self.state).snapshot = None;
    }
}

/// Sync the value log, then redb's file (`policy.sync_base`): a pointer in redb's file then
/// never reaches the disk through this sync before the bytes it points to. Where redb's own
/// commits sync its file (`always`), the applier syncs the log before each of them instead
/// ([`apply_runs`]).
fn sync_files(values: &ValueLog, policy: &Policy) -> std::io::Result<()> {
    values.sync_written().map_err(into_io)?;
    (policy.sync_base)()
}

fn into_io(e: StorageError) -> std::io::Error {
    match e {
        StorageError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

/// A failed sync at open, reported as any failed sync before redb's file is dropped (which
/// would sync it otherwise): the next start is refused, not fooled by a sync that succeeds
/// on a new handle after the pages were dropped.
fn report_at_open(synced: std::io::Result<()>, policy: &Policy) -> Result<(), StorageError> {
    synced.map_err(|e| {
        (policy.on_sync_failure)(&e);
        StorageError::Io(e)
    })
}

/// Write the runs of `overlay` up to commit `upto` into redb in one transaction (the newest
/// write of each key), with the commit redb now has; with `spill`, the spilled tables' large
/// values go to `values` first, redb taking pointers to them and the log's new end. With
/// `sync_values` (redb's commits sync its file), the log is synced before redb's commit;
/// without, before redb's file is ([`sync_files`]).
fn apply_runs(
    redb: &redb::Database,
    specs: &HashMap<&'static str, Spec>,
    overlay: &Overlay,
    upto: u64,
    values: &ValueLog,
    spill: bool,
    sync_values: bool,
) -> Result<(), StorageError> {
    let mut wtx = redb.begin_write().map_err(other)?;
    wtx.set_durability(Durability::Immediate);
    let mut batch = values.batch();
    let mut names: Vec<&'static str> = overlay
        .runs()
        .iter()
        .flat_map(|r| r.writes().map(|(t, _)| t))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let spec = specs.get(name).ok_or_else(|| {
            other(format!(
                "the journal holds writes to table {name}, which this build does not know"
            ))
        })?;
        let mut entries = overlay.range(name, Bound::Unbounded, Bound::Unbounded);
        if spec.spill {
            for (_, v) in &mut entries {
                // Without `spill`, only what redb would take for a pointer: never inline.
                if let Some(v) = v
                    && (spill || values::is_pointer(v))
                {
                    *v = batch.put(v);
                }
            }
        }
        (spec.apply)(&wtx, spec.name, &entries)?;
    }
    let put = !batch.is_empty();
    let end = values.write(&batch)?;
    if sync_values {
        values.sync_written()?;
    }
    {
        let mut t = wtx.open_table(APPLIED).map_err(other)?;
        t.insert(APPLIED_KEY, upto)?;
        // Only an apply that put values in the log moves the end redb holds: those bytes are
        // synced before redb's file is. One that put none would record the log's length,
        // which may take in bytes no apply of this process wrote (a tail a killed process
        // left, see `ValueLog::open`).
        if put {
            t.insert(values::END_KEY, end)?;
        }
    }
    wtx.commit().map_err(other)
}

/// The redb file with the journal in front of it.
#[derive(Clone)]
pub(crate) struct Database {
    pub(super) inner: Arc<Inner>,
}

impl Database {
    /// Put `redb` behind the journal in `dir`: replay what the journal holds that redb has
    /// not taken (tables as `specs` say), then start appending to a new segment, the applier,
    /// and (with `policy.sync_every`) the journal's syncer.
    pub(in crate::store) fn open(
        redb: redb::Database,
        dir: &Path,
        specs: &[Spec],
        policy: Policy,
    ) -> Result<Self, StorageError> {
        let specs: HashMap<&'static str, Spec> = specs.iter().map(|s| (s.name, *s)).collect();
        let (applied, values_end) = {
            let rtx = redb.begin_read().map_err(other)?;
            match rtx.open_table(APPLIED) {
                Ok(t) => (
                    t.get(APPLIED_KEY)?.map_or(0, |g| g.value()),
                    t.get(values::END_KEY)?.map_or(0, |g| g.value()),
                ),
                Err(TableError::TableDoesNotExist(_)) => (0, 0),
                Err(e) => return Err(other(e)),
            }
        };
        let (frames, torn) = journal::replay(dir).map_err(|e| match e {
            JournalError::Io { source, .. } => StorageError::Io(source),
            damaged => other(damaged),
        })?;
        if let Some(first) = frames.iter().find(|f| f.commit > applied)
            && first.commit != applied + 1
        {
            return Err(other(format!(
                "the store file has taken the journal up to commit {applied}, and the journal \
                 goes on from commit {}: the commits in between are missing. Restore the data \
                 directory from a backup",
                first.commit
            )));
        }
        if let Some((path, at)) = &torn {
            // Kept, not deleted: the bytes after `at` are the only trace of what happened.
            let aside = path.with_extension("jnl.torn");
            std::fs::rename(path, &aside).map_err(StorageError::Io)?;
            tracing::warn!(segment = %aside.display(), at, "the journal ended in an incomplete commit (a crash while it was written, so it was never acknowledged): replayed up to it, and the segment kept aside; delete it once you no longer need it");
        }
        let values = ValueLog::open(dir, values_end)?;
        // Synced whole before anything else: a process killed before its sync may have left
        // any of it in the page cache only, the bytes redb points to included.
        report_at_open(values.sync_written().map_err(into_io), &policy)?;
        let last = frames.last().map_or(applied, |f| f.commit.max(applied));
        let mut overlay = Overlay::default();
        let mut replayed = 0usize;
        for f in frames.into_iter().filter(|f| f.commit > applied) {
            let mut by_table: BTreeMap<&'static str, (Cmp, Vec<Entry>)> = BTreeMap::new();
            for w in f.writes {
                let spec = specs.get(w.table.as_str()).ok_or_else(|| {
                    other(format!(
                        "the journal holds writes to table {}, which this build does not know (a newer version wrote it?)",
                        w.table
                    ))
                })?;
                by_table
                    .entry(spec.name)
                    .or_insert_with(|| (spec.cmp, Vec::new()))
                    .1
                    .push((w.key, w.value));
            }
            overlay = overlay.with(Run::new(
                f.commit,
                by_table.into_iter().map(|(n, (c, e))| (n, c, e)),
            ));
            replayed += 1;
        }
        if !overlay.is_empty() {
            // Whole, not spilled: redb's file may still be at a layout whose readers know no
            // pointers; the store raises it after the open (`tables::init`). (A value that
            // would read as one goes to the log all the same: no store writes such a value.)
            let replay = apply_runs(&redb, &specs, &overlay, last, &values, false, policy.always);
            if let Err(e) = replay {
                // Even a failed commit may have reached redb's file, which its drop syncs.
                report_at_open(values.sync_written().map_err(into_io), &policy)?;
                return Err(e);
            }
            tracing::info!(commits = replayed, "journal replayed into the store");
        }
        report_at_open(sync_files(&values, &policy), &policy)?;
        let gens = journal::segments(dir).map_err(other)?;
        let next_gen = gens.last().map_or(0, |g| g + 1);
        journal::remove_below(dir, next_gen).map_err(other)?;
        let segment = Segment::create(dir, next_gen, policy.always).map_err(other)?;
        let inner = Arc::new(Inner {
            redb,
            values: Arc::new(values),
            dir: dir.to_path_buf(),
            policy: policy.clone(),
            state: Mutex::new(State {
                segment,
                opened: Instant::now(),
                closed: Vec::new(),
                next_commit: last + 1,
                overlay: Overlay::default(),
                pending_bytes: 0,
                apply_failures: 0,
                failed: None,
                snapshot: None,
            }),
            specs: Mutex::new(specs),
            writing: (Mutex::new(false), Condvar::new()),
            applying: Mutex::new(()),
            base_dirty: AtomicBool::new(false),
            base_synced_at: Mutex::new(Instant::now()),
            sync_failed: Mutex::new(None),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            threads: Mutex::new(Vec::new()),
        });
        spawn_every(APPLIER, policy.apply_every, &inner, true, Inner::apply_step);
        if let Some(every) = policy.sync_every {
            spawn_every(JOURNAL_SYNCER, every, &inner, false, |i| {
                if let Err(e) = i.sync_journal() {
                    (i.policy.on_sync_failure)(&e);
                    lock(&i.state).failed = Some(e.to_string());
                }
            });
        }
        Ok(Self { inner })
    }

    /// A read: the overlay, then redb.
    pub(in crate::store) fn begin_read(&self) -> Result<ReadTransaction, StorageError> {
        // Both under the lock: the applier drops runs under it only after redb has them, and
        // drops the shared snapshot of redb in the same step, so a snapshot taken before
        // redb had them never meets an overlay without them, and redb holds nothing newer
        // than the overlay copy (a run may be in both, the same). A direct commit drops the
        // snapshot after redb's commit and before its caller is answered (`wrote_base`).
        let mut st = lock(&self.inner.state);
        let overlay = st.overlay.clone();
        let base = match &st.snapshot {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Snapshot::new(self.inner.redb.begin_read().map_err(other)?));
                st.snapshot = Some(s.clone());
                s
            }
        };
        drop(st);
        Ok(ReadTransaction {
            overlay,
            base,
            values: self.inner.values.clone(),
        })
    }

    fn start_write(&self) {
        let (busy, cv) = &self.inner.writing;
        let mut b = lock(busy);
        while *b {
            b = cv.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        *b = true;
    }

    /// A write transaction whose commit is a journal append (straight into redb when the
    /// policy has no journal).
    pub(in crate::store) fn begin_write(&self) -> Result<WriteTransaction, StorageError> {
        if !self.inner.policy.journal {
            return self.begin_write_direct();
        }
        self.start_write();
        match self.begin_read() {
            Ok(ReadTransaction { overlay, base, .. }) => Ok(WriteTransaction {
                db: self.clone(),
                kind: TxKind::Journaled { overlay, base },
                own: RefCell::new(HashMap::new()),
                durability: Durability::Immediate,
            }),
            Err(e) => {
                self.inner.end_write();
                Err(e)
            }
        }
    }

    /// A write transaction straight into redb, for the store's opening transaction. Takes
    /// everything pending into redb first.
    pub(in crate::store) fn begin_write_direct(&self) -> Result<WriteTransaction, StorageError> {
        self.start_write();
        let direct = self
            .inner
            .apply()
            .and_then(|()| self.inner.redb.begin_write().map_err(other));
        match direct {
            Ok(wtx) => Ok(WriteTransaction {
                db: self.clone(),
                kind: TxKind::Direct(Box::new(wtx)),
                own: RefCell::new(HashMap::new()),
                durability: Durability::Immediate,
            }),
            Err(e) => {
                self.inner.end_write();
                Err(e)
            }
        }
    }

    /// Stop the applier and the syncer, take everything pending into redb, and close redb's
    /// file before returning, unless another handle (a transaction) still holds it. Dropping
    /// the last handle does the same, though a store thread may hold it a moment longer.
    pub(in crate::store) fn close(self) {
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        let (stop, cv) = &*self.inner.stop;
        *lock(stop) = true;
        cv.notify_all();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Commits not yet taken into redb.
    #[cfg(test)]
    pub(super) fn pending_commits(&self) -> usize {
        lock(&self.inner.state).overlay.runs().len()
    }

    /// Whether the journal has failed (commits fail, and its syncer stops).
    #[cfg(test)]
    pub(super) fn journal_failed(&self) -> bool {
        lock(&self.inner.state).failed.is_some()
    }

    /// Take everything pending into redb now.
    #[cfg(test)]
    pub(in crate::store) fn apply_now(&self) -> Result<(), StorageError> {
        self.inner.apply()
    }

    /// redb's own handle, everything pending taken first.
    #[cfg(test)]
    pub(in crate::store) fn redb(&self) -> Result<&redb::Database, StorageError> {
        self.inner.apply()?;
        Ok(&self.inner.redb)
    }
}

/// The applier's thread name. The store's threads are named within Linux's 15 characters, so
/// that `top -H` and `/proc` tell them apart.
pub(super) const APPLIER: &str = "bluewire-apply";
/// The journal's syncer's thread name (with `sync_every`).
pub(super) const JOURNAL_SYNCER: &str = "bluewire-jsync";

/// Schedule the calling thread as batch work (Linux's `SCHED_BATCH`): when it wakes it does not
/// preempt a running thread, so the applier's work waits for a gap between the threads that
/// carry messages instead of cutting into them. Its share of the CPU under load does not
/// change, so it does not fall behind.
///
/// Only a thread at nice value 0 (the default) is changed. The crate that makes the call also
/// sets nice 0, which would lift the thread above its siblings in a node started at a higher
/// nice value, or drop it below them in one started at a negative value. Best effort: where
/// the call cannot be made, the thread runs as any other.
///
/// It must never give the thread a smaller share of the CPU than the node's other threads (a
/// higher nice value, `SCHED_IDLE`): under load the applier then falls behind, and every read
/// looks through more commits waiting (BENCHMARKS.md, "The applier as batch work").
fn run_as_batch_work() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue,
            ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        match rustix::process::getpriority_process(None) {
            Ok(0) => {}
            Ok(nice) => {
                tracing::debug!(
                    nice,
                    "the store's applier stays an ordinary thread: the node runs at a nice value other than 0"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "the store's applier stays an ordinary thread: its nice value could not be read");
                return;
            }
        }
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Os(ThreadPriorityOsValue::default()),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
        ) {
            tracing::debug!(error = ?e, "the store's applier stays an ordinary thread: SCHED_BATCH was refused");
        }
    }
}

/// A thread that calls `f` every `every` until the database is closed or dropped, as batch
/// work ([`run_as_batch_work`]) with `batch`.
fn spawn_every(
    name: &'static str,
    every: Duration,
    inner: &Arc<Inner>,
    batch: bool,
    f: fn(&Inner),
) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    // Waits without holding the database, so that the last handle dropped closes it.
    let stop = inner.stop.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if batch {
                run_as_batch_work();
            }
            loop {
                let (flag, cv) = &*stop;
                let stopped = *cv
                    .wait_timeout_while(lock(flag), every, |stopped| !*stopped)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                if stopped {
                    return;
                }
                let Some(inner) = weak.upgrade() else { return };
                f(&inner);
            }
        });
    match spawned {
        Ok(handle) => lock(&inner.threads).push(handle),
        Err(e) => tracing::error!(error = %e, thread = name, "could not start a store thread"),
    }
}

impl Drop for Inner {
    /// The last apply, then the value log synced, before redb's file is (when redb closes it,
    /// after this; with `interval`, the store's backend syncs it then).
    fn drop(&mut self) {
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply()))
            .unwrap_or_else(|_| Err(other("redb panicked while taking the journal at close")));
        if let Err(e) = applied {
            tracing::error!(error = %e, "applying the journal at close failed (it is replayed at the next start)");
        }
        // redb's last commit, at its close, then has no read held by the database still open.
        lock(&self.state).snapshot = None;
        if self.policy.always {
            return;
        }
        // The journal's tail (its syncer has stopped): if the last apply failed, it alone
        // holds the newest commits, and the close is recorded as synced.
        let journal = self.sync_journal();
        let log = match &*lock(&self.sync_failed) {
            Some(_) => Ok(()),
            None => self.values.sync_written().map_err(into_io),
        };
        if let Err(e) = journal.and(log) {
            // Reported as any failed sync: the backend then leaves redb's file unsynced and
            // the close unrecorded.
            (self.policy.on_sync_failure)(&e);
            *lock(&self.sync_failed) = Some(e.to_string());
        }
    }
}
