//! The system as a whole: rebuilds of the NixOS configuration, reboot.

pub mod rebuild;
