//! The slice of redb's table API the store uses, with the journal in front of redb: a commit
//! is one frame appended to the journal ([`super::journal`]); its writes then sit in the
//! overlay ([`super::overlay`]) that every read sees over redb, until the applier takes
//! everything pending into redb in one transaction and drops it from the overlay.
//!
//! Owns: [`Database`] (replay at open, the applier, the journal's sync), transactions and
//! tables with redb's names and shapes, and [`Raw`], which opens redb's typed tables as the
//! bytes they hold, so the file is the one `main` writes and reads. The spilled tables' large
//! values are not in the file: the applier moves them to the value log ([`values`]), and
//! reads resolve the pointers redb holds.
//!
//! It must never: acknowledge a commit before its frame is in the kernel (and, with
//! `always`, on disk); show a read a commit's writes in part; let a read miss a commit the
//! applier is moving (a read takes the overlay first and redb second, so it may see a commit
//! twice, never not at all); replay a commit redb already has (redb records the last commit it
//! took, in the same transaction).

mod database;
mod order;
mod table;
#[cfg(test)]
mod tests;
mod values;

use std::cmp::Ordering;
use std::marker::PhantomData;

pub(super) use redb::Durability;
use redb::{StorageError, TypeName, Value};

pub(super) use order::Key;

pub(crate) use database::Database;
pub(super) use database::Policy;
pub(super) use table::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};
pub(super) use values::FILE as VALUES_FILE;
#[cfg(test)]
pub(super) use values::raw_value;

use super::overlay::{Cmp, Entry};

/// redb's table type for `T`'s values as the bytes they are stored as: the same type name,
/// width and order as `T` (its [`Key::order`], which is redb's order for `T` computed on the
/// bytes), so a table defined with `T` opens as `Raw<T>` and back. It holds no `T`, so it
/// is `Send` and `Sync` whatever `T` is (its tables are shared: `table::Snapshot`).
#[derive(Debug)]
pub(super) struct Raw<T>(PhantomData<fn() -> T>);

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

impl<T: Key + 'static> redb::Key for Raw<T> {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        T::order(data1, data2)
    }
}

type RawDef<K, V> = redb::TableDefinition<'static, Raw<K>, Raw<V>>;
/// A redb table read as bytes.
type BaseTable<K, V> = redb::ReadOnlyTable<Raw<K>, Raw<V>>;

/// A table: its name and key and value types, as with redb.
pub(super) struct TableDefinition<K: Key + 'static, V: Value + 'static> {
    name: &'static str,
    /// Large values go to the value log, redb holding a pointer ([`values`]).
    spill: bool,
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
            spill: false,
            _types: PhantomData,
        }
    }

    /// A table whose large values the applier keeps in the value log, redb holding a
    /// pointer to each ([`values`]). Its values must never be exactly a pointer's 20 bytes
    /// starting with a zero byte and `BWv`.
    pub(super) const fn spilled(name: &'static str) -> Self {
        Self {
            name,
            spill: true,
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
            cmp: K::order,
            apply: apply_table::<K, V>,
            spill: self.spill,
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
    spill: bool,
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
