//! Logging setup: structured `tracing` output, human or JSON, filtered by
//! RUST_LOG (default `info`). Call once from a binary, never from the library.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `json` selects one JSON object per line.
pub fn init(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
