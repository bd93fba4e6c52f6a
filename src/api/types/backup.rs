//! `backup`: repository configuration, snapshots; and the backup mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::errors::unavailable;
use crate::api::scalars::DateTime;
use crate::api::types::returns::{
    GenericBackupConfigReturn, GenericJobMutationReturn, GenericMutationReturn,
};
use crate::api::types::services::Service;
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};

const BACKUPS: &str = "Backups";

// ---- Data types ----

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackupProvider {
    Backblaze,
    None,
    Memory,
    File,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackupReason {
    Explicit,
    Auto,
    PreRestore,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum RestoreStrategy {
    Inplace,
    DownloadVerifyOverwrite,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct AutobackupQuotas {
    pub last: i32,
    pub daily: i32,
    pub weekly: i32,
    pub monthly: i32,
    pub yearly: i32,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct BackupConfiguration {
    pub provider: BackupProvider,
    pub encryption_key: String,
    pub is_initialized: bool,
    pub autobackup_period: Option<i32>,
    pub autobackup_quotas: AutobackupQuotas,
    pub location_name: Option<String>,
    pub location_id: Option<String>,
}

// `service` is cyclic through `Service.backupSnapshots`: see services.rs.
#[derive(SimpleObject, Clone, Debug)]
pub struct SnapshotInfo {
    pub id: String,
    pub service: Service,
    pub created_at: DateTime,
    pub reason: BackupReason,
}

// ---- Inputs ----

#[derive(InputObject, Clone, Debug)]
pub struct AutobackupQuotasInput {
    pub last: i32,
    pub daily: i32,
    pub weekly: i32,
    pub monthly: i32,
    pub yearly: i32,
}

#[derive(InputObject, Clone, Debug)]
pub struct InitializeRepositoryInput {
    pub provider: BackupProvider,
    pub location_id: String,
    pub location_name: String,
    pub login: String,
    pub password: String,
    #[graphql(default)]
    pub local_secret: Option<String>,
}

// ---- Query namespace ----

// `Query.backup`.
#[derive(Default)]
pub struct Backup;

#[Object]
impl Backup {
    async fn configuration(&self, ctx: &Context<'_>) -> async_graphql::Result<BackupConfiguration> {
        let _ = ctx;
        Err(unavailable(BACKUPS))
    }

    async fn all_snapshots(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SnapshotInfo>> {
        let _ = ctx;
        Err(unavailable(BACKUPS))
    }

    async fn last_slice(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SnapshotInfo>> {
        let _ = ctx;
        Err(unavailable(BACKUPS))
    }
}

// ---- Mutation namespace ----

// `Mutation.backup`.
#[derive(Default)]
pub struct BackupMutations;

#[Object]
impl BackupMutations {
    pub async fn initialize_repository(
        &self,
        ctx: &Context<'_>,
        repository: InitializeRepositoryInput,
    ) -> async_graphql::Result<GenericBackupConfigReturn> {
        let _ = (ctx, repository);
        Err(unavailable(BACKUPS))
    }

    pub async fn remove_repository(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericBackupConfigReturn> {
        let _ = ctx;
        Err(unavailable(BACKUPS))
    }

    pub async fn set_autobackup_period(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] period: Option<i32>,
    ) -> async_graphql::Result<GenericBackupConfigReturn> {
        let _ = (ctx, period);
        Err(unavailable(BACKUPS))
    }

    pub async fn set_autobackup_quotas(
        &self,
        ctx: &Context<'_>,
        quotas: AutobackupQuotasInput,
    ) -> async_graphql::Result<GenericBackupConfigReturn> {
        let _ = (ctx, quotas);
        Err(unavailable(BACKUPS))
    }

    pub async fn start_backup(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let _ = (ctx, service_id);
        Err(unavailable(BACKUPS))
    }

    pub async fn total_backup(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let _ = ctx;
        Err(unavailable(BACKUPS))
    }

    pub async fn restore_all(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let _ = ctx;
        Err(unavailable(BACKUPS))
    }

    pub async fn restore_backup(
        &self,
        ctx: &Context<'_>,
        snapshot_id: String,
        #[graphql(default_with = "RestoreStrategy::DownloadVerifyOverwrite")]
        strategy: RestoreStrategy,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let _ = (ctx, snapshot_id, strategy);
        Err(unavailable(BACKUPS))
    }

    pub async fn forget_snapshot(
        &self,
        ctx: &Context<'_>,
        snapshot_id: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = (ctx, snapshot_id);
        Err(unavailable(BACKUPS))
    }

    pub async fn force_snapshots_reload(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = ctx;
        Err(unavailable(BACKUPS))
    }
}

// ---- Root pieces ----

#[derive(Default)]
pub struct BackupQueryRoot;

#[Object]
impl BackupQueryRoot {
    async fn backup(&self) -> Backup {
        Backup
    }
}

#[derive(Default)]
pub struct BackupMutationRoot;

#[Object]
impl BackupMutationRoot {
    async fn backup(&self) -> BackupMutations {
        BackupMutations
    }
}
