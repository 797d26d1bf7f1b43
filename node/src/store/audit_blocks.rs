//! Audit records in blocks: the records one write transaction appends are stored as one
//! value of the `audit` table, under the seq of the first, instead of one value each.
//!
//! Owns: the block encoding ([`Block`], [`rows`]). The records inside are unchanged: each is
//! an encoded `AuditDisk` with its own seq (the block's key plus its position) and its own
//! chain hash, so verification, export and the head are exactly as before.
//!
//! Why: a publish to four peers appends five records (published, then four deliveries), and
//! each was a B-tree insert of its own. In redb an insert costs its path of pages, so the
//! records were a tenth of the fan-out's CPU (BENCHMARKS.md, issue #12). One insert per
//! transaction (at most [`MAX_RECORDS`] records each) keeps the cost per commit.
//!
//! A store written before blocks (layout 3) holds one bare encoded record per value. Such a
//! value is read as a block of one, so no migration is needed: a bare record has no field
//! [`ROWS_TAG`], and a block always has at least one row there.
//!
//! It must never: drop or reorder a record, or give a record another record's seq.

use std::borrow::Cow;

/// The protobuf field of a block's rows. `AuditDisk` uses fields 1 to 9, so a bare record
/// never has it.
const ROWS_TAG: u32 = 15;

/// The most records kept in one block. A transaction that appends more writes several blocks,
/// so reading one record never decodes more than this many.
pub(super) const MAX_RECORDS: usize = 256;

/// A block being filled by the writer: the encoded rows, in order, after the block's first seq.
#[derive(Debug, Default)]
pub(super) struct Block {
    first: u64,
    rows: usize,
    bytes: Vec<u8>,
}

impl Block {
    /// Adds the encoded record `row`, whose seq is `seq`. The first row fixes the block's key;
    /// the caller gives seqs in order without gaps (the chain's own rule).
    pub(super) fn push(&mut self, seq: u64, row: &[u8]) {
        if self.rows == 0 {
            self.first = seq;
        }
        prost::encoding::encode_key(
            ROWS_TAG,
            prost::encoding::WireType::LengthDelimited,
            &mut self.bytes,
        );
        prost::encoding::encode_varint(row.len() as u64, &mut self.bytes);
        self.bytes.extend_from_slice(row);
        self.rows += 1;
    }

    /// Whether the block holds [`MAX_RECORDS`] and must be written before the next row.
    pub(super) fn full(&self) -> bool {
        self.rows >= MAX_RECORDS
    }

    /// The block's key and bytes, leaving it empty; `None` if it holds nothing.
    pub(super) fn take(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.rows == 0 {
            return None;
        }
        self.rows = 0;
        Some((self.first, std::mem::take(&mut self.bytes)))
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct Rows {
    #[prost(bytes = "vec", repeated, tag = "15")]
    rows: Vec<Vec<u8>>,
}

/// The records stored under `key`: `(seq, encoded record)` in order. A value that is not a
/// block (a bare record of layout 3, or damaged bytes) is one record at `key`, so a damaged
/// value is reported by the record decoder with its seq, never skipped.
pub(super) fn rows(key: u64, value: &[u8]) -> Vec<(u64, Cow<'_, [u8]>)> {
    match <Rows as prost::Message>::decode(value) {
        Ok(block) if !block.rows.is_empty() => {
            let mut out = Vec::with_capacity(block.rows.len());
            for (i, row) in block.rows.into_iter().enumerate() {
                match u64::try_from(i).ok().and_then(|i| key.checked_add(i)) {
                    Some(seq) => out.push((seq, Cow::Owned(row))),
                    // Past the seq space: the value is damaged; report it whole.
                    None => return vec![(key, Cow::Borrowed(value))],
                }
            }
            out
        }
        _ => vec![(key, Cow::Borrowed(value))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(first: u64, rows: &[&[u8]]) -> (u64, Vec<u8>) {
        let mut b = Block::default();
        for (i, r) in rows.iter().enumerate() {
            b.push(first + i as u64, r);
        }
        b.take().expect("rows were pushed")
    }

    #[test]
    fn a_block_gives_back_its_rows_with_consecutive_seqs() {
        let (key, bytes) = filled(41, &[b"one", b"", b"three"]);
        assert_eq!(key, 41);
        let got: Vec<(u64, Vec<u8>)> = rows(key, &bytes)
            .into_iter()
            .map(|(s, r)| (s, r.into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (41, b"one".to_vec()),
                (42, Vec::new()),
                (43, b"three".to_vec())
            ]
        );
    }

    #[test]
    fn a_bare_record_of_layout_3_is_a_block_of_one() {
        let bare = crate::store::encode_audit_row(&crate::audit::AuditRecordRow::chained(
            7,
            crate::audit::GENESIS_HASH,
            &crate::audit::AuditEvent::published("m-1", "by alice"),
        ));
        let got = rows(7, &bare);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 7);
        assert_eq!(got[0].1.as_ref(), bare.as_slice());
    }

    #[test]
    fn damaged_bytes_are_one_record_at_the_key_not_nothing() {
        for damaged in [&[0xff, 0xff, 0xff][..], &[][..], &[0x7a, 0x05, 0x01][..]] {
            let got = rows(9, damaged);
            assert_eq!(got.len(), 1, "{damaged:?}");
            assert_eq!(got[0].0, 9);
            assert_eq!(got[0].1.as_ref(), damaged);
        }
    }

    #[test]
    fn a_block_whose_seqs_would_pass_the_seq_space_is_reported_whole() {
        let (_, bytes) = filled(1, &[b"a", b"b"]);
        let got = rows(u64::MAX, &bytes);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, u64::MAX);
        assert_eq!(got[0].1.as_ref(), bytes.as_slice());
    }

    #[test]
    fn a_block_is_full_at_the_cap_and_empty_after_take() {
        let mut b = Block::default();
        assert!(b.take().is_none(), "an empty block writes nothing");
        for i in 0..MAX_RECORDS as u64 {
            assert!(!b.full(), "full after {i} rows");
            b.push(100 + i, b"r");
        }
        assert!(b.full());
        let (key, bytes) = b.take().expect("rows");
        assert_eq!(key, 100);
        assert_eq!(rows(key, &bytes).len(), MAX_RECORDS);
        assert!(!b.full());
        assert!(b.take().is_none());
        b.push(500, b"next");
        assert_eq!(
            b.take().map(|(k, _)| k),
            Some(500),
            "the next block starts anew"
        );
    }
}
