//! Bluewire's embedded durable store: one redb 2.x file, `DATA_DIR/bluewire.redb`, with a
//! journal of its own beside it (`DATA_DIR/journal-*.jnl`) and a value log
//! (`DATA_DIR/bluewire.values`) holding the message records and batch signatures the file
//! points to.
//!
//! Owns: messages (keyed by a local, strictly increasing `seq`, with an id index for dedup),
//! the per-peer outbox with its depth/delivered counters, durable named subscriber cursors,
//! known signing keys, rejection records, the per-cluster replicated logs (exact encoded entry
//! bytes by index), the organisation directory (node certificates by org), API token records
//! (only the hash of each secret, see [`crate::tokens`]) and the hash-chained audit log (see
//! [`crate::audit`]).
//!
//! Every write goes through ONE writer that group-commits: its thread takes the first queued op,
//! drains whatever else is queued (up to [`MAX_GROUP`] ops), applies them all in one write
//! transaction with `Durability::Immediate`, commits and only then answers each op. With
//! `[store] sync = "interval"` an insert that arrives while nothing else is being written is
//! committed by its caller instead, together with the inserts ready at that moment, under the
//! same lock (one write transaction at a time): two thread wake-ups fewer on a message's path. With
//! `[store] sync = "always"` the commit is redb's, with its `fdatasync`; with `"interval"` it is
//! one frame appended to the store's journal (`journal-*.jnl` beside the redb file), which redb
//! takes in large transactions in the background (`kv`). So an `Ok` from any async write means
//! "on disk" (for `"interval"`: in the kernel, see `sync`), and throughput is not capped at the
//! disk's fsync rate. After a commit that added messages the new head seq is published on a watch.
//! Exceptions that ride along without forcing an fsync of their own (a group made only of them
//! commits with `Durability::None` and becomes durable with the next durable commit): outbox
//! acks and audit appends. Outbox acks are also *lazy*: the writer holds a group made only of
//! them for up to [`LAZY_HOLD`] so they join the next commit instead of costing their own. The
//! audit log's seq and chain hash are assigned by the writer, in
//! commit order, in the same transaction as the head they advance, so a crash can lose the
//! newest audit records but never break the chain.
//!
//! It must never: acknowledge a write before its commit; re-encode envelope bytes (they are
//! returned exactly as given; the one thing taken apart is a batch signature, which every
//! envelope of a batch repeats: it is kept once, by digest, and put back byte for byte on
//! every read, see `signatures`); panic on a corrupted or undecodable record (that is
//! [`StoreError::Corrupt`]); let two processes open the same data_dir (redb's file lock turns
//! that into [`StoreError::Locked`]). It knows nothing of signatures, policy or the network.
//!
//! # Layout
//!
//! This file is the module's public face and the only place other modules name: the public
//! types, [`StoreError`], the [`Store`] handle (open, close) and these docs. Behind it:
//! - `kv`: redb's table API over the journal (`journal`: its files and frames) and the
//!   commits redb has not taken yet (`overlay`), which every read sees over redb, with the
//!   large values of the spilled tables in the value log (`kv::values`);
//! - `tables`: table definitions, the on-disk (prost) records, the `Tables` set one write
//!   transaction works on, and opening, initialising and migrating the file;
//! - `writer`: the writer thread (op queue, group commit, how each op is applied), inserts
//!   committed by their callers, and every
//!   `Store` method that writes (each sends one op and waits for its commit);
//! - `queries`: every `Store` method that reads, each from one read transaction;
//! - `signatures`: taking a batch signature out of an envelope's bytes and putting it back.
//!
//! This file must never hold table layouts, apply an op or run a query itself (the one
//! exception is `Store::tamper_audit_for_tests`, built only for tests, which bypasses the
//! writer on purpose to corrupt the audit log).

mod audit_blocks;
mod clean;
mod journal;
mod kv;
mod outbox_blocks;
mod overlay;
mod queries;
mod signatures;
mod stats;
mod sync;
mod tables;
mod writer;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kv::Database;
use prost::Message as _;
use redb::DatabaseError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::audit::AuditEvent;
pub use crate::audit::AuditRecordRow;
pub use clean::CLEAN_MARKER;
pub use tables::RelayRecord;
use tables::{AuditDisk, AuditHead};

/// What became of one envelope offered to the relay queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayPut {
    Queued,
    /// A copy for the same recipient is queued already.
    Duplicate,
    /// Over `limits`: not kept (the sender keeps its own copy).
    Full,
}

/// How much a node carries for other members at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Envelopes queued for one recipient.
    pub per_recipient: u64,
    /// Bytes of every carried envelope together.
    pub total_bytes: u64,
}
pub use stats::{FileStats, file_stats};
pub use sync::SyncMode;
use writer::{Op, Writer, WriterThread};

/// Local record ids of a node's re-share copies start with this (outbox records, not
/// messages of their own, flagged [`StoredMessage::reshare`]; the id only keeps them apart
/// from the original in the (origin, id) index).
pub const RESHARE_PREFIX: &str = "fwd:";

/// File name of the database inside the node's data_dir.
pub const FILE_NAME: &str = "bluewire.redb";
/// The value log beside it: the message records and batch signatures the file points to.
pub const VALUES_FILE_NAME: &str = kv::VALUES_FILE;
/// Written beside the store when a start found it damaged and redb repaired it: every later
/// start refuses too, until the operator removes it (accepting the repaired store).
pub const DAMAGED_MARKER: &str = "STORE-DAMAGED";
/// Most ops applied in one write transaction (one fsync).
pub const MAX_GROUP: usize = 1024;
/// Longest a lazy op (an outbox ack) waits for a commit to ride along with.
const LAZY_HOLD: std::time::Duration = std::time::Duration::from_millis(20);
/// Bounded queue in front of the writer; senders wait (backpressure) when it is full.
const QUEUE_DEPTH: usize = 4096;
/// Rejection records kept on disk; older ones are pruned (the total is still counted).
pub const MAX_REJECTIONS_KEPT: u64 = 10_000;

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
        "the store was written by a newer Bluewire (store layout {found}; this binary reads \
         layouts up to {known}): run that version, or restore data_dir from the backup taken \
         before the upgrade"
    )]
    NewerLayout { found: u64, known: u64 },
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
    #[error(
        "store at {} is damaged ({detail}); the node will not serve from it. Keep a copy of \
         data_dir for analysis, then restore data_dir from a backup, or move it aside to start \
         with an empty store (peers resend what they still hold queued)",
        .path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "the store is being reopened after an I/O error (is the disk holding data_dir full?); \
         retry shortly"
    )]
    Reopening,
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

/// A record that does not hold what it should.
fn corrupt(what: &'static str, key: impl Display, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what,
        key: key.to_string(),
        detail: detail.into(),
    }
}

fn decode<M: prost::Message + Default>(
    what: &'static str,
    key: impl Display,
    bytes: &[u8],
) -> Result<M> {
    M::decode(bytes).map_err(|e| corrupt(what, key, format!("cannot decode: {e}")))
}

// ---- public types -------------------------------------------------------------------------

/// A message to persist. `envelope` is the exact encoded Envelope bytes (never re-encoded),
/// without its signature when `batch_signature` holds it.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// Message id (UUIDv7 string): the dedup key.
    pub id: String,
    pub envelope: Vec<u8>,
    /// When set, `envelope` was encoded without its signature field and this is that
    /// signature (a batch's, which the store keeps once): reads put it back where an encoder
    /// puts field 2, giving the envelope as it was encoded whole. Set by
    /// [`NewMessage::of_envelope`], so the store need not find it in the bytes again.
    pub batch_signature: Option<bytes::Bytes>,
    /// Origin org.
    pub origin: String,
    pub kind: i32,
    pub level: i32,
    /// The cluster its signed content names ("" for none).
    pub cluster: String,
    /// This node's re-share copy of another message (an outbox record carrying the forwarded
    /// envelope, under a local id): feeds and backfill skip it.
    pub reshare: bool,
    /// The case a workflow message belongs to ("ORIGIN/ID" of its opening message; "" for
    /// none): indexed so a case's messages are read without scanning the store.
    pub case: String,
    /// The STIX objects a bundle message carries, as (id, version): indexed for TAXII and
    /// idempotent import.
    pub stix: Vec<(String, String)>,
    /// Peer it came from; "" when published locally.
    pub received_from: String,
    pub received_at_ms: i64,
    /// Peers (org ids) to queue it for, atomically with the insert.
    pub outbox: Vec<String>,
    /// Audit records chained in the same transaction if the message is new (a duplicate adds
    /// none), so an acknowledged message never lacks its audit record.
    pub audit: Vec<AuditEvent>,
}

impl NewMessage {
    /// `content` stored as the envelope `envelope` (its exact bytes), with the fields that
    /// filters and replays read without decoding; nothing queued, nothing audited yet.
    pub fn of(
        content: &bluewire_proto::v1::Content,
        envelope: Vec<u8>,
        received_from: &str,
        received_at_ms: i64,
    ) -> NewMessage {
        NewMessage {
            id: content.id.clone(),
            envelope,
            batch_signature: None,
            origin: content.origin_org.clone(),
            kind: content.kind,
            level: content.level,
            cluster: content.cluster.clone(),
            reshare: false,
            case: crate::case::case_key(content).unwrap_or_default(),
            stix: crate::stix::index_of(content),
            received_from: received_from.to_string(),
            received_at_ms,
            outbox: Vec::new(),
            audit: Vec::new(),
        }
    }

    /// As [`NewMessage::of`], encoding `envelope`: a batch's signature is handed over
    /// apart (see `batch_signature`), not copied into the bytes and found there again.
    pub fn of_envelope(
        content: &bluewire_proto::v1::Content,
        mut envelope: bluewire_proto::v1::Envelope,
        received_from: &str,
        received_at_ms: i64,
    ) -> NewMessage {
        let batch_signature = (envelope.batch.is_some() && !envelope.signature.is_empty())
            .then(|| std::mem::take(&mut envelope.signature));
        NewMessage {
            batch_signature,
            ..NewMessage::of(
                content,
                envelope.encode_to_vec(),
                received_from,
                received_at_ms,
            )
        }
    }
}

/// Where a reader walking a peer's outbox forward stands ([`Store::outbox_queued_from`]):
/// the key its last read started from, for the store generation it was found in. A new
/// reader, or one whose position went back, starts from `OutboxScan::default()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxScan {
    from: u64,
    generation: u64,
}

/// An envelope queued for a peer, as [`Store::outbox_queued_after`] reads it: its encoded
/// bytes, without its batch signature when `signature` holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    pub seq: u64,
    pub envelope: Vec<u8>,
    pub signature: Option<bytes::Bytes>,
}

impl Queued {
    /// Bytes on the wire, about: the envelope and its signature.
    pub fn wire_len(&self) -> usize {
        self.envelope.len() + self.signature.as_ref().map_or(0, |s| s.len() + 3)
    }

    /// The envelope, decoded without copying its content or signature.
    pub fn decode(self) -> std::result::Result<bluewire_proto::v1::Envelope, prost::DecodeError> {
        decode_apart(self.envelope, self.signature)
    }
}

/// Envelope bytes read with their batch signature apart (`None`: whole), decoded without
/// copying the content or the signature, the signature put back.
pub fn decode_apart(
    envelope: Vec<u8>,
    signature: Option<bytes::Bytes>,
) -> std::result::Result<bluewire_proto::v1::Envelope, prost::DecodeError> {
    let mut env = bluewire_proto::v1::Envelope::decode(bytes::Bytes::from(envelope))?;
    if let Some(signature) = signature {
        env.signature = signature;
    }
    Ok(env)
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub seq: u64,
    pub id: String,
    pub envelope: Vec<u8>,
    pub origin: String,
    pub kind: i32,
    pub level: i32,
    /// The cluster its signed content names ("" for none).
    pub cluster: String,
    /// A local re-share copy (see [`NewMessage::reshare`]).
    pub reshare: bool,
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

/// The on-disk bytes of an audit record (the seq is the table key, not part of them). Public
/// for tests that tamper with the log through `Store::tamper_audit_for_tests` (feature
/// `test-util`).
#[doc(hidden)]
pub fn encode_audit_row(row: &AuditRecordRow) -> Vec<u8> {
    AuditDisk {
        at_ms: row.at_ms,
        event: row.event.clone(),
        msg_id: row.msg_id.clone(),
        peer: row.peer.clone(),
        cluster: row.cluster.clone(),
        rule: row.rule.clone(),
        detail: row.detail.clone(),
        prev_hash: row.prev_hash.clone(),
        hash: row.hash.clone(),
    }
    .encode_to_vec()
}

/// Decodes the on-disk bytes stored under `seq`.
pub(crate) fn decode_audit_row(
    seq: u64,
    bytes: &[u8],
) -> std::result::Result<AuditRecordRow, prost::DecodeError> {
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

/// An API token as stored: who it speaks for and until when, and the SHA-256 of its secret
/// (never the secret). The meaning of the fields is [`crate::tokens`]'s; the store only keeps
/// records by id and marks them revoked.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApiTokenRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub user: String,
    /// The role's name ("analyst", "operator", "soc-tool").
    #[prost(string, tag = "3")]
    pub role: String,
    #[prost(string, tag = "4")]
    pub label: String,
    #[prost(int64, tag = "5")]
    pub created_ms: i64,
    #[prost(int64, tag = "6")]
    pub expires_ms: i64,
    /// 0 while the token is not revoked.
    #[prost(int64, tag = "7")]
    pub revoked_ms: i64,
    #[prost(bytes = "vec", tag = "8")]
    pub hash: Vec<u8>,
    #[prost(string, tag = "9")]
    pub created_by: String,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are replaced whole, so a poisoned lock still holds a consistent one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// Field order matters: `tx` is dropped first (the writer sees the channel close and exits),
// then `_writer` joins it, then `db` drops the last handle to the file.
struct Inner {
    tx: mpsc::Sender<Op>,
    _writer: WriterThread,
    /// What the writer thread commits with; callers commit inserts with it too when
    /// nothing else is being written (`writer::Route::Lead`).
    writer: Arc<Writer>,
    db: DbSlot,
    head: Arc<watch::Sender<u64>>,
    commits: Arc<AtomicU64>,
    /// Time spent in write transactions (applying a group, committing), in nanoseconds.
    commit_nanos: Arc<AtomicU64>,
    audit_head: Arc<Mutex<AuditHead>>,
    /// Messages with at least one annotation (see [`Annotated`]).
    annotated: Annotated,
    closed: AtomicBool,
    /// Whether the open checked every page (not after a clean shutdown).
    pages_checked: bool,
    path: PathBuf,
    /// Last: records a clean shutdown once everything above has let go of the file.
    _clean: clean::CleanClose,
}

/// The messages (hashes of their [`message_key`]s) that have at least one annotation.
/// Annotations are rare (a retraction, a marking raised), yet routing looks a message's up at
/// every egress re-check, admission and feed item: a message whose hash is not in this set
/// has none, and its lookup reads nothing (issue #12).
///
/// Loaded at open; the writer adds a key before the transaction that writes its first
/// annotation commits. So the set may hold a key whose write failed, or a hash another key
/// shares (then the lookup reads the store, as before), never lack one that is stored.
/// Bounded: past [`Annotated::MAX_KEYS`] keys (a member raising the markings of many
/// messages it does not hold, say), every lookup reads the store again, and the start-up
/// scan stops there.
#[derive(Clone, Debug, Default)]
pub(crate) struct Annotated(Arc<AnnotatedKeys>);

#[derive(Debug, Default)]
struct AnnotatedKeys {
    hashes: dashmap::DashSet<u64>,
    /// Set once there were more than `MAX_KEYS`: the set no longer decides anything.
    overflowed: AtomicBool,
}

impl Annotated {
    /// About 2 MiB of hashes at most.
    pub(crate) const MAX_KEYS: usize = 100_000;

    fn hash(key: &str) -> u64 {
        use std::hash::{Hash as _, Hasher as _};

        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    fn load(db: &Database) -> Result<Self> {
        use kv::ReadableTable as _;

        let this = Self::default();
        let rtx = db.begin_read().map_err(db_err("begin read"))?;
        let t = rtx
            .open_table(tables::ANNOTATIONS)
            .map_err(db_err("open annotations"))?;
        for row in t.iter().map_err(db_err("read annotations"))? {
            let (k, _) = row.map_err(db_err("read annotation"))?;
            this.note(k.value().0);
            if this.0.overflowed.load(Ordering::Acquire) {
                break;
            }
        }
        Ok(this)
    }

    /// Might the message with this key have annotations? False means it has none.
    pub(crate) fn may_have(&self, key: &str) -> bool {
        self.0.overflowed.load(Ordering::Acquire) || self.0.hashes.contains(&Self::hash(key))
    }

    pub(crate) fn note(&self, key: &str) {
        let k = &self.0;
        // Past the bound the flag decides; the hashes stay (a reader that saw the flag clear
        // an instant ago must still find every key noted before).
        if k.hashes.len() >= Self::MAX_KEYS {
            k.overflowed.store(true, Ordering::Release);
            return;
        }
        k.hashes.insert(Self::hash(key));
    }
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
        Self::open_with(dir, SyncMode::Always)
    }

    /// As [`Store::open`], with commits made durable as `sync` says (`[store] sync`).
    pub fn open_with(dir: &Path, sync: SyncMode) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source: Arc::new(e),
        })?;
        let path = dir.join(FILE_NAME);
        // Taken before redb opens the file (which writes to it). A store once found damaged
        // stays refused (`verify`) whatever the record says.
        let closed_cleanly = clean::take(dir, &path) && !dir.join(DAMAGED_MARKER).exists();
        let repaired = Arc::new(AtomicBool::new(false));
        let sync_failed = sync::SyncFailure::default();
        let db = unpanicked(&path, || {
            let mut db = create_noting_repair(&path, &repaired, sync, &sync_failed).map_err(
                |e| match e {
                    sync::OpenError::Db(DatabaseError::DatabaseAlreadyOpen) => {
                        StoreError::Locked { path: path.clone() }
                    }
                    sync::OpenError::Db(DatabaseError::UpgradeRequired(version)) => {
                        StoreError::UpgradeRequired {
                            path: path.clone(),
                            version,
                        }
                    }
                    sync::OpenError::Db(other) => StoreError::Open {
                        path: path.clone(),
                        source: Arc::new(other.into()),
                    },
                    sync::OpenError::Io(e) => StoreError::Open {
                        path: path.clone(),
                        source: Arc::new(redb::StorageError::Io(e).into()),
                    },
                    sync::OpenError::Refused(why) => StoreError::Damaged {
                        path: path.clone(),
                        detail: format!(
                            "{why}; to accept that, delete {}",
                            dir.join(DAMAGED_MARKER).display()
                        ),
                    },
                },
            )?;
            if closed_cleanly {
                tracing::info!(path = %path.display(), "store closed cleanly last time and unchanged since: page check skipped");
            } else if repaired.load(Ordering::Acquire) && !dir.join(DAMAGED_MARKER).exists() {
                // redb's repair after an unclean shutdown has just read every page against
                // its checksum (the same walk as `check_integrity`): not twice.
                tracing::info!(path = %path.display(), "store repaired after an unclean shutdown, every page checked by the repair");
            } else {
                let t = std::time::Instant::now();
                verify(&mut db, dir, &path)?;
                tracing::info!(path = %path.display(), elapsed_ms = t.elapsed().as_millis() as u64, "every page of the store checked");
            }
            // The journal's replay writes into the file only once it has been checked.
            wrap(db, &path, sync, &sync_failed).map_err(|e| match e {
                sync::OpenError::Io(e) => StoreError::Open {
                    path: path.clone(),
                    source: Arc::new(redb::StorageError::Io(e).into()),
                },
                other => StoreError::Open {
                    path: path.clone(),
                    source: Arc::new(
                        redb::StorageError::Io(std::io::Error::other(format!("{other:?}"))).into(),
                    ),
                },
            })
        })?;
        let (head, audit_head) = tables::init(&db)?;
        let annotated = Annotated::load(&db)?;
        let audit_head = Arc::new(Mutex::new(audit_head));
        let db = DbSlot::new(db, path.clone(), sync, sync_failed);
        let db_clean = db.clone();
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let head_tx = Arc::new(watch::Sender::new(head));
        let commits = Arc::new(AtomicU64::new(0));
        let commit_nanos = Arc::new(AtomicU64::new(0));
        let writer_done = Arc::new(AtomicBool::new(false));
        let writer = Arc::new(Writer {
            done: writer_done.clone(),
            db: db.clone(),
            head: head_tx.clone(),
            commits: commits.clone(),
            commit_nanos: commit_nanos.clone(),
            audit_head: audit_head.clone(),
            annotated: annotated.clone(),
            rewound: Mutex::new(None),
            committing: Mutex::new(()),
            busy: AtomicBool::new(false),
            here: matches!(sync, SyncMode::Interval(_)) || journal_everywhere(),
            commits_by_caller: AtomicU64::new(0),
            gathering: Mutex::new(None),
            held: Mutex::new(writer::Held {
                ops: Vec::new(),
                since: std::time::Instant::now(),
            }),
        });
        let thread = writer.clone();
        let handle = std::thread::Builder::new()
            .name("bluewire-writer".into())
            .spawn(move || thread.run(rx))
            .map_err(|e| StoreError::Spawn(Arc::new(e)))?;
        tracing::info!(path = %path.display(), head_seq = head, "store opened");
        if let SyncMode::Interval(every) = sync {
            tracing::warn!(
                path = %path.display(),
                sync_interval_ms = every.as_millis() as u64,
                "store.sync = \"interval\": acknowledged messages survive kill -9 and restarts, but \
                 an OS crash or a power cut loses up to one interval of them, and the next start \
                 is then refused until the operator accepts it"
            );
        }
        Ok(Store {
            inner: Arc::new(Inner {
                tx,
                _writer: WriterThread(Some(handle)),
                writer,
                db,
                head: head_tx,
                commits,
                commit_nanos,
                audit_head,
                annotated,
                closed: AtomicBool::new(false),
                pages_checked: !closed_cleanly,
                _clean: clean::CleanClose {
                    slot: db_clean,
                    dir: dir.to_path_buf(),
                    path: path.clone(),
                    writer_done,
                },
                path,
            }),
        })
    }

    /// How many `Store` handles share this database. The file lock is released when the last
    /// one is dropped.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Whether opening the store checked every page against its checksum (it does unless the
    /// store was closed cleanly and the file is unchanged since, see [`CLEAN_MARKER`]).
    pub fn pages_checked_at_open(&self) -> bool {
        self.inner.pages_checked
    }

    /// When commits reach the disk (`[store] sync`).
    pub fn sync_mode(&self) -> SyncMode {
        self.inner.db.sync
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Overwrites (`Some`) or deletes (`None`) the stored audit record at `seq` directly in
    /// the database, bypassing the chain: simulates tampering with the on-disk log in tests.
    /// Only built with the `test-util` feature (and for this crate's unit tests).
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub async fn tamper_audit_for_tests(&self, seq: u64, new_bytes: Option<Vec<u8>>) -> Result<()> {
        use kv::{Durability, ReadableTable};

        use tables::AUDIT;

        let db = self.inner.db.get()?;
        tokio::task::spawn_blocking(move || {
            let mut wtx = db.begin_write().map_err(db_err("begin write"))?;
            wtx.set_durability(Durability::Immediate);
            {
                let mut t = wtx
                    .open_table(AUDIT)
                    .map_err(db_err::<redb::TableError>("open audit table"))?;
                // Records are kept in blocks: the block holding `seq` is written back as bare
                // records (layout 3's form, which reads the same), one of them changed.
                let holding = match t.range(..=seq).map_err(db_err("scan audit"))?.next_back() {
                    Some(entry) => {
                        let (k, v) = entry.map_err(db_err("scan audit"))?;
                        let rows: Vec<(u64, Vec<u8>)> = audit_blocks::rows(k.value(), v.value())
                            .unwrap_or_else(|_| vec![(k.value(), v.value())])
                            .into_iter()
                            .map(|(s, r)| (s, r.to_vec()))
                            .collect();
                        Some((k.value(), rows))
                    }
                    None => None,
                };
                let mut rows = Vec::new();
                if let Some((key, held)) = holding
                    && held.iter().any(|(s, _)| *s == seq)
                {
                    t.remove(key).map_err(db_err("tamper audit"))?;
                    rows = held;
                }
                rows.retain(|(s, _)| *s != seq);
                if let Some(b) = &new_bytes {
                    rows.push((seq, b.clone()));
                }
                for (s, r) in rows {
                    t.insert(s, r.as_slice()).map_err(db_err("tamper audit"))?;
                }
            }
            wtx.commit().map_err(db_err("commit"))
        })
        .await
        .map_err(|_| StoreError::Internal("audit tamper task failed"))?
    }

    /// Bumped each time the file was reopened after an I/O error: acknowledgements that were
    /// not yet durable may have been lost, so outbox readers start again from the head.
    pub fn generation(&self) -> u64 {
        self.inner.db.generation.load(Ordering::Acquire)
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

/// Memory redb may use to cache pages (its default is 1 GiB). A node holding a million
/// messages must stay small (issue #12: under 150 MiB); pages past this come from the
/// kernel's page cache, which a `pread` reaches in microseconds.
pub const CACHE_BYTES: usize = 48 << 20;

/// Open or create the store file with this node's cache size, committing as `sync` says
/// (a reopen after an I/O error: no boot check).
fn create(
    path: &Path,
    sync: SyncMode,
    failed: &sync::SyncFailure,
) -> std::result::Result<Database, sync::OpenError> {
    let db = create_with(builder(), path, sync, failed, false)?;
    wrap(db, path, sync, failed)
}

/// Whether the journal is used under `always` too: never in a build, and in the unit
/// tests only when `BLUEWIRE_TEST_JOURNAL` is set, which
/// `the_store_suite_passes_with_the_journal_under_every_mode` does for a second run.
#[cfg(test)]
fn journal_everywhere() -> bool {
    std::env::var_os(tests::JOURNAL_EVERYWHERE).is_some()
}
#[cfg(not(test))]
const fn journal_everywhere() -> bool {
    false
}

/// How often the journal's applier takes what is pending into redb.
const APPLY_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// A journal segment is closed past this size or age.
const ROTATE_BYTES: u64 = 16 << 20;
const ROTATE_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Put the redb file behind the journal (`kv`), which is synced as `sync` says: with
/// `always`, in every durable commit; with `interval`, by a thread of its own, a failure of
/// which refuses later commits and starts as a failed sync of the file does.
fn wrap(
    db: redb::Database,
    path: &Path,
    sync: SyncMode,
    failed: &sync::SyncFailure,
) -> std::result::Result<Database, sync::OpenError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let sync_base: Arc<dyn Fn() -> std::io::Result<()> + Send + Sync> = match sync {
        // redb's own commits sync the file.
        SyncMode::Always => Arc::new(|| Ok(())),
        // One handle for as long as the store is open, so that it reports a write-back error
        // that happened before the sync.
        SyncMode::Interval(_) => {
            let file = std::fs::File::open(path).map_err(sync::OpenError::Io)?;
            let failed = failed.clone();
            // Never again after a failed sync: one that succeeds then proves nothing of the
            // pages the failure dropped.
            Arc::new(move || match failed.error() {
                Some(e) => Err(e),
                None => file.sync_data(),
            })
        }
    };
    let (on_fail, poison) = (failed.clone(), failed.clone());
    let fail_dir = dir.clone();
    let policy = kv::Policy {
        // With `always`, a commit's cost is its `fdatasync`, which the journal would pay as
        // redb does, and the applier's syncs on top (BENCHMARKS.md): redb commits directly.
        // With `interval`, a commit's cost is redb's work, which the journal spreads.
        journal: matches!(sync, SyncMode::Interval(_)) || journal_everywhere(),
        always: sync == SyncMode::Always,
        sync_every: match sync {
            SyncMode::Always => None,
            SyncMode::Interval(every) => Some(every),
        },
        apply_every: APPLY_EVERY,
        rotate_bytes: ROTATE_BYTES,
        rotate_age: ROTATE_AGE,
        sync_base,
        on_sync_failure: Arc::new(move |e| sync::record_failure(&fail_dir, &on_fail, e)),
        poisoned: Arc::new(move || poison.error()),
    };
    Database::open(db, &dir, &tables::specs(), policy).map_err(|e| match e {
        redb::StorageError::Io(e) => sync::OpenError::Io(e),
        other => sync::OpenError::Io(std::io::Error::other(other.to_string())),
    })
}

/// `b.create(path)` through the backend `sync` asks for; with `check`, the boot check of
/// [`sync::open_backend`] first.
fn create_with(
    b: redb::Builder,
    path: &Path,
    sync: SyncMode,
    failed: &sync::SyncFailure,
    check: bool,
) -> std::result::Result<redb::Database, sync::OpenError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let backend = sync::open_backend(dir, path, sync, failed, check)?;
    Ok(b.create_with_backend(backend)?)
}

/// redb's settings for the store file.
fn builder() -> redb::Builder {
    let mut b = redb::Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// As [`create`], setting `repaired` when redb repairs the file as it opens it (after an
/// unclean shutdown), which reads every page against its checksum.
fn create_noting_repair(
    path: &Path,
    repaired: &Arc<AtomicBool>,
    sync: SyncMode,
    failed: &sync::SyncFailure,
) -> std::result::Result<redb::Database, sync::OpenError> {
    let flag = repaired.clone();
    let file = path.display().to_string();
    let mut b = builder();
    b.set_repair_callback(move |session| {
            flag.store(true, Ordering::Release);
            // redb reports 0.3 only when the last commit failed its checksums and was rolled
            // back: a crash in the middle of a commit, which was then never acknowledged.
            if (session.progress() - 0.3).abs() < 1e-6 {
                match sync {
                    SyncMode::Always => tracing::warn!(path = %file, "the store's last commit was incomplete and was rolled back (a crash while committing; nothing acknowledged is lost)"),
                    SyncMode::Interval(_) => tracing::warn!(path = %file, "the store's last commit was incomplete and was rolled back: with store.sync = \"interval\", what was acknowledged in the last sync interval may be missing"),
                }
            }
        });
    create_with(b, path, sync, failed, true)
}

#[cfg(test)]
impl Store {
    /// As after an I/O error: the file is closed and every operation fails with
    /// [`StoreError::Reopening`] for about a second.
    pub(crate) fn close_as_after_an_io_error(&self) {
        *lock(&self.inner.db.last_attempt) = Some(std::time::Instant::now());
        self.inner.db.close();
    }
}

#[cfg(test)]
mod tests;

/// The open database, shared by readers and the writer. After an I/O error redb refuses
/// every later operation until the file is reopened: the writer empties the slot, and the
/// next write group opens the file again (redb's recovery runs), so a node whose disk
/// filled recovers when space returns, without a restart. Meanwhile operations fail with
/// [`StoreError::Reopening`].
#[derive(Clone)]
pub(crate) struct DbSlot {
    db: Arc<std::sync::RwLock<Option<Arc<Database>>>>,
    path: PathBuf,
    sync: SyncMode,
    /// A failed background sync (`sync = "interval"`), for every backend opened on the file.
    sync_failed: sync::SyncFailure,
    /// What a reopened file holds (head seq, audit head), for the writer to take up: commits
    /// that were not durable may be gone.
    reopened: Arc<Mutex<Option<(u64, AuditHead)>>>,
    last_attempt: Arc<Mutex<Option<std::time::Instant>>>,
    /// Bumped by every reopen ([`Store::generation`]).
    generation: Arc<AtomicU64>,
}

impl DbSlot {
    fn new(db: Database, path: PathBuf, sync: SyncMode, sync_failed: sync::SyncFailure) -> Self {
        Self {
            db: Arc::new(std::sync::RwLock::new(Some(Arc::new(db)))),
            path,
            sync,
            sync_failed,
            reopened: Arc::new(Mutex::new(None)),
            last_attempt: Arc::new(Mutex::new(None)),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The open database, opening the file again if an I/O error closed it — at most one
    /// attempt a second (a disk that is still full fails it again), meanwhile
    /// [`StoreError::Reopening`].
    pub(crate) fn get(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(db);
        }
        {
            let mut last = lock(&self.last_attempt);
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return Err(StoreError::Reopening);
            }
            *last = Some(std::time::Instant::now());
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = slot.clone() {
            return Ok(db);
        }
        let (db, state) = unpanicked(&self.path, || {
            let db = create(&self.path, self.sync, &self.sync_failed).map_err(|e| match e {
                // A reader of the old handle is still finishing.
                sync::OpenError::Db(DatabaseError::DatabaseAlreadyOpen) => StoreError::Reopening,
                sync::OpenError::Db(other) => StoreError::Db {
                    op: "reopen after an I/O error",
                    source: Arc::new(other.into()),
                },
                sync::OpenError::Io(e) => StoreError::Db {
                    op: "reopen after an I/O error",
                    source: Arc::new(redb::StorageError::Io(e).into()),
                },
                sync::OpenError::Refused(why) => StoreError::Damaged {
                    path: self.path.clone(),
                    detail: why,
                },
            })?;
            let state = tables::init(&db)?;
            Ok((db, state))
        })?;
        tracing::warn!(path = %self.path.display(), head_seq = state.0, "store reopened after an I/O error");
        *lock(&self.reopened) = Some(state);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Whether the file is open (not closed by an I/O error and waiting to be reopened).
    /// Does not wait: a reopen in progress (which holds the slot) counts as closed.
    fn is_open(&self) -> bool {
        match self.db.try_read() {
            Ok(db) => db.is_some(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().is_some(),
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    /// Empties the slot: the handle, for the caller to drop.
    fn take(&self) -> Option<Arc<Database>> {
        self.db.write().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Close the file (once the last reader lets go) so that the next use opens it afresh.
    fn close(&self) {
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
    }

    /// The state of a file reopened since the last call, if any.
    fn take_reopened(&self) -> Option<(u64, AuditHead)> {
        lock(&self.reopened).take()
    }
}

impl StoreError {
    /// An I/O error after which redb refuses everything until the file is reopened.
    fn needs_reopen(&self) -> bool {
        matches!(self, StoreError::Db { source, .. }
            if matches!(**source, redb::Error::Io(_) | redb::Error::PreviousIo))
    }
}

/// Runs `f`, which opens the store file at `path`. redb asserts on some damage instead of
/// returning an error: a panic there is a damaged file too, never a crashed node.
fn unpanicked<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a failed internal check");
        Err(StoreError::Damaged {
            path: path.to_path_buf(),
            detail: format!("redb could not read its structure: {what}"),
        })
    })
}

/// Check every page of the store file against its checksum before anything is served
/// (redb's integrity check; a crash's own recovery has already run in `Database::create`).
/// Damage refuses the start, and stays refused (`DAMAGED_MARKER`) when redb could only
/// repair it by rolling the file back, which may have dropped recent messages.
fn verify(db: &mut redb::Database, dir: &Path, path: &Path) -> Result<()> {
    let marker = dir.join(DAMAGED_MARKER);
    let damaged = |detail: String| StoreError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    if marker.exists() {
        let note = std::fs::read_to_string(&marker).unwrap_or_default();
        let why = if note.starts_with(sync::RESTARTED) || note.starts_with(sync::SYNC_FAILED) {
            note.trim()
        } else {
            "an earlier start found it damaged and redb rolled it back to its last intact \
             state, which may lack recent messages"
        };
        return Err(damaged(format!(
            "{why}; to accept that, delete {}",
            marker.display()
        )));
    }
    match db.check_integrity() {
        Ok(true) => Ok(()),
        Ok(false) => {
            let note = "redb found damage and rolled the store back to its last intact state\n";
            // Durably, or the next start would serve the rolled-back store without a word.
            if let Err(e) = clean::write_durably(dir, &marker, note) {
                return Err(damaged(format!(
                    "pages failed their checksums and redb rolled it back to its last intact \
                     state, which may lack recent messages; writing {} failed ({e}), so a \
                     later start cannot tell: do not start this node on it without a check",
                    marker.display()
                )));
            }
            Err(damaged(format!(
                "pages failed their checksums and redb rolled it back to its last intact \
                 state, which may lack recent messages; to accept that, delete {}",
                marker.display()
            )))
        }
        Err(e) => Err(damaged(format!("integrity check failed: {e}"))),
    }
}
