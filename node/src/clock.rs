//! The node's one wall clock. Everything that decides takes the time as an
//! argument; only services and workers read it, here, so tests can drive the
//! pure core with any time they like. Must never be mocked by mutating global
//! state.

/// Milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// Unix milliseconds as RFC 3339 UTC (the number itself when out of range). Pure.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
