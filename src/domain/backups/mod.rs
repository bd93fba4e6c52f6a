//! Backups with restic: one snapshot per service per backup (its folders,
//! owned folders and a fresh dump of each of its databases), tagged with
//! the service id and the reason; restores that replace a service's data
//! only once the new data is complete; a job for each. The snapshot list
//! is cached in SQLite and refreshed after every change.
//!
//! For automatic backups (scheduled elsewhere): [`Backups::backup_and_wait`]
//! (or [`Backups::start_backup`]) with [`Reason::Auto`],
//! [`Backups::service_snapshots`], [`Backups::last_backup_failure`],
//! [`Backups::forget_snapshot`] and [`Backups::settings`] (period, quotas).

pub mod automatic;
pub mod repository;
mod restore;

use super::error::{Failure, Outcome};
use super::i18n::Text;
use super::jobs::{Job, JobRegistry, JobStatus, JobUpdate};
use super::locks::{ServiceLease, ServiceLocks, ServiceOperation};
use super::services::catalogue::Catalogue;
use crate::os::postgres::Postgres;
use crate::os::restic::{Restic, Snapshot};
use crate::os::systemd::{JobOutcome, SystemdLink, UnitAction};
use crate::state::{SnapshotRecord, Store};
use chrono::{DateTime, Utc};
use repository::Files;
pub use repository::{
    ConfiguredRepository, Provider, Quotas, RepositoryInput, Settings, SftpAccess,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The id under which the daemon backs up the server's own settings.
pub const SELF_SERVICE_ID: &str = "selfprivacy-api";

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Explicit,
    Auto,
    PreRestore,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Explicit => "EXPLICIT",
            Reason::Auto => "AUTO",
            Reason::PreRestore => "PRE_RESTORE",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Some(match text {
            "EXPLICIT" => Reason::Explicit,
            "AUTO" => Reason::Auto,
            "PRE_RESTORE" => Reason::PreRestore,
            _ => return None,
        })
    }

    fn tag(self) -> String {
        format!("{REASON_TAG}{}", self.as_str())
    }
}

/// Tags of our snapshots: `<service id>` and `reason:<REASON>`.
const REASON_TAG: &str = "reason:";

/// How to restore a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Download into a staging folder on the same volume, verify, swap in.
    DownloadVerifyOverwrite,
    /// Take a PRE_RESTORE snapshot, then restore over the live data (needs
    /// no room for a second copy).
    Inplace,
}

/// A snapshot as the app lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    pub id: String,
    pub service: String,
    pub reason: Reason,
    pub created_at: DateTime<Utc>,
}

/// What the backups need from the rest of the daemon's settings.
pub struct BackupsSetup {
    /// `<state dir>/backups`.
    pub dir: PathBuf,
    pub restic_binary: PathBuf,
    pub postgres: Postgres,
    pub sp_modules_dir: PathBuf,
    pub unit_timeout: Duration,
    /// The server's settings backed up as [`SELF_SERVICE_ID`]: userdata and
    /// the secrets the server needs.
    pub server_files: Vec<PathBuf>,
    /// The key and known hosts SFTP repositories are reached with.
    pub sftp: SftpAccess,
    /// TEST SCAFFOLDING (test-hooks builds): a local folder BACKBLAZE
    /// repositories go to instead of B2's cloud.
    pub test_backblaze_stand_in: Option<PathBuf>,
    /// TEST SCAFFOLDING (test-hooks builds): a DOWNLOAD_VERIFY_OVERWRITE
    /// restore stops dead after the first rename of this swap phase
    /// (`aside` or `in`), for a test to kill the daemon there.
    pub test_pause_restore_swap: Option<String>,
}

/// One service's data, as a backup sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub name: String,
    pub units: Vec<String>,
    /// Folders, owned folders, or single files (the server's settings).
    pub paths: Vec<PathBuf>,
    pub databases: Vec<String>,
}

pub struct Backups {
    files: Files,
    restic_binary: PathBuf,
    postgres: Postgres,
    catalogue: Catalogue,
    unit_timeout: Duration,
    server_files: Vec<PathBuf>,
    sftp: SftpAccess,
    test_backblaze_stand_in: Option<PathBuf>,
    test_pause_restore_swap: Option<String>,
    store: Arc<Store>,
    jobs: Arc<JobRegistry>,
    locks: Arc<ServiceLocks>,
    systemd: Arc<SystemdLink>,
    /// One settings change at a time.
    settings_lock: tokio::sync::Mutex<()>,
    /// Applies restored server settings (restoreAll).
    rebuilds: Option<Arc<super::system::rebuild::Rebuilds>>,
}

fn not_initialized() -> Failure {
    Failure::conflict(
        "The backup repository is not initialized",
        "Хранилище резервных копий не инициализировано",
    )
}

fn restic_failure(context: &str, e: impl std::fmt::Display) -> Failure {
    tracing::error!("{context}: {e}");
    Failure::new(
        super::error::FailureKind::Internal,
        Text::new(
            format!("{context} failed: {e}"),
            format!("{context}: ошибка: {e}"),
        ),
    )
}

impl Backups {
    pub fn new(
        setup: BackupsSetup,
        store: Arc<Store>,
        jobs: Arc<JobRegistry>,
        locks: Arc<ServiceLocks>,
        systemd: Arc<SystemdLink>,
    ) -> Backups {
        Backups {
            files: Files { dir: setup.dir },
            restic_binary: setup.restic_binary,
            postgres: setup.postgres,
            catalogue: Catalogue::new(setup.sp_modules_dir),
            unit_timeout: setup.unit_timeout,
            server_files: setup.server_files,
            sftp: setup.sftp,
            test_backblaze_stand_in: setup.test_backblaze_stand_in,
            test_pause_restore_swap: setup.test_pause_restore_swap,
            store,
            jobs,
            locks,
            systemd,
            settings_lock: tokio::sync::Mutex::new(()),
            rebuilds: None,
        }
    }

    /// With the rebuilds that apply restored server settings.
    pub fn with_rebuilds(mut self, rebuilds: Arc<super::system::rebuild::Rebuilds>) -> Self {
        self.rebuilds = Some(rebuilds);
        self
    }

    // ---- Settings ----

    pub fn settings(&self) -> Outcome<Settings> {
        self.files.load()
    }

    /// The repository password shown to the owner ("" before one exists).
    pub fn encryption_key(&self) -> Outcome<String> {
        Ok(self.files.encryption_key()?.unwrap_or_default())
    }

    fn restic(&self) -> Outcome<Restic> {
        let settings = self.files.load()?;
        if !settings.initialized {
            return Err(not_initialized());
        }
        self.restic_for(&settings)
    }

    fn restic_for(&self, settings: &Settings) -> Outcome<Restic> {
        let mut repository = repository::repository(settings, &self.files, &self.sftp)?;
        if let Some(folder) = &self.test_backblaze_stand_in {
            repository::backblaze_stand_in(&mut repository, folder);
        }
        Ok(Restic::new(self.restic_binary.clone(), repository))
    }

    /// Sets up the repository: creates it, or opens the existing one with
    /// the given encryption key. The settings are kept only if restic could
    /// open it.
    pub async fn initialize(&self, input: RepositoryInput) -> Outcome<Settings> {
        repository::check_input(&input)?;
        let _guard = self.settings_lock.lock().await;
        self.files.prepare()?;
        let previous = self.files.load()?;
        let key = match input.encryption_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => repository::new_encryption_key(),
        };
        let settings = Settings {
            provider: input.provider,
            location_id: Some(input.location_id.clone()),
            location_name: Some(input.location_name.clone()),
            login: input.login.clone(),
            secret: input.password.clone(),
            initialized: true,
            autobackup_period: previous.autobackup_period,
            quotas: previous.quotas,
        };
        if settings.provider == Provider::File {
            // A link on the way would put the repository (and what restic
            // creates) somewhere other than the path the owner gave.
            let location = repository::repository(&settings, &self.files, &self.sftp)?.location;
            if let Some(link) = crate::os::files::first_symlink(Path::new(&location)) {
                return Err(Failure::bad_input(
                    format!(
                        "The repository path goes through a symbolic link: {}",
                        link.display()
                    ),
                    format!(
                        "Путь к хранилищу проходит через символическую ссылку: {}",
                        link.display()
                    ),
                ));
            }
        }
        let old_key = self.files.encryption_key()?;
        self.files.save_encryption_key(&key)?;
        let restic = self.restic_for(&settings)?;
        if matches!(settings.provider, Provider::File | Provider::Memory) {
            let path = PathBuf::from(
                &repository::repository(&settings, &self.files, &self.sftp)?.location,
            );

            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Failure::internal("creating the repository's folder", e))?;
            }
        }
        if let Err(e) = restic.init().await {
            // Keep the old password: the old settings stay usable.
            match old_key {
                Some(old) => self.files.save_encryption_key(&old)?,
                None => {
                    let _ = std::fs::remove_file(self.files.password());
                }
            }
            return Err(Failure::bad_input(
                format!("Could not create or open the repository: {e}"),
                format!("Не удалось создать или открыть хранилище: {e}"),
            ));
        }
        self.files.save(&settings)?;
        self.reload_snapshots().await?;
        Ok(settings)
    }

    /// Uses the repository of the daemon's configuration file, in the
    /// background (opening a remote repository may take a while): a
    /// failure is logged and leaves the previous settings.
    pub fn use_configured_repository(self: &Arc<Self>, configured: Option<ConfiguredRepository>) {
        let Some(configured) = configured else {
            return;
        };
        let backups = self.clone();
        tokio::spawn(async move {
            match backups.apply_configured(configured).await {
                Ok(_) => tracing::info!("using the backup repository of the configuration file"),
                Err(e) => tracing::error!(
                    "the backup repository of the configuration file cannot be used: {}",
                    e.message.en
                ),
            }
        });
    }

    /// Sets up the configured repository unless it is already the one in
    /// use (same place, account and secret), once per change of the
    /// configuration: a repository the owner changed or removed from the
    /// app since stays as the owner left it.
    pub async fn apply_configured(&self, configured: ConfiguredRepository) -> Outcome<Settings> {
        let secret = match &configured.secret_file {
            Some(path) => repository::read_secret_file(path)?,
            None => String::new(),
        };
        let wanted_key = match &configured.encryption_key_file {
            Some(path) => Some(repository::read_secret_file(path)?),
            None => None,
        };
        let fingerprint = {
            use sha2::{Digest, Sha256};
            let mut hasher = Sha256::new();
            let provider = format!("{:?}", configured.provider);
            for part in [
                provider.as_str(),
                &configured.location_id,
                &configured.location_name,
                &configured.login,
                &secret,
                wanted_key.as_deref().unwrap_or(""),
            ] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let current = self.files.load()?;
        if self.files.applied_configuration()?.as_deref() == Some(fingerprint.as_str()) {
            return Ok(current);
        }
        let current_key = self.files.encryption_key()?;
        let in_use = current.initialized
            && current.provider == configured.provider
            && current.location_id.as_deref() == Some(configured.location_id.as_str())
            && current.location_name.as_deref() == Some(configured.location_name.as_str())
            && current.login == configured.login
            && current.secret == secret
            && (wanted_key.is_none() || wanted_key == current_key);
        let settings = if in_use {
            current
        } else {
            self.initialize(RepositoryInput {
                provider: configured.provider,
                location_id: configured.location_id,
                location_name: configured.location_name,
                login: configured.login,
                password: secret,
                encryption_key: wanted_key.or(current_key),
            })
            .await?
        };
        self.files.save_applied_configuration(&fingerprint)?;
        Ok(settings)
    }

    /// Forgets the repository settings; the repository's data stays where
    /// it is (a new server can open it with the encryption key).
    pub async fn remove_repository(&self) -> Outcome<Settings> {
        let _guard = self.settings_lock.lock().await;
        let previous = self.files.load()?;
        let settings = Settings {
            autobackup_period: previous.autobackup_period,
            quotas: previous.quotas,
            ..Settings::default()
        };
        self.files.save(&settings)?;
        let _ = std::fs::remove_file(self.files.password());
        self.store
            .replace_backup_snapshots(&[])
            .map_err(|e| Failure::internal("clearing the snapshot list", e))?;
        Ok(settings)
    }

    /// Minutes between automatic backups (None or 0 or less: off).
    pub async fn set_autobackup_period(&self, period: Option<i32>) -> Outcome<Settings> {
        let _guard = self.settings_lock.lock().await;
        let mut settings = self.files.load()?;
        settings.autobackup_period = period.filter(|p| *p > 0);
        self.files.save(&settings)?;
        Ok(settings)
    }

    pub async fn set_quotas(&self, quotas: Quotas) -> Outcome<Settings> {
        if quotas.validate().is_err() {
            return Err(Failure::bad_input(
                "A quota is a count, 0 (none) or -1 (unlimited)",
                "Квота — число, 0 (ни одной) или -1 (без ограничения)",
            ));
        }
        let _guard = self.settings_lock.lock().await;
        let mut settings = self.files.load()?;
        settings.quotas = quotas;
        self.files.save(&settings)?;
        Ok(settings)
    }

    // ---- Snapshots ----

    /// Every snapshot, from the cache, oldest first.
    pub fn snapshots(&self) -> Outcome<Vec<SnapshotEntry>> {
        Ok(self
            .store
            .backup_snapshots()
            .map_err(|e| Failure::internal("reading the snapshot list", e))?
            .into_iter()
            .map(|r| SnapshotEntry {
                reason: Reason::parse(&r.reason).unwrap_or(Reason::Explicit),
                id: r.id,
                service: r.service,
                created_at: r.created_at,
            })
            .collect())
    }

    /// One service's snapshots (id, time, reason), oldest first.
    pub fn service_snapshots(&self, service: &str) -> Outcome<Vec<SnapshotEntry>> {
        Ok(self
            .snapshots()?
            .into_iter()
            .filter(|s| s.service == service)
            .collect())
    }

    /// When the last backup of `service` failed, if one did and its job is
    /// still listed (jobs are kept 10 days): for "no failed attempt in the
    /// last hour".
    pub fn last_backup_failure(&self, service: &str) -> Option<DateTime<Utc>> {
        let type_id = backup_job_type(service);
        self.jobs
            .list()
            .iter()
            .filter(|j| j.type_id == type_id && j.status == JobStatus::Error)
            .filter_map(|j| j.finished_at)
            .max()
    }

    /// Reads the repository's snapshot list into the cache.
    pub async fn reload_snapshots(&self) -> Outcome<()> {
        let restic = self.restic()?;
        let snapshots = restic
            .snapshots()
            .await
            .map_err(|e| restic_failure("Listing snapshots", e))?;
        let records: Vec<SnapshotRecord> = snapshots.iter().filter_map(record_of).collect();
        self.store
            .replace_backup_snapshots(&records)
            .map_err(|e| Failure::internal("saving the snapshot list", e))
    }

    /// Forgets a snapshot (and prunes the data only it used). Waits for the
    /// service's other backups and restores to be done: refused if one runs.
    pub async fn forget_snapshot(&self, snapshot_id: &str) -> Outcome<()> {
        let entry = self.find_snapshot(snapshot_id).await?;
        let _lease = self
            .locks
            .try_acquire(&entry.service, ServiceOperation::Backup)?;
        let restic = self.restic()?;
        restic
            .forget(std::slice::from_ref(&entry.id))
            .await
            .map_err(|e| restic_failure("Forgetting the snapshot", e))?;
        self.reload_snapshots().await
    }

    /// The snapshot `id` names (full or short id), from the cache, reloaded
    /// once if it is not there.
    async fn find_snapshot(&self, id: &str) -> Outcome<SnapshotEntry> {
        let find = |list: Vec<SnapshotEntry>| {
            list.into_iter()
                .find(|s| !id.is_empty() && (s.id == id || s.id.starts_with(id) && id.len() >= 8))
        };
        if let Some(entry) = find(self.snapshots()?) {
            return Ok(entry);
        }
        self.reload_snapshots().await?;
        find(self.snapshots()?)
            .ok_or_else(|| Failure::not_found("Snapshot not found", "Снимок не найден"))
    }

    // ---- What is backed up ----

    /// The data of service `id`: the catalogue's entry, or the server's
    /// own settings.
    pub fn target(&self, id: &str) -> Outcome<Target> {
        if id == SELF_SERVICE_ID {
            return Ok(Target {
                id: id.into(),
                name: "Server settings".into(),
                units: Vec::new(),
                paths: self
                    .server_files
                    .iter()
                    .cloned()
                    .chain([self.files.settings()])
                    .collect(),
                databases: Vec::new(),
            });
        }
        let definition = self
            .catalogue
            .get(id)
            .ok_or_else(|| Failure::not_found("Service not found", "Сервис не найден"))?;
        let meta = &definition.meta;
        if !meta.can_be_backed_up {
            return Err(Failure::bad_input(
                format!("{} cannot be backed up", meta.name),
                format!("{}: резервное копирование недоступно", meta.name),
            ));
        }
        Ok(Target {
            id: id.into(),
            name: meta.name.clone(),
            units: meta.systemd_services.clone(),
            paths: meta.all_folders().into_iter().map(PathBuf::from).collect(),
            databases: meta.postgre_databases.clone(),
        })
    }

    /// Every service that can be backed up, and the server's settings last.
    pub fn all_targets(&self) -> Vec<String> {
        self.catalogue
            .definitions()
            .iter()
            .filter(|d| d.meta.can_be_backed_up)
            .map(|d| d.meta.id.clone())
            .chain([SELF_SERVICE_ID.to_owned()])
            .collect()
    }

    fn dump_dir(&self, service: &str) -> PathBuf {
        self.files.dumps().join(service)
    }

    // ---- Backups ----

    /// Starts a backup of one service as a job: refused at once (409) while
    /// a backup, restore or move of that service runs.
    pub fn start_backup(self: &Arc<Self>, service: &str, reason: Reason) -> Outcome<Job> {
        let (target, lease, job) = self.prepare_backup(service)?;
        let this = self.clone();
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let _ = this.backup_job(&target, reason, &uid, lease).await;
        });
        Ok(job)
    }

    /// A backup of one service as a job, waiting for its end (automatic
    /// backups: the caller applies quotas next): the job as it started
    /// and the new snapshot's id. The snapshot list is fresh on return.
    pub async fn backup_and_wait(
        self: &Arc<Self>,
        service: &str,
        reason: Reason,
    ) -> Outcome<(Job, String)> {
        let (target, lease, job) = self.prepare_backup(service)?;
        let id = self.backup_job(&target, reason, &job.uid, lease).await?;
        Ok((job, id))
    }

    /// Checks and takes what a backup needs: the service, the repository,
    /// the service's lease, and its job.
    fn prepare_backup(&self, service: &str) -> Outcome<(Target, ServiceLease, Job)> {
        let target = self.target(service)?;
        self.restic()?;
        let lease = self.locks.try_acquire(service, ServiceOperation::Backup)?;
        let job = self.jobs.create(
            &backup_job_type(service),
            Text::new(
                format!("Backup of {}", target.name),
                format!("Резервная копия: {}", target.name),
            ),
            Text::new(
                format!("Backing up {}", target.name),
                format!("Создание резервной копии: {}", target.name),
            ),
        )?;
        Ok((target, lease, job))
    }

    /// Runs a backup job to its end, then reads the snapshot list again.
    async fn backup_job(
        &self,
        target: &Target,
        reason: Reason,
        uid: &str,
        lease: ServiceLease,
    ) -> Outcome<String> {
        let outcome = self.run_backup(target, reason, uid, lease).await;
        self.finish(uid, outcome.clone().map(|id| format!("Snapshot {id}")));
        if outcome.is_ok()
            && let Err(e) = self.reload_snapshots().await
        {
            tracing::warn!(
                "refreshing the snapshot list after a backup: {}",
                e.message.en
            );
        }
        outcome
    }

    /// The backup itself; `lease` is held until it ends.
    async fn run_backup(
        &self,
        target: &Target,
        reason: Reason,
        job: &str,
        lease: ServiceLease,
    ) -> Outcome<String> {
        self.progress(job, 0, "Preparing", "Подготовка");
        let started_at = Utc::now();
        let id = self.backup_now(target, reason, job).await;
        drop(lease);
        let id = id?;
        // Listed at once under restic's short id; the full list is read
        // after the job has ended (each restic run derives the key again,
        // which is most of a backup's cost beyond restic's own).
        let record = SnapshotRecord {
            id: id.clone(),
            service: target.id.clone(),
            reason: reason.as_str().into(),
            created_at: started_at,
        };
        self.store
            .insert_backup_snapshot(&record)
            .map_err(|e| Failure::internal("saving the snapshot list", e))?;
        Ok(id)
    }

    /// Dumps the databases, stops the service if it has files, backs up,
    /// and starts it again whatever happened. The caller holds the lease.
    async fn backup_now(&self, target: &Target, reason: Reason, job: &str) -> Outcome<String> {
        let restic = self.restic()?;
        let dumps = self.dump_databases(target).await?;
        let mut paths: Vec<PathBuf> = target
            .paths
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect();
        if let Some(dumps) = &dumps {
            paths.push(dumps.clone());
        }
        if paths.is_empty() {
            return Err(Failure::conflict(
                format!("{} has no data to back up yet", target.name),
                format!("У сервиса {} пока нет данных для копирования", target.name),
            ));
        }
        // The databases are dumped consistently while running; files need
        // the service stopped so none is half-written.
        let has_files = target.paths.iter().any(|p| p.exists());
        let stopped = if has_files {
            self.stop_units(target).await?
        } else {
            Vec::new()
        };
        self.progress(job, 0, "Backing up", "Копирование");
        let tags = vec![target.id.clone(), reason.tag()];
        let backed_up = restic
            .backup(&paths, &tags, &restore::LEFTOVERS, |percent| {
                let _ = self.jobs.update(
                    job,
                    JobUpdate {
                        progress: Some(percent.min(99)),
                        ..Default::default()
                    },
                );
            })
            .await;
        let started = self.start_units(&target.id, &stopped).await;
        if let Some(dumps) = &dumps {
            let _ = std::fs::remove_dir_all(dumps);
        }
        let id = backed_up.map_err(|e| restic_failure("The backup", e))?;
        started?;
        Ok(id)
    }

    /// A fresh dump of each database into the service's dump folder.
    async fn dump_databases(&self, target: &Target) -> Outcome<Option<PathBuf>> {
        if target.databases.is_empty() {
            return Ok(None);
        }
        let dir = self.dump_dir(&target.id);
        let _ = std::fs::remove_dir_all(&dir);
        self.files.prepare()?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::internal("creating a dump folder", e))?;
        for db in &target.databases {
            self.postgres
                .dump(db, &dir.join(format!("{db}.dump")))
                .await
                .map_err(|e| restic_failure(&format!("Dumping database {db}"), e))?;
        }
        Ok(Some(dir))
    }

    /// Notes which of the service's units are stopped by us, so a daemon
    /// killed before starting them again starts them when it comes back.
    fn note_stopped(&self, service: &str, units: &[String]) {
        let file = self.files.stopped().join(service);
        let noted = if units.is_empty() {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let json = serde_json::to_vec(units).unwrap_or_default();
            self.files
                .prepare()
                .map_err(|e| std::io::Error::other(e.message.en))
                .and_then(|()| crate::os::files::write_atomically(&file, &json, 0o600))
        };
        if let Err(e) = noted {
            tracing::warn!("noting the stopped units of {service}: {e}");
        }
    }

    /// Starts the units a killed daemon left stopped (see `note_stopped`).
    /// Called once at startup.
    pub fn start_units_left_stopped(self: &Arc<Self>) {
        // Before any unit starts: folders a killed restore left half
        // swapped are put right first.
        restore::recover_swaps(&self.files.swaps());
        let Ok(entries) = std::fs::read_dir(self.files.stopped()) else {
            return;
        };
        for entry in entries.flatten() {
            let service = entry.file_name().to_string_lossy().into_owned();
            let units: Vec<String> = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            tracing::warn!(%service, ?units, "starting units a backup or restore left stopped");
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.start_units(&service, &units).await {
                    tracing::error!("starting {service} again: {}", e.message.en);
                }
            });
        }
    }

    /// Stops the service's running units; returns those it stopped.
    async fn stop_units(&self, target: &Target) -> Outcome<Vec<String>> {
        if target.units.is_empty() {
            return Ok(Vec::new());
        }
        let systemd = self
            .systemd
            .get()
            .await
            .map_err(|e| Failure::internal("connecting to systemd", e))?;
        let states = systemd.unit_states(&target.units).await;
        let mut stopped = Vec::new();
        for unit in &target.units {
            let running = states.get(unit).is_some_and(|s| {
                matches!(
                    s.active_state.as_str(),
                    "active" | "activating" | "reloading"
                )
            });
            if !running {
                continue;
            }
            // Noted before stopping: a daemon killed right after still
            // starts it again.
            let mut noted = stopped.clone();
            noted.push(unit.clone());
            self.note_stopped(&target.id, &noted);
            match systemd
                .run_job(UnitAction::Stop, unit, self.unit_timeout)
                .await
            {
                Ok(JobOutcome::Done) => stopped.push(unit.clone()),
                other => {
                    // Put back what was stopped before giving up.
                    let _ = self.start_units(&target.id, &noted).await;
                    return Err(Failure::internal(
                        &format!("stopping {unit}"),
                        format!("{other:?}"),
                    ));
                }
            }
        }
        Ok(stopped)
    }

    /// Starts `units` of `service` again, each even when another failed.
    async fn start_units(&self, service: &str, units: &[String]) -> Outcome<()> {
        if units.is_empty() {
            return Ok(());
        }
        let systemd = self
            .systemd
            .get()
            .await
            .map_err(|e| Failure::internal("connecting to systemd", e))?;
        let mut failed = Vec::new();
        for unit in units {
            match systemd
                .run_job(UnitAction::Start, unit, self.unit_timeout)
                .await
            {
                Ok(JobOutcome::Done) => {}
                other => {
                    tracing::error!("starting {unit} again: {other:?}");
                    failed.push(unit.clone());
                }
            }
        }
        // Tried once, whatever the outcome: a unit that does not start is
        // reported, not retried at every boot.
        self.note_stopped(service, &[]);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Failure::internal(
                "starting the service again",
                failed.join(", "),
            ))
        }
    }

    /// Backs up every service and then the server's settings, one job.
    pub fn start_total_backup(self: &Arc<Self>) -> Outcome<Job> {
        self.restic()?;
        let job = self.jobs.create(
            "backups.total_backup",
            Text::new(
                "Backup of the whole server",
                "Резервная копия всего сервера",
            ),
            Text::new(
                "Backing up every service and the server's settings",
                "Копирование всех сервисов и настроек сервера",
            ),
        )?;
        let this = self.clone();
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let outcome = this.run_total_backup(&uid).await;
            this.finish(&uid, outcome);
        });
        Ok(job)
    }

    async fn run_total_backup(&self, job: &str) -> Outcome<String> {
        let ids = self.all_targets();
        let mut failed = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let percent = (n * 100 / ids.len()) as i32;
            self.progress(
                job,
                percent,
                &format!("Backing up {id}"),
                &format!("Копирование: {id}"),
            );
            let done = async {
                let target = self.target(id)?;
                if target.databases.is_empty() && !target.paths.iter().any(|p| p.exists()) {
                    // Nothing of it on this server (never started).
                    return Ok(String::new());
                }
                let _lease = self.locks.try_acquire(id, ServiceOperation::Backup)?;
                self.backup_now(&target, Reason::Explicit, job).await
            }
            .await;
            if let Err(e) = done {
                tracing::error!("total backup: {id}: {}", e.message.en);
                failed.push(format!("{id} ({})", e.message.en));
            }
        }
        let _ = self.reload_snapshots().await;
        if failed.is_empty() {
            Ok(format!("{} backed up", ids.len()))
        } else {
            Err(Failure::internal("backing up", failed.join("; ")))
        }
    }

    // ---- Jobs ----

    fn progress(&self, job: &str, percent: i32, en: &str, ru: &str) {
        let _ = self.jobs.update(
            job,
            JobUpdate {
                status: Some(JobStatus::Running),
                status_text: Some(Text::new(en, ru)),
                progress: Some(percent),
                ..Default::default()
            },
        );
    }

    fn finish(&self, job: &str, outcome: Outcome<String>) {
        let update = match outcome {
            Ok(result) => JobUpdate {
                status: Some(JobStatus::Finished),
                status_text: Some(Text::new("Done", "Готово")),
                result: Some(Text::new(result.clone(), result)),
                ..Default::default()
            },
            Err(failure) => JobUpdate {
                status: Some(JobStatus::Error),
                status_text: Some(Text::new("Failed", "Ошибка")),
                error: Some(failure.message),
                ..Default::default()
            },
        };
        if let Err(e) = self.jobs.update(job, update) {
            tracing::error!("ending job {job}: {}", e.message.en);
        }
    }
}

/// The job type of a backup of `service`.
pub fn backup_job_type(service: &str) -> String {
    format!("backups.{service}.backup")
}

/// The cache entry of a restic snapshot, if it is one of ours (tagged
/// with a service id).
fn record_of(snapshot: &Snapshot) -> Option<SnapshotRecord> {
    let service = snapshot
        .tags
        .iter()
        .find(|t| !t.starts_with(REASON_TAG))?
        .clone();
    let reason = snapshot
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(REASON_TAG))
        .and_then(Reason::parse)
        .unwrap_or(Reason::Explicit);
    Some(SnapshotRecord {
        id: snapshot.id.clone(),
        service,
        reason: reason.as_str().into(),
        created_at: snapshot.time,
    })
}

/// Free bytes on the filesystem holding `path` (or its nearest existing
/// ancestor).
fn free_bytes(path: &Path) -> Option<u64> {
    let mut at = Some(path);
    while let Some(p) = at {
        if p.exists() {
            let stat = nix::sys::statvfs::statvfs(p).ok()?;
            return Some(stat.blocks_available() as u64 * stat.fragment_size() as u64);
        }
        at = p.parent();
    }
    None
}

/// The service shown with snapshots of a service the catalogue does not
/// have: the server's own settings, or a removed service's (orphaned):
/// OFF, nothing enabled, nothing to open.
pub fn placeholder_view(service: &str) -> super::services::ServiceView {
    use super::services::definition::Definition;
    let own = service == SELF_SERVICE_ID;
    let (name, description) = if own {
        (
            "Server settings".to_owned(),
            "The server's settings: userdata, its secrets and the backup settings".to_owned(),
        )
    } else {
        (
            format!("{service} (orphaned)"),
            format!("{service} is no longer installed; its snapshots are kept"),
        )
    };
    let definition: Definition = serde_json::from_value(serde_json::json!({
        "meta": {
            "id": service,
            "name": name,
            "description": description,
            "showUrl": false,
            "canBeBackedUp": own,
            "backupDescription": description,
            "systemdServices": [],
        },
        "options": {},
    }))
    .expect("a placeholder definition is well-formed");
    super::services::ServiceView::bare(Arc::new(definition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backups_in(dir: &Path) -> (Backups, Arc<JobRegistry>) {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let clock = Arc::new(crate::domain::clock::Clock::default());
        let jobs = Arc::new(JobRegistry::load(store.clone(), clock, |_| false).unwrap());
        let backups = Backups::new(
            BackupsSetup {
                dir: dir.join("backups"),
                restic_binary: "restic".into(),
                postgres: Postgres {
                    bin_dir: None,
                    host: "/run/postgresql".into(),
                    user: "postgres".into(),
                },
                sp_modules_dir: dir.join("sp-modules"),
                unit_timeout: Duration::from_secs(1),
                server_files: vec![],
                sftp: SftpAccess::default(),
                test_backblaze_stand_in: None,
                test_pause_restore_swap: None,
            },
            store,
            jobs.clone(),
            Arc::default(),
            Arc::new(SystemdLink::new(None)),
        );
        (backups, jobs)
    }

    /// A FILE repository whose path goes through a symlink is refused before
    /// anything is written: nothing appears where the link leads, and no
    /// settings or key are kept.
    #[tokio::test]
    async fn a_file_repository_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (backups, _) = backups_in(dir.path());
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("link")).unwrap();
        let refused = backups
            .initialize(RepositoryInput {
                provider: Provider::File,
                location_id: String::new(),
                location_name: dir.path().join("link/repo").to_string_lossy().into_owned(),
                login: String::new(),
                password: String::new(),
                encryption_key: None,
            })
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert!(backups.encryption_key().unwrap().is_empty());
    }

    /// A configured repository is opened once, then kept across starts with
    /// its key; a given key file opens an existing repository; a missing
    /// secret file is a clear error that changes nothing.
    #[tokio::test]
    async fn a_configured_repository_is_set_up_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (backups, _) = backups_in(dir.path());
        let repo = dir.path().join("repo");
        let configured = ConfiguredRepository {
            provider: Provider::File,
            location_id: String::new(),
            location_name: repo.to_string_lossy().into_owned(),
            login: String::new(),
            secret_file: None,
            encryption_key_file: None,
        };
        let first = backups.apply_configured(configured.clone()).await.unwrap();
        assert!(first.initialized && repo.join("config").exists());
        let key = backups.encryption_key().unwrap();
        assert!(!key.is_empty());
        // The next start: nothing changes.
        let again = backups.apply_configured(configured.clone()).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(backups.encryption_key().unwrap(), key);

        // Another server opens it with the key from a file.
        let other = tempfile::tempdir().unwrap();
        let (second, _) = backups_in(other.path());
        let key_file = other.path().join("key");
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        let opened = second
            .apply_configured(ConfiguredRepository {
                encryption_key_file: Some(key_file),
                ..configured.clone()
            })
            .await
            .unwrap();
        assert!(opened.initialized);
        assert_eq!(second.encryption_key().unwrap(), key);

        let missing = ConfiguredRepository {
            secret_file: Some(other.path().join("no-such-secret")),
            ..configured
        };
        assert!(second.apply_configured(missing).await.is_err());
        assert_eq!(second.settings().unwrap(), opened);
    }

    /// What automatic backups use: a backup with reason AUTO run to its
    /// end, the service's snapshots, forgetting one; with real restic.
    #[tokio::test]
    async fn an_automatic_backup_is_listed_with_its_reason_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("file"), "content").unwrap();
        std::fs::create_dir_all(dir.path().join("sp-modules")).unwrap();
        let definition = serde_json::json!({
            "meta": {"spModuleSchemaVersion": 1, "id": "notes", "name": "Notes",
                     "description": "d", "svgIcon": "<svg/>", "supportLevel": "normal",
                     "systemdServices": [], "folders": [data]},
            "options": {"enable": {"name": "enable", "default": false, "meta": {"type": "enable"}}}
        });
        std::fs::write(dir.path().join("sp-modules/notes"), definition.to_string()).unwrap();
        let (backups, jobs) = backups_in(dir.path());
        let backups = Arc::new(backups);
        let refused = backups.backup_and_wait("notes", Reason::Auto).await;
        assert_eq!(
            refused.err().unwrap().kind,
            super::super::error::FailureKind::Conflict
        );
        backups
            .initialize(RepositoryInput {
                provider: Provider::File,
                location_id: String::new(),
                location_name: dir.path().join("repo").to_string_lossy().into_owned(),
                login: String::new(),
                password: String::new(),
                encryption_key: None,
            })
            .await
            .unwrap();
        let (job, id) = backups
            .backup_and_wait("notes", Reason::Auto)
            .await
            .unwrap();
        assert_eq!(jobs.get(&job.uid).unwrap().status, JobStatus::Finished);
        let listed = backups.service_snapshots("notes").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reason, Reason::Auto);
        assert!(
            listed[0].id.starts_with(&id) && listed[0].id.len() == 64,
            "{listed:?}"
        );
        assert_eq!(backups.last_backup_failure("notes"), None);
        backups.forget_snapshot(&listed[0].id).await.unwrap();
        assert!(backups.service_snapshots("notes").unwrap().is_empty());
    }

    #[test]
    fn the_last_failed_backup_of_a_service_is_found_in_its_jobs() {
        let (backups, jobs) = backups_in(Path::new("/nonexistent"));
        let text = || Text::new("x", "x");
        let failed = jobs
            .create(&backup_job_type("notes"), text(), text())
            .unwrap();
        let ok = jobs
            .create(&backup_job_type("pgapp"), text(), text())
            .unwrap();
        for (job, status) in [(&failed, JobStatus::Error), (&ok, JobStatus::Finished)] {
            let update = JobUpdate {
                status: Some(status),
                ..Default::default()
            };
            jobs.update(&job.uid, update).unwrap();
        }
        assert!(backups.last_backup_failure("notes").is_some());
        assert_eq!(backups.last_backup_failure("pgapp"), None);
        assert_eq!(backups.last_backup_failure("other"), None);
    }

    #[test]
    fn snapshots_are_read_from_their_tags() {
        let snap = |tags: &[&str]| Snapshot {
            id: "abc".into(),
            time: Utc::now(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            paths: vec![],
            hostname: "x".into(),
        };
        let r = record_of(&snap(&["reason:AUTO", "notes"])).unwrap();
        assert_eq!((r.service.as_str(), r.reason.as_str()), ("notes", "AUTO"));
        // Without a reason tag: an explicit backup.
        let r = record_of(&snap(&["pgapp"])).unwrap();
        assert_eq!(r.reason, "EXPLICIT");
        // Not ours.
        assert!(record_of(&snap(&[])).is_none());
    }
}
