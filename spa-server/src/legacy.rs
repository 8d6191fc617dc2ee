//! Per-source knock progress (knockd semantics) and HMAC knock checks. Pure.
