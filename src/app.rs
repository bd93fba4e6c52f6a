//! The composition root: the daemon's domain services, built once from the
//! configuration and shared by every request.

use crate::config::Config;
use crate::domain::backups::{Backups, BackupsSetup};
use crate::domain::clock::Clock;
use crate::domain::jobs::JobRegistry;
use crate::domain::locks::ServiceLocks;
use crate::domain::monitoring::Monitoring;
use crate::domain::services::catalogue::Catalogue;
use crate::domain::services::resources::ResourceSampler;
use crate::domain::services::{Services, ServicesSetup};
use crate::domain::storage::{Storage, StorageSetup};
use crate::domain::system::rebuild::{
    AppliedConfig, ChangeSetup, RebuildKind, RebuildUnits, Rebuilds,
};
use crate::domain::tokens::{AuthThrottle, TokenService};
use crate::domain::users::Users;
use crate::os::systemd::SystemdLink;
use crate::os::userdata::UserdataFile;
use crate::state::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct App {
    pub config: Config,
    pub clock: Arc<Clock>,
    pub tokens: TokenService,
    pub jobs: Arc<JobRegistry>,
    pub throttle: AuthThrottle,
    pub systemd: Arc<SystemdLink>,
    pub services: Services,
    pub rebuilds: Arc<Rebuilds>,
    pub resources: Arc<ResourceSampler>,
    /// Shared by moves, backups and restores: one at a time per service.
    pub service_locks: Arc<ServiceLocks>,
    /// Auto-upgrade, SSH, timezone and DNS provider settings.
    pub system_settings: crate::domain::system::settings::SystemSettings,
    pub dns_records: crate::domain::system::dns::DnsRecords,
    /// Pulling the configuration, collecting the Nix store's garbage.
    pub maintenance: crate::domain::system::maintenance::Maintenance,
    pub users: Users,
    pub email_passwords: Arc<crate::domain::users::email_passwords::EmailPasswords>,
    pub monitoring: Arc<Monitoring>,
    /// Volumes and moves of service data between them.
    pub storage: Arc<Storage>,
    pub backups: Arc<Backups>,
}

impl App {
    pub fn open(config: Config) -> anyhow::Result<Arc<App>> {
        let store = Arc::new(Store::open(&config.state_dir)?);
        let clock = Arc::new(Clock::default());
        let users_store = store.clone();
        let backup_store = store.clone();
        let tokens = TokenService::load(store.clone(), clock.clone())?;
        let monitoring = Arc::new(Monitoring::new(
            store.clone(),
            clock.clone(),
            Duration::from_secs(config.monitoring_sample_secs),
            PathBuf::from("/proc"),
        ));
        let moves_store = store.clone();
        let queue_store = store.clone();
        let jobs = Arc::new(JobRegistry::load(store, clock.clone(), |job| {
            RebuildKind::of_job(&job.type_id).is_some()
        })?);
        let systemd = Arc::new(SystemdLink::new(config.dbus_address.clone()));
        // A daemon killed mid-write leaves its temp file beside the file it
        // was replacing; nothing else would ever remove it.
        let backups_dir = config.state_dir.join("backups");
        for dir in [
            config.userdata_file.parent(),
            config.secrets_file.parent(),
            Some(config.nixos_config_dir.as_path()),
            Some(config.state_dir.as_path()),
            Some(backups_dir.as_path()),
            Some(backups_dir.join("stopped").as_path()),
            Some(backups_dir.join("swaps").as_path()),
        ]
        .into_iter()
        .flatten()
        {
            crate::os::files::remove_abandoned_temp_files_in(dir);
        }
        let userdata = Arc::new(UserdataFile::new(config.userdata_file.clone()));
        let applied_userdata = userdata.clone();
        let storage_userdata = userdata.clone();
        let applied = AppliedConfig {
            userdata,
            files: vec![
                (
                    config.userdata_file.clone(),
                    config.state_dir.join("applied-userdata.json"),
                ),
                (
                    config.nixos_config_dir.join("flake.nix"),
                    config.state_dir.join("applied-flake.nix"),
                ),
            ],
            system_profile: config.system_profile.clone(),
            profile_before_run: config.state_dir.join("rebuild-profile-before"),
        };
        let rebuilds = Arc::new(Rebuilds::new(
            systemd.clone(),
            jobs.clone(),
            RebuildUnits {
                rebuild: config.rebuild_unit.clone(),
                upgrade: config.upgrade_unit.clone(),
                rollback: config.rollback_unit.clone(),
            },
            Duration::from_secs(config.rebuild_timeout_secs),
            Duration::from_millis(config.rebuild_debounce_ms),
            applied,
            ChangeSetup {
                store: queue_store,
                catalogue: Catalogue::new(config.sp_modules_dir.clone()),
                flake: config.nixos_config_dir.join("flake.nix"),
            },
        ));
        let users =
            crate::domain::users::open(&config, applied_userdata.clone(), rebuilds.clone())?;
        let email_passwords = Arc::new(crate::domain::users::email_passwords::EmailPasswords::new(
            users_store,
            clock.clone(),
        ));
        if let Some(socket) = &config.mail_auth_socket {
            let checker = email_passwords.clone();
            crate::os::mail_auth_socket::spawn(
                socket.clone(),
                config.mail_auth_group.clone(),
                Arc::new(move |user: &str, password: &str| checker.check(user, password)),
            );
        }
        let services = Services::new(
            Catalogue::new(config.sp_modules_dir.clone()),
            systemd.clone(),
            rebuilds.clone(),
            Duration::from_secs(config.unit_timeout_secs),
            ServicesSetup {
                flake: config.nixos_config_dir.join("flake.nix"),
                module_url_template: config.module_url_template.clone(),
                public_ipv4: config.public_ipv4,
                public_ipv6: config.public_ipv6,
            },
        );
        for job in jobs.take_resumable() {
            rebuilds.resume(job);
        }
        let resources = Arc::new(ResourceSampler::new(
            systemd.clone(),
            PathBuf::from("/sys/fs/cgroup"),
            PathBuf::from("/proc"),
        ));
        let system_settings = crate::domain::system::settings::SystemSettings::new(
            rebuilds.clone(),
            crate::os::zoneinfo::database_dir(config.zoneinfo_dir.as_deref()),
            config.secrets_file.clone(),
        );
        let dns_records = crate::domain::system::dns::DnsRecords::new(
            config.dkim_key_file.clone(),
            config.public_ipv4,
            config.public_ipv6,
        );
        let maintenance = crate::domain::system::maintenance::Maintenance::new(
            crate::domain::system::maintenance::MaintenanceSetup {
                nixos_config_dir: config.nixos_config_dir.clone(),
                git: config.git_command.clone(),
                git_timeout: Duration::from_secs(config.git_pull_timeout_secs),
                collect_garbage: config.nix_collect_garbage_command.clone(),
                garbage_timeout: Duration::from_secs(config.garbage_collection_timeout_secs),
            },
            jobs.clone(),
        );
        let storage = Arc::new(Storage::new(
            moves_store,
            storage_userdata,
            config.sp_modules_dir.clone(),
            systemd.clone(),
            rebuilds.clone(),
            jobs.clone(),
            StorageSetup {
                unit_timeout: Duration::from_secs(config.unit_timeout_secs),
                rebuild_timeout: Duration::from_secs(config.rebuild_timeout_secs),
                #[cfg(feature = "test-hooks")]
                test_pause_move_at_step: config.test_pause_move_at_step.clone(),
                #[cfg(not(feature = "test-hooks"))]
                test_pause_move_at_step: None,
            },
        ));
        let service_locks = Arc::new(ServiceLocks::default());
        let backups = Arc::new(
            Backups::new(
                BackupsSetup {
                    dir: config.state_dir.join("backups"),
                    restic_binary: config.restic_binary.clone(),
                    postgres: crate::os::postgres::Postgres {
                        bin_dir: config.postgres_bin_dir.clone(),
                        host: config.postgres_host.clone(),
                        user: config.postgres_user.clone(),
                    },
                    sp_modules_dir: config.sp_modules_dir.clone(),
                    unit_timeout: Duration::from_secs(config.unit_timeout_secs),
                    // The server's settings and the secrets it needs (the
                    // DNS provider's token), so restoreAll can bring a
                    // fresh server back.
                    server_files: [config.userdata_file.clone(), config.secrets_file.clone()]
                        .into_iter()
                        .chain(config.backup_server_files.iter().cloned())
                        .collect(),
                    sftp: crate::domain::backups::SftpAccess {
                        identity_file: config.backup_sftp_identity_file.clone(),
                        known_hosts_file: config.backup_sftp_known_hosts_file.clone(),
                    },
                    #[cfg(feature = "test-hooks")]
                    test_backblaze_stand_in: config.test_backblaze_stand_in.clone(),
                    #[cfg(not(feature = "test-hooks"))]
                    test_backblaze_stand_in: None,
                    #[cfg(feature = "test-hooks")]
                    test_pause_restore_swap: config.test_pause_restore_swap.clone(),
                    #[cfg(not(feature = "test-hooks"))]
                    test_pause_restore_swap: None,
                },
                backup_store,
                jobs.clone(),
                service_locks.clone(),
                systemd.clone(),
            )
            .with_rebuilds(rebuilds.clone()),
        );
        backups.start_units_left_stopped();
        backups.use_configured_repository(config.backup_repository.clone());
        Ok(Arc::new(App {
            config,
            clock,
            tokens,
            jobs,
            throttle: AuthThrottle::new(),
            systemd,
            services,
            rebuilds,
            resources,
            system_settings,
            dns_records,
            maintenance,
            users,
            email_passwords,
            monitoring,
            storage,
            service_locks,
            backups,
        }))
    }
}
