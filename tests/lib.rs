//! Shared helpers of the end-to-end suite live in `it/`; this crate has no library code.
