//! `system`: server status, domain and DNS, settings (auto-upgrade, SSH,
//! timezone), versions, hosting provider; and the system mutations
//! (settings, rebuilds, reboot).
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::auth::app;
use crate::api::errors::{Status, locale, say};
use crate::api::scalars::DateTime;
use crate::api::types::jobs::ApiJob;
use crate::api::types::returns::{
    AutoUpgradeSettingsMutationReturn, GenericJobMutationReturn, GenericMutationReturn,
    SshSettingsMutationReturn, TimezoneMutationReturn,
};
use crate::domain::error::Failure;
use crate::domain::system::info;
use crate::domain::system::rebuild::{RebuildKind, Rebuilds, Schedule};
use crate::domain::system::settings::DnsCredentials;
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};

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

// No `Debug`: its tokens must not reach a log by accident.
#[derive(InputObject, Clone)]
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
    // `running` (INFO) or `degraded` (WARNING, with the failed units' count)
    // as systemd reports the system; an ERROR alert if it cannot be asked.
    async fn status(&self, ctx: &Context<'_>) -> async_graphql::Result<Alert> {
        let state = match app(ctx).systemd.get().await {
            Ok(systemd) => systemd.system_state().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        Ok(match state {
            Ok((state, failed)) if state == "running" && failed == 0 => Alert {
                severity: Severity::Info,
                title: say(ctx, "System is running", "Система работает"),
                message: say(ctx, "All units are up", "Все юниты работают"),
                timestamp: None,
            },
            Ok((state, failed)) => Alert {
                severity: Severity::Warning,
                title: say(ctx, "System is degraded", "Система работает с ошибками"),
                message: format!(
                    "{}: {state}; {}: {failed}",
                    say(ctx, "systemd state", "состояние systemd"),
                    say(ctx, "failed units", "юнитов с ошибкой")
                ),
                timestamp: None,
            },
            Err(e) => {
                tracing::error!("asking systemd for the system state: {e}");
                Alert {
                    severity: Severity::Error,
                    title: say(ctx, "System state unknown", "Состояние системы неизвестно"),
                    message: say(
                        ctx,
                        "systemd did not answer; see the server log",
                        "systemd не ответил; подробности в журнале сервера",
                    ),
                    timestamp: None,
                }
            }
        })
    }

    async fn domain_info(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemDomainInfo> {
        let app = app(ctx);
        let failed = |f: Failure| async_graphql::Error::new(f.message.get(locale(ctx)).to_owned());
        let userdata = app.system_settings.userdata().map_err(failed)?;
        let domain = userdata["domain"].as_str().unwrap_or_default().to_owned();
        if domain.is_empty() {
            return Err(async_graphql::Error::new(say(
                ctx,
                "The server has no domain in userdata",
                "В userdata сервера не указан домен",
            )));
        }
        let records = app
            .dns_records
            .required(&domain, &app.services)
            .await
            .map_err(failed)?;
        Ok(SystemDomainInfo {
            hostname: userdata["hostname"].as_str().unwrap_or_default().to_owned(),
            provider: DnsProvider::from_userdata(&info::dns_provider(&userdata)),
            required_dns_records: records
                .into_iter()
                .map(|r| DnsRecord {
                    record_type: r.record_type,
                    name: r.name,
                    content: r.content,
                    ttl: r.ttl,
                    priority: r.priority,
                    display_name: r.display_name,
                })
                .collect(),
            domain,
        })
    }

    async fn settings(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemSettings> {
        let settings = app(ctx)
            .system_settings
            .settings()
            .map_err(|f| async_graphql::Error::new(f.message.get(locale(ctx)).to_owned()))?;
        Ok(SystemSettings {
            auto_upgrade: AutoUpgradeOptions {
                enable: settings.auto_upgrade.enable,
                allow_reboot: settings.auto_upgrade.allow_reboot,
            },
            ssh: SshSettings {
                enable: settings.ssh.enable,
                password_authentication: settings.ssh.password_authentication,
                root_ssh_keys: settings.ssh.root_keys,
            },
            timezone: settings.timezone,
        })
    }

    async fn info(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemInfo> {
        let app = app(ctx);
        let config = &app.config;
        let system_version =
            info::system_version(&config.nixos_version_file, &config.os_release_file).ok_or_else(
                || {
                    async_graphql::Error::new(say(
                        ctx,
                        "The running system's version is unknown",
                        "Версия работающей системы неизвестна",
                    ))
                },
            )?;
        let userdata = app
            .system_settings
            .userdata()
            .map_err(|f| async_graphql::Error::new(f.message.get(locale(ctx)).to_owned()))?;
        Ok(SystemInfo {
            system_version,
            python_version: info::daemon_build(),
            using_binds: userdata["useBinds"].as_bool().unwrap_or(false),
        })
    }

    async fn provider(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemProviderInfo> {
        let userdata = app(ctx)
            .system_settings
            .userdata()
            .map_err(|f| async_graphql::Error::new(f.message.get(locale(ctx)).to_owned()))?;
        let (provider, id) = info::provider(&userdata);
        Ok(SystemProviderInfo {
            provider: match provider {
                info::Provider::Hetzner => ServerProvider::Hetzner,
                info::Provider::Digitalocean => ServerProvider::Digitalocean,
                info::Provider::Other => ServerProvider::Other,
            },
            // What the Python API answered when userdata has no id.
            id: id.unwrap_or_else(|| "UNKNOWN".to_owned()),
        })
    }

    // True while a rebuild is scheduled or runs, or any job runs.
    async fn busy(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let app = app(ctx);
        Ok(info::busy(&app.rebuilds, &app.jobs))
    }

    async fn working_directory(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let _ = ctx;
        std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .map_err(|e| async_graphql::Error::new(e.to_string()))
    }
}

impl DnsProvider {
    fn from_userdata(name: &str) -> DnsProvider {
        match name {
            "DIGITALOCEAN" => DnsProvider::Digitalocean,
            "DESEC" => DnsProvider::Desec,
            "PORKBUN" => DnsProvider::Porkbun,
            _ => DnsProvider::Cloudflare,
        }
    }

    fn userdata_name(self) -> &'static str {
        match self {
            DnsProvider::Cloudflare => "CLOUDFLARE",
            DnsProvider::Digitalocean => "DIGITALOCEAN",
            DnsProvider::Desec => "DESEC",
            DnsProvider::Porkbun => "PORKBUN",
        }
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
        Ok(match app(ctx).system_settings.change_timezone(&timezone) {
            Ok((settings, _)) => TimezoneMutationReturn::new(
                Status::ok(200, say(ctx, "Timezone changed", "Часовой пояс изменён")),
                Some(settings.timezone),
            ),
            Err(failure) => {
                TimezoneMutationReturn::new(Status::failed(&failure, locale(ctx)), None)
            }
        })
    }

    pub async fn change_auto_upgrade_settings(
        &self,
        ctx: &Context<'_>,
        settings: AutoUpgradeSettingsInput,
    ) -> async_graphql::Result<AutoUpgradeSettingsMutationReturn> {
        let system = &app(ctx).system_settings;
        Ok(
            match system.change_auto_upgrade(settings.enable_auto_upgrade, settings.allow_reboot) {
                Ok((settings, _)) => AutoUpgradeSettingsMutationReturn::new(
                    Status::ok(
                        200,
                        say(
                            ctx,
                            "Auto-upgrade settings changed",
                            "Настройки автообновления изменены",
                        ),
                    ),
                    settings.auto_upgrade.enable,
                    settings.auto_upgrade.allow_reboot,
                ),
                Err(failure) => {
                    // The settings as they are, unchanged.
                    let current = system.settings().map(|s| s.auto_upgrade).ok();
                    AutoUpgradeSettingsMutationReturn::new(
                        Status::failed(&failure, locale(ctx)),
                        current.as_ref().is_some_and(|c| c.enable),
                        current.as_ref().is_some_and(|c| c.allow_reboot),
                    )
                }
            },
        )
    }

    pub async fn change_ssh_settings(
        &self,
        ctx: &Context<'_>,
        settings: SshSettingsInput,
    ) -> async_graphql::Result<SshSettingsMutationReturn> {
        let system = &app(ctx).system_settings;
        Ok(
            match system.change_ssh(settings.enable, settings.password_authentication) {
                Ok((settings, _)) => SshSettingsMutationReturn::new(
                    Status::ok(
                        200,
                        say(ctx, "SSH settings changed", "Настройки SSH изменены"),
                    ),
                    settings.ssh.enable,
                    settings.ssh.password_authentication,
                ),
                Err(failure) => {
                    let current = system.settings().map(|s| s.ssh).ok();
                    SshSettingsMutationReturn::new(
                        Status::failed(&failure, locale(ctx)),
                        current.as_ref().is_some_and(|c| c.enable),
                        current.as_ref().is_some_and(|c| c.password_authentication),
                    )
                }
            },
        )
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
        let app = app(ctx);
        // A rebuild reads the configuration: it must not change under it.
        if app.rebuilds.is_running() {
            return Ok(Status::failed(&Rebuilds::busy_failure(), locale(ctx)).into());
        }
        Ok(match app.maintenance.pull_configuration().await {
            Ok(output) => Status::ok(
                200,
                format!(
                    "{}: {output}",
                    say(ctx, "Configuration pulled", "Конфигурация обновлена")
                ),
            )
            .into(),
            Err(failure) => Status::failed(&failure, locale(ctx)).into(),
        })
    }

    pub async fn nix_collect_garbage(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        Ok(match app(ctx).maintenance.collect_garbage() {
            Ok(job) => GenericJobMutationReturn::new(
                Status::ok(
                    200,
                    say(ctx, "Garbage collection started", "Сборка мусора запущена"),
                ),
                Some(ApiJob::from_job(&job, locale(ctx))),
            ),
            Err(failure) => {
                GenericJobMutationReturn::new(Status::failed(&failure, locale(ctx)), None)
            }
        })
    }

    pub async fn set_dns_provider(
        &self,
        ctx: &Context<'_>,
        input: SetDnsProviderInput,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let credentials = DnsCredentials {
            token: input.token,
            token_id: input.token_id,
            url: input.url,
            tenant: input.tenant,
            secondary_token: input.secondary_token,
        };
        Ok(
            match app(ctx)
                .system_settings
                .set_dns_provider(input.provider.userdata_name(), credentials)
            {
                Ok(_) => Status::ok(
                    200,
                    say(ctx, "DNS provider set", "DNS-провайдер установлен"),
                )
                .into(),
                Err(failure) => Status::failed(&failure, locale(ctx)).into(),
            },
        )
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
