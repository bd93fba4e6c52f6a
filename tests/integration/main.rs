//! Black-box tests: the real `selfprivacy-api` binary, real HTTP and
//! websocket clients, a real SQLite file in a temporary state directory.
//! One test binary (each file in tests/ would link separately).

mod support;

mod app_operations;
mod auth;
mod autobackup;
mod backups;
mod bad_input;
mod catalogue;
mod concurrency;
mod crash_safety;
mod jobs;
mod limits;
mod local_endpoints;
mod logs;
mod modules;
mod monitoring;
mod rebuilds;
mod repo_servers;
mod resources;
mod schema;
mod secrets;
mod services;
mod storage;
mod system;
mod systemd_bus;
mod testbed;
mod tokens;
mod users;
mod websockets;
