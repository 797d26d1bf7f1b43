//! How each writer op changes the tables.
//!
//! Owns: [`Tables::apply`], one [`Op`] inside its group's write transaction (messages and their
//! indexes, the outbox, relays, rejections, keys, cursors, clusters, the directory,
//! annotations, API tokens); the audit chain's seq and hash assignment; a batch signature kept
//! once.
//!
//! It must never: commit (the writer does, for the whole group); change a table but through
//! the transaction it is given; panic on a corrupted record.

use std::borrow::Cow;

use prost::Message as _;

use super::super::kv::ReadableTable;
use super::super::tables::{
    AUDIT_HEAD_KEY, AuditHeadRecord, KeyRecord, META_NEXT_REJECTION, META_NEXT_RELAY,
    RELAY_BYTES_KEY, RejectionRecord, RelayRecord, Tables, add_counter, delivered_key, depth_key,
    get_u64, relay_depth_key, sub_counter,
};
use super::super::{
    AnnotationRecord, ApiTokenRecord, AuditRecordRow, InsertOutcome, Keep, MAX_REJECTIONS_KEPT,
    NewMessage, Rejection, Result, StoreError, db_err, decode,
};
use super::{Applied, Op};
use crate::audit::AuditEvent;

impl Tables<'_> {
    pub(super) fn apply(&mut self, op: &Op) -> Result<Applied> {
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
            Op::RelayPut {
                to, items, limits, ..
            } => {
                let (outcomes, audit) = self.relay_put(to, items, *limits)?;
                self.append_audit(&audit)?;
                Ok(Applied::Relayed(outcomes))
            }
            Op::RelayRequeue { to, seqs, .. } => {
                self.relay_requeue(to, seqs).map(|()| Applied::Unit)
            }
            Op::RelayAck {
                to, seqs, audit, ..
            } => {
                self.relay_ack(to, seqs)?;
                self.append_audit(audit).map(|()| Applied::Unit)
            }
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
            Op::PutToken { record, audit, .. } => {
                self.put_token(record)?;
                self.append_audit(audit).map(|()| Applied::Unit)
            }
            Op::RevokeToken {
                id, at_ms, audit, ..
            } => self.revoke_token(id, *at_ms, audit).map(Applied::Token),
            Op::Close { .. } => Ok(Applied::Unit),
        }
    }

    /// Chains `events` after the current head, in order.
    pub(super) fn append_audit(&mut self, events: &[AuditEvent]) -> Result<()> {
        for ev in events {
            let (last, prev_hash) = &self.audit_head;
            let seq = last
                .checked_add(1)
                .ok_or(StoreError::Internal("audit seq space exhausted"))?;
            let row = AuditRecordRow::chained(seq, prev_hash, ev);
            if self.audit_block.full() {
                self.write_audit_block()?;
            }
            self.audit_block
                .push(seq, super::super::encode_audit_row(&row).as_slice());
            self.audit_head = (seq, row.hash);
        }
        Ok(())
    }

    /// Writes the audit records appended since the last block as one value. Runs before the
    /// head is stored, so a committed head never points past the stored records.
    pub(super) fn write_audit_block(&mut self) -> Result<()> {
        if let Some((first, bytes)) = self.audit_block.take() {
            self.audit
                .insert(first, bytes.as_slice())
                .map_err(db_err("append audit records"))?;
        }
        Ok(())
    }

    fn insert(&mut self, msgs: &[NewMessage]) -> Result<Vec<InsertOutcome>> {
        let mut out = Vec::with_capacity(msgs.len());
        // Outbox depth per peer: one counter update per peer for the whole op, not per entry.
        let mut queued: Vec<(&str, u64)> = Vec::new();
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
            // A batch signature is kept once, not in every envelope of the batch.
            let (envelope, signature_ref) = match &m.batch_signature {
                Some(_) if super::super::signatures::carries_signature(&m.envelope) => {
                    return Err(StoreError::Invalid(format!(
                        "message {}: a batch signature was handed over apart from envelope bytes \
                         that carry one too (or do not parse): build it with \
                         NewMessage::of_envelope",
                        m.id
                    )));
                }
                Some(signature) if !signature.is_empty() => (
                    Cow::Borrowed(m.envelope.as_slice()),
                    keep_signature(
                        &mut self.signatures,
                        &mut self.kept_signature,
                        signature,
                        Some(signature),
                    )?,
                ),
                // Handed over whole: a batch's signature is found in the bytes.
                _ => match super::super::signatures::split(&m.envelope) {
                    Some((rest, signature)) => (
                        Cow::Owned(rest),
                        keep_signature(
                            &mut self.signatures,
                            &mut self.kept_signature,
                            signature,
                            None,
                        )?,
                    ),
                    None => (Cow::Borrowed(m.envelope.as_slice()), Vec::new()),
                },
            };
            let rec = super::super::tables::RecordRef {
                id: &m.id,
                envelope: &envelope,
                signature_ref: &signature_ref,
                origin: &m.origin,
                kind: m.kind,
                level: m.level,
                received_from: &m.received_from,
                received_at_ms: m.received_at_ms,
                cluster: &m.cluster,
                reshare: m.reshare,
            }
            .encode();
            self.messages
                .insert(seq, rec.as_slice())
                .map_err(db_err("insert message"))?;
            self.ids
                .insert((m.id.as_str(), m.origin.as_str()), seq)
                .map_err(db_err("insert id index"))?;
            if !m.case.is_empty() {
                self.cases
                    .insert((m.case.as_str(), seq), ())
                    .map_err(db_err("insert case index"))?;
            }
            // Keyed by position too: one bundle may hold an object at two versions.
            for (i, (id, version)) in m.stix.iter().enumerate() {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                self.stix
                    .insert((id.as_str(), seq, i), (m.origin.as_str(), version.as_str()))
                    .map_err(db_err("insert STIX index"))?;
            }
            for peer in &m.outbox {
                if self.queue_new(peer, seq) {
                    match queued.iter_mut().find(|(p, _)| p == peer) {
                        Some((_, n)) => *n += 1,
                        None => queued.push((peer, 1)),
                    }
                }
            }
            self.append_audit(&m.audit)?;
            out.push(InsertOutcome::Inserted(seq));
        }
        for (peer, n) in queued {
            add_counter(&mut self.counters, &depth_key(peer), n)?;
        }
        Ok(out)
    }

    fn ack(&mut self, peer: &str, seqs: &[u64]) -> Result<()> {
        let removed = self.unqueue(peer, seqs)?;
        if removed > 0 {
            sub_counter(&mut self.counters, &depth_key(peer), removed)?;
            add_counter(&mut self.counters, &delivered_key(peer), removed)?;
        }
        Ok(())
    }

    fn drop_outbox(&mut self, peer: &str) -> Result<u64> {
        let dropped = self.unqueue_all(peer)?;
        self.counters
            .remove(depth_key(peer).as_str())
            .map_err(db_err("update counter"))?;
        Ok(dropped)
    }

    fn next_relay_seq(&mut self) -> Result<u64> {
        let next = get_u64(&self.meta, META_NEXT_RELAY)?.unwrap_or(1);
        self.meta
            .insert(META_NEXT_RELAY, next + 1)
            .map_err(db_err("update relay seq"))?;
        Ok(next)
    }

    fn relay_put(
        &mut self,
        to: &str,
        items: &[(RelayRecord, AuditEvent)],
        limits: super::super::RelayLimits,
    ) -> Result<(Vec<super::super::RelayPut>, Vec<AuditEvent>)> {
        let mut outcomes = Vec::with_capacity(items.len());
        let mut audit = Vec::new();
        let mut depth = get_u64(&self.counters, &relay_depth_key(to))?.unwrap_or(0);
        let mut bytes = get_u64(&self.counters, RELAY_BYTES_KEY)?.unwrap_or(0);
        for (rec, event) in items {
            if self
                .relay_ids
                .get((to, rec.key.as_str()))
                .map_err(db_err("read relay index"))?
                .is_some()
            {
                outcomes.push(super::super::RelayPut::Duplicate);
                continue;
            }
            let len = rec.envelope.len() as u64;
            if depth >= limits.per_recipient || bytes.saturating_add(len) > limits.total_bytes {
                outcomes.push(super::super::RelayPut::Full);
                continue;
            }
            let seq = self.next_relay_seq()?;
            self.relay
                .insert((to, seq), rec.encode_to_vec().as_slice())
                .map_err(db_err("queue relay entry"))?;
            self.relay_ids
                .insert((to, rec.key.as_str()), seq)
                .map_err(db_err("index relay entry"))?;
            depth += 1;
            bytes += len;
            outcomes.push(super::super::RelayPut::Queued);
            audit.push(event.clone());
        }
        self.counters
            .insert(relay_depth_key(to).as_str(), depth)
            .map_err(db_err("update counter"))?;
        self.counters
            .insert(RELAY_BYTES_KEY, bytes)
            .map_err(db_err("update counter"))?;
        Ok((outcomes, audit))
    }

    /// Remove carried entry `seq` for `to`: its record, if it was there.
    fn relay_take(&mut self, to: &str, seq: u64) -> Result<Option<RelayRecord>> {
        let Some(v) = self
            .relay
            .remove((to, seq))
            .map_err(db_err("remove relay entry"))?
        else {
            return Ok(None);
        };
        let rec: RelayRecord = decode("relay entry", seq, v.value())?;
        Ok(Some(rec))
    }

    fn relay_ack(&mut self, to: &str, seqs: &[u64]) -> Result<()> {
        let (mut removed, mut bytes) = (0u64, 0u64);
        for &seq in seqs {
            if let Some(rec) = self.relay_take(to, seq)? {
                self.relay_ids
                    .remove((to, rec.key.as_str()))
                    .map_err(db_err("remove relay index entry"))?;
                removed += 1;
                bytes += rec.envelope.len() as u64;
            }
        }
        if removed > 0 {
            sub_counter(&mut self.counters, &relay_depth_key(to), removed)?;
            sub_counter(&mut self.counters, RELAY_BYTES_KEY, bytes)?;
        }
        Ok(())
    }

    fn relay_requeue(&mut self, to: &str, seqs: &[u64]) -> Result<()> {
        for &seq in seqs {
            if let Some(rec) = self.relay_take(to, seq)? {
                let next = self.next_relay_seq()?;
                self.relay
                    .insert((to, next), rec.encode_to_vec().as_slice())
                    .map_err(db_err("queue relay entry"))?;
                self.relay_ids
                    .insert((to, rec.key.as_str()), next)
                    .map_err(db_err("index relay entry"))?;
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, peer: &str, seqs: &[u64]) -> Result<u64> {
        let mut queued = 0u64;
        for &seq in seqs {
            if !self
                .messages
                .contains(seq)
                .map_err(db_err("read message"))?
            {
                return Err(StoreError::Invalid(format!(
                    "cannot queue seq {seq} for {peer}: no stored message has that seq"
                )));
            }
            if self.queue_seq(peer, seq)? {
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

    /// Stores a new API token; an id already taken is refused (ids are random, so this only
    /// happens if the caller reused one), and the existing record is left as it was.
    fn put_token(&mut self, record: &ApiTokenRecord) -> Result<()> {
        if record.id.is_empty() {
            return Err(StoreError::Invalid(
                "API token id is empty; every token needs its id".into(),
            ));
        }
        let taken = self
            .api_tokens
            .get(record.id.as_str())
            .map_err(db_err("read API token"))?
            .is_some();
        if taken {
            return Err(StoreError::Invalid(format!(
                "an API token with id {} already exists; create the token again (a new id is \
                 drawn each time)",
                record.id
            )));
        }
        self.api_tokens
            .insert(record.id.as_str(), record.encode_to_vec().as_slice())
            .map_err(db_err("put API token"))?;
        Ok(())
    }

    /// Marks token `id` revoked at `at_ms` and chains `audit`, unless it is revoked already
    /// (then nothing changes: the first revocation time stands). `None` for an unknown id.
    fn revoke_token(
        &mut self,
        id: &str,
        at_ms: i64,
        audit: &[AuditEvent],
    ) -> Result<Option<ApiTokenRecord>> {
        let current = self
            .api_tokens
            .get(id)
            .map_err(db_err("read API token"))?
            .map(|v| decode::<ApiTokenRecord>("API token", id, v.value()))
            .transpose()?;
        let Some(mut record) = current else {
            return Ok(None);
        };
        if record.revoked_ms == 0 {
            // A revocation time of 0 would read as "not revoked".
            record.revoked_ms = at_ms.max(1);
            self.api_tokens
                .insert(id, record.encode_to_vec().as_slice())
                .map_err(db_err("revoke API token"))?;
            self.append_audit(audit)?;
        }
        Ok(Some(record))
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

impl Tables<'_> {
    pub(super) fn put_audit_head(&mut self) -> Result<()> {
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

/// The digest a batch `signature` is kept under in `signatures`, keeping it unless it is
/// kept already. `last`: the signature kept last and its digest (a batch's messages arrive
/// together, so most lookups stop there). `shared`: `signature` as the allocation a batch's
/// envelopes share, kept as `last` (the batch's next message then compares one pointer).
fn keep_signature(
    signatures: &mut super::super::kv::Table<'_, &'static [u8], &'static [u8]>,
    last: &mut Option<(bytes::Bytes, Vec<u8>)>,
    signature: &[u8],
    shared: Option<&bytes::Bytes>,
) -> Result<Vec<u8>> {
    if let Some((kept, digest)) = last.as_ref()
        && crate::signature_table::same(kept, signature)
    {
        return Ok(digest.clone());
    }
    let digest = super::super::signatures::digest(signature);
    // Whether it is there, not what it holds: a damaged copy is found where it is read.
    if !signatures
        .contains(digest.as_slice())
        .map_err(db_err("read signature"))?
    {
        signatures
            .insert(digest.as_slice(), signature)
            .map_err(db_err("store signature"))?;
    }
    let kept = shared.map_or_else(|| bytes::Bytes::copy_from_slice(signature), Clone::clone);
    *last = Some((kept, digest.clone()));
    Ok(digest)
}
