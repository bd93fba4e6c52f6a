//! Automatic backups: which services are due (`schedule`), which snapshots
//! the retention quotas forget (`quotas`), and `run_due`, which runs the due
//! backups through a `BackupRunner` (the backups code implements it over
//! restic). Started by `selfprivacy-api backup run-due` through the control
//! socket (`os::control_socket`), which a systemd timer runs.

pub mod quotas;
mod run;
pub mod schedule;

pub use run::{
    AutobackupSettings, BackupFailure, BackupRunner, Outcome, RunDueReport, ServiceReport,
    control_handler, run_due,
};
