//! The store's on-disk schema: every redb table and meta key, the prost records stored in
//! them, the `Tables` set one write transaction works on, and what happens when the file is
//! opened (tables created, the seq allocator checked, old layouts migrated).
//!
//! Owns: table names with their key and value types, record encodings, [`open_tables`],
//! [`init`] and the one-time migrations (to (origin, id) message keys, to message records
//! that carry their cluster and re-share flag).
//!
//! It must never: rename a table or change a record's field tags (existing files would stop
//! reading back); decide what an op does or answer a caller (that is `writer`); leave a
//! half-migrated file (the migration runs inside the opening write transaction, which commits
//! the new layout whole or not at all).

use prost::Message as _;
use redb::TableHandle as _;

use super::kv::{self, Database, Durability, ReadableTable, Table, TableDefinition};

use super::{AnnotationRecord, Result, StoreError, StoredMessage, db_err, decode, message_key};

/// seq → [`MessageRecord`]. Spilled: its records are most of a store's bytes, kept in the value
/// log beside the file (an encoded record never starts with a zero byte, as a pointer does).
pub(super) const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::spilled("messages");
/// (message id, origin) → seq: messages are identified by the pair, so no organisation can
/// shadow another's message by reusing its id.
pub(super) const IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("message_ids");
/// Before (origin, id) keys: id → seq. Migrated into [`IDS`] and dropped on open.
pub(super) const OLD_IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
/// (peer, smallest seq) → the seqs queued for the peer in that block (see `outbox_blocks`).
pub(super) const OUTBOX: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("outbox_blocks");
/// Before blocks (layout 3): (peer, seq) → (). Moved into [`OUTBOX`] and dropped on open.
pub(super) const OLD_OUTBOX: TableDefinition<(&str, u64), ()> = TableDefinition::new("outbox");
/// ("ORIGIN/ID" of a case's opening message, message seq) → (): the workflow messages of
/// each case, in the order this node stored them.
pub(super) const CASES: TableDefinition<(&str, u64), ()> = TableDefinition::new("case_messages");
/// (STIX object id, message seq, position) → (origin, version): the STIX objects each bundle message
/// carries, so an object's versions are found without decoding bundles (TAXII, idempotent
/// import). The version is `modified` (or `created`); "" for cyber-observables.
pub(super) const STIX: TableDefinition<(&str, u64, u32), (&str, &str)> =
    TableDefinition::new("stix_objects");
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(super) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
pub(super) const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
pub(super) const REJECTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("rejections");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const CLUSTER_LOG: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("cluster_log");
pub(super) const DIRECTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("directory");
/// Per-message annotations from origin-signed control messages:
/// (message id, "retracted" | "marking") -> value.
/// ("ORIGIN/ID" of the message, kind) → an encoded [`AnnotationRecord`].
///
/// Only the writer's `Op::Annotate` writes it (and the one-time migration, which runs before
/// the store loads `Annotated`): a row written any other way would go unseen by
/// `Store::annotations` for a message `Annotated` does not list.
pub(super) const ANNOTATIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("message_annotations");
/// Before (origin, id) keys: (id, kind) → raw value. Migrated and dropped on open.
pub(super) const OLD_ANNOTATIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("annotations");
/// API token id → an encoded [`ApiTokenRecord`](super::ApiTokenRecord). Revoked tokens stay
/// (marked), so a revoked id is reported as revoked, not unknown.
pub(super) const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
/// Audit records (seq 1, 2, …) in blocks: the records of one write transaction under the
/// seq of the first (see `audit_blocks`; a layout-3 value is one encoded [`AuditDisk`]).
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// The audit chain's head, key [`AUDIT_HEAD_KEY`]: encoded [`AuditHeadRecord`]. (The `meta`
/// table holds only u64 values, so the head's hash lives here.)
/// Envelopes this node carries for other members (relay): (recipient org, relay seq) →
/// [`RelayRecord`].
pub(super) const RELAY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("relay_queue");
/// (recipient org, message key) → relay seq: one carried copy per message and recipient.
pub(super) const RELAY_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("relay_ids");
/// Counter: bytes of every carried envelope.
pub(super) const RELAY_BYTES_KEY: &str = "relay_bytes";
pub(super) const AUDIT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");
/// SHA-256 of a batch signature → the signature: kept once for all the envelopes of a batch
/// (see `signatures`). Spilled, as [`MESSAGES`] (a signature is never a pointer's 20 bytes).
pub(super) const SIGNATURES: TableDefinition<&[u8], &[u8]> = TableDefinition::spilled("signatures");
pub(super) const AUDIT_HEAD_KEY: &str = "head";

/// Every table, as the journal needs to know it to replay writes to it.
pub(super) fn specs() -> Vec<kv::Spec> {
    vec![
        MESSAGES.spec(),
        IDS.spec(),
        OLD_IDS.spec(),
        OUTBOX.spec(),
        OLD_OUTBOX.spec(),
        CASES.spec(),
        STIX.spec(),
        COUNTERS.spec(),
        KEYS.spec(),
        CURSORS.spec(),
        REJECTIONS.spec(),
        META.spec(),
        CLUSTER_LOG.spec(),
        DIRECTORY.spec(),
        ANNOTATIONS.spec(),
        OLD_ANNOTATIONS.spec(),
        API_TOKENS.spec(),
        AUDIT.spec(),
        RELAY.spec(),
        RELAY_IDS.spec(),
        AUDIT_META.spec(),
        SIGNATURES.spec(),
    ]
}

/// Next message seq to assign (seqs start at 1; head = next - 1).
pub(super) const META_NEXT_SEQ: &str = "next_seq";
pub(super) const META_NEXT_RELAY: &str = "next_relay";
/// The message-record layout the file is at: absent or 1 before records carried their
/// cluster and re-share flag ([`DESCRIBED`]), 3 since a batch's signature may be kept once
/// (`signatures`), 4 since audit records and the outbox are kept in blocks (`audit_blocks`,
/// where layout 3's bare records read as blocks of one; `outbox_blocks`, moved at open), 5
/// since the newest commits may be in the journal beside the file (`kv`), which a binary
/// before it would ignore, 6 since message records and batch signatures may be pointers into
/// the value log beside the file (`kv::values`; layout 5's whole records read as they are). A
/// file at a layout above [`LAYOUT`] is refused: this binary would misread it.
pub(super) const META_LAYOUT: &str = "layout";
pub(super) const LAYOUT: u64 = 6;
/// Records carry their cluster and re-share flag from this layout on.
const DESCRIBED: u64 = 2;
/// Next rejection number (starts at 1; total recorded = next - 1).
pub(super) const META_NEXT_REJECTION: &str = "next_rejection";

pub(super) fn depth_key(peer: &str) -> String {
    format!("outbox_depth/{peer}")
}

pub(super) fn relay_depth_key(peer: &str) -> String {
    format!("relay_depth/{peer}")
}

pub(super) fn delivered_key(peer: &str) -> String {
    format!("delivered/{peer}")
}

/// An envelope carried for another member: its message key (`origin/id`), when this node
/// took it on, and the envelope with this node on its relay path.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RelayRecord {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(int64, tag = "2")]
    pub taken_at_ms: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub envelope: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct MessageRecord {
    #[prost(string, tag = "1")]
    pub(super) id: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(super) envelope: Vec<u8>,
    #[prost(string, tag = "3")]
    pub(super) origin: String,
    #[prost(int32, tag = "4")]
    pub(super) kind: i32,
    #[prost(int32, tag = "5")]
    pub(super) level: i32,
    #[prost(string, tag = "6")]
    pub(super) received_from: String,
    #[prost(int64, tag = "7")]
    pub(super) received_at_ms: i64,
    /// Since layout 2 (see [`describe_messages`]).
    #[prost(string, tag = "8")]
    pub(super) cluster: String,
    /// Since layout 2.
    #[prost(bool, tag = "9")]
    pub(super) reshare: bool,
    /// When not empty: `envelope` is stored without its signature, which is in
    /// [`SIGNATURES`] under this digest (a batch signature, kept once).
    #[prost(bytes = "vec", tag = "10")]
    pub(super) signature_ref: Vec<u8>,
}

/// A [`MessageRecord`] from borrowed fields, encoded byte for byte as the derived encoding
/// does: the writer stores one per message, without copying the envelope and the strings
/// into a record first.
pub(super) struct RecordRef<'a> {
    pub(super) id: &'a str,
    pub(super) envelope: &'a [u8],
    pub(super) origin: &'a str,
    pub(super) kind: i32,
    pub(super) level: i32,
    pub(super) received_from: &'a str,
    pub(super) received_at_ms: i64,
    pub(super) cluster: &'a str,
    pub(super) reshare: bool,
    pub(super) signature_ref: &'a [u8],
}

impl RecordRef<'_> {
    /// Fields in tag order, defaults left out (proto3), as `MessageRecord::encode_to_vec`.
    pub(super) fn encode(&self) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        fn bytes(buf: &mut Vec<u8>, tag: u32, v: &[u8]) {
            if !v.is_empty() {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(v.len() as u64, buf);
                buf.extend_from_slice(v);
            }
        }
        fn varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
            if v != 0 {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(v, buf);
            }
        }
        let mut buf = Vec::with_capacity(
            self.id.len()
                + self.envelope.len()
                + self.origin.len()
                + self.received_from.len()
                + self.cluster.len()
                + self.signature_ref.len()
                + 64,
        );
        bytes(&mut buf, 1, self.id.as_bytes());
        bytes(&mut buf, 2, self.envelope);
        bytes(&mut buf, 3, self.origin.as_bytes());
        // int32 and int64 are sign-extended to 64 bits on the wire.
        varint(&mut buf, 4, i64::from(self.kind) as u64);
        varint(&mut buf, 5, i64::from(self.level) as u64);
        bytes(&mut buf, 6, self.received_from.as_bytes());
        varint(&mut buf, 7, self.received_at_ms as u64);
        bytes(&mut buf, 8, self.cluster.as_bytes());
        varint(&mut buf, 9, u64::from(self.reshare));
        bytes(&mut buf, 10, self.signature_ref);
        buf
    }
}

impl MessageRecord {
    /// The record as callers see it, its envelope whole again (a batch signature read from
    /// `signatures`).
    pub(super) fn into_stored(
        mut self,
        seq: u64,
        signatures: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ) -> Result<StoredMessage> {
        let envelope = std::mem::take(&mut self.envelope);
        let envelope = restore_signature(seq, envelope, &self.signature_ref, signatures)?;
        Ok(StoredMessage {
            seq,
            id: self.id,
            envelope,
            origin: self.origin,
            kind: self.kind,
            level: self.level,
            cluster: self.cluster,
            reshare: self.reshare,
            received_from: self.received_from,
            received_at_ms: self.received_at_ms,
        })
    }

    /// The batch signature kept apart for this record (message `seq`), its reference taken
    /// out: the envelope then reads without it. `None`: the envelope is whole.
    pub(super) fn take_signature(
        &mut self,
        seq: u64,
        signatures: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ) -> Result<Option<bytes::Bytes>> {
        if self.signature_ref.is_empty() {
            return Ok(None);
        }
        let reference = std::mem::take(&mut self.signature_ref);
        super::signatures::signature_for(seq, &reference, |k| read_signature(signatures, k))
            .map(Some)
    }

    /// The envelope bytes exactly as they were given to the store.
    pub(super) fn into_envelope(
        self,
        seq: u64,
        signatures: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ) -> Result<Vec<u8>> {
        restore_signature(seq, self.envelope, &self.signature_ref, signatures)
    }
}

fn restore_signature(
    seq: u64,
    envelope: Vec<u8>,
    reference: &[u8],
    signatures: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Vec<u8>> {
    super::signatures::restore(seq, envelope, reference, |k| read_signature(signatures, k))
}

fn read_signature(
    signatures: &impl ReadableTable<&'static [u8], &'static [u8]>,
    digest: &[u8],
) -> Result<Option<Vec<u8>>> {
    Ok(signatures
        .get(digest)
        .map_err(db_err("read signature"))?
        .map(|v| v.value().to_vec()))
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct KeyRecord {
    #[prost(string, tag = "1")]
    pub(super) org: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(super) public_key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RejectionRecord {
    #[prost(int64, tag = "1")]
    pub(super) at_ms: i64,
    #[prost(string, tag = "2")]
    pub(super) from_peer: String,
    #[prost(string, tag = "3")]
    pub(super) id: String,
    #[prost(string, tag = "4")]
    pub(super) reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AuditDisk {
    #[prost(int64, tag = "1")]
    pub(super) at_ms: i64,
    #[prost(string, tag = "2")]
    pub(super) event: String,
    #[prost(string, tag = "3")]
    pub(super) msg_id: String,
    #[prost(string, tag = "4")]
    pub(super) peer: String,
    #[prost(string, tag = "5")]
    pub(super) cluster: String,
    #[prost(string, tag = "6")]
    pub(super) rule: String,
    #[prost(string, tag = "7")]
    pub(super) detail: String,
    #[prost(string, tag = "8")]
    pub(super) prev_hash: String,
    #[prost(string, tag = "9")]
    pub(super) hash: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AuditHeadRecord {
    #[prost(uint64, tag = "1")]
    pub(super) seq: u64,
    #[prost(string, tag = "2")]
    pub(super) hash: String,
}

/// The audit chain's head: last seq (0 when empty) and its hash (genesis when empty).
pub(super) type AuditHead = (u64, String);

pub(super) fn genesis_head() -> AuditHead {
    (0, crate::audit::GENESIS_HASH.to_owned())
}

/// All tables open in one write transaction, plus the seq allocator for the group.
pub(super) struct Tables<'t> {
    pub(super) messages: Table<'t, u64, &'static [u8]>,
    pub(super) ids: Table<'t, (&'static str, &'static str), u64>,
    pub(super) outbox: Table<'t, (&'static str, u64), &'static [u8]>,
    pub(super) cases: Table<'t, (&'static str, u64), ()>,
    pub(super) stix: Table<'t, (&'static str, u64, u32), (&'static str, &'static str)>,
    pub(super) counters: Table<'t, &'static str, u64>,
    pub(super) keys: Table<'t, &'static str, &'static [u8]>,
    pub(super) cursors: Table<'t, &'static str, u64>,
    pub(super) rejections: Table<'t, u64, &'static [u8]>,
    pub(super) meta: Table<'t, &'static str, u64>,
    pub(super) cluster_log: Table<'t, (&'static str, u64), &'static [u8]>,
    pub(super) directory: Table<'t, &'static str, &'static [u8]>,
    pub(super) annotations: Table<'t, (&'static str, &'static str), &'static [u8]>,
    pub(super) api_tokens: Table<'t, &'static str, &'static [u8]>,
    pub(super) audit: Table<'t, u64, &'static [u8]>,
    pub(super) audit_meta: Table<'t, &'static str, &'static [u8]>,
    pub(super) relay: Table<'t, (&'static str, u64), &'static [u8]>,
    pub(super) relay_ids: Table<'t, (&'static str, &'static str), u64>,
    pub(super) signatures: Table<'t, &'static [u8], &'static [u8]>,
    pub(super) next_seq: u64,
    /// The audit head as of this transaction's last applied op.
    pub(super) audit_head: AuditHead,
    /// Audit records appended in this transaction and not yet written (one insert per block).
    pub(super) audit_block: super::audit_blocks::Block,
    /// Seqs of this transaction's new messages queued per peer, not yet written (one block
    /// per peer, see `outbox_blocks`).
    pub(super) outbox_new: Vec<(String, Vec<u64>)>,
    /// The batch signature this transaction kept last, and its digest: a batch's messages
    /// are stored together, so most of them find theirs here. Sound because no op removes a
    /// row of `signatures` (a transaction that fails is retried with new `Tables`): one that
    /// ever does must clear this.
    pub(super) kept_signature: Option<(bytes::Bytes, Vec<u8>)>,
}

pub(super) fn get_u64(table: &Table<'_, &'static str, u64>, key: &str) -> Result<Option<u64>> {
    Ok(table.get(key).map_err(db_err("read"))?.map(|g| g.value()))
}

pub(super) fn add_counter(
    t: &mut Table<'_, &'static str, u64>,
    key: &str,
    delta: u64,
) -> Result<()> {
    let v = get_u64(t, key)?.unwrap_or(0).saturating_add(delta);
    t.insert(key, v).map_err(db_err("update counter"))?;
    Ok(())
}

pub(super) fn sub_counter(
    t: &mut Table<'_, &'static str, u64>,
    key: &str,
    delta: u64,
) -> Result<()> {
    let v = get_u64(t, key)?.unwrap_or(0).saturating_sub(delta);
    if v == 0 {
        t.remove(key).map_err(db_err("update counter"))?;
    } else {
        t.insert(key, v).map_err(db_err("update counter"))?;
    }
    Ok(())
}

/// Reads the stored audit head (genesis when there is none).
pub(super) fn read_audit_head<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
) -> Result<AuditHead> {
    match t.get(AUDIT_HEAD_KEY).map_err(db_err("read audit head"))? {
        Some(v) => {
            let h: AuditHeadRecord = decode("audit head", AUDIT_HEAD_KEY, v.value())?;
            Ok((h.seq, h.hash))
        }
        None => Ok(genesis_head()),
    }
}

pub(super) fn open_tables<'t>(
    wtx: &'t kv::WriteTransaction,
    audit_head: AuditHead,
) -> Result<Tables<'t>> {
    let e = db_err::<redb::TableError>;
    let meta = wtx.open_table(META).map_err(e("open meta table"))?;
    let next_seq = get_u64(&meta, META_NEXT_SEQ)?.unwrap_or(1);
    Ok(Tables {
        messages: wtx.open_table(MESSAGES).map_err(e("open messages table"))?,
        ids: wtx.open_table(IDS).map_err(e("open ids table"))?,
        outbox: wtx.open_table(OUTBOX).map_err(e("open outbox table"))?,
        cases: wtx.open_table(CASES).map_err(e("open case index table"))?,
        stix: wtx.open_table(STIX).map_err(e("open STIX index table"))?,
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
        api_tokens: wtx
            .open_table(API_TOKENS)
            .map_err(e("open API tokens table"))?,
        audit: wtx.open_table(AUDIT).map_err(e("open audit table"))?,
        audit_meta: wtx
            .open_table(AUDIT_META)
            .map_err(e("open audit meta table"))?,
        relay: wtx.open_table(RELAY).map_err(e("open relay queue table"))?,
        relay_ids: wtx
            .open_table(RELAY_IDS)
            .map_err(e("open relay index table"))?,
        signatures: wtx
            .open_table(SIGNATURES)
            .map_err(e("open signatures table"))?,
        meta,
        next_seq,
        audit_head,
        audit_block: super::audit_blocks::Block::default(),
        outbox_new: Vec::new(),
        kept_signature: None,
    })
}

/// Stores of layout 3 kept one outbox row per (peer, seq): queue those seqs in blocks, then
/// drop the old table. Runs in the opening transaction, so a crash leaves one or the other.
fn migrate_outbox(wtx: &kv::WriteTransaction, t: &mut Tables<'_>) -> Result<()> {
    if !wtx
        .list_tables()
        .map_err(db_err("list tables"))?
        .any(|h| h.name() == OLD_OUTBOX.name())
    {
        return Ok(());
    }
    // In (peer, seq) order, a run of at most MAX_SEQS at a time: memory stays bounded
    // however long a peer was away.
    let mut moved = 0u64;
    {
        let old = wtx
            .open_table(OLD_OUTBOX)
            .map_err(db_err::<redb::TableError>("open old outbox table"))?;
        let mut run: Option<(String, Vec<u64>)> = None;
        for entry in old.iter().map_err(db_err("scan old outbox"))? {
            let (k, _) = entry.map_err(db_err("scan old outbox"))?;
            let (peer, seq) = k.value();
            moved += 1;
            match &mut run {
                Some((p, seqs)) if p == peer && seqs.len() < super::outbox_blocks::MAX_SEQS => {
                    seqs.push(seq)
                }
                _ => {
                    if let Some((p, seqs)) = run.take() {
                        t.put_blocks(&p, &seqs)?;
                    }
                    run = Some((peer.to_string(), vec![seq]));
                }
            }
        }
        if let Some((p, seqs)) = run.take() {
            t.put_blocks(&p, &seqs)?;
        }
    }
    wtx.delete_table(OLD_OUTBOX)
        .map_err(db_err::<redb::TableError>("drop old outbox table"))?;
    if moved > 0 {
        tracing::info!(
            entries = moved,
            "store: outbox moved into blocks (layout 4)"
        );
    }
    Ok(())
}

/// Stores written before messages were keyed by (origin, id): rebuild the id index and move
/// annotations under their message's key, then drop the old tables. Runs once, in the opening
/// transaction, so a crash leaves either the old layout or the new one.
fn migrate_to_origin_keys(wtx: &kv::WriteTransaction) -> Result<()> {
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
                // Retractions were stored as "SIGNER\nREASON" and counted only when the
                // signer was the origin: each becomes a retraction of (SIGNER, id), whether
                // or not that message has arrived yet. Markings had no author and are kept
                // as their origin's.
                let (kind, origins, value) = if kind == "retracted" {
                    let text = String::from_utf8_lossy(value);
                    let (origin, reason) = text.split_once('\n').unwrap_or((&text, ""));
                    let origins = vec![origin.to_string()];
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

/// Stores written before message records carried their cluster and re-share flag: fill both
/// in (the cluster from the stored content, the flag from the re-share id prefix), once, in
/// the opening transaction.
fn describe_messages(wtx: &kv::WriteTransaction) -> Result<()> {
    let e = db_err::<redb::TableError>;
    let mut meta = wtx.open_table(META).map_err(e("open meta table"))?;
    if get_u64(&meta, META_LAYOUT)?.is_some_and(|l| l >= DESCRIBED) {
        return Ok(());
    }
    let mut messages = wtx.open_table(MESSAGES).map_err(e("open messages table"))?;
    // What each record should say, read record by record; only (seq, cluster, flag) is
    // kept in memory, never the envelopes.
    let mut changes = Vec::new();
    for row in messages.iter().map_err(db_err("read messages"))? {
        let (k, v) = row.map_err(db_err("read message"))?;
        let rec: MessageRecord = decode("message", k.value(), v.value())?;
        let cluster = bluewire_proto::v1::Envelope::decode(rec.envelope.as_slice())
            .ok()
            .and_then(|env| bluewire_proto::v1::Content::decode(&env.content[..]).ok())
            .map(|c| c.cluster)
            .unwrap_or_default();
        let reshare = rec.id.starts_with(super::RESHARE_PREFIX);
        if cluster != rec.cluster || reshare != rec.reshare {
            changes.push((k.value(), cluster, reshare));
        }
    }
    let n = changes.len();
    for (seq, cluster, reshare) in changes {
        let mut rec: MessageRecord = match messages.get(seq).map_err(db_err("read message"))? {
            Some(v) => decode("message", seq, v.value())?,
            None => continue,
        };
        rec.cluster = cluster;
        rec.reshare = reshare;
        messages
            .insert(seq, rec.encode_to_vec().as_slice())
            .map_err(db_err("migrate message record"))?;
    }
    meta.insert(META_LAYOUT, LAYOUT)
        .map_err(db_err("record layout"))?;
    if n > 0 {
        tracing::info!(
            messages = n,
            "store migrated: message records carry their cluster and re-share flag"
        );
    }
    Ok(())
}

/// Creates every table, checks the seq allocator against the data, returns the head seq and
/// the audit head.
pub(super) fn init(db: &Database) -> Result<(u64, AuditHead)> {
    // Straight into redb: the migrations below may move whole tables.
    let mut wtx = db.begin_write_direct().map_err(db_err("begin write"))?;
    wtx.set_durability(Durability::Immediate);
    let audit_head = {
        let t = wtx
            .open_table(AUDIT_META)
            .map_err(db_err::<redb::TableError>("open audit meta table"))?;
        read_audit_head(&t)?
    };
    let layout = {
        let meta = wtx
            .open_table(META)
            .map_err(db_err::<redb::TableError>("open meta table"))?;
        get_u64(&meta, META_LAYOUT)?
    };
    if let Some(found) = layout.filter(|&l| l > LAYOUT) {
        return Err(StoreError::NewerLayout {
            found,
            known: LAYOUT,
        });
    }
    migrate_to_origin_keys(&wtx)?;
    describe_messages(&wtx)?;
    if layout != Some(LAYOUT) {
        wtx.open_table(META)
            .map_err(db_err::<redb::TableError>("open meta table"))?
            .insert(META_LAYOUT, LAYOUT)
            .map_err(db_err("record layout"))?;
    }
    let head = {
        let mut t = open_tables(&wtx, audit_head.clone())?;
        migrate_outbox(&wtx, &mut t)?;
        let last = t
            .messages
            .last()
            .map_err(db_err("read messages"))?
            .map(|(k, _)| k.value());
        if let Some(last) = last
            && last >= t.next_seq
        {
            return Err(super::corrupt(
                "meta",
                META_NEXT_SEQ,
                format!(
                    "next seq {} is not above the last stored message seq {last}",
                    t.next_seq
                ),
            ));
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

    fn by_hand(rec: &MessageRecord) -> Vec<u8> {
        RecordRef {
            id: &rec.id,
            envelope: &rec.envelope,
            origin: &rec.origin,
            kind: rec.kind,
            level: rec.level,
            received_from: &rec.received_from,
            received_at_ms: rec.received_at_ms,
            cluster: &rec.cluster,
            reshare: rec.reshare,
            signature_ref: &rec.signature_ref,
        }
        .encode()
    }

    #[test]
    fn a_record_encoded_from_borrowed_fields_is_the_derived_encoding() {
        let full = MessageRecord {
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            envelope: vec![0x0a, 3, 1, 2, 3],
            origin: "csirt-be".into(),
            kind: 3,
            level: -2,
            received_from: "cert-eu".into(),
            received_at_ms: 1_780_000_000_000,
            cluster: "cert-eu/ransomware".into(),
            reshare: true,
            signature_ref: vec![7; 32],
        };
        // Every field set (a negative enum too), and every field at its default.
        for rec in [full, MessageRecord::default()] {
            let by_hand = by_hand(&rec);
            assert_eq!(by_hand, rec.encode_to_vec());
            assert_eq!(MessageRecord::decode(by_hand.as_slice()).unwrap(), rec);
        }
        // Each field alone, so a field put under another's tag cannot pass.
        let one = |f: fn(&mut MessageRecord)| {
            let mut r = MessageRecord::default();
            f(&mut r);
            r
        };
        for rec in [
            one(|r| r.id = "i".into()),
            one(|r| r.envelope = vec![1]),
            one(|r| r.origin = "o".into()),
            one(|r| r.kind = 1),
            one(|r| r.level = 1),
            one(|r| r.received_from = "f".into()),
            one(|r| r.received_at_ms = -1),
            one(|r| r.cluster = "c".into()),
            one(|r| r.reshare = true),
            one(|r| r.signature_ref = vec![2]),
        ] {
            let by_hand = by_hand(&rec);
            assert_eq!(by_hand, rec.encode_to_vec(), "{rec:?}");
        }
    }
}
