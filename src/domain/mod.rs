//! What the daemon does, independent of GraphQL, D-Bus and SQLite details.

pub mod backups;
pub mod clock;
pub mod error;
pub mod i18n;
pub mod jobs;
pub mod locks;
pub mod services;
pub mod system;
pub mod tokens;
