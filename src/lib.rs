//! selfprivacy-api: the daemon that lets a SelfPrivacy server's owner run
//! the server from the mobile app.
//!
//! Layers, with the dependency arrow pointing one way:
//! `api` (GraphQL) -> `domain` (what the daemon does) -> `os` / `state`
//! (side effects: the operating system, SQLite).

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod os;
pub mod state;
/// Test scaffolding, only in builds with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
