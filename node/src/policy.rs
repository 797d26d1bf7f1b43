//! Operator local routing policy (Cedar). Placeholder.
