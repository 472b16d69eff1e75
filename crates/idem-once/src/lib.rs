//! Run an operation once per idempotency key (in progress).
