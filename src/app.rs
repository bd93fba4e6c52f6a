//! The composition root: the daemon's domain services, built once from the
//! configuration and shared by every request.

use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::jobs::JobRegistry;
use crate::domain::locks::ServiceLocks;
use crate::domain::services::catalogue::Catalogue;
use crate::domain::services::resources::ResourceSampler;
use crate::domain::services::{Services, ServicesSetup};
use crate::domain::storage::{Storage, StorageSetup};
use crate::domain::system::rebuild::{AppliedConfig, RebuildKind, RebuildUnits, Rebuilds};
use crate::domain::tokens::{AuthThrottle, TokenService};
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
    /// Volumes and moves of service data between them.
    pub storage: Arc<Storage>,
}

impl App {
    pub fn open(config: Config) -> anyhow::Result<Arc<App>> {
        let store = Arc::new(Store::open(&config.state_dir)?);
        let clock = Arc::new(Clock::default());
        let tokens = TokenService::load(store.clone(), clock.clone())?;
        let moves_store = store.clone();
        let jobs = Arc::new(JobRegistry::load(store, clock.clone(), |job| {
            RebuildKind::of_job(&job.type_id).is_some()
        })?);
        let systemd = Arc::new(SystemdLink::new(config.dbus_address.clone()));
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
        ));
        let services = Services::new(
            Catalogue::new(config.sp_modules_dir.clone()),
            applied_userdata,
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
                test_pause_move_at_step: config.test_pause_move_at_step.clone(),
            },
        ));
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
            service_locks: Arc::new(ServiceLocks::default()),
            storage,
        }))
    }
}
