//! Transactions and tables with redb's names and shapes, over the overlay and redb.

use std::any::Any;
use std::borrow::Borrow;
use std::cell::{OnceCell, RefCell};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{
    Durability, ReadableTable as _, ReadableTableMetadata as _, StorageError, TableError, Value,
};

use super::super::overlay::{Cmp, Entry, Keyed, Merge, Merged, Overlay, empty_range};
use super::values::{self, ValueLog};
use super::{BaseTable, Database, Key, Raw, RawDef, TableDefinition, other};

/// Bytes a read returns: from the overlay or the transaction's own writes, or redb's page.
enum Val<'a, T: Value + 'static> {
    Mem(Bytes),
    Page(redb::AccessGuard<'a, Raw<T>>),
}

/// A stored key or value, decoded on [`AccessGuard::value`] (as redb's guard).
pub(in crate::store) struct AccessGuard<'a, T: Value + 'static> {
    val: Val<'a, T>,
}

impl<'a, T: Value + 'static> AccessGuard<'a, T> {
    fn mem(b: Bytes) -> Self {
        Self { val: Val::Mem(b) }
    }

    fn page(g: redb::AccessGuard<'a, Raw<T>>) -> Self {
        Self { val: Val::Page(g) }
    }

    /// What redb holds, with a pointer into `values` (a spilled table's) resolved.
    fn stored(
        g: redb::AccessGuard<'a, Raw<T>>,
        values: Option<&ValueLog>,
    ) -> Result<Self, StorageError> {
        if let Some(log) = values
            && let Some(v) = log.resolve(g.value())?
        {
            return Ok(Self::mem(v));
        }
        Ok(Self::page(g))
    }

    fn bytes(&self) -> &[u8] {
        match &self.val {
            Val::Mem(b) => b,
            Val::Page(g) => g.value(),
        }
    }

    pub(in crate::store) fn value(&self) -> T::SelfType<'_> {
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
pub(in crate::store) struct Range<'a, K: Key + 'static, V: Value + 'static> {
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
    (!empty_range(K::order, as_ref_bound(&lo), as_ref_bound(&hi))).then_some((lo, hi))
}

fn as_ref_bound(b: &Bound<Bytes>) -> Bound<&[u8]> {
    b.as_ref().map(|x| x.as_ref())
}

/// A range of redb's entries, `'a` as long as redb's table lives, with pointers into
/// `values` resolved.
fn base_range<'a, K: Key + 'static, V: Value + 'static>(
    r: Result<redb::Range<'a, Raw<K>, Raw<V>>, StorageError>,
    values: Option<Arc<ValueLog>>,
) -> Box<dyn DoubleEndedIterator<Item = Result<Pair<'a, K, V>, StorageError>> + 'a> {
    match r {
        Ok(r) => Box::new(r.map(move |e| {
            let (k, v) = e?;
            Ok((
                AccessGuard::page(k),
                AccessGuard::stored(v, values.as_deref())?,
            ))
        })),
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
        inner: Box::new(Merge::new(base, K::order, pending).map(|e| {
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
pub(in crate::store) trait ReadableTable<K: Key + 'static, V: Value + 'static> {
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
pub(in crate::store) struct ReadOnlyTable<K: Key + 'static, V: Value + 'static> {
    name: &'static str,
    overlay: Overlay,
    pub(super) base: Option<Arc<BaseTable<K, V>>>,
    /// For a spilled table.
    values: Option<Arc<ValueLog>>,
}

impl<K: Key + 'static, V: Value + 'static> ReadOnlyTable<K, V> {
    /// As [`ReadableTable::get`], with a guard that outlives the table (as redb's).
    pub(in crate::store) fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'static, V>>, StorageError> {
        let k = K::as_bytes(key.borrow());
        let k = k.as_ref();
        if let Some(hit) = self.overlay.get(self.name, k) {
            return Ok(hit.map(AccessGuard::mem));
        }
        match &self.base {
            Some(b) => b
                .get(k)?
                .map(|g| AccessGuard::stored(g, self.values.as_deref()))
                .transpose(),
            None => Ok(None),
        }
    }

    /// As [`ReadableTable::range`], with entries that outlive the table (as redb's).
    pub(in crate::store) fn range<'a, KR: Borrow<K::SelfType<'a>>>(
        &self,
        r: impl RangeBounds<KR>,
    ) -> Result<Range<'static, K, V>, StorageError> {
        let Some((lo, hi)) = encoded_bounds::<K, KR>(&r) else {
            return Ok(Range::empty());
        };
        let (l, h) = (as_ref_bound(&lo), as_ref_bound(&hi));
        let pending = self.overlay.range(self.name, l, h);
        let base = match &self.base {
            Some(b) => base_range(b.range::<&[u8]>((l, h)), self.values.clone()),
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
        len_over(self.base.as_deref(), &pending)
    }
}

/// A read: the overlay as it was, then redb's read transaction (in that order, see the
/// module's docs).
pub(in crate::store) struct ReadTransaction {
    pub(super) overlay: Overlay,
    pub(super) base: Arc<Snapshot>,
    pub(super) values: Arc<ValueLog>,
}

/// redb's read transaction as of its file's last commit, shared by every read and write
/// transaction begun until the next one ([`Database::begin_read`]), with the tables they
/// opened in it. Between two of redb's commits (one an apply, every 20 ms or so, with the
/// journal) redb's file does not change, so a read needs no transaction of its own, nor to
/// find its tables again in redb's table of tables.
pub(in crate::store) struct Snapshot {
    rtx: redb::ReadTransaction,
    /// By name: an `Option<Arc<BaseTable<K, V>>>` (`None`: redb has no such table).
    tables: Mutex<HashMap<&'static str, Box<dyn Any + Send + Sync>>>,
}

impl Snapshot {
    pub(super) fn new(rtx: redb::ReadTransaction) -> Self {
        Self {
            rtx,
            tables: Mutex::new(HashMap::new()),
        }
    }

    /// redb's table `name`, opened once per snapshot (`None`: redb has no such table).
    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        name: &'static str,
    ) -> Result<Option<Arc<BaseTable<K, V>>>, TableError> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables
            .get(name)
            .and_then(|t| t.downcast_ref::<Option<Arc<BaseTable<K, V>>>>())
        {
            return Ok(t.clone());
        }
        let opened = match self.rtx.open_table(RawDef::<K, V>::new(name)) {
            Ok(t) => Some(Arc::new(t)),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e),
        };
        // A name is opened with one pair of types; another pair (none here) goes uncached.
        tables
            .entry(name)
            .or_insert_with(|| Box::new(opened.clone()));
        Ok(opened)
    }
}

impl ReadTransaction {
    pub(in crate::store) fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, TableError> {
        let base = self.base.table::<K, V>(def.name)?;
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
            values: def.spill.then(|| self.values.clone()),
        })
    }
}

/// A key in the order of its table.
#[derive(Clone)]
pub(super) struct OrdKey {
    pub(super) bytes: Bytes,
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
pub(super) struct Own {
    pub(super) cmp: Cmp,
    pub(super) writes: BTreeMap<OrdKey, Option<Bytes>>,
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
pub(in crate::store) type TableNames<'a> = Box<dyn Iterator<Item = redb::UntypedTableHandle> + 'a>;

pub(super) enum TxKind {
    /// Writes go to the journal at commit; reads see them over the overlay over redb.
    Journaled {
        overlay: Overlay,
        base: Arc<Snapshot>,
    },
    /// Straight into redb, for the store's opening transaction (migrations may move whole
    /// tables), while nothing is pending.
    Direct(Box<redb::WriteTransaction>),
    /// Committed or aborted.
    Done,
}

/// One write transaction at a time, as with redb.
pub(in crate::store) struct WriteTransaction {
    // Dropped in this order: redb's transaction before the database it belongs to.
    pub(super) kind: TxKind,
    pub(super) own: RefCell<HashMap<&'static str, Own>>,
    pub(super) durability: Durability,
    pub(super) db: Database,
}

impl WriteTransaction {
    pub(in crate::store) fn set_durability(&mut self, d: Durability) {
        self.durability = d;
    }

    pub(in crate::store) fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Table<'_, K, V>, TableError> {
        self.db.inner.register(def.spec());
        let kind = match &self.kind {
            // redb's table is opened at the first read: the writer opens every table in each
            // transaction and most go unread.
            TxKind::Journaled { .. } => TableKind::Journaled {
                base: OnceCell::new(),
            },
            TxKind::Direct(wtx) => TableKind::Direct(wtx.open_table(def.raw())?),
            TxKind::Done => {
                return Err(TableError::Storage(other("the transaction has ended")));
            }
        };
        Ok(Table {
            tx: self,
            name: def.name,
            spill: def.spill,
            kind,
        })
    }

    pub(in crate::store) fn list_tables(&self) -> Result<TableNames<'_>, StorageError> {
        Ok(match &self.kind {
            TxKind::Journaled { base, .. } => Box::new(base.rtx.list_tables()?),
            TxKind::Direct(wtx) => Box::new(wtx.list_tables()?),
            TxKind::Done => Box::new(std::iter::empty()),
        })
    }

    /// Drop a table: only in the opening transaction (the journal carries no table drops).
    pub(in crate::store) fn delete_table<K: Key + 'static, V: Value + 'static>(
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

    pub(in crate::store) fn commit(mut self) -> Result<(), StorageError> {
        match std::mem::replace(&mut self.kind, TxKind::Done) {
            TxKind::Direct(mut wtx) => {
                wtx.set_durability(self.durability);
                let committed = wtx.commit().map_err(other);
                self.db.inner.wrote_base();
                committed
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

    pub(in crate::store) fn abort(mut self) -> Result<(), StorageError> {
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
        /// redb's table as of the transaction's start, once a read needed it (`None`: redb
        /// has no such table yet).
        base: OnceCell<Option<Arc<BaseTable<K, V>>>>,
    },
    Direct(redb::Table<'t, Raw<K>, Raw<V>>),
}

/// A table in a write transaction (redb's `Table`).
pub(in crate::store) struct Table<'t, K: Key + 'static, V: Value + 'static> {
    tx: &'t WriteTransaction,
    name: &'static str,
    spill: bool,
    kind: TableKind<'t, K, V>,
}

impl<K: Key + 'static, V: Value + 'static> Table<'_, K, V> {
    /// The value log, for a spilled table.
    fn values(&self) -> Option<&Arc<ValueLog>> {
        self.spill.then_some(&self.tx.db.inner.values)
    }

    /// redb's table under a journaled transaction, opened at the first call.
    fn base(&self) -> Result<Option<&BaseTable<K, V>>, StorageError> {
        let (TableKind::Journaled { base }, TxKind::Journaled { base: snapshot, .. }) =
            (&self.kind, &self.tx.kind)
        else {
            return Ok(None);
        };
        if let Some(b) = base.get() {
            return Ok(b.as_deref());
        }
        let opened = snapshot.table::<K, V>(self.name).map_err(|e| match e {
            TableError::Storage(e) => e,
            e => other(e),
        })?;
        Ok(base.get_or_init(|| opened).as_deref())
    }

    /// What is pending for this table under the transaction's own writes, in key order.
    fn pending(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Vec<Entry> {
        let TxKind::Journaled { overlay, .. } = &self.tx.kind else {
            return Vec::new();
        };
        let under = overlay.range(self.name, lo, hi);
        match self.tx.own.borrow().get(self.name) {
            Some(own) => layer(K::order, own.range(lo, hi), under),
            None => under,
        }
    }

    /// Write encoded bytes: straight into redb, or copied into the transaction's own writes.
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        match &mut self.kind {
            TableKind::Direct(t) => {
                match value {
                    Some(v) if self.spill && values::is_pointer(v) => {
                        return Err(other(format!(
                            "a value written to table {} reads as a pointer into the value \
                             log, which a write straight into the file cannot store",
                            self.name
                        )));
                    }
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
                let cmp: Cmp = K::order;
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

    pub(in crate::store) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StorageError> {
        let (k, v) = (K::as_bytes(key.borrow()), V::as_bytes(value.borrow()));
        self.write(k.as_ref(), Some(v.as_ref()))
    }

    /// Remove `key`, returning what it held.
    pub(in crate::store) fn remove<'k>(
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

    /// Whether `key` has a value, without reading a spilled one from the value log.
    pub(in crate::store) fn contains<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<bool, StorageError> {
        Ok(self
            .get_stored(K::as_bytes(key.borrow()).as_ref())?
            .is_some())
    }

    fn get_encoded(&self, k: &[u8]) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        match self.get_stored(k)? {
            Some(AccessGuard { val: Val::Page(g) }) => {
                AccessGuard::stored(g, self.values().map(|v| &**v)).map(Some)
            }
            found => Ok(found),
        }
    }

    /// The value of `k` as stored: redb's bytes (a pointer, in a spilled table) unresolved.
    fn get_stored(&self, k: &[u8]) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        match &self.kind {
            TableKind::Direct(t) => Ok(t.get(k)?.map(AccessGuard::page)),
            TableKind::Journaled { .. } => {
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
                match self.base()? {
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
            TableKind::Direct(t) => base_range(t.range::<&[u8]>((l, h)), self.values().cloned()),
            TableKind::Journaled { .. } => match self.base()? {
                Some(b) => base_range(b.range::<&[u8]>((l, h)), self.values().cloned()),
                None => Box::new(std::iter::empty()),
            },
        };
        Ok(merged(base, self.pending(l, h)))
    }

    fn len(&self) -> Result<u64, StorageError> {
        match &self.kind {
            TableKind::Direct(t) => t.len(),
            TableKind::Journaled { .. } => len_over(
                self.base()?,
                &self.pending(Bound::Unbounded, Bound::Unbounded),
            ),
        }
    }
}
