//! Tamper-evident audit trail. Placeholder.
