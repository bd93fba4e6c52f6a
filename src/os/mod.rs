//! Side effects on the operating system, each behind a small adapter that
//! tests point at the testbed: systemd over D-Bus, the journal, the
//! userdata file, the sp-module definitions.

pub mod blockdev;
pub mod cgroups;
pub mod copy;
pub mod disks;
pub mod files;
pub mod journal;
pub mod network;
pub mod sp_modules;
pub mod systemd;
pub mod userdata;
