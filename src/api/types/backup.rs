//! `backup`: repository configuration, snapshots; and the backup mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::auth::app;
use crate::api::errors::{Status, locale, say};
use crate::api::scalars::DateTime;
use crate::api::types::jobs::ApiJob;
use crate::api::types::returns::{
    GenericBackupConfigReturn, GenericJobMutationReturn, GenericMutationReturn,
};
use crate::api::types::services::Service;
use crate::domain::backups::{
    Provider, Quotas, Reason, RepositoryInput, Settings, SnapshotEntry, Strategy, placeholder_view,
};
use crate::domain::error::{Failure, FailureKind, Outcome};
use crate::domain::jobs::Job;
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use std::sync::Arc;

// ---- Data types ----

// Beyond the app's four: S3, SFTP and REST repositories (the app shows a
// value it does not know with its fallback).
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackupProvider {
    Backblaze,
    None,
    Memory,
    File,
    S3,
    Sftp,
    Rest,
}

impl From<Provider> for BackupProvider {
    fn from(p: Provider) -> Self {
        match p {
            Provider::None => BackupProvider::None,
            Provider::Memory => BackupProvider::Memory,
            Provider::File => BackupProvider::File,
            Provider::Backblaze => BackupProvider::Backblaze,
            Provider::S3 => BackupProvider::S3,
            Provider::Sftp => BackupProvider::Sftp,
            Provider::Rest => BackupProvider::Rest,
        }
    }
}

impl From<BackupProvider> for Provider {
    fn from(p: BackupProvider) -> Self {
        match p {
            BackupProvider::None => Provider::None,
            BackupProvider::Memory => Provider::Memory,
            BackupProvider::File => Provider::File,
            BackupProvider::Backblaze => Provider::Backblaze,
            BackupProvider::S3 => Provider::S3,
            BackupProvider::Sftp => Provider::Sftp,
            BackupProvider::Rest => Provider::Rest,
        }
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackupReason {
    Explicit,
    Auto,
    PreRestore,
}

impl From<Reason> for BackupReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Explicit => BackupReason::Explicit,
            Reason::Auto => BackupReason::Auto,
            Reason::PreRestore => BackupReason::PreRestore,
        }
    }
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

impl BackupConfiguration {
    fn of(settings: &Settings, encryption_key: String) -> Self {
        let q = settings.quotas;
        let known = settings.provider != Provider::None;
        BackupConfiguration {
            provider: settings.provider.into(),
            encryption_key,
            is_initialized: settings.initialized,
            autobackup_period: settings.autobackup_period,
            autobackup_quotas: AutobackupQuotas {
                last: q.last,
                daily: q.daily,
                weekly: q.weekly,
                monthly: q.monthly,
                yearly: q.yearly,
            },
            location_name: settings.location_name.clone().filter(|_| known),
            location_id: settings.location_id.clone().filter(|_| known),
        }
    }
}

fn configuration(ctx: &Context<'_>, settings: Outcome<Settings>) -> Outcome<BackupConfiguration> {
    let settings = settings?;
    let key = app(ctx).backups.encryption_key()?;
    Ok(BackupConfiguration::of(&settings, key))
}

fn config_return(
    ctx: &Context<'_>,
    outcome: Outcome<Settings>,
    en: &str,
    ru: &str,
) -> GenericBackupConfigReturn {
    match configuration(ctx, outcome) {
        Ok(config) => {
            GenericBackupConfigReturn::new(Status::ok(200, say(ctx, en, ru)), Some(config))
        }
        Err(failure) => GenericBackupConfigReturn::new(Status::failed(&failure, locale(ctx)), None),
    }
}

fn job_return(
    ctx: &Context<'_>,
    outcome: Outcome<Job>,
    en: &str,
    ru: &str,
) -> GenericJobMutationReturn {
    match outcome {
        Ok(job) => GenericJobMutationReturn::new(
            Status::ok(200, say(ctx, en, ru)),
            Some(ApiJob::from_job(&job, locale(ctx))),
        ),
        Err(failure) => GenericJobMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
    }
}

fn generic_return(
    ctx: &Context<'_>,
    outcome: Outcome<()>,
    en: &str,
    ru: &str,
) -> GenericMutationReturn {
    match outcome {
        Ok(()) => GenericMutationReturn::new(Status::ok(200, say(ctx, en, ru))),
        Err(failure) => GenericMutationReturn::new(Status::failed(&failure, locale(ctx))),
    }
}

fn field_error(ctx: &Context<'_>, failure: &Failure) -> async_graphql::Error {
    async_graphql::Error::new(failure.message.get(locale(ctx)))
}

// A snapshot; `service` is cyclic through `Service.backupSnapshots` and
// resolved on demand: the catalogue's service, or a placeholder for the
// server's settings and for a service no longer installed.
#[derive(Clone, Debug)]
pub struct SnapshotInfo(pub SnapshotEntry);

#[Object]
impl SnapshotInfo {
    async fn id(&self) -> &str {
        &self.0.id
    }

    async fn service(&self, ctx: &Context<'_>) -> async_graphql::Result<Service> {
        match app(ctx).services.get(&self.0.service).await {
            Ok(view) => Ok(Service(Arc::new(view))),
            Err(failure) if failure.kind == FailureKind::NotFound => {
                Ok(Service(Arc::new(placeholder_view(&self.0.service))))
            }
            Err(failure) => Err(field_error(ctx, &failure)),
        }
    }

    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }

    async fn reason(&self) -> BackupReason {
        self.0.reason.into()
    }
}

/// The snapshots of one service, newest first.
pub fn snapshots_of(ctx: &Context<'_>, service: &str) -> async_graphql::Result<Vec<SnapshotInfo>> {
    let mut list = app(ctx)
        .backups
        .service_snapshots(service)
        .map_err(|f| field_error(ctx, &f))?;
    list.reverse();
    Ok(list.into_iter().map(SnapshotInfo).collect())
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
        configuration(ctx, app(ctx).backups.settings()).map_err(|f| field_error(ctx, &f))
    }

    async fn all_snapshots(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SnapshotInfo>> {
        let mut list = app(ctx)
            .backups
            .snapshots()
            .map_err(|f| field_error(ctx, &f))?;
        list.reverse();
        Ok(list.into_iter().map(SnapshotInfo).collect())
    }

    // The latest snapshot of each service.
    async fn last_slice(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SnapshotInfo>> {
        let list = app(ctx)
            .backups
            .snapshots()
            .map_err(|f| field_error(ctx, &f))?;
        let mut latest: Vec<SnapshotEntry> = Vec::new();
        for entry in list.into_iter().rev() {
            if !latest.iter().any(|l| l.service == entry.service) {
                latest.push(entry);
            }
        }
        Ok(latest.into_iter().map(SnapshotInfo).collect())
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
        let input = RepositoryInput {
            provider: repository.provider.into(),
            location_id: repository.location_id,
            location_name: repository.location_name,
            login: repository.login,
            password: repository.password,
            encryption_key: repository.local_secret,
        };
        let outcome = app(ctx).backups.initialize(input).await;
        Ok(config_return(
            ctx,
            outcome,
            "Repository initialized.",
            "Хранилище инициализировано.",
        ))
    }

    pub async fn remove_repository(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericBackupConfigReturn> {
        let outcome = app(ctx).backups.remove_repository().await;
        Ok(config_return(
            ctx,
            outcome,
            "Repository settings removed; the backups themselves are kept where they are.",
            "Настройки хранилища удалены; сами резервные копии остались на месте.",
        ))
    }

    pub async fn set_autobackup_period(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] period: Option<i32>,
    ) -> async_graphql::Result<GenericBackupConfigReturn> {
        let outcome = app(ctx).backups.set_autobackup_period(period).await;
        Ok(config_return(
            ctx,
            outcome,
            "Automatic backup period set.",
            "Период автоматического копирования задан.",
        ))
    }

    pub async fn set_autobackup_quotas(
        &self,
        ctx: &Context<'_>,
        quotas: AutobackupQuotasInput,
    ) -> async_graphql::Result<GenericBackupConfigReturn> {
        let quotas = Quotas {
            last: quotas.last,
            daily: quotas.daily,
            weekly: quotas.weekly,
            monthly: quotas.monthly,
            yearly: quotas.yearly,
        };
        let outcome = app(ctx).backups.set_quotas(quotas).await;
        Ok(config_return(ctx, outcome, "Quotas set.", "Квоты заданы."))
    }

    pub async fn start_backup(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let outcome = app(ctx).backups.start_backup(&service_id, Reason::Explicit);
        Ok(job_return(
            ctx,
            outcome,
            "Backup started.",
            "Резервное копирование начато.",
        ))
    }

    pub async fn total_backup(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let outcome = app(ctx).backups.start_total_backup();
        Ok(job_return(
            ctx,
            outcome,
            "Backup of every service started.",
            "Копирование всех сервисов начато.",
        ))
    }

    pub async fn restore_all(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let outcome = app(ctx).backups.start_restore_all();
        Ok(job_return(
            ctx,
            outcome,
            "Restore of every service started.",
            "Восстановление всех сервисов начато.",
        ))
    }

    pub async fn restore_backup(
        &self,
        ctx: &Context<'_>,
        snapshot_id: String,
        #[graphql(default_with = "RestoreStrategy::DownloadVerifyOverwrite")]
        strategy: RestoreStrategy,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let strategy = match strategy {
            RestoreStrategy::Inplace => Strategy::Inplace,
            RestoreStrategy::DownloadVerifyOverwrite => Strategy::DownloadVerifyOverwrite,
        };
        let outcome = app(ctx).backups.start_restore(&snapshot_id, strategy).await;
        Ok(job_return(
            ctx,
            outcome,
            "Restore started.",
            "Восстановление начато.",
        ))
    }

    pub async fn forget_snapshot(
        &self,
        ctx: &Context<'_>,
        snapshot_id: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let outcome = app(ctx).backups.forget_snapshot(&snapshot_id).await;
        Ok(generic_return(
            ctx,
            outcome,
            "Snapshot forgotten.",
            "Снимок удалён.",
        ))
    }

    pub async fn force_snapshots_reload(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let outcome = app(ctx).backups.reload_snapshots().await;
        Ok(generic_return(
            ctx,
            outcome,
            "Snapshot list reloaded.",
            "Список снимков обновлён.",
        ))
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
