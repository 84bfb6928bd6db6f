//! Huddle's integration tests, one module per area, linked into one test binary: every module
//! links the whole server crate, and one binary instead of fourteen saves minutes of linking
//! and gigabytes of disk. Run one area with `cargo test --test suite chat::`.

mod common;

mod abuse;
mod accounts;
mod authz;
#[cfg(feature = "loadgen")]
mod bench;
mod board;
mod chat;
mod cluster;
mod files;
mod foundation;
mod hostile;
mod mentions;
mod resilience;
mod search;
