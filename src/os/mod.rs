//! Side effects on the operating system, each behind a small adapter that
//! tests point at the testbed: systemd over D-Bus, the journal, the
//! userdata file, the sp-module definitions.

pub mod cgroups;
pub mod disks;
pub mod files;
pub mod journal;
pub mod network;
pub mod postgres;
pub mod restic;
pub mod sp_modules;
pub mod systemd;
pub mod userdata;
