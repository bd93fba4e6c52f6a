//! Black-box tests: the real `selfprivacy-api` binary, real HTTP and
//! websocket clients, a real SQLite file in a temporary state directory.
//! One test binary (each file in tests/ would link separately).

mod support;

mod app_operations;
mod auth;
mod backups;
mod catalogue;
mod jobs;
mod limits;
mod modules;
mod rebuilds;
mod resources;
mod schema;
mod services;
mod systemd_bus;
mod testbed;
mod tokens;
mod websockets;
