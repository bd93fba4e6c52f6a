//! GraphQL object types, one file per area of the app's schema.

pub mod api;
pub mod backup;
pub mod jobs;
pub mod logs;
pub mod monitoring;
pub mod returns;
pub mod services;
pub mod storage;
pub mod system;
pub mod users;
