//! Side effects on the operating system, each behind a small adapter that
//! tests point at the testbed: systemd over D-Bus, the journal, the
//! userdata file, the sp-module definitions.

pub mod blockdev;
pub mod cgroups;
pub mod command;
pub mod control_socket;
pub mod copy;
pub mod disks;
pub mod files;
pub mod host;
pub mod journal;
pub mod mail_auth_socket;
pub mod network;
pub mod postgres;
pub mod process_memory;
pub mod restic;
pub mod secrets;
pub mod sp_modules;
pub mod systemd;
pub mod unix_socket;
pub mod userdata;
pub mod zoneinfo;
