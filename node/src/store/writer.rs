//! The store's single writer: the op queue, the writer thread with its group commit, inserts
//! committed by their callers, and every `Store` method that writes. How each op changes the
//! tables is in `apply`.
//!
//! Owns: [`Op`] (one per kind of write), [`Writer::run`] (take the first queued op, drain up
//! to [`MAX_GROUP`], hold lazy acks up to [`LAZY_HOLD`], apply the group in one write
//! transaction, commit, then answer), [`Route`] (with `[store] sync = "interval"`, where a
//! commit never syncs, an insert arriving while nothing else is being written is committed by
//! its caller, with the inserts ready at the same moment, instead of crossing to the writer
//! thread and back), retrying a group without the op that failed, and publishing the head seq
//! after a commit.
//!
//! It must never: answer an op before its transaction committed (an `Ok` means "on disk");
//! commit a group with `Durability::None` when any op in it must be durable; let a failed
//! op abort the rest of its group; write without holding `Writer::committing` (one write
//! transaction at a time, by the writer thread or a leading caller); sync the disk on a
//! caller's thread; commit after the writer has closed; panic on a corrupted record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;

use super::kv::Durability;
use tokio::sync::{mpsc, oneshot, watch};

use super::tables::{AuditHead, META_NEXT_SEQ, RelayRecord, open_tables};
use super::{
    AnnotationRecord, ApiTokenRecord, InsertOutcome, Keep, LAZY_HOLD, MAX_GROUP, NewMessage,
    Rejection, Result, Store, StoreError, db_err, lock, message_key,
};
use crate::audit::AuditEvent;

mod apply;

// ---- writer ops ----------------------------------------------------------------------------

type Reply<T> = oneshot::Sender<Result<T>>;

pub(super) enum Op {
    Insert {
        msgs: Vec<NewMessage>,
        reply: Reply<Vec<InsertOutcome>>,
    },
    Ack {
        peer: String,
        seqs: Vec<u64>,
        audit: Vec<AuditEvent>,
        /// May be held back to ride along with the next commit (see [`Op::lazy`]).
        lazy: bool,
        reply: Reply<()>,
    },
    DropOutbox {
        peer: String,
        reply: Reply<u64>,
    },
    Enqueue {
        peer: String,
        seqs: Vec<u64>,
        reply: Reply<u64>,
    },
    /// Envelopes taken on to carry to `to` (relay): (record, its audit record when kept).
    RelayPut {
        to: String,
        items: Vec<(RelayRecord, AuditEvent)>,
        limits: super::RelayLimits,
        reply: Reply<Vec<super::RelayPut>>,
    },
    /// Carried envelopes moved to the back of `to`'s queue (the recipient asked to retry).
    RelayRequeue {
        to: String,
        seqs: Vec<u64>,
        reply: Reply<()>,
    },
    /// Carried envelopes handed on (or given up), with their audit records.
    RelayAck {
        to: String,
        seqs: Vec<u64>,
        audit: Vec<AuditEvent>,
        reply: Reply<()>,
    },
    Reject {
        rejection: Rejection,
        reply: Reply<()>,
    },
    PutKey {
        key_id: String,
        org: String,
        public_key: Vec<u8>,
        reply: Reply<()>,
    },
    SetCursor {
        name: String,
        seq: u64,
        reply: Reply<()>,
    },
    AppendCluster {
        cluster_id: String,
        entries: Vec<(u64, Vec<u8>)>,
        reply: Reply<()>,
    },
    PutDirectory {
        org: String,
        cert_der: Vec<u8>,
        reply: Reply<()>,
    },
    Annotate {
        key: String,
        kind: String,
        record: AnnotationRecord,
        keep: Keep,
        reply: Reply<bool>,
    },
    AppendAudit {
        events: Vec<AuditEvent>,
        reply: Reply<()>,
    },
    PutToken {
        record: ApiTokenRecord,
        audit: Vec<AuditEvent>,
        reply: Reply<()>,
    },
    RevokeToken {
        id: String,
        at_ms: i64,
        audit: Vec<AuditEvent>,
        reply: Reply<Option<ApiTokenRecord>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

impl Op {
    /// Whether the caller needs this op on disk before it is answered.
    /// Outbox acks do not: losing one in a crash only means the envelope is
    /// delivered again, and receivers deduplicate by id. Audit appends do not either: they
    /// are frequent (several per message), and a crash can only lose the newest records
    /// together with the head that covers them, never break the chain.
    fn durable(&self) -> bool {
        !matches!(self, Op::Ack { .. } | Op::AppendAudit { .. })
    }

    /// An outbox ack of `seqs` for `peer`, its audit records clipped.
    fn ack(peer: &str, seqs: Vec<u64>, audit: Vec<AuditEvent>, lazy: bool, reply: Reply<()>) -> Op {
        Op::Ack {
            peer: peer.to_owned(),
            seqs,
            audit: audit.into_iter().map(AuditEvent::clip).collect(),
            lazy,
            reply,
        }
    }

    /// Whether the writer may hold this op back (up to [`LAZY_HOLD`]) so it rides along with
    /// the next commit instead of costing one of its own: outbox acks sent with
    /// [`Store::ack_outbox_detached`] (the delivery worker's, which it does not wait for: it
    /// keeps an in-memory "sent up to" cursor) or [`Store::ack_outbox_later`]. At a low
    /// message rate each delivered batch to each peer would otherwise be a write transaction
    /// of its own.
    fn lazy(&self) -> bool {
        matches!(self, Op::Ack { lazy: true, .. })
    }
}

/// What an applied op produced, held until its group commits.
enum Applied {
    Outcomes(Vec<InsertOutcome>),
    Unit,
    Count(u64),
    Flag(bool),
    Token(Option<ApiTokenRecord>),
    Relayed(Vec<super::RelayPut>),
}

impl Op {
    /// Answers the caller. Send failures mean the caller stopped waiting; the write stands.
    fn answer(self, res: Result<Applied>) {
        match (self, res) {
            (op, Err(e)) => op.fail(e),
            (Op::Insert { reply, .. }, Ok(Applied::Outcomes(v))) => {
                let _ = reply.send(Ok(v));
            }
            (Op::DropOutbox { reply, .. } | Op::Enqueue { reply, .. }, Ok(Applied::Count(n))) => {
                let _ = reply.send(Ok(n));
            }
            (Op::RelayPut { reply, .. }, Ok(Applied::Relayed(v))) => {
                let _ = reply.send(Ok(v));
            }
            (Op::Annotate { reply, .. }, Ok(Applied::Flag(b))) => {
                let _ = reply.send(Ok(b));
            }
            (Op::RevokeToken { reply, .. }, Ok(Applied::Token(t))) => {
                let _ = reply.send(Ok(t));
            }
            (
                Op::Ack { reply, .. }
                | Op::RelayRequeue { reply, .. }
                | Op::RelayAck { reply, .. }
                | Op::Reject { reply, .. }
                | Op::PutKey { reply, .. }
                | Op::SetCursor { reply, .. }
                | Op::AppendCluster { reply, .. }
                | Op::PutDirectory { reply, .. }
                | Op::AppendAudit { reply, .. }
                | Op::PutToken { reply, .. },
                Ok(Applied::Unit),
            ) => {
                let _ = reply.send(Ok(()));
            }
            (op, Ok(_)) => op.fail(StoreError::Internal("writer op/result mismatch")),
        }
    }

    fn fail(self, e: StoreError) {
        match self {
            Op::Insert { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::DropOutbox { reply, .. } | Op::Enqueue { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::Annotate { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::RelayPut { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::RevokeToken { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::Ack { reply, .. }
            | Op::RelayRequeue { reply, .. }
            | Op::RelayAck { reply, .. }
            | Op::Reject { reply, .. }
            | Op::PutKey { reply, .. }
            | Op::SetCursor { reply, .. }
            | Op::AppendCluster { reply, .. }
            | Op::PutDirectory { reply, .. }
            | Op::AppendAudit { reply, .. }
            | Op::PutToken { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::Close { reply } => {
                let _ = reply.send(());
            }
        }
    }
}

/// Where [`Writer::route`] sends an op.
enum Route {
    /// To the writer thread's queue.
    Queue(Op),
    /// Into a group that is already waiting to commit: the lazy acks the writer thread holds
    /// back, or the inserts a leading caller is gathering. Answered when that group commits.
    Joined,
    /// Its caller leads: it lets the other callers that are ready run first, so that they join
    /// its group ([`Leading`]), then commits the group itself, without the writer thread. That
    /// is two thread wake-ups fewer on a message's path, and it keeps the group commit: the
    /// inserts of one signed batch, answered together, still share one commit.
    Lead,
}

/// A caller leading a group: the group commits when this is dropped, after the leader's
/// yield or, if its caller stopped waiting, at once (the other callers in the group are still
/// waiting for their answers, and an insert may commit although its caller went).
struct Leading<'a> {
    writer: &'a Writer,
    /// The writer thread's queue, for a group that finds the file closed by an I/O error.
    queue: &'a mpsc::Sender<Op>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.writer.commit_gathered(self.queue);
    }
}

/// Lazy acks the writer thread holds back (up to [`LAZY_HOLD`]) so that they ride along with
/// the next commit, whoever makes it.
pub(super) struct Held {
    pub(super) ops: Vec<Op>,
    pub(super) since: std::time::Instant,
}

impl Held {
    /// Whether `n` more ops may join those held at `now`: the group stays under
    /// [`MAX_GROUP`], and what is held has not waited [`LAZY_HOLD`] yet.
    pub(super) fn has_room(&self, n: usize, now: std::time::Instant) -> bool {
        self.ops.len() + n < MAX_GROUP
            && (self.ops.is_empty() || now.saturating_duration_since(self.since) < LAZY_HOLD)
    }

    /// Hold `ops` back too; the hold starts with the first op held.
    fn add(&mut self, ops: impl IntoIterator<Item = Op>) {
        if self.ops.is_empty() {
            self.since = std::time::Instant::now();
        }
        self.ops.extend(ops);
    }
}

/// Why applying a group did not reach commit.
enum GroupFailure {
    /// Op `index` failed: it gets the error, the rest of the group is retried without it.
    Op(usize, StoreError),
    /// The transaction itself failed: every op gets the error.
    Txn(StoreError),
}

pub(super) struct Writer {
    pub(super) db: super::DbSlot,
    pub(super) head: Arc<watch::Sender<u64>>,
    pub(super) commits: Arc<AtomicU64>,
    pub(super) commit_nanos: Arc<AtomicU64>,
    /// The committed audit head. Only a commit changes it (after it, under `committing`).
    pub(super) audit_head: Arc<Mutex<AuditHead>>,
    /// Messages with annotations: noted before the transaction that writes one commits.
    pub(super) annotated: super::Annotated,
    /// After a reopen that lost audit records which had not reached the disk: (the last
    /// record kept, the last one lost), to be recorded by the next commit that succeeds.
    pub(super) rewound: Mutex<Option<(u64, u64)>>,
    /// Set once the writer has committed everything and is exiting normally (a clean
    /// shutdown may then be recorded, see `clean`). Set under `committing`, so no commit
    /// follows it.
    pub(super) done: Arc<std::sync::atomic::AtomicBool>,
    /// Held while a group is applied and committed: by the writer thread, or by a caller
    /// committing a group of inserts itself ([`Route::Lead`]). One write transaction at a time.
    pub(super) committing: Mutex<()>,
    /// The writer thread has taken ops off its queue and not answered them yet (lazy acks it
    /// holds back do not count): a caller then leaves its insert to the writer.
    pub(super) busy: AtomicBool,
    /// Whether a caller may commit inserts itself: only where a commit is a write to the
    /// kernel and never a sync (`[store] sync = "interval"`), so it cannot hold the caller's
    /// runtime thread for a disk's flush. (Also in the unit tests' second run of the store's
    /// suite, with every commit through the journal, so that the whole suite runs this path.)
    pub(super) here: bool,
    /// Commits made by their caller rather than by the writer thread.
    pub(super) commits_by_caller: AtomicU64,
    /// The inserts a leading caller is gathering for its commit ([`Route::Lead`]).
    pub(super) gathering: Mutex<Option<Vec<Op>>>,
    /// Lazy acks held back: every commit takes them first ([`Writer::commit_all`]).
    pub(super) held: Mutex<Held>,
}

impl Writer {
    pub(super) fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Op>) {
        // A clock for waiting on the queue with a deadline (lazy ops, below). If it cannot be
        // built, lazy ops are simply committed at once.
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok();
        let mut closing = None;
        let mut group = Vec::with_capacity(64);
        loop {
            let deadline = {
                let held = lock(&self.held);
                (!held.ops.is_empty()).then(|| held.since + LAZY_HOLD)
            };
            let first = match (&clock, deadline) {
                (Some(clock), Some(deadline)) => {
                    match clock.block_on(async {
                        tokio::time::timeout_at(deadline.into(), rx.recv()).await
                    }) {
                        Ok(op) => op,
                        Err(_elapsed) => {
                            // What is still held (a caller's commit may have taken it).
                            self.busy.store(true, Ordering::Release);
                            self.commit_taken(Vec::new());
                            continue;
                        }
                    }
                }
                _ => rx.blocking_recv(),
            };
            let Some(first) = first else { break };
            self.busy.store(true, Ordering::Release);
            match first {
                Op::Close { reply } => closing = Some(reply),
                op => group.push(op),
            }
            while closing.is_none() && group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Op::Close { reply }) => closing = Some(reply),
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            if closing.is_some() {
                break;
            }
            if clock.is_some() && group.iter().all(Op::lazy) {
                let mut held = lock(&self.held);
                if held.has_room(group.len(), std::time::Instant::now()) {
                    held.add(group.drain(..));
                    drop(held);
                    self.busy.store(false, Ordering::Release);
                    continue;
                }
            }
            self.commit_taken(std::mem::take(&mut group));
        }
        // Whatever is still held or gathered commits before the writer goes, and nothing after
        // it; ops queued after Close are dropped here and their callers see StoreError::Closed.
        {
            let _one = lock(&self.committing);
            self.commit_all(group);
            self.done.store(true, Ordering::Release);
        }
        drop(rx);
        drop(self);
        if let Some(reply) = closing {
            let _ = reply.send(());
        }
    }

    /// The writer thread's commit of what it took off the queue.
    fn commit_taken(&self, group: Vec<Op>) {
        {
            let _one = lock(&self.committing);
            self.commit_all(group);
        }
        self.busy.store(false, Ordering::Release);
    }

    /// Under `committing`: commits the lazy acks held back, the inserts a leading caller is
    /// gathering (if any), then `own`, in one group. Whoever commits takes what waits, so
    /// nothing that joined a group is left behind. Each of the three is bounded by
    /// [`MAX_GROUP`], so a group holds at most three times that. Returns whether it committed
    /// anything.
    fn commit_all(&self, own: Vec<Op>) -> bool {
        let mut group = std::mem::take(&mut lock(&self.held).ops);
        if let Some(gathered) = lock(&self.gathering).take() {
            group.extend(gathered);
        }
        group.extend(own);
        self.commit_group(group)
    }

    /// Where an op goes (see [`Route`]). A lazy ack joins those the writer thread holds back,
    /// while it holds some, without waking it. An insert is committed by its caller only where
    /// a commit never syncs ([`Writer::here`]), and a caller leads only while the writer thread
    /// has nothing taken off its queue, nothing is queued and no commit is in progress.
    fn route(&self, op: Op, queue_empty: bool) -> Route {
        if op.lazy() {
            let mut held = lock(&self.held);
            if !held.ops.is_empty() && held.has_room(0, std::time::Instant::now()) {
                held.ops.push(op);
                return Route::Joined;
            }
            return Route::Queue(op);
        }
        if !self.here || !matches!(op, Op::Insert { .. }) {
            return Route::Queue(op);
        }
        let mut gathering = lock(&self.gathering);
        if let Some(ops) = gathering.as_mut() {
            if ops.len() >= MAX_GROUP {
                return Route::Queue(op);
            }
            ops.push(op);
            return Route::Joined;
        }
        let committing = matches!(self.committing.try_lock(), Err(TryLockError::WouldBlock));
        if !queue_empty || committing || self.busy.load(Ordering::Acquire) || !self.db.is_open() {
            return Route::Queue(op);
        }
        *gathering = Some(vec![op]);
        Route::Lead
    }

    /// Hold `op` back with the lazy acks, whatever their number (see
    /// [`Store::ack_outbox_detached`]).
    fn hold(&self, op: Op) {
        lock(&self.held).add([op]);
    }

    /// The leader's commit: after the commit in progress if there is one (a commit never
    /// syncs here, so that wait is short), of whatever waits then ([`Writer::commit_all`]).
    /// After the writer has closed, the group is refused; if an I/O error has closed the file
    /// meanwhile, the group goes to the writer thread, which reopens it (a reopen may sync,
    /// and that is not for a caller's thread).
    fn commit_gathered(&self, queue: &mpsc::Sender<Op>) {
        let _one = lock(&self.committing);
        if self.done.load(Ordering::Acquire) {
            for op in lock(&self.gathering).take().unwrap_or_default() {
                op.fail(StoreError::Closed);
            }
        } else if !self.db.is_open() {
            for op in lock(&self.gathering).take().unwrap_or_default() {
                if let Err(full) = queue.try_send(op) {
                    full.into_inner().fail(StoreError::Reopening);
                }
            }
        } else if self.commit_all(Vec::new()) {
            self.commits_by_caller.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies and commits `group`, retrying it without an op that failed; answers every op.
    /// Returns whether a transaction committed.
    fn commit_group(&self, mut group: Vec<Op>) -> bool {
        for op in &group {
            if let Op::Annotate { key, .. } = op {
                self.annotated.note(key);
            }
        }
        loop {
            if group.is_empty() {
                return false;
            }
            let started = std::time::Instant::now();
            let tried = self.try_group(&group);
            self.commit_nanos.fetch_add(
                u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            match tried {
                Ok((applied, new_head)) => {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = new_head {
                        self.head.send_replace(h);
                    }
                    for (op, a) in group.into_iter().zip(applied) {
                        op.answer(Ok(a));
                    }
                    return true;
                }
                Err(GroupFailure::Op(i, e)) => {
                    tracing::warn!(error = %e, "store op failed; retrying the rest of its group");
                    if e.needs_reopen() {
                        self.db.close();
                    }
                    group.remove(i).fail(e);
                }
                Err(GroupFailure::Txn(e)) => {
                    tracing::error!(error = %e, ops = group.len(), "store group commit failed");
                    if e.needs_reopen() {
                        // redb refuses everything after an I/O error: the next group
                        // reopens the file (recovering what was committed durably).
                        self.db.close();
                    }
                    for op in group {
                        op.fail(e.clone());
                    }
                    return false;
                }
            }
        }
    }

    /// Applies the group in one write transaction and commits it. Returns each op's result
    /// and the new head seq if messages were added.
    fn try_group(&self, group: &[Op]) -> Result<(Vec<Applied>, Option<u64>), GroupFailure> {
        let txn = |e| GroupFailure::Txn(e);
        let db = self.db.get().map_err(txn)?;
        if let Some((head, audit_head)) = self.db.take_reopened() {
            // What the reopened file holds is the truth (non-durable commits may be gone).
            self.head.send_replace(head);
            let before = std::mem::replace(&mut *lock(&self.audit_head), audit_head.clone()).0;
            if audit_head.0 < before {
                // Auditors will see those sequence numbers again: say so in the chain.
                let mut r = lock(&self.rewound);
                let lost_upto = r.map_or(before, |(_, upto)| upto.max(before));
                *r = Some((audit_head.0, lost_upto));
            }
        }
        let rewound = *lock(&self.rewound);
        let audit_before = lock(&self.audit_head).clone();
        let mut wtx = db
            .begin_write()
            .map_err(db_err("begin write"))
            .map_err(txn)?;
        let durability = if rewound.is_some() || group.iter().any(Op::durable) {
            Durability::Immediate
        } else {
            Durability::None
        };
        wtx.set_durability(durability);
        let mut applied = Vec::with_capacity(group.len());
        let mut audit_after = None;
        let (start, end) = {
            let mut t = open_tables(&wtx, audit_before.clone()).map_err(txn)?;
            if let Some((kept, lost_upto)) = rewound {
                t.append_audit(&[AuditEvent::store(format!(
                    "store reopened after an I/O error: audit records {}..={lost_upto} had not \
                     reached the disk and are gone; their sequence numbers are used again from here",
                    kept + 1
                ))])
                .map_err(txn)?;
            }
            let start = t.next_seq;
            for (i, op) in group.iter().enumerate() {
                if matches!(op, Op::Enqueue { .. } | Op::DropOutbox { .. }) {
                    // What earlier inserts of the group queued is in the outbox first. (An ack
                    // names only seqs committed before: it was read from the outbox.)
                    t.write_outbox().map_err(txn)?;
                }
                match t.apply(op) {
                    Ok(a) => applied.push(a),
                    Err(e) => {
                        drop(t);
                        if let Err(abort) = wtx.abort() {
                            tracing::warn!(error = %abort, "store: aborting a write failed");
                        }
                        return Err(GroupFailure::Op(i, e));
                    }
                }
            }
            t.write_outbox().map_err(txn)?;
            if t.next_seq != start {
                t.meta
                    .insert(META_NEXT_SEQ, t.next_seq)
                    .map_err(db_err("advance seq"))
                    .map_err(txn)?;
            }
            if t.audit_head != audit_before {
                t.write_audit_block().map_err(txn)?;
                t.put_audit_head().map_err(txn)?;
                audit_after = Some(t.audit_head.clone());
            }
            (start, t.next_seq)
        };
        wtx.commit().map_err(db_err("commit")).map_err(txn)?;
        if let Some(h) = audit_after {
            *lock(&self.audit_head) = h;
        }
        if rewound.is_some() {
            *lock(&self.rewound) = None;
        }
        Ok((applied, (end != start).then(|| end - 1)))
    }
}

/// Joins the writer thread when the last `Store` clone goes away (after the sender is dropped,
/// see the field order of `Inner`), so the file lock is released when `Store` is dropped.
pub(super) struct WriterThread(pub(super) Option<JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take()
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

impl Store {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        let (queue, writer) = (&self.inner.tx, &*self.inner.writer);
        match writer.route(make(reply), queue.capacity() == queue.max_capacity()) {
            Route::Queue(op) => queue.send(op).await.map_err(|_| StoreError::Closed)?,
            Route::Joined => {}
            Route::Lead => {
                let _leading = Leading { writer, queue };
                tokio::task::yield_now().await;
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Group-committed; dedup by id (a duplicate adds nothing, not even outbox entries). seq is
    /// a local, strictly increasing u64 starting at 1, assigned in commit order: the
    /// subscribers' cursor. If the caller stops waiting, the insert may still commit.
    pub async fn insert(&self, msg: NewMessage) -> Result<InsertOutcome> {
        self.insert_many(vec![msg])
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::Internal("insert returned no outcome"))
    }

    /// Many at once, atomically, through the same writer. Results in order.
    pub async fn insert_many(&self, mut msgs: Vec<NewMessage>) -> Result<Vec<InsertOutcome>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        for m in &mut msgs {
            m.audit = std::mem::take(&mut m.audit)
                .into_iter()
                .map(AuditEvent::clip)
                .collect();
        }
        self.call(|reply| Op::Insert { msgs, reply }).await
    }

    /// Remove delivered entries (group-committed) and count them in the peer's delivered
    /// counter. Seqs that are not queued are ignored (acks are idempotent). Not fsynced on
    /// its own: it becomes durable with the next durable commit; a crash before that only
    /// causes a redelivery, which receivers deduplicate.
    pub async fn ack_outbox(&self, peer: &str, seqs: Vec<u64>) -> Result<()> {
        self.ack_outbox_audited(peer, seqs, Vec::new()).await
    }

    /// [`Store::ack_outbox`] plus audit records chained in the same transaction (what was
    /// delivered is recorded exactly when its outbox entries go).
    pub async fn ack_outbox_audited(
        &self,
        peer: &str,
        seqs: Vec<u64>,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        self.ack(peer, seqs, audit, false).await
    }

    /// [`Store::ack_outbox_audited`] for a caller that does not wait on it: the writer may hold
    /// it up to [`LAZY_HOLD`] to commit it with the next write instead of on its own.
    pub async fn ack_outbox_later(
        &self,
        peer: &str,
        seqs: Vec<u64>,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        self.ack(peer, seqs, audit, true).await
    }

    /// [`Store::ack_outbox_later`] for a caller that does not wait for the answer: nothing is
    /// spawned to wait on it, and while other lazy acks are held back, nothing is woken. The
    /// ack is held or queued for the writer before this returns (held, whatever their number,
    /// while the writer's queue is full: its next commit takes them), so [`Store::close`]
    /// commits it. No runtime is needed. A failed commit is logged by the writer; the entries
    /// stay queued and are sent again (receivers deduplicate), as after an ack that a crash
    /// lost. An ack made once the store has closed is dropped the same way.
    pub fn ack_outbox_detached(&self, peer: &str, seqs: Vec<u64>, audit: Vec<AuditEvent>) {
        if (seqs.is_empty() && audit.is_empty()) || self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        // The answer goes nowhere.
        let op = Op::ack(peer, seqs, audit, true, oneshot::channel().0);
        let (queue, writer) = (&self.inner.tx, &*self.inner.writer);
        // Whether the queue is empty matters only to an insert's route.
        match writer.route(op, false) {
            Route::Joined => {}
            Route::Queue(op) => match queue.try_send(op) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                // The writer is busy with a full queue: the ack waits with those held back,
                // which its next commit takes.
                Err(mpsc::error::TrySendError::Full(op)) => writer.hold(op),
            },
            // Only an insert leads (`Writer::route`); were an ack to, it would commit here.
            Route::Lead => drop(Leading { writer, queue }),
        }
    }

    async fn ack(
        &self,
        peer: &str,
        seqs: Vec<u64>,
        audit: Vec<AuditEvent>,
        lazy: bool,
    ) -> Result<()> {
        if seqs.is_empty() && audit.is_empty() {
            return Ok(());
        }
        self.call(|reply| Op::ack(peer, seqs, audit, lazy, reply))
            .await
    }

    /// Remove every queued entry for peer (returns how many were dropped).
    pub async fn drop_outbox(&self, peer: &str) -> Result<u64> {
        let peer = peer.to_owned();
        self.call(|reply| Op::DropOutbox { peer, reply }).await
    }

    /// Queues already-stored messages (by seq) for `peer`, oldest first like any outbox entry,
    /// and returns how many were newly queued (seqs already queued are skipped). Refuses the
    /// whole request with [`StoreError::Invalid`] if a seq has no stored message.
    pub async fn enqueue(&self, peer: &str, seqs: Vec<u64>) -> Result<u64> {
        if peer.is_empty() {
            return Err(StoreError::Invalid(
                "outbox peer is empty; name the org to queue messages for".into(),
            ));
        }
        if seqs.is_empty() {
            return Ok(0);
        }
        let peer = peer.to_owned();
        self.call(|reply| Op::Enqueue { peer, seqs, reply }).await
    }

    /// Keep `items` (each envelope with this node on its relay path) to carry to `to`, each
    /// with the audit record of taking it on (appended only when it is kept): durable before
    /// it returns. One copy per message and recipient; nothing beyond `limits`.
    pub async fn relay_put(
        &self,
        to: &str,
        items: Vec<(RelayRecord, AuditEvent)>,
        limits: super::RelayLimits,
    ) -> Result<Vec<super::RelayPut>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let to = to.to_owned();
        let items = items.into_iter().map(|(r, a)| (r, a.clip())).collect();
        self.call(|reply| Op::RelayPut {
            to,
            items,
            limits,
            reply,
        })
        .await
    }

    /// Move carried entries `seqs` for `to` to the back of its queue.
    pub async fn relay_requeue(&self, to: &str, seqs: Vec<u64>) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let to = to.to_owned();
        self.call(|reply| Op::RelayRequeue { to, seqs, reply })
            .await
    }

    /// Forget carried envelopes `seqs` for `to` (handed on, or given up), with audit records.
    pub async fn relay_ack(&self, to: &str, seqs: Vec<u64>, audit: Vec<AuditEvent>) -> Result<()> {
        if seqs.is_empty() && audit.is_empty() {
            return Ok(());
        }
        let to = to.to_owned();
        let audit = audit.into_iter().map(AuditEvent::clip).collect();
        self.call(|reply| Op::RelayAck {
            to,
            seqs,
            audit,
            reply,
        })
        .await
    }

    /// Records why a message from a peer was refused. Only the newest
    /// [`MAX_REJECTIONS_KEPT`] are kept.
    pub async fn record_rejection(&self, r: Rejection) -> Result<()> {
        self.call(|reply| Op::Reject {
            rejection: r,
            reply,
        })
        .await
    }

    /// Known signing keys: key_id -> (org, raw public key bytes). Overwrites.
    pub async fn put_key(&self, key_id: &str, org: &str, public_key: &[u8]) -> Result<()> {
        let (key_id, org, public_key) = (key_id.to_owned(), org.to_owned(), public_key.to_vec());
        self.call(|reply| Op::PutKey {
            key_id,
            org,
            public_key,
            reply,
        })
        .await
    }

    /// Durable named subscriber cursor.
    pub async fn set_cursor(&self, name: &str, seq: u64) -> Result<()> {
        let name = name.to_owned();
        self.call(|reply| Op::SetCursor { name, seq, reply }).await
    }

    /// Appends `(index, exact encoded entry bytes)` to `cluster_id`'s log, atomically and
    /// durably. Indexes must be consecutive and the first new one must be exactly one above the
    /// cluster's last stored index (0 for a new cluster). Re-appending an index that is already
    /// stored with identical bytes is a no-op; different bytes are refused. Any refusal is
    /// [`StoreError::Invalid`] and writes nothing.
    pub async fn append_cluster_entries(
        &self,
        cluster_id: &str,
        entries: Vec<(u64, Vec<u8>)>,
    ) -> Result<()> {
        if cluster_id.is_empty() {
            return Err(StoreError::Invalid(
                "cluster id is empty; every cluster log needs its id".into(),
            ));
        }
        if entries.is_empty() {
            return Ok(());
        }
        let cluster_id = cluster_id.to_owned();
        self.call(|reply| Op::AppendCluster {
            cluster_id,
            entries,
            reply,
        })
        .await
    }

    /// Records `org`'s node certificate (DER) in the organisation directory. Overwrites.
    pub async fn put_directory(&self, org: &str, cert_der: &[u8]) -> Result<()> {
        if org.is_empty() {
            return Err(StoreError::Invalid(
                "directory org is empty; every directory entry needs its org id".into(),
            ));
        }
        let (org, cert_der) = (org.to_owned(), cert_der.to_vec());
        self.call(|reply| Op::PutDirectory {
            org,
            cert_der,
            reply,
        })
        .await
    }

    /// Record an annotation of `kind` on the message `origin` published as `id`, unless one
    /// of that kind that `keep` prefers is there already (so every node ends with the same one
    /// whatever the order control messages arrived in). Durable. Returns whether it was kept.
    pub async fn annotate(
        &self,
        origin: &str,
        id: &str,
        kind: String,
        record: AnnotationRecord,
        keep: Keep,
    ) -> Result<bool> {
        let key = message_key(origin, id);
        self.call(|reply| Op::Annotate {
            key,
            kind,
            record,
            keep,
            reply,
        })
        .await
    }

    /// Appends `events` to the hash-chained audit log, in order and atomically. The writer
    /// assigns each its seq and chain hash in commit order (see [`crate::audit`]); fields
    /// longer than [`crate::audit::MAX_FIELD_LEN`] are cut. Group-committed without forcing an
    /// fsync of its own: the records become durable with the next durable commit (any insert,
    /// rejection, …), so a crash can lose the newest records (with the head that covers them)
    /// but never leaves a broken chain.
    pub async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.into_iter().map(AuditEvent::clip).collect();
        self.call(|reply| Op::AppendAudit { events, reply }).await
    }

    /// Stores a new API token record, durably, with `audit` chained in the same transaction.
    /// Refuses ([`StoreError::Invalid`]) an empty id or one that is already stored.
    pub async fn put_api_token(
        &self,
        record: ApiTokenRecord,
        audit: Vec<AuditEvent>,
    ) -> Result<()> {
        let audit = audit.into_iter().map(AuditEvent::clip).collect();
        self.call(|reply| Op::PutToken {
            record,
            audit,
            reply,
        })
        .await
    }

    /// Marks the API token `id` revoked at `at_ms`, durably, with `audit` chained in the same
    /// transaction. Returns the record as stored afterwards (`None`: no token has that id).
    /// Revoking a revoked token changes nothing and chains no audit record: its first
    /// revocation time stands.
    pub async fn revoke_api_token(
        &self,
        id: &str,
        at_ms: i64,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<ApiTokenRecord>> {
        let id = id.to_owned();
        let audit = audit.into_iter().map(AuditEvent::clip).collect();
        self.call(|reply| Op::RevokeToken {
            id,
            at_ms,
            audit,
            reply,
        })
        .await
    }
}
