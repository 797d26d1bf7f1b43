//! Tamper-evident audit trail: a hash-chained, append-only log of everything this node
//! published, sent, delivered, received, rejected or dropped, every membership operation,
//! every policy change, every API token created or revoked, and the store losing records
//! that had not reached the disk when it reopened after an I/O error.
//!
//! Records live in the store's `audit` table (see
//! [`Store::append_audit`](crate::store::Store::append_audit)); the store's single writer
//! assigns each record its `seq` (1, 2, 3, … in commit order) and its chain hash inside the
//! same write transaction as the other ops of its group:
//!
//! ```text
//! hash = hex(sha256(prev_hash || "bluewire-audit-v1" || seq_be64 || at_ms_be64
//!                   || len_be64(event) || event || … || len_be64(detail) || detail))
//! ```
//!
//! where `prev_hash` is the previous record's `hash` as its 64 ASCII hex characters
//! ([`GENESIS_HASH`], 64 zeros, for record 1) and the length-prefixed UTF-8 strings are, in
//! order, event, msg_id, peer, cluster, rule, detail. The head `(seq, hash)` is stored next to
//! the records and advanced in the same transaction.
//!
//! [`ChainCheck`] recomputes every hash and checks every link, the seqs' contiguity and the
//! stored head, so an edited, removed, reordered, inserted or truncated-at-the-end record is
//! reported with the first seq that does not verify (the store feeds it with
//! [`Store::verify_audit`](crate::store::Store::verify_audit)). [`Segment`] cuts the records of
//! a time window into a contiguous chain segment
//! ([`Store::export_audit`](crate::store::Store::export_audit)), and [`verify_records`] checks
//! such a segment anywhere, without the node (e.g. a JSON-lines file from
//! `bluewire audit export`).
//!
//! What it cannot do on its own: someone who can rewrite the whole database file can rebuild
//! a consistent chain. Record the head hash `bluewire audit verify` prints somewhere else
//! (an incident ticket, a peer) to anchor it.
//!
//! It must never: panic on a damaged record (that is a failed verification), or change a
//! record after it is written.
//!
//! # Layout
//!
//! This file is the chain itself: what an event is ([`AuditKind`], [`AuditEvent`]), what a
//! record is ([`AuditRecordRow`]), how long its fields may be, and how a record is hashed
//! ([`chain_hash`]); it knows nothing of how records are stored. `verify` checks the chain
//! ([`ChainCheck`], [`Segment`], [`verify_records`], the JSON-lines export format) from
//! records handed to it; it is re-exported here, so other modules name `crate::audit::X`.
//! The store depends on this module, never the other way round.

mod verify;

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use bluewire_proto::v1 as pb;

pub use verify::{ChainCheck, Segment, record_from_json, record_to_json, verify_records};

/// `prev_hash` of record 1.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest text kept in any field of a record (bytes; cut at a char boundary). Peer-supplied
/// values (message ids, reasons) can be arbitrarily large; the log must not be.
pub const MAX_FIELD_LEN: usize = 2048;

/// Domain separation for the chain hash.
const HASH_DOMAIN: &[u8] = b"bluewire-audit-v1";

/// What happened. The string forms are the `event` field of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// A local member published a message through this node.
    Published,
    /// A message was routed (queued) to a peer, by `rule`.
    Sent,
    /// A peer acknowledged a message.
    Delivered,
    /// A message from a peer was accepted.
    Received,
    /// A message was refused: egress (routing denied it to `peer`) or ingress (a peer's
    /// envelope failed a check); `rule` names the deciding rule/check, `detail` the reason.
    Rejected,
    /// Queued messages for a peer were discarded.
    Dropped,
    /// A cluster membership operation (create, invite, accept, decline, leave, remove, role…).
    Membership,
    /// A policy change (reload, new hash, revocation list…).
    Policy,
    /// An API token was created or revoked (its id, user, role and expiry; never its secret).
    Token,
    /// The store itself: reopened after an I/O error, with records lost that had not reached
    /// the disk (their sequence numbers are used again after this record).
    Store,
    /// An offline bundle was exported (`peer`: the organisation it is for) or imported or
    /// refused (`peer`: the organisation that exported it); `detail` says what it held.
    Bundle,
    /// Relaying: this node handed its message to `peer` to carry to a recipient its direct
    /// link could not reach (it keeps its own copy until the recipient acknowledges), or took
    /// on from `peer` an envelope to carry to another member; `detail` says which way.
    Relayed,
}

impl AuditKind {
    pub const ALL: [AuditKind; 12] = [
        AuditKind::Published,
        AuditKind::Sent,
        AuditKind::Delivered,
        AuditKind::Received,
        AuditKind::Rejected,
        AuditKind::Dropped,
        AuditKind::Membership,
        AuditKind::Policy,
        AuditKind::Token,
        AuditKind::Store,
        AuditKind::Bundle,
        AuditKind::Relayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Published => "published",
            AuditKind::Sent => "sent",
            AuditKind::Delivered => "delivered",
            AuditKind::Received => "received",
            AuditKind::Rejected => "rejected",
            AuditKind::Dropped => "dropped",
            AuditKind::Membership => "membership",
            AuditKind::Policy => "policy",
            AuditKind::Token => "token",
            AuditKind::Store => "store",
            AuditKind::Bundle => "bundle",
            AuditKind::Relayed => "relayed",
        }
    }
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to record. Build with a constructor, refine with the builder methods, append with
/// [`Store::append_audit`](crate::store::Store::append_audit). `at_ms` defaults to now; empty fields are simply empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub at_ms: i64,
    pub event: AuditKind,
    pub msg_id: String,
    pub peer: String,
    pub cluster: String,
    pub rule: String,
    pub detail: String,
}

/// Current time, unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl AuditEvent {
    /// An event of `kind` at the current time with every other field empty.
    pub fn new(kind: AuditKind) -> AuditEvent {
        AuditEvent {
            at_ms: now_ms(),
            event: kind,
            msg_id: String::new(),
            peer: String::new(),
            cluster: String::new(),
            rule: String::new(),
            detail: String::new(),
        }
    }

    /// A local member published `msg_id`; `detail`: e.g. the publishing user.
    pub fn published(msg_id: impl Into<String>, detail: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Published)
            .msg(msg_id)
            .detail(detail)
    }

    /// `msg_id` was routed to `peer`, allowed by `rule`.
    pub fn sent(
        msg_id: impl Into<String>,
        peer: impl Into<String>,
        rule: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent::new(AuditKind::Sent)
            .msg(msg_id)
            .peer(peer)
            .rule(rule)
    }

    /// `peer` acknowledged `msg_id`.
    pub fn delivered(msg_id: impl Into<String>, peer: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Delivered).msg(msg_id).peer(peer)
    }

    /// `msg_id` from `peer` was accepted.
    pub fn received(msg_id: impl Into<String>, peer: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Received).msg(msg_id).peer(peer)
    }

    /// `msg_id` was refused to/from `peer` by `rule`, because `reason`.
    pub fn rejected(
        msg_id: impl Into<String>,
        peer: impl Into<String>,
        rule: impl Into<String>,
        reason: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent::new(AuditKind::Rejected)
            .msg(msg_id)
            .peer(peer)
            .rule(rule)
            .detail(reason)
    }

    /// An offline bundle to or from `peer` (see [`AuditKind::Bundle`]).
    /// `msg_id` handed to, or taken on from, `peer` as a relay; `detail` says which way.
    pub fn relayed(
        msg_id: impl Into<String>,
        peer: impl Into<String>,
        detail: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent::new(AuditKind::Relayed)
            .msg(msg_id)
            .peer(peer)
            .detail(detail)
    }

    pub fn bundle(peer: impl Into<String>, detail: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Bundle).peer(peer).detail(detail)
    }

    /// Queued messages for `peer` were discarded; `detail`: how many and why.
    pub fn dropped(peer: impl Into<String>, detail: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Dropped)
            .peer(peer)
            .detail(detail)
    }

    /// A membership operation on `cluster` concerning `peer` (org); `detail`: the operation,
    /// e.g. "invite role=member by org-a".
    pub fn membership(
        cluster: impl Into<String>,
        peer: impl Into<String>,
        detail: impl Into<String>,
    ) -> AuditEvent {
        AuditEvent::new(AuditKind::Membership)
            .cluster(cluster)
            .peer(peer)
            .detail(detail)
    }

    /// A policy change; `detail`: e.g. "reloaded policy_hash=… policies=3".
    pub fn policy(detail: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Policy).detail(detail)
    }

    /// An API token was created or revoked; `detail`: e.g. "created id=… user=… role=…
    /// expires=… by=…". Never the token's secret.
    pub fn store(detail: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Store).detail(detail)
    }

    pub fn token(detail: impl Into<String>) -> AuditEvent {
        AuditEvent::new(AuditKind::Token).detail(detail)
    }

    pub fn at(mut self, at_ms: i64) -> Self {
        self.at_ms = at_ms;
        self
    }
    pub fn msg(mut self, msg_id: impl Into<String>) -> Self {
        self.msg_id = msg_id.into();
        self
    }
    pub fn peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = peer.into();
        self
    }
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }
    pub fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = rule.into();
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Cuts every field to [`MAX_FIELD_LEN`] bytes (the store does this before appending).
    pub(crate) fn clip(mut self) -> Self {
        for f in [
            &mut self.msg_id,
            &mut self.peer,
            &mut self.cluster,
            &mut self.rule,
            &mut self.detail,
        ] {
            clip(f);
        }
        self
    }
}

fn clip(s: &mut String) {
    if s.len() > MAX_FIELD_LEN {
        let mut end = MAX_FIELD_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The chain hash of a record (see the module docs). `text` is, in order:
/// event, msg_id, peer, cluster, rule, detail.
pub fn chain_hash(prev_hash: &str, seq: u64, at_ms: i64, text: [&str; 6]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(HASH_DOMAIN);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at_ms.to_be_bytes());
    for s in text {
        ctx.update(&(s.len() as u64).to_be_bytes());
        ctx.update(s.as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

/// One record of the chain, as written and read back.
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
    /// The record `event` makes as record `seq` after `prev_hash`, with its hash computed.
    pub fn chained(seq: u64, prev_hash: &str, event: &AuditEvent) -> AuditRecordRow {
        let mut row = AuditRecordRow {
            seq,
            at_ms: event.at_ms,
            event: event.event.as_str().to_owned(),
            msg_id: event.msg_id.clone(),
            peer: event.peer.clone(),
            cluster: event.cluster.clone(),
            rule: event.rule.clone(),
            detail: event.detail.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        row.hash = row.compute_hash();
        row
    }

    /// The chain hash this record's content and `prev_hash` call for.
    pub fn compute_hash(&self) -> String {
        chain_hash(
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
}

impl From<AuditRecordRow> for pb::AuditRecord {
    fn from(r: AuditRecordRow) -> Self {
        pb::AuditRecord {
            seq: r.seq,
            at_ms: r.at_ms,
            event: r.event,
            msg_id: r.msg_id,
            peer: r.peer,
            cluster: r.cluster,
            rule: r.rule,
            detail: r.detail,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_unambiguous_and_fields_are_clipped() {
        let a = chain_hash(GENESIS_HASH, 1, 0, ["sent", "ab", "c", "", "", ""]);
        let b = chain_hash(GENESIS_HASH, 1, 0, ["sent", "a", "bc", "", "", ""]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let e = AuditEvent::rejected("é".repeat(MAX_FIELD_LEN), "p", "r", "x").clip();
        assert!(e.msg_id.len() <= MAX_FIELD_LEN);
        assert!(e.msg_id.chars().all(|c| c == 'é'));
        assert_eq!(AuditKind::ALL.len(), 12);
        assert_eq!(
            AuditEvent::relayed("m", "o", "x").event.to_string(),
            "relayed"
        );
        assert_eq!(AuditEvent::bundle("o", "x").event.to_string(), "bundle");
        assert_eq!(AuditEvent::policy("x").event.to_string(), "policy");
    }
}
