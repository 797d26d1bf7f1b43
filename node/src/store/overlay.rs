//! What the journal holds and redb does not have yet, as reads see it: each commit's writes as
//! a sorted run of its own, looked up newest first and merged over what redb returns, and
//! dropped whole once redb has taken it.
//!
//! Owns: [`Overlay`] (the runs, cheap to snapshot), point lookups and ranges over it, and
//! [`Merge`], a range of redb's entries with the overlay's over them.
//!
//! It must never: order a table's keys other than by the table's own comparison (redb's, for
//! the key type), so a merged range is in the order redb's alone would be; let an older run's
//! write show through a newer run's write of the same key; return a key a newer run removed.
//! Pure: no I/O, no clock, no locks (the caller holds the current [`Overlay`] behind one).

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

/// A table's order on encoded keys (`kv::Key::order`: redb's order for the table's key type).
pub(super) type Cmp = fn(&[u8], &[u8]) -> Ordering;

/// An entry as the overlay holds it: the encoded key, and the encoded value or `None` for a
/// removal.
pub(super) type Entry = (Bytes, Option<Bytes>);

/// One commit's writes to one table: one entry per key, sorted by `cmp`.
#[derive(Debug)]
struct TableRun {
    table: &'static str,
    cmp: Cmp,
    entries: Vec<Entry>,
}

/// One commit's writes.
#[derive(Debug)]
pub(super) struct Run {
    commit: u64,
    tables: Vec<TableRun>,
    /// The size of the commit's journal frame (what the overlay's memory is measured by).
    bytes: usize,
}

impl Run {
    /// The writes of commit `commit`, table by table, in the order they were made (a later
    /// write of the same key wins).
    pub(super) fn new(
        commit: u64,
        tables: impl IntoIterator<Item = (&'static str, Cmp, Vec<Entry>)>,
    ) -> Self {
        let tables = tables
            .into_iter()
            .filter(|(_, _, e)| !e.is_empty())
            .map(|(table, cmp, mut entries)| {
                // Stable: among equal keys the later write stays last; keep only it.
                entries.sort_by(|a, b| cmp(&a.0, &b.0));
                let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
                for e in entries {
                    match kept.last_mut() {
                        Some(last) if cmp(&last.0, &e.0) == Ordering::Equal => *last = e,
                        _ => kept.push(e),
                    }
                }
                TableRun {
                    table,
                    cmp,
                    entries: kept,
                }
            })
            .collect();
        Self {
            commit,
            tables,
            bytes: 0,
        }
    }

    /// The run, sized as its journal frame.
    pub(super) fn with_bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn commit(&self) -> u64 {
        self.commit
    }

    /// Every write of the run, table by table, each table's in key order.
    pub(super) fn writes(&self) -> impl Iterator<Item = (&'static str, &Entry)> {
        self.tables
            .iter()
            .flat_map(|t| t.entries.iter().map(move |e| (t.table, e)))
    }

    fn table(&self, table: &str) -> Option<&TableRun> {
        self.tables.iter().find(|t| t.table == table)
    }
}

fn above_lo(cmp: Cmp, key: &[u8], lo: Bound<&[u8]>) -> bool {
    match lo {
        Bound::Included(b) => cmp(key, b) != Ordering::Less,
        Bound::Excluded(b) => cmp(key, b) == Ordering::Greater,
        Bound::Unbounded => true,
    }
}

fn below_hi(cmp: Cmp, key: &[u8], hi: Bound<&[u8]>) -> bool {
    match hi {
        Bound::Included(b) => cmp(key, b) != Ordering::Greater,
        Bound::Excluded(b) => cmp(key, b) == Ordering::Less,
        Bound::Unbounded => true,
    }
}

/// Whether no key can lie between `lo` and `hi` (redb panics on a range whose start is past
/// its end; such a range is empty here).
pub(super) fn empty_range(cmp: Cmp, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(z)) => cmp(a, z) == Ordering::Greater,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(z))
        | (Bound::Excluded(a), Bound::Included(z)) => cmp(a, z) != Ordering::Less,
        _ => false,
    }
}

/// The commits written and not yet applied, oldest first. Cloning is one reference count, so
/// a read takes a snapshot and keeps it for as long as it reads.
#[derive(Debug, Clone, Default)]
pub(super) struct Overlay {
    runs: Arc<Vec<Arc<Run>>>,
}

impl Overlay {
    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs, oldest first.
    pub(super) fn runs(&self) -> &[Arc<Run>] {
        &self.runs
    }

    /// This overlay with `run` on top. Commits must come in increasing order.
    pub(super) fn with(&self, run: Run) -> Self {
        debug_assert!(self.runs.last().is_none_or(|r| r.commit < run.commit));
        let mut runs = Vec::with_capacity(self.runs.len() + 1);
        runs.extend(self.runs.iter().cloned());
        runs.push(Arc::new(run));
        Self {
            runs: Arc::new(runs),
        }
    }

    /// This overlay without the commits up to and including `commit` (redb has taken them).
    pub(super) fn without_upto(&self, commit: u64) -> Self {
        Self {
            runs: Arc::new(
                self.runs
                    .iter()
                    .filter(|r| r.commit > commit)
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// The newest write of `key` in `table`: `Some(Some(value))`, `Some(None)` if it was
    /// removed, `None` if no run wrote it (redb has the answer).
    pub(super) fn get(&self, table: &str, key: &[u8]) -> Option<Option<Bytes>> {
        self.runs.iter().rev().find_map(|run| {
            let t = run.table(table)?;
            t.entries
                .binary_search_by(|e| (t.cmp)(&e.0, key))
                .ok()
                .map(|i| t.entries[i].1.clone())
        })
    }

    /// The newest write of every key of `table` between `lo` and `hi`, in the table's order,
    /// removals included (they hide what redb holds).
    pub(super) fn range(&self, table: &str, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<Entry> {
        let mut found: Vec<(usize, &Entry)> = Vec::new();
        let mut cmp = None;
        for (age, run) in self.runs.iter().rev().enumerate() {
            let Some(t) = run.table(table) else { continue };
            cmp = Some(t.cmp);
            if empty_range(t.cmp, lo, hi) {
                return Vec::new();
            }
            let start = t.entries.partition_point(|e| !above_lo(t.cmp, &e.0, lo));
            found.extend(
                t.entries[start..]
                    .iter()
                    .take_while(|e| below_hi(t.cmp, &e.0, hi))
                    .map(|e| (age, e)),
            );
        }
        let Some(cmp) = cmp else {
            return Vec::new();
        };
        // In key order, the newest (lowest age) first among equal keys; keep only it.
        found.sort_by(|a, b| cmp(&a.1.0, &b.1.0).then(a.0.cmp(&b.0)));
        let mut out: Vec<Entry> = Vec::with_capacity(found.len());
        for (_, e) in found {
            if out
                .last()
                .is_none_or(|last| cmp(&last.0, &e.0) != Ordering::Equal)
            {
                out.push(e.clone());
            }
        }
        out
    }
}

/// An entry a [`Merge`] returns: redb's, or the overlay's.
#[derive(Debug)]
pub(super) enum Merged<B> {
    Base(B),
    Mem(Bytes, Bytes),
}

/// What [`Merge`] needs of redb's entries: the encoded key.
pub(super) trait Keyed {
    fn key(&self) -> &[u8];
}

/// A range of redb's entries (`base`, in the table's order) with the overlay's range over
/// them: an overlay entry replaces redb's entry of the same key, a removal hides it. Walks
/// from either end, as redb's ranges do.
pub(super) struct Merge<I, B, E> {
    base: I,
    cmp: Cmp,
    /// An entry taken from redb at each end and not yet given out.
    front: Option<Result<B, E>>,
    back: Option<Result<B, E>>,
    pending: VecDeque<Entry>,
}

impl<I, B, E> Merge<I, B, E>
where
    I: DoubleEndedIterator<Item = Result<B, E>>,
    B: Keyed,
{
    pub(super) fn new(base: I, cmp: Cmp, pending: Vec<Entry>) -> Self {
        Self {
            base,
            cmp,
            front: None,
            back: None,
            pending: pending.into(),
        }
    }
}

impl<I, B, E> Iterator for Merge<I, B, E>
where
    I: DoubleEndedIterator<Item = Result<B, E>>,
    B: Keyed,
{
    type Item = Result<Merged<B>, E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.front.is_none() {
                self.front = self.base.next().or_else(|| self.back.take());
            }
            let order = match (self.pending.front(), &self.front) {
                (None, _) => return self.front.take().map(|r| r.map(Merged::Base)),
                (Some(_), None) => Ordering::Less,
                (Some(_), Some(Err(_))) => return self.front.take().map(|r| r.map(Merged::Base)),
                (Some(p), Some(Ok(b))) => (self.cmp)(&p.0, b.key()),
            };
            if order == Ordering::Greater {
                return self.front.take().map(|r| r.map(Merged::Base));
            }
            if order == Ordering::Equal {
                self.front = None;
            }
            let (k, v) = self.pending.pop_front()?;
            if let Some(v) = v {
                return Some(Ok(Merged::Mem(k, v)));
            }
        }
    }
}

impl<I, B, E> DoubleEndedIterator for Merge<I, B, E>
where
    I: DoubleEndedIterator<Item = Result<B, E>>,
    B: Keyed,
{
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            if self.back.is_none() {
                self.back = self.base.next_back().or_else(|| self.front.take());
            }
            let order = match (self.pending.back(), &self.back) {
                (None, _) => return self.back.take().map(|r| r.map(Merged::Base)),
                (Some(_), None) => Ordering::Greater,
                (Some(_), Some(Err(_))) => return self.back.take().map(|r| r.map(Merged::Base)),
                (Some(p), Some(Ok(b))) => (self.cmp)(&p.0, b.key()),
            };
            if order == Ordering::Less {
                return self.back.take().map(|r| r.map(Merged::Base));
            }
            if order == Ordering::Equal {
                self.back = None;
            }
            let (k, v) = self.pending.pop_back()?;
            if let Some(v) = v {
                return Some(Ok(Merged::Mem(k, v)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Keys as redb orders a u64: little-endian bytes compared as numbers.
    fn by_u64(a: &[u8], b: &[u8]) -> Ordering {
        let n = |x: &[u8]| u64::from_le_bytes(x.try_into().unwrap_or([0; 8]));
        n(a).cmp(&n(b))
    }

    fn k(n: u64) -> Bytes {
        Bytes::copy_from_slice(&n.to_le_bytes())
    }

    fn v(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn run(commit: u64, table: &'static str, writes: &[(u64, Option<&str>)]) -> Run {
        Run::new(
            commit,
            [(
                table,
                by_u64 as Cmp,
                writes
                    .iter()
                    .map(|(key, val)| (k(*key), val.and_then(v)))
                    .collect(),
            )],
        )
    }

    #[derive(Debug, PartialEq)]
    struct B(Bytes, &'static str);

    impl Keyed for B {
        fn key(&self) -> &[u8] {
            &self.0
        }
    }

    fn merged(
        o: &Overlay,
        base: &[(u64, &'static str)],
        lo: Bound<u64>,
        hi: Bound<u64>,
    ) -> Vec<(u64, String)> {
        walk(o, base, lo, hi, false)
    }

    /// The merged range, walked forwards, or backwards and put back in key order.
    fn walk(
        o: &Overlay,
        base: &[(u64, &'static str)],
        lo: Bound<u64>,
        hi: Bound<u64>,
        backwards: bool,
    ) -> Vec<(u64, String)> {
        let (lo_b, hi_b) = (lo.map(k), hi.map(k));
        let base: Vec<Result<B, ()>> = base
            .iter()
            .filter(|(key, _)| std::ops::RangeBounds::contains(&(lo, hi), key))
            .map(|(key, val)| Ok(B(k(*key), val)))
            .collect();
        let pending = o.range(
            "t",
            lo_b.as_ref().map(|b| b.as_ref()),
            hi_b.as_ref().map(|b| b.as_ref()),
        );
        let m = Merge::new(base.into_iter(), by_u64, pending);
        let entries: Vec<_> = if backwards {
            let mut v: Vec<_> = m.rev().collect();
            v.reverse();
            v
        } else {
            m.collect()
        };
        entries
            .into_iter()
            .map(|e| match e.unwrap() {
                Merged::Base(B(key, val)) => (
                    u64::from_le_bytes(key.as_ref().try_into().unwrap()),
                    val.to_string(),
                ),
                Merged::Mem(key, val) => (
                    u64::from_le_bytes(key.as_ref().try_into().unwrap()),
                    String::from_utf8(val.to_vec()).unwrap(),
                ),
            })
            .collect()
    }

    #[test]
    fn the_newest_write_of_a_key_wins_and_a_removal_hides_it() {
        let o = Overlay::default()
            .with(run(
                1,
                "t",
                &[(1, Some("a1")), (2, Some("b1")), (300, Some("c1"))],
            ))
            .with(run(2, "t", &[(2, None), (1, Some("a2"))]))
            .with(run(3, "u", &[(1, Some("other table"))]));
        assert_eq!(o.get("t", &k(1)), Some(v("a2")));
        assert_eq!(o.get("t", &k(2)), Some(None));
        assert_eq!(o.get("t", &k(300)), Some(v("c1")));
        assert_eq!(o.get("t", &k(4)), None);
        assert_eq!(o.get("u", &k(1)), Some(v("other table")));
        assert_eq!(o.get("v", &k(1)), None);
        // In the table's order (300 after 2, though its first byte is smaller).
        let all = o.range("t", Bound::Unbounded, Bound::Unbounded);
        assert_eq!(all, vec![(k(1), v("a2")), (k(2), None), (k(300), v("c1"))]);
        // Within one commit, the later write of a key wins.
        let o = Overlay::default().with(run(1, "t", &[(5, Some("x")), (5, None), (5, Some("y"))]));
        assert_eq!(o.get("t", &k(5)), Some(v("y")));
        assert_eq!(
            o.range("t", Bound::Unbounded, Bound::Unbounded),
            vec![(k(5), v("y"))]
        );
    }

    #[test]
    fn applied_commits_drop_out_whole_and_snapshots_keep_what_they_saw() {
        let o = Overlay::default()
            .with(run(1, "t", &[(1, Some("a1"))]))
            .with(run(2, "t", &[(2, Some("b2"))]));
        let snapshot = o.clone();
        let o = o.without_upto(1);
        assert_eq!(o.get("t", &k(1)), None, "redb has commit 1 now");
        assert_eq!(o.get("t", &k(2)), Some(v("b2")));
        assert_eq!(snapshot.get("t", &k(1)), Some(v("a1")));
        assert_eq!(o.runs().len(), 1);
        assert_eq!(o.runs()[0].commit(), 2);
        assert!(o.without_upto(2).is_empty());
        assert!(!o.is_empty());
        let writes: Vec<_> = snapshot.runs()[0]
            .writes()
            .map(|(t, e)| (t, e.clone()))
            .collect();
        assert_eq!(writes, vec![("t", (k(1), v("a1")))]);
    }

    #[test]
    fn a_range_merges_the_overlay_over_redb_from_either_end() {
        let o = Overlay::default()
            .with(run(
                1,
                "t",
                &[(2, Some("two")), (4, None), (7, Some("seven"))],
            ))
            .with(run(2, "t", &[(9, Some("nine")), (1, None)]));
        let base = [(1, "b1"), (3, "b3"), (4, "b4"), (6, "b6"), (7, "b7")];
        let want: Vec<(u64, String)> =
            [(2, "two"), (3, "b3"), (6, "b6"), (7, "seven"), (9, "nine")]
                .iter()
                .map(|(a, b)| (*a, b.to_string()))
                .collect();
        assert_eq!(merged(&o, &base, Bound::Unbounded, Bound::Unbounded), want);
        assert_eq!(
            merged(&o, &base, Bound::Included(3), Bound::Excluded(9)),
            want[1..4].to_vec()
        );
        assert_eq!(
            merged(&o, &base, Bound::Excluded(2), Bound::Included(7)),
            want[1..4].to_vec()
        );
        // Backwards, and from both ends at once.
        let pending = o.range("t", Bound::Unbounded, Bound::Unbounded);
        let base_entries: Vec<Result<B, ()>> =
            base.iter().map(|(key, val)| Ok(B(k(*key), val))).collect();
        let mut m = Merge::new(base_entries.into_iter(), by_u64, pending);
        let key = |e: Option<Result<Merged<B>, ()>>| match e.unwrap().unwrap() {
            Merged::Base(B(key, _)) | Merged::Mem(key, _) => {
                u64::from_le_bytes(key.as_ref().try_into().unwrap())
            }
        };
        assert_eq!(key(m.next_back()), 9);
        assert_eq!(key(m.next()), 2);
        assert_eq!(key(m.next_back()), 7);
        assert_eq!(key(m.next()), 3);
        assert_eq!(key(m.next_back()), 6);
        assert!(m.next().is_none());
        assert!(m.next_back().is_none());
    }

    #[test]
    fn an_empty_or_reversed_range_is_empty() {
        let o = Overlay::default().with(run(1, "t", &[(1, Some("a")), (5, Some("e"))]));
        for (lo, hi) in [
            (Bound::Included(5), Bound::Included(1)),
            (Bound::Included(5), Bound::Excluded(5)),
            (Bound::Excluded(5), Bound::Included(5)),
            (Bound::Excluded(1), Bound::Excluded(1)),
        ] {
            let (lo, hi) = (lo.map(k), hi.map(k));
            let (lo, hi) = (
                lo.as_ref().map(|b| b.as_ref()),
                hi.as_ref().map(|b| b.as_ref()),
            );
            assert!(empty_range(by_u64, lo, hi));
            assert!(o.range("t", lo, hi).is_empty());
        }
        let five = k(5);
        assert!(!empty_range(
            by_u64,
            Bound::Included(&five),
            Bound::Included(&five)
        ));
        assert_eq!(
            o.range("t", Bound::Included(&five), Bound::Included(&five)),
            vec![(k(5), v("e"))]
        );
        assert!(!empty_range(
            by_u64,
            Bound::Unbounded,
            Bound::Excluded(&five)
        ));
    }

    #[test]
    fn an_error_from_redb_is_passed_on_in_place() {
        let o = Overlay::default().with(run(1, "t", &[(5, Some("e"))]));
        let base: Vec<Result<B, &str>> = vec![Ok(B(k(1), "b1")), Err("redb failed")];
        let got: Vec<_> = Merge::new(
            base.into_iter(),
            by_u64,
            o.range("t", Bound::Unbounded, Bound::Unbounded),
        )
        .map(|e| e.map(|m| matches!(m, Merged::Mem(..))))
        .collect();
        assert_eq!(got, vec![Ok(false), Err("redb failed"), Ok(true)]);
    }

    proptest! {
        /// Against a model: redb as a map, each commit applied over it in order; some commits
        /// applied to the base and dropped from the overlay; every range read forwards, and
        /// backwards, equals the model's.
        #[test]
        fn merged_reads_equal_the_commits_applied_in_order(
            base in proptest::collection::btree_map(0u64..40, 0u8..4, 0..20),
            commits in proptest::collection::vec(
                proptest::collection::vec((0u64..40, proptest::option::of(0u8..4)), 0..8), 0..6),
            applied in 0usize..7,
            lo in proptest::option::of((0u64..42, any::<bool>())),
            hi in proptest::option::of((0u64..42, any::<bool>())),
        ) {
            let name = |x: u8| ["w", "x", "y", "z"][usize::from(x)];
            let mut model: BTreeMap<u64, &'static str> = base.iter().map(|(a, b)| (*a, name(*b))).collect();
            let mut redb = model.clone();
            let mut o = Overlay::default();
            for (i, writes) in commits.iter().enumerate() {
                let writes: Vec<(u64, Option<&str>)> = writes.iter().map(|(a, b)| (*a, b.map(name))).collect();
                for (key, val) in &writes {
                    match val { Some(x) => { model.insert(*key, x); } None => { model.remove(key); } }
                }
                o = o.with(run(i as u64 + 1, "t", &writes));
            }
            // The applier takes the oldest `applied` commits into redb.
            let applied = applied.min(commits.len());
            for writes in &commits[..applied] {
                for (key, val) in writes {
                    match val { Some(x) => { redb.insert(*key, name(*x)); } None => { redb.remove(key); } }
                }
            }
            let o = o.without_upto(applied as u64);
            let bound = |b: Option<(u64, bool)>| match b {
                None => Bound::Unbounded,
                Some((x, true)) => Bound::Included(x),
                Some((x, false)) => Bound::Excluded(x),
            };
            let (lo, hi) = (bound(lo), bound(hi));
            let empty = empty_range(by_u64, lo.map(k).as_ref().map(|b| b.as_ref()), hi.map(k).as_ref().map(|b| b.as_ref()));
            let want: Vec<(u64, String)> = if empty {
                Vec::new()
            } else {
                model.range((lo, hi)).map(|(a, b)| (*a, b.to_string())).collect()
            };
            let base: Vec<(u64, &'static str)> = redb.into_iter().collect();
            let got = if empty { Vec::new() } else { merged(&o, &base, lo, hi) };
            prop_assert_eq!(&got, &want);
            let back = if empty { Vec::new() } else { walk(&o, &base, lo, hi, true) };
            prop_assert_eq!(&back, &want);
            for key in 0u64..40 {
                let expect = model.get(&key).map(|x| x.to_string());
                let from_overlay = match o.get("t", &k(key)) {
                    Some(v) => v.map(|b| String::from_utf8(b.to_vec()).unwrap()),
                    None => base.iter().find(|(a, _)| *a == key).map(|(_, b)| b.to_string()),
                };
                prop_assert_eq!(from_overlay, expect);
            }
        }
    }
}
