//! Audit records in blocks: the records one write transaction appends are stored as one
//! value of the `audit` table, under the seq of the first, instead of one value each.
//!
//! Owns: the block encoding ([`Block`], [`rows`]). The records inside are unchanged: each is
//! an encoded `AuditDisk` with its own seq (the block's key plus its position) and its own
//! chain hash, so verification, export and the head are exactly as before.
//!
//! Why: a publish to four peers appends five records (published, then four deliveries), and
//! each was a B-tree insert of its own. In redb an insert costs its path of pages, so the
//! records cost ~9 % of the fan-out's CPU (BENCHMARKS.md, issue #12, "Audit records and the
//! outbox in blocks"). One insert per [`MAX_RECORDS`] records of a transaction keeps the cost
//! per commit.
//!
//! A store written before blocks (layout 3) holds one bare encoded record per value. Such a
//! value is read as a block of one, so no migration is needed: a bare record starts with the
//! tag of one of its fields 1 to 9, a block with field [`ROWS_TAG`]'s. A block is parsed
//! strictly; a value damaged so that it no longer starts like a block reads as one bare
//! record, and the chain check (`bluewire audit verify`) reports it and the records missing
//! after it.
//!
//! It must never: drop or reorder a record, or give a record another record's seq.

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

/// One record of a block: its seq and its encoded bytes.
pub(super) type Row<'a> = (u64, &'a [u8]);

/// The first byte of a block: the key of field [`ROWS_TAG`], length-delimited (15 << 3 | 2).
/// A bare record starts with the key of one of its fields 1 to 9, or is empty.
const BLOCK_TAG_BYTE: u8 = 0x7a;

/// The records stored under `key`: `(seq, encoded record)` in order. A value that does not
/// start like a block is one bare record at `key` (layout 3); a damaged bare record fails
/// when it is decoded, and a damaged one that still decodes fails the chain check. A value
/// that starts like a block must be one exactly: `Err` says where it is not.
pub(super) fn rows(key: u64, value: &[u8]) -> Result<Vec<Row<'_>>, String> {
    if value.first() != Some(&BLOCK_TAG_BYTE) {
        return Ok(vec![(key, value)]);
    }
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let at = value.len() - rest.len();
        if rest[0] != BLOCK_TAG_BYTE {
            return Err(format!("byte {at} is not a record tag"));
        }
        rest = &rest[1..];
        let len = prost::encoding::decode_varint(&mut rest)
            .map_err(|e| format!("record length at byte {at}: {e}"))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or_else(|| format!("record at byte {at} runs past the end of the block"))?;
        let seq = u64::try_from(out.len())
            .ok()
            .and_then(|i| key.checked_add(i))
            .ok_or_else(|| "the block's seqs pass the seq space".to_string())?;
        out.push((seq, &rest[..len]));
        rest = &rest[len..];
    }
    Ok(out)
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
    fn every_row_starts_with_the_block_tag_byte() {
        let (_, bytes) = filled(1, &[b"x", b"yy"]);
        assert_eq!(
            bytes,
            [BLOCK_TAG_BYTE, 1, b'x', BLOCK_TAG_BYTE, 2, b'y', b'y']
        );
    }

    #[test]
    fn a_block_gives_back_its_rows_with_consecutive_seqs() {
        let (key, bytes) = filled(41, &[b"one", b"", b"three"]);
        assert_eq!(key, 41);
        let got: Vec<(u64, Vec<u8>)> = rows(key, &bytes)
            .unwrap()
            .into_iter()
            .map(|(s, r)| (s, r.to_vec()))
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
        let got = rows(7, &bare).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 7);
        assert_eq!(got[0].1, bare.as_slice());
    }

    #[test]
    fn bytes_that_are_not_a_block_are_one_record_at_the_key() {
        for bare in [&[0xff, 0xff, 0xff][..], &[][..], &[0x08, 0x01][..]] {
            let got = rows(9, bare).unwrap();
            assert_eq!(got.len(), 1, "{bare:?}");
            assert_eq!(got[0].0, 9);
            assert_eq!(got[0].1, bare);
        }
    }

    #[test]
    fn a_damaged_block_is_refused_with_where() {
        let (_, good) = filled(1, &[b"one", b"two", b"three"]);
        assert_eq!(rows(1, &good).unwrap().len(), 3);
        // The second record's tag changed (to field 14): not skipped, refused.
        let mut other_field = good.clone();
        other_field[5] = 0x72;
        assert!(rows(1, &other_field).unwrap_err().contains("byte 5"));
        // Cut short inside the last record.
        let cut = &good[..good.len() - 1];
        assert!(rows(1, cut).unwrap_err().contains("past the end"));
        // A length varint that never ends.
        assert!(rows(1, &[0x7a, 0x80]).unwrap_err().contains("length"));
    }

    #[test]
    fn a_block_whose_seqs_would_pass_the_seq_space_is_refused() {
        let (_, bytes) = filled(1, &[b"a", b"b"]);
        assert!(rows(u64::MAX, &bytes).unwrap_err().contains("seq space"));
        assert_eq!(rows(u64::MAX - 1, &bytes).unwrap().len(), 2);
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
        assert_eq!(rows(key, &bytes).unwrap().len(), MAX_RECORDS);
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
