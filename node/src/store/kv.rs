//! The slice of redb's table API the store uses, with the journal in front of redb: a commit
//! is one frame appended to the journal ([`super::journal`]); its writes then sit in the
//! overlay ([`super::overlay`]) that every read sees over redb, until the applier takes
//! everything pending into redb in one transaction and drops it from the overlay.
//!
//! Owns: [`Database`] (replay at open, the applier, the journal's sync), transactions and
//! tables with redb's names and shapes, and [`Raw`], which opens redb's typed tables as the
//! bytes they hold, so the file is the one `main` writes and reads.
//!
//! It must never: acknowledge a commit before its frame is in the kernel (and, with
//! `always`, on disk); show a read a commit's writes in part; let a read miss a commit the
//! applier is moving (a read takes the overlay first and redb second, so it may see a commit
//! twice, never not at all); replay a commit redb already has (redb records the last commit it
//! took, in the same transaction).

use std::borrow::Borrow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub(super) use redb::Durability;
use redb::{
    Key, ReadableTable as _, ReadableTableMetadata as _, StorageError, TableError, TypeName, Value,
};

use super::journal::{self, JournalError, Segment};
use super::overlay::{Cmp, Entry, Keyed, Merge, Merged, Overlay, Run, empty_range};

/// redb's table type for `T`'s values as the bytes they are stored as: the same type name,
/// width and order as `T`, so a table defined with `T` opens as `Raw<T>` and back.
#[derive(Debug)]
pub(super) struct Raw<T>(PhantomData<T>);

impl<T: Value + 'static> Value for Raw<T> {
    type SelfType<'a>
        = &'a [u8]
    where
        Self: 'a;
    type AsBytes<'a>
        = &'a [u8]
    where
        Self: 'a;

    fn fixed_width() -> Option<usize> {
        T::fixed_width()
    }

    fn from_bytes<'a>(data: &'a [u8]) -> &'a [u8]
    where
        Self: 'a,
    {
        data
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a &'b [u8]) -> &'a [u8]
    where
        Self: 'b,
    {
        value
    }

    fn type_name() -> TypeName {
        T::type_name()
    }
}

impl<T: Key + 'static> Key for Raw<T> {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        T::compare(data1, data2)
    }
}

type RawDef<K, V> = redb::TableDefinition<'static, Raw<K>, Raw<V>>;
/// A redb table read as bytes.
type BaseTable<K, V> = redb::ReadOnlyTable<Raw<K>, Raw<V>>;

/// A table: its name and key and value types, as with redb.
pub(super) struct TableDefinition<K: Key + 'static, V: Value + 'static> {
    name: &'static str,
    _types: PhantomData<(K, V)>,
}

impl<K: Key + 'static, V: Value + 'static> Clone for TableDefinition<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: Key + 'static, V: Value + 'static> Copy for TableDefinition<K, V> {}

impl<K: Key + 'static, V: Value + 'static> TableDefinition<K, V> {
    pub(super) const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// The same table as redb's own definition, for tests that read or damage the file with
    /// the store closed.
    #[cfg(test)]
    pub(super) fn typed(&self) -> redb::TableDefinition<'static, K, V> {
        redb::TableDefinition::new(self.name)
    }

    fn raw(&self) -> RawDef<K, V> {
        redb::TableDefinition::new(self.name)
    }

    /// What the journal needs to know of the table.
    pub(super) fn spec(&self) -> Spec {
        Spec {
            name: self.name,
            cmp: K::compare,
            apply: apply_table::<K, V>,
        }
    }
}

type ApplyFn = fn(&redb::WriteTransaction, &'static str, &[Entry]) -> Result<(), StorageError>;

/// A table as the journal knows it: how its keys order, and how to write its entries into
/// redb.
#[derive(Clone, Copy)]
pub(super) struct Spec {
    name: &'static str,
    cmp: Cmp,
    apply: ApplyFn,
}

fn apply_table<K: Key + 'static, V: Value + 'static>(
    wtx: &redb::WriteTransaction,
    name: &'static str,
    entries: &[Entry],
) -> Result<(), StorageError> {
    let mut t = wtx.open_table(RawDef::<K, V>::new(name)).map_err(other)?;
    for (k, v) in entries {
        match v {
            Some(v) => {
                t.insert(k.as_ref(), v.as_ref())?;
            }
            None => {
                t.remove(k.as_ref())?;
            }
        }
    }
    Ok(())
}

/// Bytes of commits waiting for the applier past which a commit fails (the applier is
/// failing): memory stays bounded, and the writer's callers hear why.
const MAX_PENDING_BYTES: usize = 256 << 20;
/// Applies failing in a row (about a second's worth) after which commits fail too, with an
/// I/O error: the store then closes its file and opens it again, replaying the journal.
const MAX_APPLY_FAILURES: u32 = 50;

/// Where redb records the last commit it took from the journal.
const APPLIED: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("journal");
const APPLIED_KEY: &str = "applied";

fn other<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Io(std::io::Error::other(e.to_string()))
}

/// Bytes a read returns: from the overlay or the transaction's own writes, or redb's page.
enum Val<'a, T: Value + 'static> {
    Mem(Bytes),
    Page(redb::AccessGuard<'a, Raw<T>>),
}

/// A stored key or value, decoded on [`AccessGuard::value`] (as redb's guard).
pub(super) struct AccessGuard<'a, T: Value + 'static> {
    val: Val<'a, T>,
}

impl<'a, T: Value + 'static> AccessGuard<'a, T> {
    fn mem(b: Bytes) -> Self {
        Self { val: Val::Mem(b) }
    }

    fn page(g: redb::AccessGuard<'a, Raw<T>>) -> Self {
        Self { val: Val::Page(g) }
    }

    fn bytes(&self) -> &[u8] {
        match &self.val {
            Val::Mem(b) => b,
            Val::Page(g) => g.value(),
        }
    }

    pub(super) fn value(&self) -> T::SelfType<'_> {
        T::from_bytes(self.bytes())
    }
}

type Pair<'a, K, V> = (AccessGuard<'a, K>, AccessGuard<'a, V>);

impl<K: Value + 'static, V: Value + 'static> Keyed for Pair<'_, K, V> {
    fn key(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Entries of a range in key order, from either end (as redb's `Range`).
pub(super) struct Range<'a, K: Key + 'static, V: Value + 'static> {
    inner: Box<dyn DoubleEndedIterator<Item = Result<Pair<'a, K, V>, StorageError>> + 'a>,
}

impl<K: Key + 'static, V: Value + 'static> Range<'_, K, V> {
    fn empty() -> Self {
        Self {
            inner: Box::new(std::iter::empty()),
        }
    }
}

impl<'a, K: Key + 'static, V: Value + 'static> Iterator for Range<'a, K, V> {
    type Item = Result<Pair<'a, K, V>, StorageError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

impl<K: Key + 'static, V: Value + 'static> DoubleEndedIterator for Range<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back()
    }
}

fn encode_key<'a, K: Key + 'static>(k: &K::SelfType<'a>) -> Bytes {
    Bytes::copy_from_slice(K::as_bytes(k).as_ref())
}

fn encode_bound<'a, K: Key + 'static, KR: Borrow<K::SelfType<'a>>>(b: Bound<&KR>) -> Bound<Bytes> {
    b.map(|k| encode_key::<K>(k.borrow()))
}

/// A range's ends encoded; `None` when no key can lie between them.
fn encoded_bounds<'a, K: Key + 'static, KR: Borrow<K::SelfType<'a>>>(
    r: &impl RangeBounds<KR>,
) -> Option<(Bound<Bytes>, Bound<Bytes>)> {
    let lo = encode_bound::<K, KR>(r.start_bound());
    let hi = encode_bound::<K, KR>(r.end_bound());
    (!empty_range(K::compare, as_ref_bound(&lo), as_ref_bound(&hi))).then_some((lo, hi))
}

fn as_ref_bound(b: &Bound<Bytes>) -> Bound<&[u8]> {
    b.as_ref().map(|x| x.as_ref())
}

/// A range of redb's entries, `'a` as long as redb's table lives.
fn base_range<'a, K: Key + 'static, V: Value + 'static>(
    r: Result<redb::Range<'a, Raw<K>, Raw<V>>, StorageError>,
) -> Box<dyn DoubleEndedIterator<Item = Result<Pair<'a, K, V>, StorageError>> + 'a> {
    match r {
        Ok(r) => Box::new(r.map(|e| e.map(|(k, v)| (AccessGuard::page(k), AccessGuard::page(v))))),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

/// redb's entries between `lo` and `hi` with `pending` (in key order) over them.
fn merged<'a, K: Key + 'static, V: Value + 'static>(
    base: Box<dyn DoubleEndedIterator<Item = Result<Pair<'a, K, V>, StorageError>> + 'a>,
    pending: Vec<Entry>,
) -> Range<'a, K, V> {
    if pending.is_empty() {
        return Range { inner: base };
    }
    Range {
        inner: Box::new(Merge::new(base, K::compare, pending).map(|e| {
            e.map(|m| match m {
                Merged::Base(pair) => pair,
                Merged::Mem(k, v) => (AccessGuard::mem(k), AccessGuard::mem(v)),
            })
        })),
    }
}

/// Newer entries over older ones, both in key order: one entry per key, the newer's.
fn layer(cmp: Cmp, newer: Vec<Entry>, older: Vec<Entry>) -> Vec<Entry> {
    if newer.is_empty() {
        return older;
    }
    if older.is_empty() {
        return newer;
    }
    let mut out = Vec::with_capacity(newer.len() + older.len());
    let (mut a, mut b) = (newer.into_iter().peekable(), older.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => cmp(&x.0, &y.0),
        };
        match order {
            Ordering::Less => out.extend(a.next()),
            Ordering::Greater => out.extend(b.next()),
            Ordering::Equal => {
                out.extend(a.next());
                b.next();
            }
        }
    }
}

/// Read access shared by tables read alone and tables in a write transaction (redb's
/// `ReadableTable`).
pub(super) trait ReadableTable<K: Key + 'static, V: Value + 'static> {
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError>;

    fn range<'a, KR: Borrow<K::SelfType<'a>>>(
        &self,
        r: impl RangeBounds<KR>,
    ) -> Result<Range<'_, K, V>, StorageError>;

    fn iter(&self) -> Result<Range<'_, K, V>, StorageError> {
        self.range::<K::SelfType<'_>>(..)
    }

    #[allow(clippy::type_complexity)]
    fn first(&self) -> Result<Option<Pair<'_, K, V>>, StorageError> {
        self.iter()?.next().transpose()
    }

    #[allow(clippy::type_complexity)]
    fn last(&self) -> Result<Option<Pair<'_, K, V>>, StorageError> {
        self.iter()?.next_back().transpose()
    }

    fn len(&self) -> Result<u64, StorageError>;
}

/// The rows of `pending` that change how many rows redb's table `base` has.
fn len_over<K: Key + 'static, V: Value + 'static>(
    base: Option<&redb::ReadOnlyTable<Raw<K>, Raw<V>>>,
    pending: &[Entry],
) -> Result<u64, StorageError> {
    let mut n = base.map_or(Ok(0), |b| b.len())? as i64;
    for (k, v) in pending {
        let had = match base {
            Some(b) => b.get(k.as_ref())?.is_some(),
            None => false,
        };
        n += i64::from(v.is_some() && !had) - i64::from(v.is_none() && had);
    }
    Ok(n.max(0) as u64)
}

/// A table read on its own (redb's `ReadOnlyTable`).
pub(super) struct ReadOnlyTable<K: Key + 'static, V: Value + 'static> {
    name: &'static str,
    overlay: Overlay,
    base: Option<redb::ReadOnlyTable<Raw<K>, Raw<V>>>,
}

impl<K: Key + 'static, V: Value + 'static> ReadOnlyTable<K, V> {
    /// As [`ReadableTable::get`], with a guard that outlives the table (as redb's).
    pub(super) fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'static, V>>, StorageError> {
        let k = K::as_bytes(key.borrow());
        let k = k.as_ref();
        if let Some(hit) = self.overlay.get(self.name, k) {
            return Ok(hit.map(AccessGuard::mem));
        }
        match &self.base {
            Some(b) => Ok(b.get(k)?.map(AccessGuard::page)),
            None => Ok(None),
        }
    }

    /// As [`ReadableTable::range`], with entries that outlive the table (as redb's).
    pub(super) fn range<'a, KR: Borrow<K::SelfType<'a>>>(
        &self,
        r: impl RangeBounds<KR>,
    ) -> Result<Range<'static, K, V>, StorageError> {
        let Some((lo, hi)) = encoded_bounds::<K, KR>(&r) else {
            return Ok(Range::empty());
        };
        let (l, h) = (as_ref_bound(&lo), as_ref_bound(&hi));
        let pending = self.overlay.range(self.name, l, h);
        let base = match &self.base {
            Some(b) => base_range(b.range::<&[u8]>((l, h))),
            None => Box::new(std::iter::empty()),
        };
        Ok(merged(base, pending))
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTable<K, V> for ReadOnlyTable<K, V> {
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        ReadOnlyTable::get(self, key)
    }

    fn range<'a, KR: Borrow<K::SelfType<'a>>>(
        &self,
        r: impl RangeBounds<KR>,
    ) -> Result<Range<'_, K, V>, StorageError> {
        let r = ReadOnlyTable::range(self, r)?;
        // The map shortens the entries' lifetime (a boxed iterator's item type cannot be).
        #[allow(clippy::map_identity)]
        Ok(Range {
            inner: Box::new(
                r.inner
                    .map(|e| -> Result<Pair<'_, K, V>, StorageError> { e }),
            ),
        })
    }

    fn len(&self) -> Result<u64, StorageError> {
        let pending = self
            .overlay
            .range(self.name, Bound::Unbounded, Bound::Unbounded);
        len_over(self.base.as_ref(), &pending)
    }
}

/// A read: the overlay as it was, then redb's read transaction (in that order, see the
/// module's docs).
pub(super) struct ReadTransaction {
    overlay: Overlay,
    rtx: redb::ReadTransaction,
}

fn open_base<K: Key + 'static, V: Value + 'static>(
    rtx: &redb::ReadTransaction,
    def: RawDef<K, V>,
) -> Result<Option<BaseTable<K, V>>, TableError> {
    match rtx.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl ReadTransaction {
    pub(super) fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, TableError> {
        let base = open_base(&self.rtx, def.raw())?;
        if base.is_none()
            && self
                .overlay
                .range(def.name, Bound::Unbounded, Bound::Unbounded)
                .is_empty()
        {
            return Err(TableError::TableDoesNotExist(def.name.to_string()));
        }
        Ok(ReadOnlyTable {
            name: def.name,
            overlay: self.overlay.clone(),
            base,
        })
    }
}

/// A key in the order of its table.
#[derive(Clone)]
struct OrdKey {
    bytes: Bytes,
    cmp: Cmp,
}

impl PartialEq for OrdKey {
    fn eq(&self, other: &Self) -> bool {
        (self.cmp)(&self.bytes, &other.bytes) == Ordering::Equal
    }
}
impl Eq for OrdKey {}
impl PartialOrd for OrdKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.cmp)(&self.bytes, &other.bytes)
    }
}

/// A write transaction's own writes to one table.
struct Own {
    cmp: Cmp,
    writes: BTreeMap<OrdKey, Option<Bytes>>,
}

impl Own {
    fn range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<Entry> {
        let key = |b: &[u8]| OrdKey {
            bytes: Bytes::copy_from_slice(b),
            cmp: self.cmp,
        };
        self.writes
            .range((lo.map(key), hi.map(key)))
            .map(|(k, v)| (k.bytes.clone(), v.clone()))
            .collect()
    }
}

/// The tables a transaction sees (redb's handles: `TableHandle::name`).
pub(super) type TableNames<'a> = Box<dyn Iterator<Item = redb::UntypedTableHandle> + 'a>;

enum TxKind {
    /// Writes go to the journal at commit; reads see them over the overlay over redb.
    Journaled {
        overlay: Overlay,
        rtx: redb::ReadTransaction,
    },
    /// Straight into redb, for the store's opening transaction (migrations may move whole
    /// tables), while nothing is pending.
    Direct(Box<redb::WriteTransaction>),
    /// Committed or aborted.
    Done,
}

/// One write transaction at a time, as with redb.
pub(super) struct WriteTransaction {
    // Dropped in this order: redb's transaction before the database it belongs to.
    kind: TxKind,
    own: RefCell<HashMap<&'static str, Own>>,
    durability: Durability,
    db: Database,
}

impl WriteTransaction {
    pub(super) fn set_durability(&mut self, d: Durability) {
        self.durability = d;
    }

    pub(super) fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Table<'_, K, V>, TableError> {
        self.db.inner.register(def.spec());
        let kind = match &self.kind {
            TxKind::Journaled { rtx, .. } => TableKind::Journaled {
                base: open_base(rtx, def.raw())?,
            },
            TxKind::Direct(wtx) => TableKind::Direct(wtx.open_table(def.raw())?),
            TxKind::Done => {
                return Err(TableError::Storage(other("the transaction has ended")));
            }
        };
        Ok(Table {
            tx: self,
            name: def.name,
            kind,
        })
    }

    pub(super) fn list_tables(&self) -> Result<TableNames<'_>, StorageError> {
        Ok(match &self.kind {
            TxKind::Journaled { rtx, .. } => Box::new(rtx.list_tables()?),
            TxKind::Direct(wtx) => Box::new(wtx.list_tables()?),
            TxKind::Done => Box::new(std::iter::empty()),
        })
    }

    /// Drop a table: only in the opening transaction (the journal carries no table drops).
    pub(super) fn delete_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<bool, TableError> {
        match &self.kind {
            TxKind::Direct(wtx) => wtx.delete_table(def.raw()),
            TxKind::Journaled { .. } | TxKind::Done => Err(TableError::Storage(other(format!(
                "table {} can only be dropped in the store's opening transaction",
                def.name
            )))),
        }
    }

    pub(super) fn commit(mut self) -> Result<(), StorageError> {
        match std::mem::replace(&mut self.kind, TxKind::Done) {
            TxKind::Direct(mut wtx) => {
                wtx.set_durability(self.durability);
                wtx.commit().map_err(other)
            }
            TxKind::Journaled { .. } => {
                let own = std::mem::take(&mut *self.own.borrow_mut());
                if own.values().all(|o| o.writes.is_empty()) {
                    return self.db.inner.usable();
                }
                self.db
                    .inner
                    .commit(own, !matches!(self.durability, Durability::None))
            }
            TxKind::Done => Ok(()),
        }
    }

    pub(super) fn abort(mut self) -> Result<(), StorageError> {
        match std::mem::replace(&mut self.kind, TxKind::Done) {
            TxKind::Direct(wtx) => wtx.abort().map_err(other),
            TxKind::Journaled { .. } | TxKind::Done => Ok(()),
        }
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        self.db.inner.end_write();
    }
}

enum TableKind<'t, K: Key + 'static, V: Value + 'static> {
    Journaled {
        base: Option<redb::ReadOnlyTable<Raw<K>, Raw<V>>>,
    },
    Direct(redb::Table<'t, Raw<K>, Raw<V>>),
}

/// A table in a write transaction (redb's `Table`).
pub(super) struct Table<'t, K: Key + 'static, V: Value + 'static> {
    tx: &'t WriteTransaction,
    name: &'static str,
    kind: TableKind<'t, K, V>,
}

impl<K: Key + 'static, V: Value + 'static> Table<'_, K, V> {
    /// What is pending for this table under the transaction's own writes, in key order.
    fn pending(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<Entry> {
        let TxKind::Journaled { overlay, .. } = &self.tx.kind else {
            return Vec::new();
        };
        let under = overlay.range(self.name, lo, hi);
        match self.tx.own.borrow().get(self.name) {
            Some(own) => layer(K::compare, own.range(lo, hi), under),
            None => under,
        }
    }

    /// Write encoded bytes: straight into redb, or copied into the transaction's own writes.
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        match &mut self.kind {
            TableKind::Direct(t) => {
                match value {
                    Some(v) => {
                        t.insert(key, v)?;
                    }
                    None => {
                        t.remove(key)?;
                    }
                }
                Ok(())
            }
            TableKind::Journaled { .. } => {
                let cmp: Cmp = K::compare;
                self.tx
                    .own
                    .borrow_mut()
                    .entry(self.name)
                    .or_insert_with(|| Own {
                        cmp,
                        writes: BTreeMap::new(),
                    })
                    .writes
                    .insert(
                        OrdKey {
                            bytes: Bytes::copy_from_slice(key),
                            cmp,
                        },
                        value.map(Bytes::copy_from_slice),
                    );
                Ok(())
            }
        }
    }

    pub(super) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StorageError> {
        let (k, v) = (K::as_bytes(key.borrow()), V::as_bytes(value.borrow()));
        self.write(k.as_ref(), Some(v.as_ref()))
    }

    /// Remove `key`, returning what it held.
    pub(super) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'static, V>>, StorageError> {
        let k = K::as_bytes(key.borrow());
        let old = self
            .get_encoded(k.as_ref())?
            .map(|g| AccessGuard::mem(Bytes::copy_from_slice(g.bytes())));
        self.write(k.as_ref(), None)?;
        Ok(old)
    }

    fn get_encoded(&self, k: &[u8]) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        match &self.kind {
            TableKind::Direct(t) => Ok(t.get(k)?.map(AccessGuard::page)),
            TableKind::Journaled { base } => {
                if let Some(own) = self.tx.own.borrow().get(self.name) {
                    let key = OrdKey {
                        bytes: Bytes::copy_from_slice(k),
                        cmp: own.cmp,
                    };
                    if let Some(v) = own.writes.get(&key) {
                        return Ok(v.clone().map(AccessGuard::mem));
                    }
                }
                if let TxKind::Journaled { overlay, .. } = &self.tx.kind
                    && let Some(hit) = overlay.get(self.name, k)
                {
                    return Ok(hit.map(AccessGuard::mem));
                }
                match base {
                    Some(b) => Ok(b.get(k)?.map(AccessGuard::page)),
                    None => Ok(None),
                }
            }
        }
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTable<K, V> for Table<'_, K, V> {
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        self.get_encoded(K::as_bytes(key.borrow()).as_ref())
    }

    fn range<'a, KR: Borrow<K::SelfType<'a>>>(
        &self,
        r: impl RangeBounds<KR>,
    ) -> Result<Range<'_, K, V>, StorageError> {
        let Some((lo, hi)) = encoded_bounds::<K, KR>(&r) else {
            return Ok(Range::empty());
        };
        let (l, h) = (as_ref_bound(&lo), as_ref_bound(&hi));
        let base = match &self.kind {
            TableKind::Direct(t) => base_range(t.range::<&[u8]>((l, h))),
            TableKind::Journaled { base: Some(b) } => base_range(b.range::<&[u8]>((l, h))),
            TableKind::Journaled { base: None } => Box::new(std::iter::empty()),
        };
        Ok(merged(base, self.pending(l, h)))
    }

    fn len(&self) -> Result<u64, StorageError> {
        match &self.kind {
            TableKind::Direct(t) => t.len(),
            TableKind::Journaled { base } => len_over(
                base.as_ref(),
                &self.pending(Bound::Unbounded, Bound::Unbounded),
            ),
        }
    }
}

/// When the journal is synced and applied.
#[derive(Clone)]
pub(super) struct Policy {
    /// Commit through the journal. Without it every write transaction goes straight into
    /// redb (as the opening one does), and the journal is only replayed at open.
    pub journal: bool,
    /// `fdatasync` the journal in every durable commit (`[store] sync = "always"`).
    pub always: bool,
    /// Otherwise a thread syncs it this often.
    pub sync_every: Option<Duration>,
    /// How often the applier takes what is pending into redb.
    pub apply_every: Duration,
    /// A segment is closed past this size or age, and deleted once redb has taken it.
    pub rotate_bytes: u64,
    pub rotate_age: Duration,
    /// Make what redb has taken durable before a segment it covers is deleted (a real sync
    /// of redb's file where its commits do not sync; nothing where they do).
    pub sync_base: Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>,
    /// Told of a failed sync of the journal by its syncer: what was acknowledged since the
    /// last sync may be lost.
    pub on_sync_failure: Arc<dyn Fn(&std::io::Error) + Send + Sync>,
    /// Why commits must fail (a failed sync of the store, in this process), if they must.
    pub poisoned: Arc<dyn Fn() -> Option<std::io::Error> + Send + Sync>,
}

struct State {
    segment: Segment,
    opened: Instant,
    /// Closed segments, oldest first, with the last commit each holds.
    closed: Vec<(u64, u64)>,
    next_commit: u64,
    overlay: Overlay,
    /// Bytes of the frames in the overlay.
    pending_bytes: usize,
    /// Applies that failed in a row.
    apply_failures: u32,
    /// Why commits fail from now on (a failed append or sync: the journal can no longer be
    /// trusted to hold what it acknowledges).
    failed: Option<String>,
}

struct Inner {
    redb: redb::Database,
    dir: PathBuf,
    policy: Policy,
    state: Mutex<State>,
    specs: Mutex<HashMap<&'static str, Spec>>,
    /// Taken by the one write transaction in progress.
    writing: (Mutex<bool>, Condvar),
    /// One apply at a time.
    applying: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn register(&self, spec: Spec) {
        lock(&self.specs).entry(spec.name).or_insert(spec);
    }

    /// Whether commits can go on (no failed sync or append, here or of the store's file).
    fn usable(&self) -> Result<(), StorageError> {
        if let Some(e) = (self.policy.poisoned)() {
            return Err(StorageError::Io(e));
        }
        match &lock(&self.state).failed {
            Some(why) => Err(other(format!(
                "the store's journal failed earlier ({why}); the store opens its file again"
            ))),
            None => Ok(()),
        }
    }

    fn end_write(&self) {
        let (busy, cv) = &self.writing;
        *lock(busy) = false;
        cv.notify_one();
    }

    fn commit(&self, own: HashMap<&'static str, Own>, durable: bool) -> Result<(), StorageError> {
        self.usable()?;
        let mut st = lock(&self.state);
        let commit = st.next_commit;
        let mut tables: Vec<(&'static str, Cmp, Vec<Entry>)> = own
            .into_iter()
            .map(|(name, o)| {
                let entries = o.writes.into_iter().map(|(k, v)| (k.bytes, v)).collect();
                (name, o.cmp, entries)
            })
            .collect();
        tables.sort_by_key(|t| t.0);
        let frame = journal::encode_frame(
            commit,
            tables.iter().flat_map(|(name, _, entries)| {
                entries
                    .iter()
                    .map(move |(k, v)| (*name, k.as_ref(), v.as_deref()))
            }),
        );
        if st.pending_bytes >= MAX_PENDING_BYTES {
            return Err(other(format!(
                "{} MiB of commits are waiting for the store's file to take them (is it \
                 failing? see the log); retry later",
                MAX_PENDING_BYTES >> 20
            )));
        }
        // Appended under the lock (commit numbers in file order); synced outside it, so reads
        // and the applier go on meanwhile. A commit is in the overlay, and so visible, only
        // once it is as durable as asked: one write transaction at a time keeps the order.
        let synced = st.segment.append(&frame).and_then(|()| {
            if durable && self.policy.always {
                st.segment.sync_handle().map(Some)
            } else {
                Ok(None)
            }
        });
        let handle = match synced {
            Ok(h) => h,
            Err(e) => {
                st.failed = Some(e.to_string());
                return Err(other(e));
            }
        };
        st.next_commit += 1;
        if let Some(file) = handle {
            drop(st);
            if let Err(e) = file.sync_data() {
                let mut st = lock(&self.state);
                st.failed = Some(e.to_string());
                return Err(StorageError::Io(e));
            }
            st = lock(&self.state);
        }
        st.pending_bytes += frame.len();
        st.overlay = st
            .overlay
            .with(Run::new(commit, tables).with_bytes(frame.len()));
        Ok(())
    }

    /// Start a new segment when the current one is big or old enough: created (and, with
    /// `always`, synced) outside the lock; the old one synced too, so that a commit that did
    /// not ask for a sync of its own is on disk before any commit after it is.
    fn rotate(&self) {
        let (due, generation) = {
            let st = lock(&self.state);
            let due = st.failed.is_none()
                && (st.segment.len() >= self.policy.rotate_bytes
                    || st.opened.elapsed() >= self.policy.rotate_age);
            (due, st.segment.generation() + 1)
        };
        if !due {
            return;
        }
        let next = match Segment::create(&self.dir, generation, self.policy.always) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "could not start a new journal segment; appending to the current one");
                return;
            }
        };
        let mut st = lock(&self.state);
        if self.policy.always
            && let Err(e) = st.segment.sync_handle().and_then(|f| {
                f.sync_data().map_err(|source| JournalError::Io {
                    path: self.dir.clone(),
                    source,
                })
            })
        {
            st.failed = Some(e.to_string());
            return;
        }
        let last = st.next_commit - 1;
        let old = std::mem::replace(&mut st.segment, next);
        st.closed.push((old.generation(), last));
        st.opened = Instant::now();
    }

    /// Take everything pending into redb in one transaction, drop it from the overlay, and
    /// delete the segments it covers once redb's file has them on disk.
    fn apply(&self) -> Result<(), StorageError> {
        let _one = lock(&self.applying);
        if lock(&self.state).overlay.is_empty() {
            return Ok(());
        }
        self.rotate();
        let snapshot = lock(&self.state).overlay.clone();
        let Some(upto) = snapshot.runs().last().map(|r| r.commit()) else {
            return Ok(());
        };
        let specs = lock(&self.specs).clone();
        apply_runs(&self.redb, &specs, &snapshot, upto, Durability::Immediate)?;
        let covered: Vec<u64> = {
            let mut st = lock(&self.state);
            st.overlay = st.overlay.without_upto(upto);
            st.pending_bytes = st.overlay.runs().iter().map(|r| r.bytes()).sum();
            st.closed
                .iter()
                .take_while(|(_, last)| *last <= upto)
                .map(|(g, _)| *g)
                .collect()
        };
        if let Some(&newest) = covered.last() {
            if let Err(e) = (self.policy.sync_base)() {
                (self.policy.on_sync_failure)(&e);
                return Err(StorageError::Io(e));
            }
            journal::remove_below(&self.dir, newest + 1).map_err(other)?;
            lock(&self.state).closed.retain(|(g, _)| *g > newest);
        }
        Ok(())
    }
}

/// Write the runs of `overlay` up to commit `upto` into redb in one transaction (the newest
/// write of each key), with the commit redb now has.
fn apply_runs(
    redb: &redb::Database,
    specs: &HashMap<&'static str, Spec>,
    overlay: &Overlay,
    upto: u64,
    durability: Durability,
) -> Result<(), StorageError> {
    let mut wtx = redb.begin_write().map_err(other)?;
    wtx.set_durability(durability);
    let mut names: Vec<&'static str> = overlay
        .runs()
        .iter()
        .flat_map(|r| r.writes().map(|(t, _)| t))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let spec = specs.get(name).ok_or_else(|| {
            other(format!(
                "the journal holds writes to table {name}, which this build does not know"
            ))
        })?;
        let entries = overlay.range(name, Bound::Unbounded, Bound::Unbounded);
        (spec.apply)(&wtx, spec.name, &entries)?;
    }
    wtx.open_table(APPLIED)
        .map_err(other)?
        .insert(APPLIED_KEY, upto)?;
    wtx.commit().map_err(other)
}

/// The redb file with the journal in front of it.
#[derive(Clone)]
pub(crate) struct Database {
    inner: Arc<Inner>,
}

impl Database {
    /// Put `redb` behind the journal in `dir`: replay what the journal holds that redb has
    /// not taken (tables as `specs` say), then start appending to a new segment, the applier,
    /// and (with `policy.sync_every`) the journal's syncer.
    pub(super) fn open(
        redb: redb::Database,
        dir: &Path,
        specs: &[Spec],
        policy: Policy,
    ) -> Result<Self, StorageError> {
        let specs: HashMap<&'static str, Spec> = specs.iter().map(|s| (s.name, *s)).collect();
        let applied = {
            let rtx = redb.begin_read().map_err(other)?;
            match rtx.open_table(APPLIED) {
                Ok(t) => t.get(APPLIED_KEY)?.map_or(0, |g| g.value()),
                Err(TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(other(e)),
            }
        };
        let (frames, torn) = journal::replay(dir).map_err(|e| match e {
            JournalError::Io { source, .. } => StorageError::Io(source),
            damaged => other(damaged),
        })?;
        if let Some(first) = frames.iter().find(|f| f.commit > applied)
            && first.commit != applied + 1
        {
            return Err(other(format!(
                "the store file has taken the journal up to commit {applied}, and the journal \
                 goes on from commit {}: the commits in between are missing. Restore the data \
                 directory from a backup",
                first.commit
            )));
        }
        if let Some((path, at)) = &torn {
            // Kept, not deleted: the bytes after `at` are the only trace of what happened.
            let aside = path.with_extension("jnl.torn");
            std::fs::rename(path, &aside).map_err(StorageError::Io)?;
            tracing::warn!(segment = %aside.display(), at, "the journal ended in an incomplete commit (a crash while it was written, so it was never acknowledged): replayed up to it, and the segment kept aside; delete it once you no longer need it");
        }
        let last = frames.last().map_or(applied, |f| f.commit.max(applied));
        let mut overlay = Overlay::default();
        let mut replayed = 0usize;
        for f in frames.into_iter().filter(|f| f.commit > applied) {
            let mut by_table: BTreeMap<&'static str, (Cmp, Vec<Entry>)> = BTreeMap::new();
            for w in f.writes {
                let spec = specs.get(w.table.as_str()).ok_or_else(|| {
                    other(format!(
                        "the journal holds writes to table {}, which this build does not know (a newer version wrote it?)",
                        w.table
                    ))
                })?;
                by_table
                    .entry(spec.name)
                    .or_insert_with(|| (spec.cmp, Vec::new()))
                    .1
                    .push((w.key, w.value));
            }
            overlay = overlay.with(Run::new(
                f.commit,
                by_table.into_iter().map(|(n, (c, e))| (n, c, e)),
            ));
            replayed += 1;
        }
        if !overlay.is_empty() {
            apply_runs(&redb, &specs, &overlay, last, Durability::Immediate)?;
            tracing::info!(commits = replayed, "journal replayed into the store");
        }
        let gens = journal::segments(dir).map_err(other)?;
        let next_gen = gens.last().map_or(0, |g| g + 1);
        (policy.sync_base)().map_err(StorageError::Io)?;
        journal::remove_below(dir, next_gen).map_err(other)?;
        let segment = Segment::create(dir, next_gen, policy.always).map_err(other)?;
        let inner = Arc::new(Inner {
            redb,
            dir: dir.to_path_buf(),
            policy: policy.clone(),
            state: Mutex::new(State {
                segment,
                opened: Instant::now(),
                closed: Vec::new(),
                next_commit: last + 1,
                overlay: Overlay::default(),
                pending_bytes: 0,
                apply_failures: 0,
                failed: None,
            }),
            specs: Mutex::new(specs),
            writing: (Mutex::new(false), Condvar::new()),
            applying: Mutex::new(()),
        });
        spawn_every("bluewire-store-apply", policy.apply_every, &inner, |i| {
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| i.apply()))
                .unwrap_or_else(|_| {
                    Err(other(
                        "redb panicked while taking the journal (a damaged page?)",
                    ))
                });
            let mut st = lock(&i.state);
            match applied {
                Ok(()) => st.apply_failures = 0,
                Err(e) => {
                    st.apply_failures += 1;
                    let n = st.apply_failures;
                    if n.is_power_of_two() {
                        tracing::error!(error = %e, failures = n, "applying the journal to the store file failed; retrying");
                    }
                    if n >= MAX_APPLY_FAILURES && st.failed.is_none() {
                        st.failed = Some(format!(
                            "the store file has not taken the journal in {n} tries ({e})"
                        ));
                    }
                }
            }
        });
        if let Some(every) = policy.sync_every {
            spawn_every("bluewire-store-jsync", every, &inner, |i| {
                let file = {
                    let st = lock(&i.state);
                    if st.failed.is_some() {
                        return;
                    }
                    st.segment.sync_handle()
                };
                let synced = file.and_then(|f| {
                    f.sync_data().map_err(|source| JournalError::Io {
                        path: i.dir.clone(),
                        source,
                    })
                });
                if let Err(e) = synced {
                    let e = match e {
                        JournalError::Io { source, .. } => source,
                        other => std::io::Error::other(other.to_string()),
                    };
                    (i.policy.on_sync_failure)(&e);
                    lock(&i.state).failed = Some(e.to_string());
                }
            });
        }
        Ok(Self { inner })
    }

    /// A read: the overlay, then redb.
    pub(super) fn begin_read(&self) -> Result<ReadTransaction, StorageError> {
        // Both under the lock: the applier drops runs under it only after redb has them, so
        // redb holds nothing newer than the overlay copy (a run may be in both, the same).
        let st = lock(&self.inner.state);
        let overlay = st.overlay.clone();
        let rtx = self.inner.redb.begin_read().map_err(other)?;
        drop(st);
        Ok(ReadTransaction { overlay, rtx })
    }

    fn start_write(&self) {
        let (busy, cv) = &self.inner.writing;
        let mut b = lock(busy);
        while *b {
            b = cv.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        *b = true;
    }

    /// A write transaction whose commit is a journal append (straight into redb when the
    /// policy has no journal).
    pub(super) fn begin_write(&self) -> Result<WriteTransaction, StorageError> {
        if !self.inner.policy.journal {
            return self.begin_write_direct();
        }
        self.start_write();
        match self.begin_read() {
            Ok(ReadTransaction { overlay, rtx }) => Ok(WriteTransaction {
                db: self.clone(),
                kind: TxKind::Journaled { overlay, rtx },
                own: RefCell::new(HashMap::new()),
                durability: Durability::Immediate,
            }),
            Err(e) => {
                self.inner.end_write();
                Err(e)
            }
        }
    }

    /// A write transaction straight into redb, for the store's opening transaction. Takes
    /// everything pending into redb first.
    pub(super) fn begin_write_direct(&self) -> Result<WriteTransaction, StorageError> {
        self.start_write();
        let direct = self
            .inner
            .apply()
            .and_then(|()| self.inner.redb.begin_write().map_err(other));
        match direct {
            Ok(wtx) => Ok(WriteTransaction {
                db: self.clone(),
                kind: TxKind::Direct(Box::new(wtx)),
                own: RefCell::new(HashMap::new()),
                durability: Durability::Immediate,
            }),
            Err(e) => {
                self.inner.end_write();
                Err(e)
            }
        }
    }

    /// Take everything pending into redb now.
    #[cfg(test)]
    pub(super) fn apply_now(&self) -> Result<(), StorageError> {
        self.inner.apply()
    }

    /// redb's own handle, everything pending taken first.
    #[cfg(test)]
    pub(super) fn redb(&self) -> Result<&redb::Database, StorageError> {
        self.inner.apply()?;
        Ok(&self.inner.redb)
    }
}

/// A thread that calls `f` every `every` for as long as the database is open.
fn spawn_every(name: &str, every: Duration, inner: &Arc<Inner>, f: fn(&Inner)) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(inner) = weak.upgrade() else { return };
                f(&inner);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, thread = name, "could not start a store thread");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.apply() {
            tracing::error!(error = %e, "applying the journal at close failed (it is replayed at the next start)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMS: TableDefinition<u64, &[u8]> = TableDefinition::new("nums");
    const PAIRS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pairs");
    const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
    const OLD: TableDefinition<&str, u64> = TableDefinition::new("old");

    fn specs() -> Vec<Spec> {
        vec![NUMS.spec(), PAIRS.spec(), COUNTS.spec(), OLD.spec()]
    }

    /// Nothing applied or rotated on a timer: the tests decide when.
    fn policy() -> Policy {
        Policy {
            journal: true,
            always: true,
            sync_every: None,
            apply_every: Duration::from_secs(3600),
            rotate_bytes: u64::MAX,
            rotate_age: Duration::from_secs(3600),
            sync_base: Arc::new(|| Ok(())),
            on_sync_failure: Arc::new(|_| {}),
            poisoned: Arc::new(|| None),
        }
    }

    fn open_in(dir: &Path, policy: Policy) -> Database {
        let redb = redb::Database::create(dir.join("store.redb")).unwrap();
        Database::open(redb, dir, &specs(), policy).unwrap()
    }

    fn put(db: &Database, f: impl FnOnce(&WriteTransaction)) {
        let tx = db.begin_write().unwrap();
        f(&tx);
        tx.commit().unwrap();
    }

    fn nums(db: &Database) -> Vec<(u64, String)> {
        let rtx = db.begin_read().unwrap();
        let t = rtx.open_table(NUMS).unwrap();
        t.iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), String::from_utf8(v.value().to_vec()).unwrap())
            })
            .collect()
    }

    /// A copy of the directory as a crash would leave it (the process gone, the files as the
    /// kernel has them).
    fn crash_copy(from: &Path, to: &Path) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    #[test]
    fn reads_see_a_commit_at_once_and_redb_has_it_in_its_own_types_once_applied() {
        let d = tempfile::tempdir().unwrap();
        let db = open_in(d.path(), policy());
        // Tables exist in redb from a first direct transaction (as the store's opening one).
        let tx = db.begin_write_direct().unwrap();
        for _ in [
            tx.open_table(NUMS).map(drop),
            tx.open_table(PAIRS).map(drop),
            tx.open_table(COUNTS).map(drop),
        ] {}
        tx.commit().unwrap();
        put(&db, |tx| {
            let mut t = tx.open_table(NUMS).unwrap();
            // 256 sorts after 2 as a number, before it as little-endian bytes.
            for (k, v) in [(256u64, "big"), (2, "two"), (1, "one")] {
                t.insert(k, v.as_bytes()).unwrap();
            }
            tx.open_table(COUNTS).unwrap().insert("n", 3u64).unwrap();
        });
        let want = vec![
            (1, "one".to_string()),
            (2, "two".into()),
            (256, "big".into()),
        ];
        assert_eq!(nums(&db), want, "pending, in the key type's order");
        put(&db, |tx| {
            tx.open_table(NUMS).unwrap().remove(2u64).unwrap();
        });
        let want = vec![(1, "one".to_string()), (256, "big".into())];
        assert_eq!(nums(&db), want);
        db.apply_now().unwrap();
        assert_eq!(nums(&db), want, "the same after the apply");
        // redb's own typed tables hold it: the file is the one the store has always written.
        let redb = db.redb().unwrap();
        let rtx = redb.begin_read().unwrap();
        let t = rtx
            .open_table(redb::TableDefinition::<u64, &[u8]>::new("nums"))
            .unwrap();
        assert_eq!(t.get(256).unwrap().unwrap().value(), b"big");
        assert!(t.get(2).unwrap().is_none());
        let c = rtx
            .open_table(redb::TableDefinition::<&str, u64>::new("counts"))
            .unwrap();
        assert_eq!(c.get("n").unwrap().unwrap().value(), 3);
    }

    #[test]
    fn a_transaction_reads_its_own_writes_over_what_is_pending_over_redb() {
        let d = tempfile::tempdir().unwrap();
        let db = open_in(d.path(), policy());
        put(&db, |tx| {
            let mut t = tx.open_table(PAIRS).unwrap();
            for (p, s) in [("a", 1u64), ("a", 2), ("a", 3), ("b", 1)] {
                t.insert((p, s), format!("{p}{s}").as_bytes()).unwrap();
            }
        });
        db.apply_now().unwrap();
        put(&db, |tx| {
            let mut t = tx.open_table(PAIRS).unwrap();
            t.remove(("a", 2)).unwrap();
            t.insert(("a", 4), b"a4 pending".as_slice()).unwrap();
        });
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(PAIRS).unwrap();
            let old = t.remove(("a", 1)).unwrap().unwrap();
            assert_eq!(old.value(), b"a1");
            t.insert(("a", 3), b"a3 own".as_slice()).unwrap();
            t.insert(("ab", 0), b"ab0".as_slice()).unwrap();
            let a: Vec<(u64, Vec<u8>)> = t
                .range(("a", 0)..=("a", u64::MAX))
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().1, v.value().to_vec())
                })
                .collect();
            assert_eq!(
                a,
                vec![(3, b"a3 own".to_vec()), (4, b"a4 pending".to_vec())]
            );
            assert_eq!(t.len().unwrap(), 4, "a3, a4, ab0, b1");
            assert_eq!(t.last().unwrap().unwrap().0.value(), ("b", 1));
            assert_eq!(t.first().unwrap().unwrap().0.value(), ("a", 3));
            assert!(t.get(("a", 2)).unwrap().is_none());
        }
        // Another reader does not see an uncommitted transaction.
        let rtx = db.begin_read().unwrap();
        let r = rtx.open_table(PAIRS).unwrap();
        assert_eq!(r.get(("a", 1)).unwrap().unwrap().value(), b"a1");
        assert_eq!(ReadableTable::len(&r).unwrap(), 4);
        tx.abort().unwrap();
        let rtx = db.begin_read().unwrap();
        assert_eq!(
            rtx.open_table(PAIRS)
                .unwrap()
                .get(("a", 3))
                .unwrap()
                .unwrap()
                .value(),
            b"a3"
        );
    }

    #[test]
    fn a_crash_before_the_apply_loses_nothing_committed() {
        let d = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        let db = open_in(d.path(), policy());
        for i in 0..50u64 {
            put(&db, |tx| {
                tx.open_table(NUMS)
                    .unwrap()
                    .insert(i, format!("v{i}").as_bytes())
                    .unwrap();
            });
            if i == 20 {
                db.apply_now().unwrap();
            }
        }
        put(&db, |tx| {
            tx.open_table(NUMS).unwrap().remove(7u64).unwrap();
        });
        let want = nums(&db);
        assert_eq!(want.len(), 49);
        crash_copy(d.path(), after.path());
        drop(db);
        let again = open_in(after.path(), policy());
        assert_eq!(nums(&again), want, "replayed");
        // The replayed segment is gone; commits go on after it.
        put(&again, |tx| {
            tx.open_table(NUMS)
                .unwrap()
                .insert(7u64, b"back".as_slice())
                .unwrap();
        });
        assert_eq!(journal::segments(after.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_segment_redb_already_took_is_not_replayed_over_newer_writes() {
        let d = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        let mut p = policy();
        p.rotate_bytes = 0;
        let db = open_in(d.path(), p);
        put(&db, |tx| {
            tx.open_table(COUNTS).unwrap().insert("x", 1u64).unwrap();
        });
        let first = journal::segments(d.path()).unwrap()[0];
        let saved = std::fs::read(journal::segment_path(d.path(), first)).unwrap();
        db.apply_now().unwrap();
        put(&db, |tx| {
            tx.open_table(COUNTS).unwrap().insert("x", 2u64).unwrap();
        });
        db.apply_now().unwrap();
        assert!(
            !journal::segment_path(d.path(), first).exists(),
            "deleted once taken"
        );
        drop(db);
        crash_copy(d.path(), after.path());
        // Its deletion did not reach the disk: the old segment is back.
        std::fs::write(journal::segment_path(after.path(), first), saved).unwrap();
        let again = open_in(after.path(), policy());
        let rtx = again.begin_read().unwrap();
        assert_eq!(
            rtx.open_table(COUNTS)
                .unwrap()
                .get("x")
                .unwrap()
                .unwrap()
                .value(),
            2
        );
    }

    #[test]
    fn tables_are_dropped_only_in_a_direct_transaction() {
        let d = tempfile::tempdir().unwrap();
        let db = open_in(d.path(), policy());
        let tx = db.begin_write_direct().unwrap();
        tx.open_table(OLD).unwrap().insert("k", 1u64).unwrap();
        tx.commit().unwrap();
        let tx = db.begin_write().unwrap();
        assert!(
            tx.list_tables()
                .unwrap()
                .any(|h| redb::TableHandle::name(&h) == "old")
        );
        let e = tx.delete_table(OLD).unwrap_err();
        assert!(e.to_string().contains("opening transaction"), "{e}");
        drop(tx);
        // Pending writes are taken into redb before a direct transaction starts.
        put(&db, |tx| {
            tx.open_table(NUMS)
                .unwrap()
                .insert(1u64, b"one".as_slice())
                .unwrap();
        });
        let tx = db.begin_write_direct().unwrap();
        assert!(tx.delete_table(OLD).unwrap());
        assert_eq!(
            tx.open_table(NUMS)
                .unwrap()
                .get(1u64)
                .unwrap()
                .unwrap()
                .value(),
            b"one"
        );
        tx.commit().unwrap();
        assert!(db.begin_read().unwrap().open_table(OLD).is_err());
    }

    #[test]
    fn a_journal_naming_an_unknown_table_is_refused_at_open() {
        let d = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        let db = open_in(d.path(), policy());
        const NEW: TableDefinition<u64, u64> = TableDefinition::new("from_a_newer_build");
        put(&db, |tx| {
            tx.open_table(NEW).unwrap().insert(1u64, 1u64).unwrap();
        });
        crash_copy(d.path(), after.path());
        drop(db);
        let redb = redb::Database::create(after.path().join("store.redb")).unwrap();
        let e = Database::open(redb, after.path(), &specs(), policy())
            .err()
            .unwrap();
        assert!(e.to_string().contains("from_a_newer_build"), "{e}");
    }
}
