//! Bluewire's embedded durable store: one redb 2.x file, `DATA_DIR/bluewire.redb`.
//!
//! Owns: messages (keyed by a local, strictly increasing `seq`, with an id index for dedup),
//! the per-peer outbox with its depth/delivered counters, durable named subscriber cursors,
//! known signing keys, rejection records, the per-cluster replicated logs (exact encoded entry
//! bytes by index), the organisation directory (node certificates by org) and the hash-chained
//! audit log (see [`crate::audit`]).
//!
//! Every write goes through ONE writer thread that group-commits: it takes the first queued op,
//! drains whatever else is queued (up to [`MAX_GROUP`] ops), applies them all in one write
//! transaction with `Durability::Immediate`, commits (one fsync) and only then answers each op.
//! So an `Ok` from any async write means "on disk", and throughput is not capped at the disk's
//! fsync rate. After a commit that added messages the new head seq is published on a watch.
//! Exceptions that ride along without forcing an fsync of their own (a group made only of them
//! commits with `Durability::None` and becomes durable with the next durable commit): outbox
//! acks and audit appends. Outbox acks are also *lazy*: the writer holds a group made only of
//! them for up to [`LAZY_HOLD`] so they join the next commit instead of costing their own. The
//! audit log's seq and chain hash are assigned by the writer, in
//! commit order, in the same transaction as the head they advance, so a crash can lose the
//! newest audit records but never break the chain.
//!
//! It must never: acknowledge a write before its commit; re-encode envelope bytes (they are
//! stored and returned exactly as given); panic on a corrupted or undecodable record (that is
//! [`StoreError::Corrupt`]); let two processes open the same data_dir (redb's file lock turns
//! that into [`StoreError::Locked`]). It knows nothing of signatures, policy or the network.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use prost::Message as _;
use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, TableHandle,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::AuditEvent;

/// File name of the database inside the node's data_dir.
pub const FILE_NAME: &str = "bluewire.redb";
/// Most ops applied in one write transaction (one fsync).
pub const MAX_GROUP: usize = 1024;
/// Longest a lazy op (an outbox ack) waits for a commit to ride along with.
const LAZY_HOLD: std::time::Duration = std::time::Duration::from_millis(20);
/// Bounded queue in front of the writer; senders wait (backpressure) when it is full.
const QUEUE_DEPTH: usize = 4096;
/// Rejection records kept on disk; older ones are pruned (the total is still counted).
pub const MAX_REJECTIONS_KEPT: u64 = 10_000;

const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (message id, origin) → seq: messages are identified by the pair, so no organisation can
/// shadow another's message by reusing its id.
const IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("message_ids");
/// Before (origin, id) keys: id → seq. Migrated into [`IDS`] and dropped on open.
const OLD_IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
const OUTBOX: TableDefinition<(&str, u64), ()> = TableDefinition::new("outbox");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
const REJECTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("rejections");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CLUSTER_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("cluster_log");
const DIRECTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("directory");
/// Per-message annotations from origin-signed control messages:
/// (message id, "retracted" | "marking") -> value.
/// ("ORIGIN/ID" of the message, kind) → an encoded [`AnnotationRecord`].
const ANNOTATIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("message_annotations");
/// Before (origin, id) keys: (id, kind) → raw value. Migrated and dropped on open.
const OLD_ANNOTATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("annotations");
/// Audit records by seq (1, 2, …): encoded [`AuditDisk`].
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// The audit chain's head, key [`AUDIT_HEAD_KEY`]: encoded [`AuditHeadRecord`]. (The `meta`
/// table holds only u64 values, so the head's hash lives here.)
const AUDIT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");
const AUDIT_HEAD_KEY: &str = "head";

/// Next message seq to assign (seqs start at 1; head = next - 1).
const META_NEXT_SEQ: &str = "next_seq";
/// Next rejection number (starts at 1; total recorded = next - 1).
const META_NEXT_REJECTION: &str = "next_rejection";

fn depth_key(peer: &str) -> String {
    format!("outbox_depth/{peer}")
}

fn delivered_key(peer: &str) -> String {
    format!("delivered/{peer}")
}

/// Everything that can go wrong in the store. Cheap to clone (one commit failure is reported
/// to every op of its group).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store at {} is locked by another process: is a node already running with this data_dir?",
        .path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "cannot create store directory {}: {source}; check the data_dir setting and its permissions",
        .path.display()
    )]
    CreateDir {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error(
        "store at {} uses old on-disk format version {version}; upgrade it with a matching redb \
         release or restore data_dir from a backup",
        .path.display()
    )]
    UpgradeRequired { path: PathBuf, version: u8 },
    #[error(
        "cannot open store at {}: {source}; check the file's permissions and free disk space, \
         or restore data_dir from a backup",
        .path.display()
    )]
    Open {
        path: PathBuf,
        source: Arc<redb::Error>,
    },
    #[error(
        "store {op} failed: {source}; check free disk space and the health of the disk holding data_dir"
    )]
    Db {
        op: &'static str,
        source: Arc<redb::Error>,
    },
    #[error(
        "corrupted {what} record at {key} in the store: {detail}; the database file is damaged, \
         restore data_dir from a backup"
    )]
    Corrupt {
        what: &'static str,
        key: String,
        detail: String,
    },
    #[error("invalid store request: {0}")]
    Invalid(String),
    #[error("store is closed: the node is shutting down; retry against a running node")]
    Closed,
    #[error(
        "cannot start the store writer thread: {0}; the system may be out of threads or memory"
    )]
    Spawn(Arc<std::io::Error>),
    #[error("internal store error: {0}; this is a bug, please report it")]
    Internal(&'static str),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn db_err<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: Arc::new(e.into()),
    }
}

fn decode<M: prost::Message + Default>(
    what: &'static str,
    key: impl Display,
    bytes: &[u8],
) -> Result<M> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        what,
        key: key.to_string(),
        detail: format!("cannot decode: {e}"),
    })
}

// ---- public types -------------------------------------------------------------------------

/// A message to persist. `envelope` is the exact encoded Envelope bytes (never re-encoded).
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Message id (UUIDv7 string): the dedup key.
    pub id: String,
    pub envelope: Vec<u8>,
    /// Origin org.
    pub origin: String,
    pub kind: i32,
    pub level: i32,
    /// Peer it came from; "" when published locally.
    pub received_from: String,
    pub received_at_ms: i64,
    /// Peers (org ids) to queue it for, atomically with the insert.
    pub outbox: Vec<String>,
    /// Audit records chained in the same transaction if the message is new (a duplicate adds
    /// none), so an acknowledged message never lacks its audit record.
    pub audit: Vec<AuditEvent>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub seq: u64,
    pub id: String,
    pub envelope: Vec<u8>,
    pub origin: String,
    pub kind: i32,
    pub level: i32,
    pub received_from: String,
    pub received_at_ms: i64,
}

/// Result of an insert: the seq of the stored copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted(u64),
    Duplicate(u64),
}

impl InsertOutcome {
    pub fn seq(self) -> u64 {
        match self {
            InsertOutcome::Inserted(s) | InsertOutcome::Duplicate(s) => s,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub at_ms: i64,
    pub from_peer: String,
    pub id: String,
    pub reason: String,
}

/// One stored audit record, as read back (see [`crate::audit`] for the chain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecordRow {
    pub seq: u64,
    pub at_ms: i64,
    pub event: String,
    pub msg_id: String,
    pub peer: String,
    pub cluster: String,
    pub rule: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecordRow {
    /// The chain hash this record's content and `prev_hash` call for.
    pub fn compute_hash(&self) -> String {
        crate::audit::chain_hash(
            &self.prev_hash,
            self.seq,
            self.at_ms,
            [
                &self.event,
                &self.msg_id,
                &self.peer,
                &self.cluster,
                &self.rule,
                &self.detail,
            ],
        )
    }

    /// The on-disk bytes (the seq is the table key, not part of them). Public for tests that
    /// tamper with the log through [`Store::tamper_audit_for_tests`].
    #[doc(hidden)]
    pub fn encode(&self) -> Vec<u8> {
        AuditDisk {
            at_ms: self.at_ms,
            event: self.event.clone(),
            msg_id: self.msg_id.clone(),
            peer: self.peer.clone(),
            cluster: self.cluster.clone(),
            rule: self.rule.clone(),
            detail: self.detail.clone(),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
        .encode_to_vec()
    }

    /// Decodes the on-disk bytes stored under `seq`.
    pub fn decode(seq: u64, bytes: &[u8]) -> Result<AuditRecordRow, prost::DecodeError> {
        let d = AuditDisk::decode(bytes)?;
        Ok(AuditRecordRow {
            seq,
            at_ms: d.at_ms,
            event: d.event,
            msg_id: d.msg_id,
            peer: d.peer,
            cluster: d.cluster,
            rule: d.rule,
            detail: d.detail,
            prev_hash: d.prev_hash,
            hash: d.hash,
        })
    }
}

// ---- on-disk records (prost) ---------------------------------------------------------------

/// An annotation on a message (a retraction, a marking change), ordered by the control
/// message that made it so every node keeps the same one whatever the arrival order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnnotationRecord {
    /// The control message's `created_at_ms`.
    #[prost(int64, tag = "1")]
    pub at_ms: i64,
    /// The control message's id (breaks ties).
    #[prost(string, tag = "2")]
    pub by_id: String,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

impl AnnotationRecord {
    fn order(&self) -> (i64, &str) {
        (self.at_ms, &self.by_id)
    }
}

/// Which of two annotations of the same kind a message keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The one made by the latest control message (a marking in force).
    Latest,
    /// The first one (a retraction is final; its first reason stands).
    Earliest,
}

/// The key of a message across tables that name it: "ORIGIN/ID".
pub fn message_key(origin: &str, id: &str) -> String {
    format!("{origin}/{id}")
}

#[derive(Clone, PartialEq, prost::Message)]
struct MessageRecord {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(bytes = "vec", tag = "2")]
    envelope: Vec<u8>,
    #[prost(string, tag = "3")]
    origin: String,
    #[prost(int32, tag = "4")]
    kind: i32,
    #[prost(int32, tag = "5")]
    level: i32,
    #[prost(string, tag = "6")]
    received_from: String,
    #[prost(int64, tag = "7")]
    received_at_ms: i64,
}

impl MessageRecord {
    fn into_stored(self, seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            id: self.id,
            envelope: self.envelope,
            origin: self.origin,
            kind: self.kind,
            level: self.level,
            received_from: self.received_from,
            received_at_ms: self.received_at_ms,
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyRecord {
    #[prost(string, tag = "1")]
    org: String,
    #[prost(bytes = "vec", tag = "2")]
    public_key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RejectionRecord {
    #[prost(int64, tag = "1")]
    at_ms: i64,
    #[prost(string, tag = "2")]
    from_peer: String,
    #[prost(string, tag = "3")]
    id: String,
    #[prost(string, tag = "4")]
    reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AuditDisk {
    #[prost(int64, tag = "1")]
    at_ms: i64,
    #[prost(string, tag = "2")]
    event: String,
    #[prost(string, tag = "3")]
    msg_id: String,
    #[prost(string, tag = "4")]
    peer: String,
    #[prost(string, tag = "5")]
    cluster: String,
    #[prost(string, tag = "6")]
    rule: String,
    #[prost(string, tag = "7")]
    detail: String,
    #[prost(string, tag = "8")]
    prev_hash: String,
    #[prost(string, tag = "9")]
    hash: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AuditHeadRecord {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "2")]
    hash: String,
}

/// The audit chain's head: last seq (0 when empty) and its hash (genesis when empty).
type AuditHead = (u64, String);

fn genesis_head() -> AuditHead {
    (0, crate::audit::GENESIS_HASH.to_owned())
}

// ---- writer ops ----------------------------------------------------------------------------

type Reply<T> = oneshot::Sender<Result<T>>;

enum Op {
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

    /// Whether the writer may hold this op back (up to [`LAZY_HOLD`]) so it rides along with
    /// the next commit instead of costing one of its own: outbox acks sent with
    /// [`Store::ack_outbox_later`], which the delivery worker does not wait for (it keeps an
    /// in-memory "sent up to" cursor). At a low message rate each delivered batch to each peer
    /// would otherwise be a write transaction of its own.
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
            (Op::Annotate { reply, .. }, Ok(Applied::Flag(b))) => {
                let _ = reply.send(Ok(b));
            }
            (
                Op::Ack { reply, .. }
                | Op::Reject { reply, .. }
                | Op::PutKey { reply, .. }
                | Op::SetCursor { reply, .. }
                | Op::AppendCluster { reply, .. }
                | Op::PutDirectory { reply, .. }
                | Op::AppendAudit { reply, .. },
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
            Op::Ack { reply, .. }
            | Op::Reject { reply, .. }
            | Op::PutKey { reply, .. }
            | Op::SetCursor { reply, .. }
            | Op::AppendCluster { reply, .. }
            | Op::PutDirectory { reply, .. }
            | Op::AppendAudit { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Op::Close { reply } => {
                let _ = reply.send(());
            }
        }
    }
}

/// All tables open in one write transaction, plus the seq allocator for the group.
struct Tables<'t> {
    messages: Table<'t, u64, &'static [u8]>,
    ids: Table<'t, (&'static str, &'static str), u64>,
    outbox: Table<'t, (&'static str, u64), ()>,
    counters: Table<'t, &'static str, u64>,
    keys: Table<'t, &'static str, &'static [u8]>,
    cursors: Table<'t, &'static str, u64>,
    rejections: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    cluster_log: Table<'t, (&'static str, u64), &'static [u8]>,
    directory: Table<'t, &'static str, &'static [u8]>,
    annotations: Table<'t, (&'static str, &'static str), &'static [u8]>,
    audit: Table<'t, u64, &'static [u8]>,
    audit_meta: Table<'t, &'static str, &'static [u8]>,
    next_seq: u64,
    /// The audit head as of this transaction's last applied op.
    audit_head: AuditHead,
}

fn get_u64(table: &Table<'_, &'static str, u64>, key: &str) -> Result<Option<u64>> {
    Ok(table.get(key).map_err(db_err("read"))?.map(|g| g.value()))
}

fn add_counter(t: &mut Table<'_, &'static str, u64>, key: &str, delta: u64) -> Result<()> {
    let v = get_u64(t, key)?.unwrap_or(0).saturating_add(delta);
    t.insert(key, v).map_err(db_err("update counter"))?;
    Ok(())
}

fn sub_counter(t: &mut Table<'_, &'static str, u64>, key: &str, delta: u64) -> Result<()> {
    let v = get_u64(t, key)?.unwrap_or(0).saturating_sub(delta);
    if v == 0 {
        t.remove(key).map_err(db_err("update counter"))?;
    } else {
        t.insert(key, v).map_err(db_err("update counter"))?;
    }
    Ok(())
}

impl Tables<'_> {
    fn apply(&mut self, op: &Op) -> Result<Applied> {
        match op {
            Op::Insert { msgs, .. } => self.insert(msgs).map(Applied::Outcomes),
            Op::Ack {
                peer, seqs, audit, ..
            } => {
                self.ack(peer, seqs)?;
                self.append_audit(audit).map(|()| Applied::Unit)
            }
            Op::DropOutbox { peer, .. } => self.drop_outbox(peer).map(Applied::Count),
            Op::Enqueue { peer, seqs, .. } => self.enqueue(peer, seqs).map(Applied::Count),
            Op::Reject { rejection, .. } => self.reject(rejection).map(|()| Applied::Unit),
            Op::PutKey {
                key_id,
                org,
                public_key,
                ..
            } => {
                let rec = KeyRecord {
                    org: org.clone(),
                    public_key: public_key.clone(),
                }
                .encode_to_vec();
                self.keys
                    .insert(key_id.as_str(), rec.as_slice())
                    .map_err(db_err("put key"))?;
                Ok(Applied::Unit)
            }
            Op::SetCursor { name, seq, .. } => {
                self.cursors
                    .insert(name.as_str(), *seq)
                    .map_err(db_err("set cursor"))?;
                Ok(Applied::Unit)
            }
            Op::AppendCluster {
                cluster_id,
                entries,
                ..
            } => self
                .append_cluster(cluster_id, entries)
                .map(|()| Applied::Unit),
            Op::PutDirectory { org, cert_der, .. } => {
                self.directory
                    .insert(org.as_str(), cert_der.as_slice())
                    .map_err(db_err("put directory entry"))?;
                Ok(Applied::Unit)
            }
            Op::Annotate {
                key,
                kind,
                record,
                keep,
                ..
            } => {
                let current = self
                    .annotations
                    .get((key.as_str(), kind.as_str()))
                    .map_err(db_err("read annotation"))?
                    .map(|v| decode::<AnnotationRecord>("annotation", key, v.value()))
                    .transpose()?;
                let replace = match (current, keep) {
                    (None, _) => true,
                    (Some(old), Keep::Latest) => record.order() > old.order(),
                    (Some(old), Keep::Earliest) => record.order() < old.order(),
                };
                if replace {
                    self.annotations
                        .insert(
                            (key.as_str(), kind.as_str()),
                            record.encode_to_vec().as_slice(),
                        )
                        .map_err(db_err("put annotation"))?;
                }
                Ok(Applied::Flag(replace))
            }
            Op::AppendAudit { events, .. } => self.append_audit(events).map(|()| Applied::Unit),
            Op::Close { .. } => Ok(Applied::Unit),
        }
    }

    /// Chains `events` after the current head, in order.
    fn append_audit(&mut self, events: &[AuditEvent]) -> Result<()> {
        for ev in events {
            let (last, prev_hash) = &self.audit_head;
            let seq = last
                .checked_add(1)
                .ok_or(StoreError::Internal("audit seq space exhausted"))?;
            let mut row = AuditRecordRow {
                seq,
                at_ms: ev.at_ms,
                event: ev.event.as_str().to_owned(),
                msg_id: ev.msg_id.clone(),
                peer: ev.peer.clone(),
                cluster: ev.cluster.clone(),
                rule: ev.rule.clone(),
                detail: ev.detail.clone(),
                prev_hash: prev_hash.clone(),
                hash: String::new(),
            };
            row.hash = row.compute_hash();
            self.audit
                .insert(seq, row.encode().as_slice())
                .map_err(db_err("append audit record"))?;
            self.audit_head = (seq, row.hash);
        }
        Ok(())
    }

    fn insert(&mut self, msgs: &[NewMessage]) -> Result<Vec<InsertOutcome>> {
        let mut out = Vec::with_capacity(msgs.len());
        for m in msgs {
            if m.id.is_empty() {
                return Err(StoreError::Invalid(
                    "message id is empty; every message needs its UUIDv7 id".into(),
                ));
            }
            if let Some(seq) = self
                .ids
                .get((m.id.as_str(), m.origin.as_str()))
                .map_err(db_err("read id index"))?
                .map(|g| g.value())
            {
                out.push(InsertOutcome::Duplicate(seq));
                continue;
            }
            let seq = self.next_seq;
            self.next_seq = seq
                .checked_add(1)
                .ok_or(StoreError::Internal("message seq space exhausted"))?;
            let rec = MessageRecord {
                id: m.id.clone(),
                envelope: m.envelope.clone(),
                origin: m.origin.clone(),
                kind: m.kind,
                level: m.level,
                received_from: m.received_from.clone(),
                received_at_ms: m.received_at_ms,
            }
            .encode_to_vec();
            self.messages
                .insert(seq, rec.as_slice())
                .map_err(db_err("insert message"))?;
            self.ids
                .insert((m.id.as_str(), m.origin.as_str()), seq)
                .map_err(db_err("insert id index"))?;
            for peer in &m.outbox {
                let fresh = self
                    .outbox
                    .insert((peer.as_str(), seq), ())
                    .map_err(db_err("queue outbox entry"))?
                    .is_none();
                if fresh {
                    add_counter(&mut self.counters, &depth_key(peer), 1)?;
                }
            }
            self.append_audit(&m.audit)?;
            out.push(InsertOutcome::Inserted(seq));
        }
        Ok(out)
    }

    fn ack(&mut self, peer: &str, seqs: &[u64]) -> Result<()> {
        let mut removed = 0u64;
        for &seq in seqs {
            if self
                .outbox
                .remove((peer, seq))
                .map_err(db_err("remove outbox entry"))?
                .is_some()
            {
                removed += 1;
            }
        }
        if removed > 0 {
            sub_counter(&mut self.counters, &depth_key(peer), removed)?;
            add_counter(&mut self.counters, &delivered_key(peer), removed)?;
        }
        Ok(())
    }

    fn drop_outbox(&mut self, peer: &str) -> Result<u64> {
        let mut dropped = 0u64;
        self.outbox
            .retain_in((peer, 0u64)..=(peer, u64::MAX), |_, _| {
                dropped += 1;
                false
            })
            .map_err(db_err("drop outbox"))?;
        self.counters
            .remove(depth_key(peer).as_str())
            .map_err(db_err("update counter"))?;
        Ok(dropped)
    }

    fn enqueue(&mut self, peer: &str, seqs: &[u64]) -> Result<u64> {
        let mut queued = 0u64;
        for &seq in seqs {
            if self
                .messages
                .get(seq)
                .map_err(db_err("read message"))?
                .is_none()
            {
                return Err(StoreError::Invalid(format!(
                    "cannot queue seq {seq} for {peer}: no stored message has that seq"
                )));
            }
            if self
                .outbox
                .insert((peer, seq), ())
                .map_err(db_err("queue outbox entry"))?
                .is_none()
            {
                queued += 1;
            }
        }
        if queued > 0 {
            add_counter(&mut self.counters, &depth_key(peer), queued)?;
        }
        Ok(queued)
    }

    /// Appends consecutive entries to a cluster's log. An entry whose index is already stored
    /// must carry the same bytes (then it is skipped); the first new index must be exactly one
    /// above the cluster's last stored index (0 for a new cluster). The op is all-or-nothing:
    /// an error aborts its transaction.
    fn append_cluster(&mut self, cluster_id: &str, entries: &[(u64, Vec<u8>)]) -> Result<()> {
        let mut next = self
            .cluster_log
            .range((cluster_id, 0u64)..=(cluster_id, u64::MAX))
            .map_err(db_err("scan cluster log"))?
            .next_back()
            .transpose()
            .map_err(db_err("scan cluster log"))?
            .map(|(k, _)| k.value().1.checked_add(1))
            .unwrap_or(Some(0));
        let mut prev: Option<u64> = None;
        for (index, bytes) in entries {
            let index = *index;
            if let Some(p) = prev
                && p.checked_add(1) != Some(index)
            {
                return Err(StoreError::Invalid(format!(
                    "cluster {cluster_id} log entries are not consecutive: index {index} follows {p}"
                )));
            }
            prev = Some(index);
            let existing = self
                .cluster_log
                .get((cluster_id, index))
                .map_err(db_err("read cluster log"))?
                .map(|g| g.value() == bytes.as_slice());
            match existing {
                Some(true) => continue,
                Some(false) => {
                    return Err(StoreError::Invalid(format!(
                        "cluster {cluster_id} log already holds a different entry at index {index}; \
                         committed entries cannot be rewritten"
                    )));
                }
                None => {}
            }
            if next != Some(index) {
                let expected = match next {
                    Some(n) => n.to_string(),
                    None => "none (index space exhausted)".into(),
                };
                return Err(StoreError::Invalid(format!(
                    "cluster {cluster_id} log append at index {index} leaves a gap: \
                     the next index must be {expected}"
                )));
            }
            self.cluster_log
                .insert((cluster_id, index), bytes.as_slice())
                .map_err(db_err("append cluster log"))?;
            next = index.checked_add(1);
        }
        Ok(())
    }

    fn reject(&mut self, r: &Rejection) -> Result<()> {
        let n = get_u64(&self.meta, META_NEXT_REJECTION)?.unwrap_or(1);
        let rec = RejectionRecord {
            at_ms: r.at_ms,
            from_peer: r.from_peer.clone(),
            id: r.id.clone(),
            reason: r.reason.clone(),
        }
        .encode_to_vec();
        self.rejections
            .insert(n, rec.as_slice())
            .map_err(db_err("record rejection"))?;
        self.meta
            .insert(META_NEXT_REJECTION, n.saturating_add(1))
            .map_err(db_err("record rejection"))?;
        // Keep the newest MAX_REJECTIONS_KEPT: pruning one per insert keeps the table bounded.
        if n > MAX_REJECTIONS_KEPT {
            self.rejections
                .remove(n - MAX_REJECTIONS_KEPT)
                .map_err(db_err("prune rejections"))?;
        }
        Ok(())
    }
}

/// Why applying a group did not reach commit.
enum GroupFailure {
    /// Op `index` failed: it gets the error, the rest of the group is retried without it.
    Op(usize, StoreError),
    /// The transaction itself failed: every op gets the error.
    Txn(StoreError),
}

struct Writer {
    db: Arc<Database>,
    head: Arc<watch::Sender<u64>>,
    commits: Arc<AtomicU64>,
    /// The committed audit head. Only the writer changes it (after each commit).
    audit_head: Arc<Mutex<AuditHead>>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Op>) {
        // A clock for waiting on the queue with a deadline (lazy ops, below). If it cannot be
        // built, lazy ops are simply committed at once.
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok();
        let mut closing = None;
        // Lazy ops held back to ride along with the next commit.
        let mut held: Vec<Op> = Vec::new();
        let mut held_since = std::time::Instant::now();
        loop {
            let first = match (&clock, held.is_empty()) {
                (Some(clock), false) => {
                    let deadline = held_since + LAZY_HOLD;
                    match clock.block_on(async {
                        tokio::time::timeout_at(deadline.into(), rx.recv()).await
                    }) {
                        Ok(op) => op,
                        Err(_elapsed) => {
                            self.commit_group(std::mem::take(&mut held));
                            continue;
                        }
                    }
                }
                _ => rx.blocking_recv(),
            };
            let Some(first) = first else { break };
            let mut group = Vec::with_capacity(64);
            match first {
                Op::Close { reply } => closing = Some(reply),
                op => group.push(op),
            }
            while closing.is_none() && held.len() + group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Op::Close { reply }) => closing = Some(reply),
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            if closing.is_none()
                && clock.is_some()
                && group.iter().all(Op::lazy)
                && held.len() + group.len() < MAX_GROUP
                && (held.is_empty() || held_since.elapsed() < LAZY_HOLD)
            {
                if held.is_empty() {
                    held_since = std::time::Instant::now();
                }
                held.append(&mut group);
                continue;
            }
            held.append(&mut group);
            self.commit_group(std::mem::take(&mut held));
            if closing.is_some() {
                break;
            }
        }
        // Whatever is still held commits before the writer goes; ops queued after Close are
        // dropped here and their callers see StoreError::Closed.
        self.commit_group(held);
        drop(rx);
        drop(self);
        if let Some(reply) = closing {
            let _ = reply.send(());
        }
    }

    fn commit_group(&self, mut group: Vec<Op>) {
        loop {
            if group.is_empty() {
                return;
            }
            match self.try_group(&group) {
                Ok((applied, new_head)) => {
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = new_head {
                        self.head.send_replace(h);
                    }
                    for (op, a) in group.into_iter().zip(applied) {
                        op.answer(Ok(a));
                    }
                    return;
                }
                Err(GroupFailure::Op(i, e)) => {
                    tracing::warn!(error = %e, "store op failed; retrying the rest of its group");
                    group.remove(i).fail(e);
                }
                Err(GroupFailure::Txn(e)) => {
                    tracing::error!(error = %e, ops = group.len(), "store group commit failed");
                    for op in group {
                        op.fail(e.clone());
                    }
                    return;
                }
            }
        }
    }

    /// Applies the group in one write transaction and commits it. Returns each op's result
    /// and the new head seq if messages were added.
    fn try_group(&self, group: &[Op]) -> Result<(Vec<Applied>, Option<u64>), GroupFailure> {
        let audit_before = lock(&self.audit_head).clone();
        let txn = |e| GroupFailure::Txn(e);
        let mut wtx = self
            .db
            .begin_write()
            .map_err(db_err("begin write"))
            .map_err(txn)?;
        let durability = if group.iter().any(Op::durable) {
            Durability::Immediate
        } else {
            Durability::None
        };
        wtx.set_durability(durability);
        let mut applied = Vec::with_capacity(group.len());
        let mut audit_after = None;
        let (start, end) = {
            let mut t = open_tables(&wtx, audit_before.clone()).map_err(txn)?;
            let start = t.next_seq;
            for (i, op) in group.iter().enumerate() {
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
            if t.next_seq != start {
                t.meta
                    .insert(META_NEXT_SEQ, t.next_seq)
                    .map_err(db_err("advance seq"))
                    .map_err(txn)?;
            }
            if t.audit_head != audit_before {
                t.put_audit_head().map_err(txn)?;
                audit_after = Some(t.audit_head.clone());
            }
            (start, t.next_seq)
        };
        wtx.commit().map_err(db_err("commit")).map_err(txn)?;
        if let Some(h) = audit_after {
            *lock(&self.audit_head) = h;
        }
        Ok((applied, (end != start).then(|| end - 1)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are replaced whole, so a poisoned lock still holds a consistent one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tables<'_> {
    fn put_audit_head(&mut self) -> Result<()> {
        let (seq, hash) = &self.audit_head;
        let rec = AuditHeadRecord {
            seq: *seq,
            hash: hash.clone(),
        }
        .encode_to_vec();
        self.audit_meta
            .insert(AUDIT_HEAD_KEY, rec.as_slice())
            .map_err(db_err("advance audit head"))?;
        Ok(())
    }
}

/// Reads the stored audit head (genesis when there is none).
fn read_audit_head<T: ReadableTable<&'static str, &'static [u8]>>(t: &T) -> Result<AuditHead> {
    match t.get(AUDIT_HEAD_KEY).map_err(db_err("read audit head"))? {
        Some(v) => {
            let h: AuditHeadRecord = decode("audit head", AUDIT_HEAD_KEY, v.value())?;
            Ok((h.seq, h.hash))
        }
        None => Ok(genesis_head()),
    }
}

fn open_tables<'t>(wtx: &'t redb::WriteTransaction, audit_head: AuditHead) -> Result<Tables<'t>> {
    let e = db_err::<redb::TableError>;
    let meta = wtx.open_table(META).map_err(e("open meta table"))?;
    let next_seq = get_u64(&meta, META_NEXT_SEQ)?.unwrap_or(1);
    Ok(Tables {
        messages: wtx.open_table(MESSAGES).map_err(e("open messages table"))?,
        ids: wtx.open_table(IDS).map_err(e("open ids table"))?,
        outbox: wtx.open_table(OUTBOX).map_err(e("open outbox table"))?,
        counters: wtx.open_table(COUNTERS).map_err(e("open counters table"))?,
        keys: wtx.open_table(KEYS).map_err(e("open keys table"))?,
        cursors: wtx.open_table(CURSORS).map_err(e("open cursors table"))?,
        rejections: wtx
            .open_table(REJECTIONS)
            .map_err(e("open rejections table"))?,
        cluster_log: wtx
            .open_table(CLUSTER_LOG)
            .map_err(e("open cluster log table"))?,
        directory: wtx
            .open_table(DIRECTORY)
            .map_err(e("open directory table"))?,
        annotations: wtx
            .open_table(ANNOTATIONS)
            .map_err(e("open annotations table"))?,
        audit: wtx.open_table(AUDIT).map_err(e("open audit table"))?,
        audit_meta: wtx
            .open_table(AUDIT_META)
            .map_err(e("open audit meta table"))?,
        meta,
        next_seq,
        audit_head,
    })
}

/// Joins the writer thread when the last `Store` clone goes away (after the sender is dropped,
/// see field order in [`Inner`]), so the file lock is released when `Store` is dropped.
struct WriterThread(Option<JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take()
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

// Field order matters: `tx` is dropped first (the writer sees the channel close and exits),
// then `_writer` joins it, then `db` drops the last handle to the file.
struct Inner {
    tx: mpsc::Sender<Op>,
    _writer: WriterThread,
    db: Arc<Database>,
    head: Arc<watch::Sender<u64>>,
    commits: Arc<AtomicU64>,
    audit_head: Arc<Mutex<AuditHead>>,
    closed: AtomicBool,
    path: PathBuf,
}

/// Handle to the node's store. Cheap to clone; all clones share one database and one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("head_seq", &self.head_seq())
            .finish()
    }
}

impl Store {
    /// Opens/creates `dir/bluewire.redb` and starts the writer thread. Works inside or outside a
    /// tokio runtime (the writer is a dedicated std thread).
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source: Arc::new(e),
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            DatabaseError::UpgradeRequired(version) => StoreError::UpgradeRequired {
                path: path.clone(),
                version,
            },
            other => StoreError::Open {
                path: path.clone(),
                source: Arc::new(other.into()),
            },
        })?;
        let (head, audit_head) = init(&db)?;
        let audit_head = Arc::new(Mutex::new(audit_head));
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let head_tx = Arc::new(watch::Sender::new(head));
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            db: db.clone(),
            head: head_tx.clone(),
            commits: commits.clone(),
            audit_head: audit_head.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("bluewire-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Spawn(Arc::new(e)))?;
        tracing::info!(path = %path.display(), head_seq = head, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                tx,
                _writer: WriterThread(Some(handle)),
                db,
                head: head_tx,
                commits,
                audit_head,
                closed: AtomicBool::new(false),
                path,
            }),
        })
    }

    /// How many `Store` handles share this database. The file lock is released when the last
    /// one is dropped.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn read(&self) -> Result<ReadTransaction> {
        self.inner.db.begin_read().map_err(db_err("begin read"))
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

    /// Oldest first: up to `limit` (seq, envelope bytes) queued for `peer`.
    pub fn outbox_batch(&self, peer: &str, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.outbox_batch_after(peer, 0, limit)
    }

    /// Like [`Store::outbox_batch`], but only entries with a seq above `after_seq`
    /// (lets a sender pipeline batches while earlier acks are still committing).
    pub fn outbox_batch_after(
        &self,
        peer: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rtx = self.read()?;
        let outbox = rtx.open_table(OUTBOX).map_err(db_err("open outbox"))?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let mut out = Vec::new();
        let range = outbox
            .range((peer, after_seq.saturating_add(1))..=(peer, u64::MAX))
            .map_err(db_err("scan outbox"))?;
        for entry in range.take(limit) {
            let (key, _) = entry.map_err(db_err("scan outbox"))?;
            let (_, seq) = key.value();
            let Some(bytes) = messages.get(seq).map_err(db_err("read message"))? else {
                return Err(StoreError::Corrupt {
                    what: "outbox",
                    key: format!("{peer}/{seq}"),
                    detail: "queued entry points at a message that does not exist".into(),
                });
            };
            let rec: MessageRecord = decode("message", seq, bytes.value())?;
            out.push((seq, rec.envelope));
        }
        Ok(out)
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
        let peer = peer.to_owned();
        let audit = audit.into_iter().map(AuditEvent::clip).collect();
        self.call(|reply| Op::Ack {
            peer,
            seqs,
            audit,
            lazy,
            reply,
        })
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

    fn counter(&self, key: &str) -> Result<u64> {
        let rtx = self.read()?;
        let t = rtx.open_table(COUNTERS).map_err(db_err("open counters"))?;
        Ok(t.get(key)
            .map_err(db_err("read counter"))?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    /// Entries queued for `peer` (a counter, O(1)).
    pub fn outbox_depth(&self, peer: &str) -> Result<u64> {
        self.counter(&depth_key(peer))
    }

    /// Entries ever acknowledged by `peer`.
    pub fn delivered_count(&self, peer: &str) -> Result<u64> {
        self.counter(&delivered_key(peer))
    }

    /// Up to `limit` messages with seq > `after_seq`, oldest first.
    pub fn read_after(&self, after_seq: u64, limit: usize) -> Result<Vec<StoredMessage>> {
        let Some(from) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rtx = self.read()?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let mut out = Vec::new();
        for entry in messages
            .range(from..)
            .map_err(db_err("scan messages"))?
            .take(limit)
        {
            let (k, v) = entry.map_err(db_err("scan messages"))?;
            let seq = k.value();
            let rec: MessageRecord = decode("message", seq, v.value())?;
            out.push(rec.into_stored(seq));
        }
        Ok(out)
    }

    /// The message `origin` published under `id`.
    pub fn get(&self, origin: &str, id: &str) -> Result<Option<StoredMessage>> {
        let rtx = self.read()?;
        let ids = rtx.open_table(IDS).map_err(db_err("open ids"))?;
        let Some(seq) = ids
            .get((id, origin))
            .map_err(db_err("read id index"))?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        read_indexed(&messages, seq, id).map(Some)
    }

    /// Every stored message with this id, whatever its origin (usually one; several when
    /// organisations reused an id), in origin order.
    pub fn find_by_id(&self, id: &str) -> Result<Vec<StoredMessage>> {
        let rtx = self.read()?;
        let ids = rtx.open_table(IDS).map_err(db_err("open ids"))?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let mut out = Vec::new();
        for row in ids.range((id, "")..).map_err(db_err("read id index"))? {
            let (k, v) = row.map_err(db_err("read id index"))?;
            if k.value().0 != id {
                break;
            }
            out.push(read_indexed(&messages, v.value(), id)?);
        }
        Ok(out)
    }

    pub fn get_by_seq(&self, seq: u64) -> Result<Option<StoredMessage>> {
        let rtx = self.read()?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        match messages.get(seq).map_err(db_err("read message"))? {
            Some(v) => Ok(Some(
                decode::<MessageRecord>("message", seq, v.value())?.into_stored(seq),
            )),
            None => Ok(None),
        }
    }

    /// Highest committed seq (0 when empty).
    pub fn head_seq(&self) -> u64 {
        *self.inner.head.borrow()
    }

    pub fn message_count(&self) -> Result<u64> {
        let rtx = self.read()?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        messages.len().map_err(db_err("count messages"))
    }

    /// Watch of the head seq, updated after each commit that added messages. The current value
    /// is marked seen: read from your cursor first, then await `changed()`.
    pub fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// Number of write transactions committed since open (metrics; group-commit tests).
    pub fn commit_count(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
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

    /// Newest first, up to `limit`.
    pub fn rejections(&self, limit: usize) -> Result<Vec<Rejection>> {
        let rtx = self.read()?;
        let t = rtx
            .open_table(REJECTIONS)
            .map_err(db_err("open rejections"))?;
        let mut out = Vec::new();
        for entry in t
            .range::<u64>(..)
            .map_err(db_err("scan rejections"))?
            .rev()
            .take(limit)
        {
            let (k, v) = entry.map_err(db_err("scan rejections"))?;
            let r: RejectionRecord = decode("rejection", k.value(), v.value())?;
            out.push(Rejection {
                at_ms: r.at_ms,
                from_peer: r.from_peer,
                id: r.id,
                reason: r.reason,
            });
        }
        Ok(out)
    }

    /// Rejections ever recorded (including pruned ones).
    pub fn rejection_count(&self) -> Result<u64> {
        let rtx = self.read()?;
        let meta = rtx.open_table(META).map_err(db_err("open meta"))?;
        let next = meta
            .get(META_NEXT_REJECTION)
            .map_err(db_err("read meta"))?
            .map(|g| g.value())
            .unwrap_or(1);
        Ok(next.saturating_sub(1))
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

    pub fn get_key(&self, key_id: &str) -> Result<Option<(String, Vec<u8>)>> {
        let rtx = self.read()?;
        let t = rtx.open_table(KEYS).map_err(db_err("open keys"))?;
        match t.get(key_id).map_err(db_err("read key"))? {
            Some(v) => {
                let r: KeyRecord = decode("signing key", key_id, v.value())?;
                Ok(Some((r.org, r.public_key)))
            }
            None => Ok(None),
        }
    }

    /// Durable named subscriber cursor.
    pub async fn set_cursor(&self, name: &str, seq: u64) -> Result<()> {
        let name = name.to_owned();
        self.call(|reply| Op::SetCursor { name, seq, reply }).await
    }

    pub fn get_cursor(&self, name: &str) -> Result<Option<u64>> {
        let rtx = self.read()?;
        let t = rtx.open_table(CURSORS).map_err(db_err("open cursors"))?;
        Ok(t.get(name)
            .map_err(db_err("read cursor"))?
            .map(|g| g.value()))
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

    /// Up to `limit` `(index, entry bytes)` of `cluster_id`'s log with index >= `from_index`,
    /// in index order.
    pub fn cluster_entries(
        &self,
        cluster_id: &str,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rtx = self.read()?;
        let t = rtx
            .open_table(CLUSTER_LOG)
            .map_err(db_err("open cluster log"))?;
        let mut out = Vec::new();
        for entry in t
            .range((cluster_id, from_index)..=(cluster_id, u64::MAX))
            .map_err(db_err("scan cluster log"))?
            .take(limit)
        {
            let (k, v) = entry.map_err(db_err("scan cluster log"))?;
            out.push((k.value().1, v.value().to_vec()));
        }
        Ok(out)
    }

    /// Ids of every cluster with a stored log, sorted.
    pub fn cluster_ids(&self) -> Result<Vec<String>> {
        use std::ops::Bound;
        let rtx = self.read()?;
        let t = rtx
            .open_table(CLUSTER_LOG)
            .map_err(db_err("open cluster log"))?;
        let mut out: Vec<String> = Vec::new();
        // Skip-scan: one seek per cluster, past the last possible index of the previous one.
        loop {
            let first = match out.last() {
                None => t.first().map_err(db_err("scan cluster log"))?,
                Some(prev) => t
                    .range::<(&str, u64)>((
                        Bound::Excluded((prev.as_str(), u64::MAX)),
                        Bound::Unbounded,
                    ))
                    .map_err(db_err("scan cluster log"))?
                    .next()
                    .transpose()
                    .map_err(db_err("scan cluster log"))?,
            };
            match first {
                Some((k, _)) => out.push(k.value().0.to_owned()),
                None => return Ok(out),
            }
        }
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

    /// Every annotation of one message, by kind, from one read transaction.
    pub fn annotations(&self, origin: &str, id: &str) -> Result<Vec<(String, AnnotationRecord)>> {
        let key = message_key(origin, id);
        let rtx = self.read()?;
        let t = rtx
            .open_table(ANNOTATIONS)
            .map_err(db_err("open annotations"))?;
        let mut out = Vec::new();
        for row in t
            .range((key.as_str(), "")..)
            .map_err(db_err("read annotations"))?
        {
            let (k, v) = row.map_err(db_err("read annotation"))?;
            let (k_key, kind) = k.value();
            if k_key != key {
                break;
            }
            out.push((
                kind.to_string(),
                decode::<AnnotationRecord>("annotation", &key, v.value())?,
            ));
        }
        Ok(out)
    }

    /// The organisation directory: every `(org, node certificate DER)`, sorted by org.
    pub fn directory(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let rtx = self.read()?;
        let t = rtx
            .open_table(DIRECTORY)
            .map_err(db_err("open directory"))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err("scan directory"))? {
            let (k, v) = entry.map_err(db_err("scan directory"))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
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

    /// Up to `limit` audit records with seq > `after_seq`, in seq order. An undecodable record
    /// is [`StoreError::Corrupt`]; use [`crate::audit::verify`] to check the chain.
    pub fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecordRow>> {
        let Some(from) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rtx = self.read()?;
        let t = rtx.open_table(AUDIT).map_err(db_err("open audit"))?;
        let mut out = Vec::new();
        for entry in t.range(from..).map_err(db_err("scan audit"))?.take(limit) {
            let (k, v) = entry.map_err(db_err("scan audit"))?;
            let seq = k.value();
            let row = AuditRecordRow::decode(seq, v.value()).map_err(|e| StoreError::Corrupt {
                what: "audit",
                key: seq.to_string(),
                detail: format!("cannot decode: {e}"),
            })?;
            out.push(row);
        }
        Ok(out)
    }

    /// The committed audit head: (last seq, its hash); `(0, GENESIS_HASH)` when empty.
    pub fn audit_head(&self) -> (u64, String) {
        lock(&self.inner.audit_head).clone()
    }

    /// Visits every stored audit record `(seq, raw bytes)` in seq order and returns the stored
    /// head, all from one consistent snapshot. `visit` returns false to stop early.
    pub(crate) fn audit_scan(
        &self,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<AuditHead> {
        let rtx = self.read()?;
        let head = {
            let meta = rtx
                .open_table(AUDIT_META)
                .map_err(db_err("open audit meta"))?;
            read_audit_head(&meta)?
        };
        let t = rtx.open_table(AUDIT).map_err(db_err("open audit"))?;
        for entry in t.iter().map_err(db_err("scan audit"))? {
            let (k, v) = entry.map_err(db_err("scan audit"))?;
            if !visit(k.value(), v.value()) {
                break;
            }
        }
        Ok(head)
    }

    /// Overwrites (`Some`) or deletes (`None`) the stored audit record at `seq` directly in
    /// the database, bypassing the chain: simulates tampering with the on-disk log in tests.
    #[doc(hidden)]
    pub async fn tamper_audit_for_tests(&self, seq: u64, new_bytes: Option<Vec<u8>>) -> Result<()> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut wtx = db.begin_write().map_err(db_err("begin write"))?;
            wtx.set_durability(Durability::Immediate);
            {
                let mut t = wtx
                    .open_table(AUDIT)
                    .map_err(db_err::<redb::TableError>("open audit table"))?;
                match &new_bytes {
                    Some(b) => {
                        t.insert(seq, b.as_slice())
                            .map_err(db_err("tamper audit"))?;
                    }
                    None => {
                        t.remove(seq).map_err(db_err("tamper audit"))?;
                    }
                }
            }
            wtx.commit().map_err(db_err("commit"))
        })
        .await
        .map_err(|_| StoreError::Internal("audit tamper task failed"))?
    }

    /// Stops the writer after committing the ops queued before this call; later writes return
    /// [`StoreError::Closed`]. Reads keep working. The file lock is released when the last
    /// `Store` clone is dropped. A second call returns immediately.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Op::Close { reply }).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// Creates every table, checks the seq allocator against the data, returns the head seq and
/// the audit head.
/// The message an index entry points at; a dangling entry is corruption.
fn read_indexed(
    messages: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
    id: &str,
) -> Result<StoredMessage> {
    match messages.get(seq).map_err(db_err("read message"))? {
        Some(v) => Ok(decode::<MessageRecord>("message", seq, v.value())?.into_stored(seq)),
        None => Err(StoreError::Corrupt {
            what: "id index",
            key: id.to_owned(),
            detail: format!("points at seq {seq}, which does not exist"),
        }),
    }
}

/// Stores written before messages were keyed by (origin, id): rebuild the id index and move
/// annotations under their message's key, then drop the old tables. Runs once, in the opening
/// transaction, so a crash leaves either the old layout or the new one.
fn migrate_to_origin_keys(wtx: &redb::WriteTransaction) -> Result<()> {
    let e = db_err::<redb::TableError>;
    let has = |name: &str| -> Result<bool> {
        Ok(wtx
            .list_tables()
            .map_err(db_err("list tables"))?
            .any(|t| t.name() == name))
    };
    if has(OLD_IDS.name())? {
        let messages = wtx.open_table(MESSAGES).map_err(e("open messages table"))?;
        let mut ids = wtx.open_table(IDS).map_err(e("open ids table"))?;
        let mut by_id: std::collections::HashMap<String, Vec<String>> = Default::default();
        for row in messages.iter().map_err(db_err("read messages"))? {
            let (k, v) = row.map_err(db_err("read message"))?;
            let rec: MessageRecord = decode("message", k.value(), v.value())?;
            ids.insert((rec.id.as_str(), rec.origin.as_str()), k.value())
                .map_err(db_err("migrate id index"))?;
            by_id.entry(rec.id).or_default().push(rec.origin);
        }
        if has(OLD_ANNOTATIONS.name())? {
            let old = wtx
                .open_table(OLD_ANNOTATIONS)
                .map_err(e("open old annotations table"))?;
            let mut new = wtx
                .open_table(ANNOTATIONS)
                .map_err(e("open annotations table"))?;
            for row in old.iter().map_err(db_err("read old annotations"))? {
                let (k, v) = row.map_err(db_err("read old annotation"))?;
                let (id, kind) = k.value();
                let value = v.value();
                // Retractions were stored as "ORIGIN\nREASON"; markings had no author and
                // are kept as their origin's.
                let (kind, origins, value) = if kind == "retracted" {
                    let text = String::from_utf8_lossy(value);
                    let (origin, reason) = text.split_once('\n').unwrap_or((&text, ""));
                    let ok = by_id.get(id).is_some_and(|o| o.iter().any(|x| x == origin));
                    let origins = if ok { vec![origin.to_string()] } else { vec![] };
                    ("retracted".to_string(), origins, reason.as_bytes().to_vec())
                } else {
                    let origins = by_id.get(id).cloned().unwrap_or_default();
                    (kind.to_string(), origins, value.to_vec())
                };
                for origin in origins {
                    let kind = if kind == "marking" {
                        format!("marking/{origin}")
                    } else {
                        kind.clone()
                    };
                    let rec = AnnotationRecord {
                        at_ms: 0,
                        by_id: String::new(),
                        value: value.clone(),
                    };
                    new.insert(
                        (message_key(&origin, id).as_str(), kind.as_str()),
                        rec.encode_to_vec().as_slice(),
                    )
                    .map_err(db_err("migrate annotation"))?;
                }
            }
        }
        wtx.delete_table(OLD_ANNOTATIONS)
            .map_err(db_err("drop old annotations table"))?;
        wtx.delete_table(OLD_IDS)
            .map_err(db_err("drop old ids table"))?;
        tracing::info!("store migrated to (origin, id) message keys");
    }
    Ok(())
}

fn init(db: &Database) -> Result<(u64, AuditHead)> {
    let mut wtx = db.begin_write().map_err(db_err("begin write"))?;
    wtx.set_durability(Durability::Immediate);
    let audit_head = {
        let t = wtx
            .open_table(AUDIT_META)
            .map_err(db_err::<redb::TableError>("open audit meta table"))?;
        read_audit_head(&t)?
    };
    migrate_to_origin_keys(&wtx)?;
    let head = {
        let mut t = open_tables(&wtx, audit_head.clone())?;
        let last = t
            .messages
            .last()
            .map_err(db_err("read messages"))?
            .map(|(k, _)| k.value());
        if let Some(last) = last
            && last >= t.next_seq
        {
            return Err(StoreError::Corrupt {
                what: "meta",
                key: META_NEXT_SEQ.into(),
                detail: format!(
                    "next seq {} is not above the last stored message seq {last}",
                    t.next_seq
                ),
            });
        }
        if get_u64(&t.meta, META_NEXT_SEQ)?.is_none() {
            t.meta
                .insert(META_NEXT_SEQ, t.next_seq)
                .map_err(db_err("init meta"))?;
        }
        t.next_seq - 1
    };
    wtx.commit().map_err(db_err("commit"))?;
    Ok((head, audit_head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, outbox: &[&str]) -> NewMessage {
        NewMessage {
            id: id.to_owned(),
            envelope: format!("env-{id}").into_bytes(),
            origin: "org-a".into(),
            kind: 1,
            level: 2,
            received_from: String::new(),
            received_at_ms: 42,
            outbox: outbox.iter().map(|s| (*s).to_owned()).collect(),
            audit: Vec::new(),
        }
    }

    #[tokio::test]
    async fn ids_belong_to_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut squat = msg("m", &["p"]);
        squat.origin = "org-b".into();
        squat.envelope = b"env-squat".to_vec();
        // The squatter arrives first: the real message is still stored, not a duplicate.
        assert_eq!(
            store.insert(squat.clone()).await.unwrap(),
            InsertOutcome::Inserted(1)
        );
        assert_eq!(
            store.insert(msg("m", &["p"])).await.unwrap(),
            InsertOutcome::Inserted(2)
        );
        assert_eq!(
            store.insert(squat).await.unwrap(),
            InsertOutcome::Duplicate(1)
        );
        assert_eq!(store.get("org-a", "m").unwrap().unwrap().envelope, b"env-m");
        assert_eq!(
            store.get("org-b", "m").unwrap().unwrap().envelope,
            b"env-squat"
        );
        assert!(store.get("org-c", "m").unwrap().is_none());
        let all: Vec<_> = store
            .find_by_id("m")
            .unwrap()
            .into_iter()
            .map(|m| m.origin)
            .collect();
        assert_eq!(all, vec!["org-a", "org-b"]);
        assert!(store.find_by_id("m2").unwrap().is_empty());
        assert!(store.find_by_id("").unwrap().is_empty());
        assert_eq!(store.outbox_depth("p").unwrap(), 2);
    }

    #[tokio::test]
    async fn annotations_keep_the_latest_or_earliest_whatever_the_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = |at_ms, id: &str, v: &str| AnnotationRecord {
            at_ms,
            by_id: id.into(),
            value: v.as_bytes().to_vec(),
        };
        let put = |kind: &str, r, keep| store.annotate("org-a", "m", kind.to_string(), r, keep);
        assert!(put("k", rec(2, "b", "two"), Keep::Latest).await.unwrap());
        assert!(!put("k", rec(1, "z", "one"), Keep::Latest).await.unwrap());
        assert!(
            !put("k", rec(2, "a", "tie-lower"), Keep::Latest)
                .await
                .unwrap()
        );
        assert!(
            put("k", rec(2, "c", "tie-higher"), Keep::Latest)
                .await
                .unwrap()
        );
        assert!(
            put("r", rec(5, "x", "first"), Keep::Earliest)
                .await
                .unwrap()
        );
        assert!(
            !put("r", rec(6, "y", "second"), Keep::Earliest)
                .await
                .unwrap()
        );
        assert!(
            put("r", rec(4, "w", "earlier"), Keep::Earliest)
                .await
                .unwrap()
        );
        let got = store.annotations("org-a", "m").unwrap();
        let text: Vec<_> = got
            .iter()
            .map(|(k, r)| (k.as_str(), String::from_utf8_lossy(&r.value).into_owned()))
            .collect();
        assert_eq!(
            text,
            vec![
                ("k", "tie-higher".to_string()),
                ("r", "earlier".to_string())
            ]
        );
        // Another origin's message with the same id has none of them.
        assert!(store.annotations("org-b", "m").unwrap().is_empty());
        assert!(store.annotations("org-a", "m2").unwrap().is_empty());
    }

    #[test]
    fn a_store_with_id_only_keys_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            // The layout before (origin, id) keys.
            let db = Database::create(&path).unwrap();
            let wtx = db.begin_write().unwrap();
            {
                let mut messages = wtx.open_table(MESSAGES).unwrap();
                let mut ids = wtx.open_table(OLD_IDS).unwrap();
                let mut meta = wtx.open_table(META).unwrap();
                let mut old = wtx.open_table(OLD_ANNOTATIONS).unwrap();
                for (seq, id, origin) in [(1u64, "m1", "org-a"), (2, "m2", "org-b")] {
                    let rec = MessageRecord {
                        id: id.into(),
                        envelope: b"env".to_vec(),
                        origin: origin.into(),
                        ..Default::default()
                    };
                    messages
                        .insert(seq, rec.encode_to_vec().as_slice())
                        .unwrap();
                    ids.insert(id, seq).unwrap();
                }
                meta.insert(META_NEXT_SEQ, 3).unwrap();
                old.insert(("m1", "retracted"), b"org-a\nwrong".as_slice())
                    .unwrap();
                old.insert(("m2", "retracted"), b"org-x\nnot the origin".as_slice())
                    .unwrap();
                old.insert(("m2", "marking"), b"\x08\x04".as_slice())
                    .unwrap();
            }
            wtx.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get("org-a", "m1").unwrap().unwrap().seq, 1);
        assert_eq!(store.get("org-b", "m2").unwrap().unwrap().seq, 2);
        let a = store.annotations("org-a", "m1").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].0.as_str(), a[0].1.value.as_slice()),
            ("retracted", b"wrong".as_slice())
        );
        // A retraction by someone other than the origin is not carried over.
        let b = store.annotations("org-b", "m2").unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, "marking/org-b");
        // Messages keep flowing with the same seq space, and re-opening is a no-op.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head_seq(), 2);
        assert_eq!(store.find_by_id("m1").unwrap().len(), 1);
    }

    #[tokio::test]
    async fn insert_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head_seq(), 0);
        let a = store.insert(msg("a", &["p1"])).await.unwrap();
        assert_eq!(a, InsertOutcome::Inserted(1));
        let dup = store.insert(msg("a", &["p1", "p2"])).await.unwrap();
        assert_eq!(dup, InsertOutcome::Duplicate(1));
        assert_eq!(store.outbox_depth("p1").unwrap(), 1);
        assert_eq!(store.outbox_depth("p2").unwrap(), 0);
        assert_eq!(store.message_count().unwrap(), 1);
        let many = store
            .insert_many(vec![
                msg("b", &[]),
                msg("a", &[]),
                msg("b", &[]),
                msg("c", &[]),
            ])
            .await
            .unwrap();
        assert_eq!(
            many,
            vec![
                InsertOutcome::Inserted(2),
                InsertOutcome::Duplicate(1),
                InsertOutcome::Duplicate(2),
                InsertOutcome::Inserted(3)
            ]
        );
        assert_eq!(store.head_seq(), 3);
        let got = store.get("org-a", "b").unwrap().unwrap();
        assert_eq!(got.seq, 2);
        assert_eq!(got.envelope, b"env-b");
        assert_eq!(got.kind, 1);
        assert_eq!(got.level, 2);
        assert_eq!(got.received_at_ms, 42);
        assert_eq!(store.get_by_seq(3).unwrap().unwrap().id, "c");
        assert!(store.get("org-a", "zz").unwrap().is_none());
        assert!(store.get_by_seq(99).unwrap().is_none());
        assert!(matches!(
            store.insert(msg("", &[])).await,
            Err(StoreError::Invalid(_))
        ));
        // A failed op in a group does not poison the store.
        assert_eq!(
            store.insert(msg("d", &[])).await.unwrap(),
            InsertOutcome::Inserted(4)
        );
    }

    #[tokio::test]
    async fn seq_monotonic_across_reopen_and_data_survives() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert(msg("a", &["p"])).await.unwrap();
            store.insert(msg("b", &["p"])).await.unwrap();
            store.set_cursor("sub", 1).await.unwrap();
            // dropped without close: releases the lock
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head_seq(), 2);
        assert_eq!(store.message_count().unwrap(), 2);
        assert_eq!(store.get_by_seq(1).unwrap().unwrap().envelope, b"env-a");
        assert_eq!(store.outbox_depth("p").unwrap(), 2);
        assert_eq!(store.get_cursor("sub").unwrap(), Some(1));
        assert_eq!(
            store.insert(msg("a", &[])).await.unwrap(),
            InsertOutcome::Duplicate(1)
        );
        assert_eq!(
            store.insert(msg("c", &[])).await.unwrap(),
            InsertOutcome::Inserted(3)
        );
        store.close().await;
        assert!(matches!(
            store.insert(msg("d", &[])).await,
            Err(StoreError::Closed)
        ));
        assert_eq!(store.read_after(0, 10).unwrap().len(), 3);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head_seq(), 3);
    }

    #[tokio::test]
    async fn outbox_order_ack_depth_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            store
                .insert(msg(&format!("m{i}"), &["p1", "p2"]))
                .await
                .unwrap();
        }
        store.insert(msg("only-p2", &["p2"])).await.unwrap();
        // A peer whose name is a prefix of another must not see its entries.
        store.insert(msg("x", &["p"])).await.unwrap();
        let batch = store.outbox_batch("p1", 3).unwrap();
        assert_eq!(
            batch.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(batch[0].1, b"env-m0");
        assert_eq!(store.outbox_depth("p1").unwrap(), 5);
        assert_eq!(store.outbox_depth("p2").unwrap(), 6);
        assert_eq!(store.outbox_depth("p").unwrap(), 1);
        assert_eq!(store.outbox_batch("p", 10).unwrap().len(), 1);

        store.ack_outbox("p1", vec![1, 2, 99]).await.unwrap();
        store.ack_outbox("p1", vec![1]).await.unwrap(); // idempotent
        assert_eq!(store.outbox_depth("p1").unwrap(), 3);
        assert_eq!(store.delivered_count("p1").unwrap(), 2);
        let next = store.outbox_batch("p1", 10).unwrap();
        assert_eq!(
            next.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );

        assert_eq!(store.drop_outbox("p2").await.unwrap(), 6);
        assert_eq!(store.outbox_depth("p2").unwrap(), 0);
        assert!(store.outbox_batch("p2", 10).unwrap().is_empty());
        assert_eq!(store.outbox_depth("p1").unwrap(), 3);
        assert_eq!(store.drop_outbox("nobody").await.unwrap(), 0);
        assert!(store.outbox_batch("p1", 0).unwrap().is_empty());
    }

    #[tokio::test]
    async fn read_after_pagination_and_head_watch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut head = store.subscribe_head();
        let msgs: Vec<_> = (0..25).map(|i| msg(&format!("m{i:02}"), &[])).collect();
        store.insert_many(msgs).await.unwrap();
        assert!(head.has_changed().unwrap());
        assert_eq!(*head.borrow_and_update(), 25);
        let mut cursor = 0;
        let mut seen = Vec::new();
        loop {
            let page = store.read_after(cursor, 10).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 10);
            cursor = page.last().unwrap().seq;
            seen.extend(page.into_iter().map(|m| m.seq));
        }
        assert_eq!(seen, (1..=25).collect::<Vec<_>>());
        assert!(store.read_after(u64::MAX, 10).unwrap().is_empty());
        assert!(store.read_after(0, 0).unwrap().is_empty());
        // Writes that add no message do not move the head.
        store.set_cursor("c", 3).await.unwrap();
        assert!(!head.has_changed().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_are_group_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let before = store.commit_count();
        let ops = 1000usize;
        let mut tasks = Vec::new();
        for t in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut inner = Vec::new();
                for i in 0..ops / 50 {
                    let store = store.clone();
                    inner.push(tokio::spawn(async move {
                        store.insert(msg(&format!("t{t}-{i}"), &["p"])).await
                    }));
                }
                let mut seqs = Vec::new();
                for h in inner {
                    seqs.push(h.await.unwrap().unwrap());
                }
                seqs
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            for o in t.await.unwrap() {
                match o {
                    InsertOutcome::Inserted(s) => seqs.push(s),
                    InsertOutcome::Duplicate(_) => panic!("unexpected duplicate"),
                }
            }
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=ops as u64).collect::<Vec<_>>());
        assert_eq!(store.message_count().unwrap(), ops as u64);
        assert_eq!(store.outbox_depth("p").unwrap(), ops as u64);
        assert_eq!(store.head_seq(), ops as u64);
        let commits = store.commit_count() - before;
        println!("{commits} commits for {ops} ops");
        assert!(
            commits < (ops / 4) as u64,
            "{commits} commits for {ops} ops"
        );
    }

    #[tokio::test]
    async fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("locked by another process"), "{text}");
        assert!(text.contains("data_dir"), "{text}");
    }

    #[tokio::test]
    async fn cursors_and_keys_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get_cursor("s").unwrap(), None);
        store.set_cursor("s", 7).await.unwrap();
        store.set_cursor("s", 9).await.unwrap();
        assert_eq!(store.get_cursor("s").unwrap(), Some(9));
        assert_eq!(store.get_key("k1").unwrap(), None);
        store.put_key("k1", "org-a", &[1, 2, 3]).await.unwrap();
        assert_eq!(
            store.get_key("k1").unwrap(),
            Some(("org-a".to_owned(), vec![1, 2, 3]))
        );
    }

    #[tokio::test]
    async fn rejections_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            store
                .record_rejection(Rejection {
                    at_ms: i,
                    from_peer: "p".into(),
                    id: format!("m{i}"),
                    reason: "bad signature".into(),
                })
                .await
                .unwrap();
        }
        assert_eq!(store.rejection_count().unwrap(), 5);
        let r = store.rejections(3).unwrap();
        assert_eq!(r.iter().map(|r| r.at_ms).collect::<Vec<_>>(), vec![4, 3, 2]);
        assert_eq!(r[0].id, "m4");
        assert_eq!(r[0].reason, "bad signature");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejections_are_pruned_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let total = MAX_REJECTIONS_KEPT + 5;
        let handles: Vec<_> = (0..total)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .record_rejection(Rejection {
                            at_ms: i as i64,
                            from_peer: "p".into(),
                            id: format!("m{i}"),
                            reason: "r".into(),
                        })
                        .await
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        assert_eq!(store.rejection_count().unwrap(), total);
        let kept = store.rejections(usize::MAX).unwrap();
        assert_eq!(kept.len() as u64, MAX_REJECTIONS_KEPT);
    }

    fn entries(range: std::ops::Range<u64>, tag: &str) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("{tag}-{i}").into_bytes()))
            .collect()
    }

    fn invalid_text<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(e @ StoreError::Invalid(_)) => e.to_string(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn cluster_log_append_read_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.cluster_ids().unwrap().is_empty());
            assert!(store.cluster_entries("c1", 0, 10).unwrap().is_empty());
            store
                .append_cluster_entries("c1", entries(0..3, "a"))
                .await
                .unwrap();
            store
                .append_cluster_entries("c1", entries(3..5, "a"))
                .await
                .unwrap();
            // Ids that are prefixes of each other stay separate.
            store
                .append_cluster_entries("c", entries(0..2, "b"))
                .await
                .unwrap();
            store
                .append_cluster_entries("c2", entries(0..1, "c"))
                .await
                .unwrap();
            store.append_cluster_entries("c1", vec![]).await.unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cluster_ids().unwrap(), vec!["c", "c1", "c2"]);
        assert_eq!(
            store.cluster_entries("c1", 0, 100).unwrap(),
            entries(0..5, "a")
        );
        assert_eq!(
            store.cluster_entries("c1", 2, 2).unwrap(),
            entries(2..4, "a")
        );
        assert_eq!(
            store.cluster_entries("c1", 4, 10).unwrap(),
            entries(4..5, "a")
        );
        assert!(store.cluster_entries("c1", 5, 10).unwrap().is_empty());
        assert!(store.cluster_entries("c1", 0, 0).unwrap().is_empty());
        assert_eq!(
            store.cluster_entries("c", 0, 10).unwrap(),
            entries(0..2, "b")
        );
        assert!(store.cluster_entries("nope", 0, 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn cluster_log_refusals_and_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A new cluster starts at 0.
        let t = invalid_text(store.append_cluster_entries("c", entries(1..3, "a")).await);
        assert!(t.contains("gap") && t.contains("must be 0"), "{t}");
        assert!(store.cluster_ids().unwrap().is_empty());
        store
            .append_cluster_entries("c", entries(0..4, "a"))
            .await
            .unwrap();
        // Identical re-append (whole, partial, overlapping the tail) is a no-op / extends.
        store
            .append_cluster_entries("c", entries(0..4, "a"))
            .await
            .unwrap();
        store
            .append_cluster_entries("c", entries(2..3, "a"))
            .await
            .unwrap();
        store
            .append_cluster_entries("c", entries(2..6, "a"))
            .await
            .unwrap();
        assert_eq!(
            store.cluster_entries("c", 0, 100).unwrap(),
            entries(0..6, "a")
        );
        // Different bytes at an existing index.
        let t = invalid_text(store.append_cluster_entries("c", entries(3..4, "x")).await);
        assert!(t.contains("different entry at index 3"), "{t}");
        // Identical prefix, then a conflicting entry: nothing of the request is written.
        let mut mixed = entries(4..6, "a");
        mixed.extend(entries(6..7, "a"));
        mixed[1].1 = b"other".to_vec();
        invalid_text(store.append_cluster_entries("c", mixed).await);
        assert_eq!(
            store.cluster_entries("c", 0, 100).unwrap(),
            entries(0..6, "a")
        );
        // Gap after the end.
        let t = invalid_text(store.append_cluster_entries("c", entries(7..8, "a")).await);
        assert!(t.contains("must be 6"), "{t}");
        // Not consecutive (duplicate, gap, descending).
        for bad in [
            vec![(6, b"a".to_vec()), (6, b"a".to_vec())],
            vec![(6, b"a".to_vec()), (8, b"a".to_vec())],
            vec![(6, b"a".to_vec()), (5, b"a-5".to_vec())],
        ] {
            let t = invalid_text(store.append_cluster_entries("c", bad).await);
            assert!(t.contains("not consecutive"), "{t}");
        }
        invalid_text(store.append_cluster_entries("", entries(0..1, "a")).await);
        assert_eq!(
            store.cluster_entries("c", 0, 100).unwrap(),
            entries(0..6, "a")
        );
        assert_eq!(store.cluster_ids().unwrap(), vec!["c"]);
        // A refused op in a group does not poison the store.
        store
            .append_cluster_entries("c", entries(6..7, "a"))
            .await
            .unwrap();
        assert_eq!(
            store.cluster_entries("c", 6, 1).unwrap(),
            entries(6..7, "a")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_log_queued_appends_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Queued back to back (likely one group): each must see the previous one's entries.
        let (a, b, c) = tokio::join!(
            store.append_cluster_entries("q", entries(0..2, "q")),
            store.append_cluster_entries("q", entries(2..3, "q")),
            store.append_cluster_entries("q", entries(1..4, "q")),
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        assert_eq!(
            store.cluster_entries("q", 0, 10).unwrap(),
            entries(0..4, "q")
        );
        let handles: Vec<_> = (0..20u64)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = format!("c{c:02}");
                    for i in 0..5u64 {
                        store
                            .append_cluster_entries(&id, entries(i..i + 1, &id))
                            .await?;
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let ids = store.cluster_ids().unwrap();
        assert_eq!(ids.len(), 21);
        assert_eq!(ids[20], "q");
        for id in ids.into_iter().filter(|id| id != "q") {
            assert_eq!(
                store.cluster_entries(&id, 0, 10).unwrap(),
                entries(0..5, &id)
            );
        }
    }

    #[tokio::test]
    async fn directory_round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.directory().unwrap().is_empty());
            store.put_directory("org-b", &[2, 2]).await.unwrap();
            store.put_directory("org-a", &[1]).await.unwrap();
            store.put_directory("org-b", &[3, 3, 3]).await.unwrap();
            invalid_text(store.put_directory("", &[1]).await);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.directory().unwrap(),
            vec![
                ("org-a".to_owned(), vec![1]),
                ("org-b".to_owned(), vec![3, 3, 3])
            ]
        );
    }

    #[tokio::test]
    async fn enqueue_existing_messages_and_depth() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..4 {
            store.insert(msg(&format!("m{i}"), &["p1"])).await.unwrap();
        }
        assert_eq!(store.outbox_depth("p2").unwrap(), 0);
        assert_eq!(store.enqueue("p2", vec![3, 1]).await.unwrap(), 2);
        // Already queued and repeated seqs are not counted twice.
        assert_eq!(store.enqueue("p2", vec![1, 2, 2, 3]).await.unwrap(), 1);
        assert_eq!(store.outbox_depth("p2").unwrap(), 3);
        assert_eq!(store.enqueue("p1", vec![1, 2, 3, 4]).await.unwrap(), 0);
        assert_eq!(store.outbox_depth("p1").unwrap(), 4);
        assert_eq!(store.enqueue("p2", vec![]).await.unwrap(), 0);
        let batch = store.outbox_batch("p2", 10).unwrap();
        assert_eq!(
            batch,
            vec![
                (1, b"env-m0".to_vec()),
                (2, b"env-m1".to_vec()),
                (3, b"env-m2".to_vec())
            ]
        );
        // A missing seq refuses the whole request.
        let t = invalid_text(store.enqueue("p2", vec![4, 99]).await);
        assert!(t.contains("99"), "{t}");
        invalid_text(store.enqueue("p2", vec![0]).await);
        invalid_text(store.enqueue("", vec![1]).await);
        assert_eq!(store.outbox_depth("p2").unwrap(), 3);
        assert_eq!(store.outbox_batch("p2", 10).unwrap().len(), 3);
        // Depth stays consistent with acks and drops.
        store.ack_outbox("p2", vec![1, 2]).await.unwrap();
        assert_eq!(store.outbox_depth("p2").unwrap(), 1);
        assert_eq!(store.delivered_count("p2").unwrap(), 2);
        assert_eq!(store.enqueue("p2", vec![1, 4]).await.unwrap(), 2);
        assert_eq!(store.outbox_depth("p2").unwrap(), 3);
        assert_eq!(store.drop_outbox("p2").await.unwrap(), 3);
        assert_eq!(store.outbox_depth("p2").unwrap(), 0);
        assert_eq!(store.enqueue("p2", vec![2]).await.unwrap(), 1);
        assert_eq!(store.outbox_depth("p2").unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_appends_chain_in_commit_order_within_mixed_groups() {
        use crate::audit::{self, AuditEvent};
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.audit_head(), (0, audit::GENESIS_HASH.to_owned()));
            // Audit appends queued with inserts and with refused ops (which make the writer
            // retry the rest of the group): the chain stays contiguous and verifiable.
            let handles: Vec<_> = (0..40u64)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let bad = i % 5 == 0;
                        let id = if bad { String::new() } else { format!("m{i}") };
                        let ins = store.insert(msg(&id, &[])).await;
                        assert_eq!(ins.is_err(), bad);
                        store
                            .append_audit(vec![
                                AuditEvent::published(id.clone(), "u"),
                                AuditEvent::sent(id, "org-b", "tlp"),
                            ])
                            .await
                            .unwrap();
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
            let (seq, hash) = store.audit_head();
            assert_eq!(seq, 80);
            let rows = store.audit_records(0, usize::MAX).unwrap();
            assert_eq!(rows.len(), 80);
            assert!(rows.iter().zip(1..).all(|(r, s)| r.seq == s));
            assert_eq!(rows[79].hash, hash);
            assert_eq!(store.audit_records(78, 10).unwrap().len(), 2);
            assert!(store.audit_records(80, 10).unwrap().is_empty());
            assert!(store.audit_records(u64::MAX, 10).unwrap().is_empty());
            // A later durable op makes the (non-durable) audit appends durable.
            store.insert(msg("last", &[])).await.unwrap();
            store.close().await;
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.audit_head().0, 80);
        let v = audit::verify(&store).unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, 80);
        assert_eq!(v.head_hash, store.audit_head().1);
    }

    #[tokio::test]
    async fn audit_records_commit_with_the_message_and_with_the_ack() {
        use crate::audit::{self, AuditEvent};
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let with_audit = |id: &str| NewMessage {
                audit: vec![AuditEvent::received(id, "org-b")],
                ..msg(id, &["p"])
            };
            let commits = store.commit_count();
            store.insert(with_audit("a")).await.unwrap();
            // One transaction: the record is there as soon as the insert returns.
            assert_eq!(store.commit_count(), commits + 1);
            let rows = store.audit_records(0, 10).unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(
                (rows[0].msg_id.as_str(), rows[0].peer.as_str()),
                ("a", "org-b")
            );
            // A duplicate adds neither a message nor an audit record.
            assert!(matches!(
                store.insert(with_audit("a")).await.unwrap(),
                InsertOutcome::Duplicate(1)
            ));
            assert_eq!(store.audit_head().0, 1);
            store
                .ack_outbox_audited("p", vec![1], vec![AuditEvent::delivered("a", "p")])
                .await
                .unwrap();
            assert_eq!(store.outbox_depth("p").unwrap(), 0);
            assert_eq!(store.audit_head().0, 2);
            store.close().await;
        }
        // Durable with the insert's fsync, verifiable after a reopen.
        let store = Store::open(dir.path()).unwrap();
        let v = audit::verify(&store).unwrap();
        assert!(v.ok && v.records >= 1, "{v:?}");
    }

    #[tokio::test]
    async fn held_back_acks_commit_on_their_own_and_before_close() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert(msg("a", &["p"])).await.unwrap();
            store.insert(msg("b", &["p"])).await.unwrap();
            // Alone, an ack waits at most LAZY_HOLD for company, then commits anyway.
            let t0 = std::time::Instant::now();
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                store.ack_outbox_later("p", vec![1], Vec::new()),
            )
            .await
            .expect("a lone ack is committed, not held forever")
            .unwrap();
            assert!(t0.elapsed() >= LAZY_HOLD / 2, "{:?}", t0.elapsed());
            assert_eq!(store.outbox_depth("p").unwrap(), 1);
            // Queued before Close: committed by it, not dropped.
            let (acked, ()) = tokio::join!(
                store.ack_outbox_later("p", vec![2], Vec::new()),
                store.close()
            );
            acked.unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox_depth("p").unwrap(), 0);
        assert_eq!(store.delivered_count("p").unwrap(), 2);
    }

    #[tokio::test]
    async fn corrupted_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert(msg("a", &["p"])).await.unwrap();
        {
            // Overwrite the record with garbage through the same database handle.
            let wtx = store.inner.db.begin_write().unwrap();
            {
                let mut t = wtx.open_table(MESSAGES).unwrap();
                t.insert(1u64, [0xffu8, 0xff, 0xff].as_slice()).unwrap();
            }
            wtx.commit().unwrap();
        }
        assert!(matches!(
            store.get_by_seq(1),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.read_after(0, 10),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.outbox_batch("p", 10),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
