//! The automatic backups' view of the backups: what `run-due` (the timer,
//! through the control socket) needs, over restic and the catalogue.

use super::{Backups, Reason, SELF_SERVICE_ID};
use crate::domain::autobackup::quotas::SnapshotRef;
use crate::domain::autobackup::schedule::ServiceBackupState;
use crate::domain::autobackup::{AutobackupSettings, BackupFailure, BackupRunner};
use crate::domain::error::FailureKind;
use crate::os::userdata::UserdataFile;
use std::sync::Arc;

pub struct AutomaticBackups {
    pub backups: Arc<Backups>,
    /// Which modules are enabled (`modules.<id>.enable`).
    pub userdata: Arc<UserdataFile>,
}

#[async_trait::async_trait]
impl BackupRunner for AutomaticBackups {
    async fn settings(&self) -> anyhow::Result<AutobackupSettings> {
        let settings = self.backups.settings()?;
        Ok(AutobackupSettings {
            // No repository: nothing can run, which is not a failure.
            period_minutes: settings
                .initialized
                .then_some(settings.autobackup_period)
                .flatten()
                .map(i64::from),
            quotas: settings.quotas,
        })
    }

    async fn services(&self) -> anyhow::Result<Vec<ServiceBackupState>> {
        let userdata = self.userdata.read()?;
        let snapshots = self.backups.snapshots()?;
        Ok(self
            .backups
            .all_targets()
            .into_iter()
            .map(|id| {
                let enabled = id == SELF_SERVICE_ID
                    || userdata["modules"][&id]["enable"].as_bool() == Some(true);
                ServiceBackupState {
                    enabled,
                    can_be_backed_up: true,
                    last_backup: snapshots
                        .iter()
                        .filter(|s| s.service == id)
                        .map(|s| s.created_at)
                        .max(),
                    last_failed_attempt: self.backups.last_backup_failure(&id),
                    id,
                }
            })
            .collect())
    }

    async fn auto_backup(&self, service: &str) -> Result<String, BackupFailure> {
        match self.backups.backup_and_wait(service, Reason::Auto).await {
            Ok((_, snapshot)) => Ok(snapshot),
            Err(failure) if failure.kind == FailureKind::Conflict => {
                Err(BackupFailure::Busy(failure.message.en))
            }
            Err(failure) => Err(BackupFailure::Failed(failure.message.en)),
        }
    }

    async fn snapshots(&self, service: &str) -> anyhow::Result<Vec<SnapshotRef>> {
        Ok(self
            .backups
            .service_snapshots(service)?
            .into_iter()
            .map(|s| SnapshotRef {
                id: s.id,
                time: s.created_at,
            })
            .collect())
    }

    async fn forget(&self, _service: &str, snapshot_id: &str) -> anyhow::Result<()> {
        Ok(self.backups.forget_snapshot(snapshot_id).await?)
    }
}
