//! The node's one wall clock. Everything that decides takes the time as an
//! argument; only services and workers read it, here, so tests can drive the
//! pure core with any time they like. Must never be mocked by mutating global
//! state.

/// Milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}
