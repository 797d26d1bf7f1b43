//! Checking the audit chain: recomputing every hash and link of a stored log
//! ([`ChainCheck`]), cutting a time window into a contiguous chain segment ([`Segment`]), and
//! checking such a segment offline, without the node ([`verify_records`], with the
//! JSON-lines format of `bluewire audit export`).
//!
//! Owns: what counts as a broken chain (an edited, removed, reordered, inserted or
//! truncated-at-the-end record) and how it is reported (the first seq that does not verify,
//! and why), and the export format.
//!
//! It must never: read or write the store (records are handed to it); panic on a
//! damaged or undecodable record (that is a failed verification); accept an exported field
//! the hash does not cover (unknown JSON fields are refused).

use bluewire_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::AuditRecordRow;
use super::{GENESIS_HASH, chain_hash};

fn pb_hash(r: &pb::AuditRecord) -> String {
    chain_hash(
        &r.prev_hash,
        r.seq,
        r.at_ms,
        [&r.event, &r.msg_id, &r.peer, &r.cluster, &r.rule, &r.detail],
    )
}

fn ok_response(records: u64, head_hash: String) -> pb::AuditVerifyResponse {
    pb::AuditVerifyResponse {
        ok: true,
        records,
        head_hash,
        first_bad_seq: 0,
        problem: String::new(),
    }
}

fn bad_response(
    records: u64,
    head_hash: String,
    seq: u64,
    problem: String,
) -> pb::AuditVerifyResponse {
    pb::AuditVerifyResponse {
        ok: false,
        records,
        head_hash,
        first_bad_seq: seq,
        problem,
    }
}

/// Checks a stored log record by record: fed every stored record in seq order
/// ([`ChainCheck::visit`], with the record or why it could not be decoded), then the stored
/// head ([`ChainCheck::finish`]). It recomputes every hash and checks every link, the seqs'
/// contiguity and the head, and reports the first seq that does not verify and why.
#[derive(Debug)]
pub struct ChainCheck {
    expected: u64,
    prev: String,
    count: u64,
    bad: Option<(u64, String)>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck {
            expected: 1,
            prev: GENESIS_HASH.to_owned(),
            count: 0,
            bad: None,
        }
    }
}

impl ChainCheck {
    pub fn new() -> ChainCheck {
        ChainCheck::default()
    }

    /// The next stored record: its seq (the table key) and the record, or why its bytes do
    /// not decode.
    pub fn visit(&mut self, seq: u64, row: Result<AuditRecordRow, String>) {
        self.count += 1;
        if self.bad.is_some() {
            return; // keep counting
        }
        let expected = self.expected;
        if seq != expected {
            let missing = if seq == expected + 1 {
                format!("record {expected} is missing")
            } else {
                format!("records {expected}..{} are missing", seq - 1)
            };
            self.bad = Some((
                expected,
                format!("{missing}: entries were removed from the log"),
            ));
            return;
        }
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                self.bad = Some((
                    seq,
                    format!("record was edited: it cannot be decoded ({e})"),
                ));
                return;
            }
        };
        if row.prev_hash != self.prev {
            let what = if seq == 1 {
                "record 1 does not start the chain (its prev_hash is not the genesis hash)"
                    .to_owned()
            } else {
                format!(
                    "record's prev_hash does not match record {}'s hash: an entry was \
                     removed, reordered or edited here",
                    seq - 1
                )
            };
            self.bad = Some((seq, what));
            return;
        }
        if row.hash != row.compute_hash() {
            self.bad = Some((
                seq,
                "record was edited: its content does not match its hash".into(),
            ));
            return;
        }
        self.prev = row.hash;
        self.expected = seq + 1;
    }

    /// The verdict, given the stored head `(seq, hash)`: `records` is the number of records
    /// visited, `head_hash` the stored head's hash; when not ok, `first_bad_seq` is the first
    /// record that does not verify and `problem` says why.
    pub fn finish(self, head_seq: u64, head_hash: String) -> pb::AuditVerifyResponse {
        let count = self.count;
        if let Some((seq, problem)) = self.bad {
            return bad_response(count, head_hash, seq, problem);
        }
        let last = self.expected - 1;
        if last < head_seq {
            let what = if last + 1 == head_seq {
                format!("record {head_seq} is missing")
            } else {
                format!("records {}..{head_seq} are missing", last + 1)
            };
            return bad_response(
                count,
                head_hash,
                last + 1,
                format!("{what}: the log was truncated (the stored head is seq {head_seq})"),
            );
        }
        if last > head_seq {
            return bad_response(
                count,
                head_hash,
                head_seq + 1,
                format!(
                    "record {} is beyond the stored head (seq {head_seq}): it was added \
                     outside the node",
                    head_seq + 1
                ),
            );
        }
        let expected_head = if last == 0 {
            GENESIS_HASH
        } else {
            self.prev.as_str()
        };
        if head_hash != expected_head {
            return bad_response(
                count,
                head_hash,
                last.max(1),
                "the last record's hash does not match the stored head hash: the log or its \
                 head was rewritten"
                    .into(),
            );
        }
        ok_response(count, head_hash)
    }
}

/// The records with `since_ms <= at_ms < until_ms` (`until_ms` 0: no upper bound) of a log
/// fed oldest first, as one contiguous chain segment: from the first record in the window to
/// the last, including any record between them whose clock stamp falls outside it, so the
/// export always verifies with [`verify_records`].
#[derive(Debug)]
pub struct Segment {
    since_ms: i64,
    until_ms: i64,
    out: Vec<pb::AuditRecord>,
    keep: usize,
}

impl Segment {
    pub fn new(since_ms: i64, until_ms: i64) -> Segment {
        Segment {
            since_ms,
            until_ms,
            out: Vec::new(),
            keep: 0,
        }
    }

    /// The next record of the log.
    pub fn push(&mut self, row: AuditRecordRow) {
        let at = row.at_ms;
        let hit = at >= self.since_ms && (self.until_ms <= 0 || at < self.until_ms);
        if hit || !self.out.is_empty() {
            self.out.push(row.into());
        }
        if hit {
            self.keep = self.out.len();
        }
    }

    /// The segment, oldest first.
    pub fn finish(mut self) -> Vec<pb::AuditRecord> {
        self.out.truncate(self.keep);
        self.out
    }
}

/// Verifies an exported chain segment offline: every record's hash, every link to the
/// previous record, contiguous seqs, and the genesis link if the segment starts at seq 1.
/// `Err((seq, problem))` names the first record that does not verify. An empty segment is ok.
/// A segment's own tail cannot prove it is complete: compare its last hash with a head hash
/// recorded elsewhere.
pub fn verify_records(records: &[pb::AuditRecord]) -> Result<(), (u64, String)> {
    let mut prev: Option<&pb::AuditRecord> = None;
    for r in records {
        match prev {
            None if r.seq == 0 => {
                return Err((0, "seq 0 is not a valid audit record seq".into()));
            }
            None if r.seq == 1 && r.prev_hash != GENESIS_HASH => {
                return Err((
                    1,
                    "record 1 does not start the chain (its prev_hash is not the genesis hash)"
                        .into(),
                ));
            }
            None => {}
            Some(p) => {
                if r.seq != p.seq.wrapping_add(1) {
                    let problem = if r.seq > p.seq {
                        format!(
                            "record {} follows record {}: records in between were removed",
                            r.seq, p.seq
                        )
                    } else {
                        format!(
                            "record {} follows record {}: records were reordered or duplicated",
                            r.seq, p.seq
                        )
                    };
                    return Err((r.seq, problem));
                }
                if r.prev_hash != p.hash {
                    return Err((
                        r.seq,
                        format!(
                            "record's prev_hash does not match record {}'s hash: an entry was \
                             removed, reordered or edited here",
                            p.seq
                        ),
                    ));
                }
            }
        }
        if r.hash != pb_hash(r) {
            return Err((
                r.seq,
                "record was edited: its content does not match its hash".into(),
            ));
        }
        prev = Some(r);
    }
    Ok(())
}

/// One exported record as a JSON line (the fields of `AuditRecord`, nothing else).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    seq: u64,
    at_ms: i64,
    event: String,
    #[serde(default)]
    msg_id: String,
    #[serde(default)]
    peer: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    detail: String,
    prev_hash: String,
    hash: String,
}

/// Encodes a record as one line of JSON (no trailing newline): the export format.
pub fn record_to_json(r: &pb::AuditRecord) -> String {
    let j = JsonRecord {
        seq: r.seq,
        at_ms: r.at_ms,
        event: r.event.clone(),
        msg_id: r.msg_id.clone(),
        peer: r.peer.clone(),
        cluster: r.cluster.clone(),
        rule: r.rule.clone(),
        detail: r.detail.clone(),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string(&j).unwrap_or_default()
}

/// Parses one line of an export. Unknown fields are refused (they would not be covered by the
/// hash, so a reader could be misled by them).
pub fn record_from_json(line: &str) -> Result<pb::AuditRecord, String> {
    let j: JsonRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok(pb::AuditRecord {
        seq: j.seq,
        at_ms: j.at_ms,
        event: j.event,
        msg_id: j.msg_id,
        peer: j.peer,
        cluster: j.cluster,
        rule: j.rule,
        detail: j.detail,
        prev_hash: j.prev_hash,
        hash: j.hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;
    use crate::store::{Store, StoreError};

    fn ev(i: i64) -> AuditEvent {
        AuditEvent::sent(format!("m{i}"), "org-b", "tlp").at(1_000 + i)
    }

    async fn store_with(n: i64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.append_audit((1..=n).map(ev).collect()).await.unwrap();
        (dir, store)
    }

    fn row(store: &Store, seq: u64) -> AuditRecordRow {
        store.audit_records(seq - 1, 1).unwrap().remove(0)
    }

    fn bad(store: &Store) -> (u64, String) {
        let r = store.verify_audit().unwrap();
        assert!(!r.ok, "expected a failed verification: {r:?}");
        (r.first_bad_seq, r.problem)
    }

    #[tokio::test]
    async fn empty_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store.verify_audit().unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.records, 0);
        assert_eq!(r.head_hash, GENESIS_HASH);
        assert!(store.export_audit(0, 0).unwrap().is_empty());
    }

    #[tokio::test]
    async fn chain_verifies_across_appends_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.append_audit(vec![ev(1), ev(2)]).await.unwrap();
            store.append_audit(vec![]).await.unwrap();
            store
                .append_audit(vec![AuditEvent::policy("reloaded").at(5)])
                .await
                .unwrap();
            store.close().await;
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.audit_head().0, 3);
        store
            .append_audit(vec![
                AuditEvent::membership("c1", "org-c", "invite").at(6),
                AuditEvent::rejected("m9", "org-d", "signature", "bad signature").at(7),
            ])
            .await
            .unwrap();
        let r = store.verify_audit().unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.records, 5);
        assert_eq!(r.head_hash, store.audit_head().1);
        let all = store.export_audit(0, 0).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].prev_hash, GENESIS_HASH);
        assert_eq!(
            all.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
            ["sent", "sent", "policy", "membership", "rejected"]
        );
        assert_eq!(all[4].rule, "signature");
        assert_eq!(all[4].detail, "bad signature");
        assert_eq!(all[3].cluster, "c1");
        assert_eq!(all[4].hash, r.head_hash);
        verify_records(&all).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_chain_in_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    for j in 0..4 {
                        store.append_audit(vec![ev(i * 10 + j)]).await.unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let r = store.verify_audit().unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.records, 200);
        assert_eq!(store.audit_head().0, 200);
    }

    #[tokio::test]
    async fn edited_record_is_detected() {
        let (_d, store) = store_with(5).await;
        let mut r = row(&store, 3);
        r.detail = "nothing to see".into();
        store
            .tamper_audit_for_tests(3, Some(crate::store::encode_audit_row(&r)))
            .await
            .unwrap();
        let (seq, problem) = bad(&store);
        assert_eq!(seq, 3);
        assert!(problem.contains("edited"), "{problem}");
    }

    #[tokio::test]
    async fn edited_and_rehashed_record_breaks_the_next_link() {
        let (_d, store) = store_with(5).await;
        let mut r = row(&store, 3);
        r.peer = "org-x".into();
        r.hash = r.compute_hash();
        store
            .tamper_audit_for_tests(3, Some(crate::store::encode_audit_row(&r)))
            .await
            .unwrap();
        let (seq, problem) = bad(&store);
        assert_eq!(seq, 4);
        assert!(problem.contains("record 3"), "{problem}");
    }

    #[tokio::test]
    async fn garbage_bytes_are_detected_not_a_panic() {
        let (_d, store) = store_with(3).await;
        store
            .tamper_audit_for_tests(2, Some(vec![0xff, 0xff, 0xff]))
            .await
            .unwrap();
        let (seq, problem) = bad(&store);
        assert_eq!(seq, 2);
        assert!(problem.contains("decoded"), "{problem}");
        assert!(matches!(
            store.export_audit(0, 0),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn removed_record_is_detected() {
        let (_d, store) = store_with(5).await;
        store.tamper_audit_for_tests(2, None).await.unwrap();
        let (seq, problem) = bad(&store);
        assert_eq!(seq, 2);
        assert!(problem.contains("removed"), "{problem}");
        let r = store.verify_audit().unwrap();
        assert_eq!(r.records, 4);
    }

    #[tokio::test]
    async fn removed_and_renumbered_records_are_detected() {
        // Delete 2 and shift 3..5 down so the seqs stay contiguous: the link breaks at 2.
        let (_d, store) = store_with(5).await;
        for seq in 2..5 {
            let mut r = row(&store, seq + 1);
            r.seq = seq;
            store
                .tamper_audit_for_tests(seq, Some(crate::store::encode_audit_row(&r)))
                .await
                .unwrap();
        }
        store.tamper_audit_for_tests(5, None).await.unwrap();
        let (seq, _) = bad(&store);
        assert_eq!(seq, 2);
    }

    #[tokio::test]
    async fn swapped_records_are_detected() {
        let (_d, store) = store_with(5).await;
        let (a, b) = (row(&store, 2), row(&store, 4));
        store
            .tamper_audit_for_tests(2, Some(crate::store::encode_audit_row(&b)))
            .await
            .unwrap();
        store
            .tamper_audit_for_tests(4, Some(crate::store::encode_audit_row(&a)))
            .await
            .unwrap();
        let (seq, problem) = bad(&store);
        assert_eq!(seq, 2);
        assert!(problem.contains("reordered"), "{problem}");
    }

    #[tokio::test]
    async fn truncated_tail_is_detected() {
        let (_d, store) = store_with(5).await;
        store.tamper_audit_for_tests(5, None).await.unwrap();
        store.tamper_audit_for_tests(4, None).await.unwrap();
        let (seq, problem) = bad(&store);
        assert_eq!(seq, 4);
        assert!(problem.contains("truncated"), "{problem}");
        // Removing everything is detected too.
        for s in 1..4 {
            store.tamper_audit_for_tests(s, None).await.unwrap();
        }
        let (seq, problem) = bad(&store);
        assert_eq!(seq, 1);
        assert!(problem.contains("truncated"), "{problem}");
    }

    #[tokio::test]
    async fn appends_after_tampering_still_fail_verification() {
        let (_d, store) = store_with(3).await;
        store.tamper_audit_for_tests(3, None).await.unwrap();
        store.append_audit(vec![ev(4)]).await.unwrap();
        let (seq, _) = bad(&store);
        assert_eq!(seq, 3);
    }

    #[tokio::test]
    async fn export_filters_by_time_as_a_contiguous_segment() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A clock step back: record 4 is stamped before the window.
        let stamps = [100, 200, 300, 50, 400, 500];
        store
            .append_audit(
                stamps
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| ev(i as i64).at(t))
                    .collect(),
            )
            .await
            .unwrap();
        let seqs = |v: Vec<pb::AuditRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.export_audit(0, 0).unwrap()), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(store.export_audit(200, 0).unwrap()), [2, 3, 4, 5, 6]);
        assert_eq!(seqs(store.export_audit(200, 500).unwrap()), [2, 3, 4, 5]);
        assert_eq!(seqs(store.export_audit(0, 150).unwrap()), [1, 2, 3, 4]);
        assert_eq!(seqs(store.export_audit(300, 301).unwrap()), [3]);
        assert!(store.export_audit(600, 0).unwrap().is_empty());
        assert!(store.export_audit(201, 300).unwrap().is_empty());
        for (s, u) in [(200, 500), (0, 150), (300, 301)] {
            verify_records(&store.export_audit(s, u).unwrap()).unwrap();
        }
    }

    #[tokio::test]
    async fn offline_verify_of_json_lines() {
        let (_d, store) = store_with(6).await;
        let lines: Vec<String> = store
            .export_audit(0, 0)
            .unwrap()
            .iter()
            .map(record_to_json)
            .collect();
        let parse = |lines: &[String]| -> Vec<pb::AuditRecord> {
            lines.iter().map(|l| record_from_json(l).unwrap()).collect()
        };
        verify_records(&parse(&lines)).unwrap();
        // A segment from the middle verifies on its own.
        verify_records(&parse(&lines[2..5])).unwrap();

        // Edited line.
        let mut edited = lines.clone();
        edited[3] = edited[3].replace("\"org-b\"", "\"org-z\"");
        assert_ne!(edited[3], lines[3]);
        let (seq, problem) = verify_records(&parse(&edited)).unwrap_err();
        assert_eq!(seq, 4);
        assert!(problem.contains("edited"), "{problem}");

        // Removed line.
        let mut removed = lines.clone();
        removed.remove(2);
        assert_eq!(verify_records(&parse(&removed)).unwrap_err().0, 4);

        // Swapped lines.
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_records(&parse(&swapped)).unwrap_err().0, 3);

        // A forged first record.
        let mut first = parse(&lines);
        first[0].prev_hash = "1".repeat(64);
        first[0].hash = pb_hash(&first[0]);
        assert_eq!(verify_records(&first).unwrap_err().0, 1);

        // Unknown fields are refused; missing optional text fields default to empty.
        let extra = lines[0].replacen('{', "{\"note\":\"x\",", 1);
        assert!(record_from_json(&extra).is_err());
        assert!(record_from_json("not json").is_err());
    }
}
