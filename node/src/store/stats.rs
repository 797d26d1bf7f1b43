//! What a store file holds, page by page: redb's statistics of a closed store, for `bench store`
//! and an operator sizing a disk.
//!
//! It must never open a file a node has open (redb's lock refuses it, and that is the error) or
//! write to it: the statistics come from a write transaction that is aborted.

use std::path::Path;
use std::sync::Arc;

use redb::DatabaseError;

use super::{FILE_NAME, Result, StoreError, VALUES_FILE_NAME, unpanicked};

/// What a store file holds, page by page (redb's statistics), for `bench store` and an
/// operator sizing a disk.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FileStats {
    pub file_bytes: u64,
    /// The value log beside the file (the message records and batch signatures it points
    /// to).
    pub values_bytes: u64,
    pub page_size: usize,
    pub allocated_pages: u64,
    pub leaf_pages: u64,
    pub branch_pages: u64,
    /// Keys and values, without page overhead.
    pub stored_bytes: u64,
    /// redb's own metadata.
    pub metadata_bytes: u64,
    /// Bytes in allocated pages that hold nothing.
    pub fragmented_bytes: u64,
}

/// The statistics of the store file in `dir`, which no node may have open.
pub fn file_stats(dir: &Path) -> Result<FileStats> {
    let path = dir.join(FILE_NAME);
    let open_err = |e: redb::Error| StoreError::Open {
        path: path.clone(),
        source: Arc::new(e),
    };
    let file_bytes = std::fs::metadata(&path)
        .map_err(|e| open_err(redb::StorageError::Io(e).into()))?
        .len();
    let values_bytes = std::fs::metadata(dir.join(VALUES_FILE_NAME)).map_or(0, |m| m.len());
    let db = unpanicked(&path, || {
        redb::Database::open(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            other => open_err(other.into()),
        })
    })?;
    let tx = db.begin_write().map_err(|e| open_err(e.into()))?;
    let st = tx.stats().map_err(|e| open_err(e.into()))?;
    let stats = FileStats {
        file_bytes,
        values_bytes,
        page_size: st.page_size(),
        allocated_pages: st.allocated_pages(),
        leaf_pages: st.leaf_pages(),
        branch_pages: st.branch_pages(),
        stored_bytes: st.stored_bytes(),
        metadata_bytes: st.metadata_bytes(),
        fragmented_bytes: st.fragmented_bytes(),
    };
    tx.abort().map_err(|e| open_err(e.into()))?;
    Ok(stats)
}
