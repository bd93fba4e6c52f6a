//! What the daemon does, independent of GraphQL, D-Bus and SQLite details.

pub mod autobackup;
pub mod backups;
pub mod clock;
pub mod error;
pub mod i18n;
pub mod jobs;
pub mod locks;
pub mod logs;
pub mod monitoring;
pub mod services;
pub mod storage;
pub mod system;
pub mod tokens;
pub mod users;
