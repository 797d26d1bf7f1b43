//! The store's read side: every `Store` method that reads, each from one redb read
//! transaction (a consistent snapshot of the last commit), never through the writer.
//!
//! Owns: outbox batches and counters, messages by seq, by (origin, id) and by id, rejections,
//! signing keys, cursors, cluster logs, annotations, the directory, API tokens and the audit
//! records.
//!
//! It must never: write (writes go through `writer`, so they are ordered and group-committed);
//! return envelope bytes other than exactly as given to the store (a batch signature kept
//! apart is put back first); panic on a corrupted or dangling
//! record (that is [`StoreError::Corrupt`]).

use std::sync::atomic::Ordering;

use super::kv::{ReadTransaction, ReadableTable};
use bluewire_proto::v1 as pb;
use tokio::sync::watch;

use crate::audit;

use super::tables::{
    ANNOTATIONS, API_TOKENS, AUDIT, AUDIT_META, AuditHead, CASES, CLUSTER_LOG, COUNTERS, CURSORS,
    DIRECTORY, IDS, KEYS, KeyRecord, MESSAGES, META, META_NEXT_REJECTION, MessageRecord, OUTBOX,
    REJECTIONS, RELAY, RejectionRecord, RelayRecord, SIGNATURES, STIX, delivered_key, depth_key,
    read_audit_head, relay_depth_key,
};
use super::{
    AnnotationRecord, ApiTokenRecord, AuditRecordRow, Rejection, Result, Store, StoredMessage,
    db_err, decode, lock, message_key,
};

/// The signatures table, as a read sees it.
type Signatures = super::kv::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl Store {
    pub(super) fn read(&self) -> Result<ReadTransaction> {
        self.inner
            .db
            .get()?
            .begin_read()
            .map_err(db_err("begin read"))
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
        self.outbox_records_after(peer, after_seq, limit, &mut 0, |seq, rec, signatures| {
            Ok((seq, rec.into_envelope(seq, signatures)?))
        })
    }

    /// Like [`Store::outbox_batch_after`], with each batch signature handed over apart (one
    /// allocation shared by the batch's envelopes, not spliced into each): what a sender
    /// decodes and sends without copying the signature per envelope.
    pub fn outbox_queued_after(
        &self,
        peer: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<super::Queued>> {
        self.outbox_queued_from(peer, after_seq, limit, &mut super::OutboxScan::default())
    }

    /// [`Store::outbox_queued_after`] for a reader that walks `peer`'s outbox forward, as a
    /// delivery worker does. `scan` holds where the previous read started (the key of the
    /// block it started in, or its first seq when no block was keyed at or below that), and
    /// this read looks for its block from there, not from the peer's first key: through the
    /// journal's overlay, which holds every block written or removed since redb took the last
    /// commits, that walk grew with them. It is updated for the next read. Keep it between
    /// reads while `after_seq` only grows; start again from `OutboxScan::default()` whenever
    /// `after_seq` goes back.
    ///
    /// Why that is enough: no block of a peer holds a seq at or above the next block's key,
    /// so the block holding `after_seq + 1` is the last one keyed at or below it. Since the
    /// last read, a block holding a seq at or above where it started cannot have come to be
    /// keyed below that: an ack only re-keys a block upwards, new messages come above every
    /// seq, and an enqueue either joins the block whose range holds the seq (its key
    /// unchanged) or makes a block keyed at the seq itself. A block keyed lower holds only
    /// seqs below it, and so below `after_seq + 1`. Only a reopen after an I/O error can bring
    /// back a block keyed lower that holds higher seqs (an ack that was not durable), so a
    /// scan from another store generation starts from the peer's first key, and so does a
    /// read during which the store was reopened (the read itself may be what reopens it).
    pub fn outbox_queued_from(
        &self,
        peer: &str,
        after_seq: u64,
        limit: usize,
        scan: &mut super::OutboxScan,
    ) -> Result<Vec<super::Queued>> {
        // A reopen is at most one a second: a second try never meets another.
        for _ in 0..2 {
            let generation = self.generation();
            if scan.generation != generation {
                *scan = super::OutboxScan {
                    from: 0,
                    generation,
                };
            }
            let read = self.outbox_records_after(
                peer,
                after_seq,
                limit,
                &mut scan.from,
                |seq, mut rec, signatures| {
                    let signature = rec.take_signature(seq, signatures)?;
                    Ok(super::Queued {
                        seq,
                        envelope: rec.envelope,
                        signature,
                    })
                },
            )?;
            if self.generation() == generation {
                return Ok(read);
            }
        }
        Err(super::StoreError::Reopening)
    }

    /// Up to `limit` of the records queued for `peer` above `after_seq`, oldest first, each
    /// made into a `T` by `each` (which may read the signatures table). The block holding the
    /// first is looked for from `scan_from` on ([`Store::outbox_queued_from`]), which is set
    /// to where it was found.
    fn outbox_records_after<T>(
        &self,
        peer: &str,
        after_seq: u64,
        limit: usize,
        scan_from: &mut u64,
        mut each: impl FnMut(u64, MessageRecord, &Signatures) -> Result<T>,
    ) -> Result<Vec<T>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rtx = self.read()?;
        let outbox = rtx.open_table(OUTBOX).map_err(db_err("open outbox"))?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let signatures = rtx
            .open_table(SIGNATURES)
            .map_err(db_err("open signatures"))?;
        let mut out = Vec::new();
        let from = after_seq.saturating_add(1);
        // The block that may hold `from` starts at or before it, and not before `scan_from`.
        let start = super::outbox_blocks::scan_start(&outbox, peer, (*scan_from).min(from), from)?;
        *scan_from = start;
        let mut seqs = Vec::new();
        for entry in outbox
            .range((peer, start)..=(peer, u64::MAX))
            .map_err(db_err("scan outbox"))?
        {
            let (key, block) = entry.map_err(db_err("scan outbox"))?;
            let key = key.value().1;
            let held = super::outbox_blocks::decode_at(peer, key, block.value())?;
            seqs.extend(held.into_iter().filter(|&s| s >= from));
            if seqs.len() >= limit {
                break;
            }
        }
        seqs.truncate(limit);
        for seq in seqs {
            let Some(bytes) = messages.get(seq).map_err(db_err("read message"))? else {
                return Err(super::corrupt(
                    "outbox",
                    format!("{peer}/{seq}"),
                    "queued entry points at a message that does not exist",
                ));
            };
            let rec: MessageRecord = decode("message", seq, bytes.value())?;
            out.push(each(seq, rec, &signatures)?);
        }
        Ok(out)
    }

    /// Oldest first: up to `limit` (relay seq, record) this node carries for `to`.
    pub fn relay_batch(&self, to: &str, limit: usize) -> Result<Vec<(u64, RelayRecord)>> {
        let rtx = self.read()?;
        let t = match rtx.open_table(RELAY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err("open relay queue")(e)),
        };
        let mut out = Vec::new();
        for entry in t
            .range((to, 0u64)..=(to, u64::MAX))
            .map_err(db_err("scan relay queue"))?
            .take(limit)
        {
            let (k, v) = entry.map_err(db_err("scan relay queue"))?;
            let seq = k.value().1;
            out.push((seq, decode("relay entry", seq, v.value())?));
        }
        Ok(out)
    }

    /// The organisations this node holds carried envelopes for.
    pub fn relay_targets(&self) -> Result<Vec<String>> {
        let rtx = self.read()?;
        let t = match rtx.open_table(RELAY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err("open relay queue")(e)),
        };
        let mut out: Vec<String> = Vec::new();
        let mut from = String::new();
        loop {
            let next = t
                .range((from.as_str(), 0u64)..)
                .map_err(db_err("scan relay queue"))?
                .next();
            let Some(entry) = next else { break };
            let (k, _) = entry.map_err(db_err("scan relay queue"))?;
            let org = k.value().0.to_owned();
            // The next organisation sorts after every (org, seq) key.
            from = format!("{org}\0");
            out.push(org);
        }
        Ok(out)
    }

    /// Envelopes this node carries for `to` (a counter, O(1)).
    pub fn relay_depth(&self, to: &str) -> Result<u64> {
        self.counter(&relay_depth_key(to))
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
        self.scan_after(after_seq, limit, |seq, rec, signatures| {
            rec.into_stored(seq, signatures)
        })
    }

    /// Like [`Store::read_after`], each batch signature handed over apart (one allocation
    /// shared by the page's messages of the batch) and left out of `envelope`: for a reader
    /// that decodes the envelope and puts the signature back in the decoded form.
    pub fn read_after_apart(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(StoredMessage, Option<bytes::Bytes>)>> {
        self.scan_after(after_seq, limit, |seq, mut rec, signatures| {
            let signature = rec.take_signature(seq, signatures)?;
            Ok((rec.into_stored(seq, signatures)?, signature))
        })
    }

    /// Up to `limit` messages after `after_seq`, oldest first, each record made into a `T`
    /// by `each` (which may read the signatures table).
    fn scan_after<T>(
        &self,
        after_seq: u64,
        limit: usize,
        mut each: impl FnMut(u64, MessageRecord, &Signatures) -> Result<T>,
    ) -> Result<Vec<T>> {
        let Some(from) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rtx = self.read()?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let signatures = rtx
            .open_table(SIGNATURES)
            .map_err(db_err("open signatures"))?;
        let mut out = Vec::new();
        for entry in messages
            .range(from..)
            .map_err(db_err("scan messages"))?
            .take(limit)
        {
            let (k, v) = entry.map_err(db_err("scan messages"))?;
            let seq = k.value();
            let rec: MessageRecord = decode("message", seq, v.value())?;
            out.push(each(seq, rec, &signatures)?);
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
        let signatures = rtx
            .open_table(SIGNATURES)
            .map_err(db_err("open signatures"))?;
        read_indexed(&messages, &signatures, seq, id).map(Some)
    }

    /// Every stored message with this id, whatever its origin (usually one; several when
    /// organisations reused an id), in origin order.
    pub fn find_by_id(&self, id: &str) -> Result<Vec<StoredMessage>> {
        let rtx = self.read()?;
        let ids = rtx.open_table(IDS).map_err(db_err("open ids"))?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let signatures = rtx
            .open_table(SIGNATURES)
            .map_err(db_err("open signatures"))?;
        let mut out = Vec::new();
        for row in ids.range((id, "")..).map_err(db_err("read id index"))? {
            let (k, v) = row.map_err(db_err("read id index"))?;
            if k.value().0 != id {
                break;
            }
            out.push(read_indexed(&messages, &signatures, v.value(), id)?);
        }
        Ok(out)
    }

    /// The stored messages of the case `key` ("ORIGIN/ID" of its opening message), in the
    /// order this node stored them.
    pub fn case_messages(&self, key: &str) -> Result<Vec<StoredMessage>> {
        let rtx = self.read()?;
        let cases = rtx.open_table(CASES).map_err(db_err("open case index"))?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let signatures = rtx
            .open_table(SIGNATURES)
            .map_err(db_err("open signatures"))?;
        let mut out = Vec::new();
        for row in cases
            .range((key, 0)..=(key, u64::MAX))
            .map_err(db_err("read case index"))?
        {
            let seq = row.map_err(db_err("read case index"))?.0.value().1;
            if let Some(v) = messages.get(seq).map_err(db_err("read message"))? {
                out.push(
                    decode::<MessageRecord>("message", seq, v.value())?
                        .into_stored(seq, &signatures)?,
                );
            }
        }
        Ok(out)
    }

    /// The stored versions of a STIX object: (message seq, origin, version), oldest first.
    pub fn stix_versions(&self, id: &str) -> Result<Vec<(u64, String, String)>> {
        let rtx = self.read()?;
        let table = match rtx.open_table(STIX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err("open STIX index")(e)),
        };
        let mut out = Vec::new();
        for row in table
            .range((id, 0, 0)..=(id, u64::MAX, u32::MAX))
            .map_err(db_err("read STIX index"))?
        {
            let (k, v) = row.map_err(db_err("read STIX index"))?;
            let (origin, version) = v.value();
            out.push((k.value().1, origin.to_string(), version.to_string()));
        }
        Ok(out)
    }

    /// Every case key this node holds a workflow message of, in key order.
    pub fn case_keys(&self) -> Result<Vec<String>> {
        let rtx = self.read()?;
        let cases = rtx.open_table(CASES).map_err(db_err("open case index"))?;
        let mut out: Vec<String> = Vec::new();
        for row in cases.iter().map_err(db_err("read case index"))? {
            let k = row
                .map_err(db_err("read case index"))?
                .0
                .value()
                .0
                .to_string();
            if out.last() != Some(&k) {
                out.push(k);
            }
        }
        Ok(out)
    }

    pub fn get_by_seq(&self, seq: u64) -> Result<Option<StoredMessage>> {
        let rtx = self.read()?;
        let messages = rtx.open_table(MESSAGES).map_err(db_err("open messages"))?;
        let signatures = rtx
            .open_table(SIGNATURES)
            .map_err(db_err("open signatures"))?;
        match messages.get(seq).map_err(db_err("read message"))? {
            Some(v) => Ok(Some(
                decode::<MessageRecord>("message", seq, v.value())?
                    .into_stored(seq, &signatures)?,
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

    /// Of [`Store::commit_count`], the write transactions an insert's caller committed itself,
    /// without handing them to the writer thread (`[store] sync = "interval"`, while nothing
    /// else was being written).
    pub fn commits_by_caller(&self) -> u64 {
        self.inner.writer.commits_by_caller.load(Ordering::Relaxed)
    }

    /// Time spent in write transactions so far (applying groups and committing them).
    pub fn commit_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.inner.commit_nanos.load(Ordering::Relaxed))
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

    pub fn get_cursor(&self, name: &str) -> Result<Option<u64>> {
        let rtx = self.read()?;
        let t = rtx.open_table(CURSORS).map_err(db_err("open cursors"))?;
        Ok(t.get(name)
            .map_err(db_err("read cursor"))?
            .map(|g| g.value()))
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

    /// Every annotation of one message, by kind, from one read transaction.
    pub fn annotations(&self, origin: &str, id: &str) -> Result<Vec<(String, AnnotationRecord)>> {
        let key = message_key(origin, id);
        if !self.inner.annotated.may_have(&key) {
            return Ok(Vec::new());
        }
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

    /// The API token `id` (revoked ones included), if there is one.
    pub fn api_token(&self, id: &str) -> Result<Option<ApiTokenRecord>> {
        let rtx = self.read()?;
        let t = match rtx.open_table(API_TOKENS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err("open API tokens")(e)),
        };
        match t.get(id).map_err(db_err("read API token"))? {
            Some(v) => Ok(Some(decode("API token", id, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every API token record (revoked ones included), in id order.
    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        let rtx = self.read()?;
        let t = match rtx.open_table(API_TOKENS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err("open API tokens")(e)),
        };
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err("scan API tokens"))? {
            let (k, v) = entry.map_err(db_err("scan API tokens"))?;
            out.push(decode("API token", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Up to `limit` audit records with seq > `after_seq`, in seq order. An undecodable record
    /// is [`StoreError::Corrupt`]; use [`Store::verify_audit`] to check the chain.
    pub fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecordRow>> {
        let Some(from) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rtx = self.read()?;
        let t = rtx.open_table(AUDIT).map_err(db_err("open audit"))?;
        // The block holding `from` starts at or before it.
        let start = match t.range(..=from).map_err(db_err("scan audit"))?.next_back() {
            Some(entry) => entry.map_err(db_err("scan audit"))?.0.value(),
            None => from,
        };
        let mut out = Vec::new();
        for entry in t.range(start..).map_err(db_err("scan audit"))? {
            let (k, v) = entry.map_err(db_err("scan audit"))?;
            let block = super::audit_blocks::rows(k.value(), v.value())
                .map_err(|why| super::corrupt("audit", k.value(), why))?;
            for (seq, bytes) in block {
                if seq < from {
                    continue;
                }
                if out.len() == limit {
                    return Ok(out);
                }
                let row = super::decode_audit_row(seq, bytes)
                    .map_err(|e| super::corrupt("audit", seq, format!("cannot decode: {e}")))?;
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The committed audit head: (last seq, its hash); `(0, GENESIS_HASH)` when empty.
    pub fn audit_head(&self) -> (u64, String) {
        lock(&self.inner.audit_head).clone()
    }

    /// Walks the whole stored audit log in one consistent snapshot, recomputing every hash and
    /// checking every link against the stored head (see [`crate::audit::ChainCheck`]). `Err`
    /// only for a store that cannot be read at all; a damaged record is a failed verification.
    pub fn verify_audit(&self) -> Result<pb::AuditVerifyResponse> {
        let mut check = audit::ChainCheck::new();
        let (head_seq, head_hash) = self.audit_scan(|seq, bytes| {
            check.visit(
                seq,
                super::decode_audit_row(seq, bytes).map_err(|e| e.to_string()),
            );
            true
        })?;
        Ok(check.finish(head_seq, head_hash))
    }

    /// The audit records with `since_ms <= at_ms < until_ms` (`until_ms` 0: no upper bound),
    /// oldest first, as one contiguous chain segment (see [`crate::audit::Segment`]).
    pub fn export_audit(&self, since_ms: i64, until_ms: i64) -> Result<Vec<pb::AuditRecord>> {
        const PAGE: usize = 1024;
        let mut segment = audit::Segment::new(since_ms, until_ms);
        let mut after = 0u64;
        loop {
            let page = self.audit_records(after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for row in page {
                segment.push(row);
            }
        }
        Ok(segment.finish())
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
            // A damaged block is one record that does not verify, at its first seq.
            let block = super::audit_blocks::rows(k.value(), v.value())
                .unwrap_or_else(|_| vec![(k.value(), v.value())]);
            for (seq, bytes) in block {
                if !visit(seq, bytes) {
                    return Ok(head);
                }
            }
        }
        Ok(head)
    }
}

/// The message an index entry points at; a dangling entry is corruption.
fn read_indexed(
    messages: &impl ReadableTable<u64, &'static [u8]>,
    signatures: &impl ReadableTable<&'static [u8], &'static [u8]>,
    seq: u64,
    id: &str,
) -> Result<StoredMessage> {
    match messages.get(seq).map_err(db_err("read message"))? {
        Some(v) => decode::<MessageRecord>("message", seq, v.value())?.into_stored(seq, signatures),
        None => Err(super::corrupt(
            "id index",
            id,
            format!("points at seq {seq}, which does not exist"),
        )),
    }
}
