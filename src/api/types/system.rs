//! `system`: server status, domain and DNS, settings (auto-upgrade, SSH,
//! timezone), versions, hosting provider; and the system mutations
//! (settings, rebuilds, reboot).
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::auth::app;
use crate::api::errors::{Status, locale, say, unavailable};
use crate::api::scalars::DateTime;
use crate::api::types::jobs::ApiJob;
use crate::api::types::returns::{
    AutoUpgradeSettingsMutationReturn, GenericJobMutationReturn, GenericMutationReturn,
    SshSettingsMutationReturn, TimezoneMutationReturn,
};
use crate::domain::error::Failure;
use crate::domain::system::rebuild::{RebuildKind, Rebuilds, Schedule};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};

const SETTINGS: &str = "System settings";

// ---- Data types ----

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
    Success,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Alert {
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub timestamp: Option<DateTime>,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum DnsProvider {
    Cloudflare,
    Digitalocean,
    Desec,
    Porkbun,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct DnsRecord {
    pub record_type: String,
    pub name: String,
    pub content: String,
    pub ttl: i32,
    pub priority: Option<i32>,
    pub display_name: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct SystemDomainInfo {
    pub domain: String,
    pub hostname: String,
    pub provider: DnsProvider,
    pub required_dns_records: Vec<DnsRecord>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct AutoUpgradeOptions {
    pub enable: bool,
    pub allow_reboot: bool,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct SshSettings {
    pub enable: bool,
    #[graphql(
        deprecation = "For security reasons, password authentication is no longer supported. Please use SSH keys."
    )]
    pub password_authentication: bool,
    pub root_ssh_keys: Vec<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct SystemSettings {
    pub auto_upgrade: AutoUpgradeOptions,
    pub ssh: SshSettings,
    pub timezone: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct SystemInfo {
    pub system_version: String,
    pub python_version: String,
    pub using_binds: bool,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServerProvider {
    Hetzner,
    Digitalocean,
    Other,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct SystemProviderInfo {
    pub provider: ServerProvider,
    pub id: String,
}

// ---- Inputs ----

#[derive(InputObject, Clone, Debug)]
pub struct AutoUpgradeSettingsInput {
    #[graphql(default)]
    pub enable_auto_upgrade: Option<bool>,
    #[graphql(default)]
    pub allow_reboot: Option<bool>,
}

#[derive(InputObject, Clone, Debug)]
#[graphql(name = "SSHSettingsInput")]
pub struct SshSettingsInput {
    pub enable: bool,
    #[graphql(default)]
    pub password_authentication: Option<bool>,
}

#[derive(InputObject, Clone, Debug)]
pub struct SetDnsProviderInput {
    pub provider: DnsProvider,
    pub token: String,
    #[graphql(default)]
    pub token_id: Option<String>,
    #[graphql(default)]
    pub url: Option<String>,
    #[graphql(default)]
    pub tenant: Option<String>,
    #[graphql(default)]
    pub secondary_token: Option<String>,
}

// ---- Query namespace ----

// `Query.system`.
#[derive(Default)]
pub struct System;

#[Object]
impl System {
    async fn status(&self, ctx: &Context<'_>) -> async_graphql::Result<Alert> {
        let _ = ctx;
        Err(unavailable(SETTINGS))
    }

    async fn domain_info(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemDomainInfo> {
        let _ = ctx;
        Err(unavailable(SETTINGS))
    }

    async fn settings(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemSettings> {
        let _ = ctx;
        Err(unavailable(SETTINGS))
    }

    async fn info(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemInfo> {
        let _ = ctx;
        Err(unavailable(SETTINGS))
    }

    async fn provider(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemProviderInfo> {
        let _ = ctx;
        Err(unavailable(SETTINGS))
    }

    // True while a rebuild, upgrade or rollback runs.
    async fn busy(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(app(ctx).rebuilds.is_running())
    }

    async fn working_directory(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let _ = ctx;
        Err(unavailable(SETTINGS))
    }
}

// ---- Mutation namespace ----

fn rebuild_return(
    ctx: &Context<'_>,
    kind: RebuildKind,
    en: &str,
    ru: &str,
) -> GenericJobMutationReturn {
    match app(ctx).rebuilds.start(kind) {
        Ok(accepted) => {
            let message = match accepted.schedule {
                Schedule::AfterCurrent => say(
                    ctx,
                    "Queued: the rebuild starts when the one under way has finished",
                    "В очереди: пересборка начнётся, когда закончится текущая",
                ),
                Schedule::Now | Schedule::Shortly => say(ctx, en, ru),
            };
            GenericJobMutationReturn::new(
                Status::ok(200, message),
                Some(ApiJob::from_job(&accepted.job, locale(ctx))),
            )
        }
        Err(failure) => GenericJobMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
    }
}

// `Mutation.system`.
#[derive(Default)]
pub struct SystemMutations;

#[Object]
impl SystemMutations {
    pub async fn change_timezone(
        &self,
        ctx: &Context<'_>,
        timezone: String,
    ) -> async_graphql::Result<TimezoneMutationReturn> {
        let _ = (ctx, timezone);
        Err(unavailable(SETTINGS))
    }

    pub async fn change_auto_upgrade_settings(
        &self,
        ctx: &Context<'_>,
        settings: AutoUpgradeSettingsInput,
    ) -> async_graphql::Result<AutoUpgradeSettingsMutationReturn> {
        let _ = (ctx, settings);
        Err(unavailable(SETTINGS))
    }

    pub async fn change_ssh_settings(
        &self,
        ctx: &Context<'_>,
        settings: SshSettingsInput,
    ) -> async_graphql::Result<SshSettingsMutationReturn> {
        let _ = (ctx, settings);
        Err(unavailable(SETTINGS))
    }

    pub async fn run_system_rebuild(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        Ok(rebuild_return(
            ctx,
            RebuildKind::Rebuild,
            "Starting system rebuild",
            "Запущена пересборка системы",
        ))
    }

    // The schema gives this one no job field; the job is still made and
    // shows in `jobs` and `jobUpdates`.
    pub async fn run_system_rollback(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let result = rebuild_return(
            ctx,
            RebuildKind::Rollback,
            "Starting system rollback",
            "Запущен откат системы",
        );
        Ok(result.into())
    }

    pub async fn run_system_upgrade(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        Ok(rebuild_return(
            ctx,
            RebuildKind::Upgrade,
            "Starting system upgrade",
            "Запущено обновление системы",
        ))
    }

    pub async fn reboot_system(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let app = app(ctx);
        if app.rebuilds.is_running() {
            return Ok(Status::failed(&Rebuilds::busy_failure(), locale(ctx)).into());
        }
        let outcome = match app.systemd.get().await {
            Ok(systemd) => systemd.reboot().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        Ok(match outcome {
            Ok(()) => Status::ok(
                200,
                say(
                    ctx,
                    "System reboot has started",
                    "Перезагрузка системы началась",
                ),
            )
            .into(),
            Err(e) => Status::failed(
                &Failure::internal("asking systemd to reboot", e),
                locale(ctx),
            )
            .into(),
        })
    }

    pub async fn pull_repository_changes(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = ctx;
        Err(unavailable(SETTINGS))
    }

    pub async fn nix_collect_garbage(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let _ = ctx;
        Err(unavailable("Nix garbage collection"))
    }

    pub async fn set_dns_provider(
        &self,
        ctx: &Context<'_>,
        input: SetDnsProviderInput,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = (ctx, input);
        Err(unavailable(SETTINGS))
    }
}

// The deprecated flat `setSshSettings` keeps its old result type: the
// settings are dropped, the status kept.
impl From<SshSettingsMutationReturn> for GenericMutationReturn {
    fn from(r: SshSettingsMutationReturn) -> Self {
        GenericMutationReturn {
            success: r.success,
            message: r.message,
            code: r.code,
        }
    }
}

// ---- Root pieces ----

#[derive(Default)]
pub struct SystemQueryRoot;

#[Object]
impl SystemQueryRoot {
    async fn system(&self) -> System {
        System
    }
}

#[derive(Default)]
pub struct SystemMutationRoot;

#[Object]
impl SystemMutationRoot {
    async fn system(&self) -> SystemMutations {
        SystemMutations
    }

    #[graphql(deprecation = "Use `system.change_timezone` instead")]
    async fn change_timezone(
        &self,
        ctx: &Context<'_>,
        timezone: String,
    ) -> async_graphql::Result<TimezoneMutationReturn> {
        SystemMutations.change_timezone(ctx, timezone).await
    }

    #[graphql(deprecation = "Use `system.change_auto_upgrade_settings` instead")]
    async fn change_auto_upgrade_settings(
        &self,
        ctx: &Context<'_>,
        settings: AutoUpgradeSettingsInput,
    ) -> async_graphql::Result<AutoUpgradeSettingsMutationReturn> {
        SystemMutations
            .change_auto_upgrade_settings(ctx, settings)
            .await
    }

    #[graphql(deprecation = "Use `system.run_system_rebuild` instead")]
    async fn run_system_rebuild(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        SystemMutations
            .run_system_rebuild(ctx)
            .await
            .map(Into::into)
    }

    #[graphql(deprecation = "Use `system.run_system_rollback` instead")]
    async fn run_system_rollback(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        SystemMutations.run_system_rollback(ctx).await
    }

    #[graphql(deprecation = "Use `system.run_system_upgrade` instead")]
    async fn run_system_upgrade(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        SystemMutations
            .run_system_upgrade(ctx)
            .await
            .map(Into::into)
    }

    #[graphql(deprecation = "Use `system.reboot_system` instead")]
    async fn reboot_system(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        SystemMutations.reboot_system(ctx).await
    }

    #[graphql(deprecation = "Use `system.pull_repository_changes` instead")]
    async fn pull_repository_changes(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        SystemMutations.pull_repository_changes(ctx).await
    }

    #[graphql(deprecation = "Use `system.change_ssh_settings` instead")]
    async fn set_ssh_settings(
        &self,
        ctx: &Context<'_>,
        settings: SshSettingsInput,
    ) -> async_graphql::Result<GenericMutationReturn> {
        SystemMutations
            .change_ssh_settings(ctx, settings)
            .await
            .map(Into::into)
    }
}
