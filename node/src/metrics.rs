//! Prometheus metrics. Placeholder.
