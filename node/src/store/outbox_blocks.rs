//! The outbox in blocks: the seqs queued for a peer are stored as runs, one value per run,
//! instead of one row per (peer, seq).
//!
//! Owns: the block encoding ([`encode`], [`decode`]) and the rules that keep blocks apart.
//! A block is stored under (peer, its smallest seq) and lists its seqs in ascending order as
//! varint gaps (the first gap is 0). Blocks of one peer never overlap: every seq of a block
//! is below the next block's key. So the block that may hold a seq is the last one keyed at
//! or below it.
//!
//! Why: a publish to four peers queued four rows and its delivery removed four more, each a
//! B-tree operation with its path of pages; the outbox was over a quarter of the origin's
//! store writer (BENCHMARKS.md, issue #12, "Audit records and the outbox in blocks"). Now the
//! messages a write transaction queues for a peer are one insert, and a delivered batch is
//! one rewrite or removal per block.
//!
//! It must never: lose or invent a seq, or return a peer's seqs out of order.

use super::kv::ReadableTable;

use super::tables::Tables;
use super::{Result, db_err};

/// The most seqs in one block, so rewriting a block after an ack stays small.
pub(super) const MAX_SEQS: usize = 1024;

/// The block of `peer` that may hold `seq` (the last keyed at or below it), decoded.
pub(super) fn holding(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    peer: &str,
    seq: u64,
) -> Result<Option<(u64, Vec<u64>)>> {
    match t
        .range((peer, 0u64)..=(peer, seq))
        .map_err(db_err("scan outbox"))?
        .next_back()
    {
        None => Ok(None),
        Some(entry) => {
            let (k, v) = entry.map_err(db_err("scan outbox"))?;
            let key = k.value().1;
            Ok(Some((key, decode_at(peer, key, v.value())?)))
        }
    }
}

/// Where a scan for `peer`'s seqs from `seq` on starts: the key of the block that may hold
/// `seq` (the last keyed at or below it, looked for from key `from` on), or `seq` itself.
/// Decodes nothing.
pub(super) fn scan_start(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    peer: &str,
    from: u64,
    seq: u64,
) -> Result<u64> {
    match t
        .range((peer, from)..=(peer, seq))
        .map_err(db_err("scan outbox"))?
        .next_back()
    {
        None => Ok(seq),
        Some(entry) => Ok(entry.map_err(db_err("scan outbox"))?.0.value().1),
    }
}

/// [`decode`], a damaged block being [`StoreError::Corrupt`](super::StoreError::Corrupt).
pub(super) fn decode_at(peer: &str, key: u64, bytes: &[u8]) -> Result<Vec<u64>> {
    decode(key, bytes).map_err(|why| super::corrupt("outbox", format!("{peer}/{key}"), why))
}

impl Tables<'_> {
    /// Queues `seq`, a message stored in this transaction, for `peer`. It is above every seq
    /// stored before, so it goes into the block this transaction writes for `peer`
    /// ([`Tables::write_outbox`]). Returns whether it was not queued already.
    pub(super) fn queue_new(&mut self, peer: &str, seq: u64) -> bool {
        match self.outbox_new.iter_mut().find(|(p, _)| p == peer) {
            Some((_, seqs)) if seqs.last() == Some(&seq) => false,
            Some((_, seqs)) => {
                seqs.push(seq);
                true
            }
            None => {
                self.outbox_new.push((peer.to_string(), vec![seq]));
                true
            }
        }
    }

    /// Writes the seqs queued by [`Tables::queue_new`] as blocks: one insert per peer (per
    /// [`MAX_SEQS`]). Runs before an op that may touch those seqs (an enqueue or a drop; an
    /// ack names only committed seqs) and before commit.
    pub(super) fn write_outbox(&mut self) -> Result<()> {
        for (peer, seqs) in std::mem::take(&mut self.outbox_new) {
            self.put_blocks(&peer, &seqs)?;
        }
        Ok(())
    }

    /// Stores `seqs` (ascending, none of them in another block of `peer`'s, and no block
    /// keyed inside their range) as blocks of up to [`MAX_SEQS`], each under its first seq.
    pub(super) fn put_blocks(&mut self, peer: &str, seqs: &[u64]) -> Result<()> {
        for run in seqs.chunks(MAX_SEQS) {
            self.outbox
                .insert((peer, run[0]), encode(run).as_slice())
                .map_err(db_err("queue outbox entry"))?;
        }
        Ok(())
    }

    /// Queues a stored message's `seq` for `peer`, wherever it falls among the queued ones.
    /// Returns whether it was not queued already.
    pub(super) fn queue_seq(&mut self, peer: &str, seq: u64) -> Result<bool> {
        let held = holding(&self.outbox, peer, seq)?;
        match held.map(|(key, held)| (key, held.binary_search(&seq), held)) {
            Some((_, Ok(_), _)) => Ok(false),
            // Inside a block's range (a seq above it follows): it joins that block.
            Some((key, Err(at), mut held)) if at < held.len() => {
                held.insert(at, seq);
                self.rewrite_block(peer, key, &held)?;
                Ok(true)
            }
            // Between blocks (or before the first): a block of its own.
            _ => {
                self.put_blocks(peer, &[seq])?;
                Ok(true)
            }
        }
    }

    /// Removes `seqs` from `peer`'s outbox; returns how many were queued.
    pub(super) fn unqueue(&mut self, peer: &str, seqs: &[u64]) -> Result<u64> {
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let mut removed = 0u64;
        let mut i = 0;
        while let Some(&s) = seqs.get(i) {
            let Some((key, held)) = holding(&self.outbox, peer, s)? else {
                i += 1;
                continue;
            };
            let last = held.last().copied().unwrap_or(key);
            // The seqs asked for that fall in this block's range.
            let end = i + seqs[i..].partition_point(|&x| x <= last);
            if end == i {
                i += 1;
                continue;
            }
            let gone = &seqs[i..end];
            let kept: Vec<u64> = held
                .iter()
                .copied()
                .filter(|x| gone.binary_search(x).is_err())
                .collect();
            removed += (held.len() - kept.len()) as u64;
            if kept.len() != held.len() {
                self.rewrite_block(peer, key, &kept)?;
            }
            i = end;
        }
        Ok(removed)
    }

    /// Removes everything queued for `peer`, damaged blocks too (dropping is the way out of
    /// one); returns how many seqs the readable blocks held.
    pub(super) fn unqueue_all(&mut self, peer: &str) -> Result<u64> {
        let mut blocks = Vec::new();
        for entry in self
            .outbox
            .range((peer, 0u64)..=(peer, u64::MAX))
            .map_err(db_err("drop outbox"))?
        {
            let (k, v) = entry.map_err(db_err("drop outbox"))?;
            let key = k.value().1;
            let n = match decode(key, v.value()) {
                Ok(seqs) => seqs.len() as u64,
                Err(why) => {
                    tracing::warn!(peer, key, %why, "dropping a damaged outbox block");
                    0
                }
            };
            blocks.push((key, n));
        }
        let mut dropped = 0;
        for (key, n) in blocks {
            self.outbox
                .remove((peer, key))
                .map_err(db_err("drop outbox"))?;
            dropped += n;
        }
        Ok(dropped)
    }

    /// Stores `seqs` (ascending) as the block that was under `key`: re-keyed at its new
    /// smallest seq, split when over [`MAX_SEQS`], removed when empty.
    fn rewrite_block(&mut self, peer: &str, key: u64, seqs: &[u64]) -> Result<()> {
        if seqs.first() != Some(&key) {
            self.outbox
                .remove((peer, key))
                .map_err(db_err("rewrite outbox"))?;
        }
        self.put_blocks(peer, seqs)
    }
}

/// `seqs`, ascending and distinct, as a block value (its key is `seqs[0]`).
pub(super) fn encode(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seqs.len() * 2);
    let mut prev = seqs.first().copied().unwrap_or(0);
    for &s in seqs {
        prost::encoding::encode_varint(s - prev, &mut out);
        prev = s;
    }
    out
}

/// The seqs of the block stored under `key`. `Err` says what is wrong with a damaged value.
pub(super) fn decode(key: u64, mut bytes: &[u8]) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    let mut prev = key;
    while !bytes.is_empty() {
        let gap = prost::encoding::decode_varint(&mut bytes)
            .map_err(|e| format!("bad gap after seq {prev}: {e}"))?;
        if out.is_empty() && gap != 0 {
            return Err(format!("first seq is not the key {key}"));
        }
        if !out.is_empty() && gap == 0 {
            return Err(format!("seq {prev} is listed twice"));
        }
        let seq = prev
            .checked_add(gap)
            .ok_or_else(|| format!("seq past the seq space after {prev}"))?;
        out.push(seq);
        prev = seq;
        if out.len() > MAX_SEQS {
            return Err(format!("more than {MAX_SEQS} seqs"));
        }
    }
    if out.is_empty() {
        return Err("an empty block".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_round_trip() {
        for seqs in [
            vec![7],
            vec![1, 2, 3, 4],
            vec![5, 9, 300, 301, 70_000, u64::MAX],
        ] {
            let bytes = encode(&seqs);
            assert_eq!(decode(seqs[0], &bytes).unwrap(), seqs, "{seqs:?}");
        }
        // Consecutive seqs cost a byte each.
        assert_eq!(encode(&(100..200).collect::<Vec<_>>()).len(), 100);
    }

    #[test]
    fn a_full_block_decodes_and_a_longer_one_does_not() {
        let full: Vec<u64> = (1..=MAX_SEQS as u64).collect();
        assert_eq!(decode(1, &encode(&full)).unwrap(), full);
        let over: Vec<u64> = (1..=MAX_SEQS as u64 + 1).collect();
        assert!(decode(1, &encode(&over)).unwrap_err().contains("more than"));
    }

    #[test]
    fn damaged_blocks_are_refused_with_the_reason() {
        assert!(decode(3, &[]).unwrap_err().contains("empty"));
        // Keyed at 3, but the first seq would be 4.
        assert!(decode(3, &[1]).unwrap_err().contains("not the key"));
        // 3, then 3 again.
        assert!(decode(3, &[0, 0]).unwrap_err().contains("twice"));
        // A varint cut short.
        assert!(decode(3, &[0, 0x80]).unwrap_err().contains("bad gap"));
        // Past u64::MAX.
        assert!(decode(u64::MAX, &[0, 1]).unwrap_err().contains("seq space"));
    }
}
