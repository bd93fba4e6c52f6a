//! The system as a whole: rebuilds of the NixOS configuration, reboot.

pub mod changes;
pub mod dns;
pub mod info;
pub mod maintenance;
pub mod rebuild;
pub mod settings;
