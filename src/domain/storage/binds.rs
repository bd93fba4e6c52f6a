//! `migrateToBinds`: an older server keeps its services' data where the
//! services use it (`/var/lib/<service>`... on the system disk). This moves
//! each movable service's folders to `/volumes/<volume>/<name>` and turns on
//! `useBinds`, so the rebuild binds them back in place: one job for all.
//!
//! Each step is recorded in SQLite before its work starts:
//!
//! | step       | work                                                  | if cut off here |
//! |------------|-------------------------------------------------------|-----------------|
//! | stopping   | stop the services' units                              | roll back       |
//! | copying    | `cp -a` each folder going to another filesystem       | roll back       |
//! | verifying  | read both back, compare, rename into place, syncfs    | roll back       |
//! | moving     | set each original aside (or rename it onto its volume | roll back       |
//! |            | when that is the same filesystem), leave an empty     |                 |
//! |            | folder as the mount point                             |                 |
//! | switching  | `useBinds` and each `location` in userdata, rebuild   | finish          |
//! | removing   | remove the originals set aside                        | finish          |
//! | starting   | start the units of the enabled services               | finish          |
//!
//! Until the switch the services use nothing new: going back renames the
//! originals back. From the switch on, the copies are complete, verified
//! and bound: going on is safe. Ownership travels with the data (`cp -a`,
//! rename); only a folder that did not exist yet is created, for its owner.

use super::moves::{
    at as failed_at, copy_with_progress, internal, margin_for, verify_copy, wait_for_job_end,
};
use super::{Storage, VOLUMES_DIR, check_volume_name};
use crate::domain::error::{Failure, Outcome};
use crate::domain::i18n::Text;
use crate::domain::jobs::{Job, JobStatus};
use crate::domain::locks::{ServiceLease, ServiceLocks, ServiceOperation};
use crate::domain::system::changes::UserdataChange;
use crate::domain::system::rebuild::ConfigChange;
use crate::os::copy;
use crate::os::disks::is_mount_point;
use crate::os::systemd::UnitAction;
use crate::state::BindMigrationRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The job's type, as the Python API named it.
pub const MIGRATION_JOB_TYPE: &str = "migrations.migrate_to_binds";

/// The services the app's `MigrateToBindsInput` names, by field.
pub const FIXED_SERVICES: [(&str, &str); 5] = [
    ("email", "simple-nixos-mailserver"),
    ("bitwarden", "bitwarden"),
    ("gitea", "gitea"),
    ("nextcloud", "nextcloud"),
    ("pleroma", "pleroma"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Stopping,
    Copying,
    Verifying,
    Moving,
    Switching,
    Removing,
    Starting,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::Stopping,
        Step::Copying,
        Step::Verifying,
        Step::Moving,
        Step::Switching,
        Step::Removing,
        Step::Starting,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Step::Stopping => "stopping",
            Step::Copying => "copying",
            Step::Verifying => "verifying",
            Step::Moving => "moving",
            Step::Switching => "switching",
            Step::Removing => "removing",
            Step::Starting => "starting",
        }
    }

    fn parse(text: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == text)
    }

    fn recovers_forward(self) -> bool {
        self >= Step::Switching
    }

    fn progress(self) -> i32 {
        match self {
            Step::Stopping => 5,
            Step::Copying => 10,
            Step::Verifying => 60,
            Step::Moving => 80,
            Step::Switching => 85,
            Step::Removing => 95,
            Step::Starting => 98,
        }
    }

    fn describe(self) -> Text {
        match self {
            Step::Stopping => Text::new("Stopping the services", "Остановка сервисов"),
            Step::Copying => Text::new("Copying the data to volumes", "Копирование данных на тома"),
            Step::Verifying => Text::new("Checking the copies", "Проверка копий"),
            Step::Moving => Text::new(
                "Setting the old folders aside",
                "Старые папки откладываются в сторону",
            ),
            Step::Switching => Text::new(
                "Binding the folders from the volumes (system rebuild)",
                "Подключение папок с томов (пересборка системы)",
            ),
            Step::Removing => Text::new("Removing the old copies", "Удаление старых копий"),
            Step::Starting => Text::new("Starting the services", "Запуск сервисов"),
        }
    }
}

/// One folder of one service, and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FolderPlan {
    /// Where the service keeps it (from its definition).
    path: PathBuf,
    /// `/volumes/<volume>/<name>`.
    target: PathBuf,
    /// Same filesystem as the target: renamed, not copied.
    rename: bool,
    /// Whether it existed when planned. A missing folder of an enabled
    /// service gets an empty new home, given to `owner`.
    existed: bool,
    owner: Option<(String, String)>,
}

impl FolderPlan {
    /// Where a copy is made before it is checked.
    fn partial(&self) -> PathBuf {
        sibling(&self.target, "sp-moving")
    }

    /// Where the original waits, beside itself, until the switch is done.
    fn aside(&self) -> PathBuf {
        sibling(&self.path, "sp-unbound")
    }
}

/// `<parent>/.<name>.<suffix>`: plainly not a service's folder.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{suffix}"))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ServicePlan {
    id: String,
    name: String,
    enabled: bool,
    units: Vec<String>,
    volume: String,
    /// `location` before, to restore if the switch fails.
    previous_location: Option<String>,
}

/// Everything the migration does, fixed before it starts and recorded
/// with each step (a restarted daemon recovers from this alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plan {
    services: Vec<ServicePlan>,
    folders: Vec<FolderPlan>,
    /// Volumes that receive copies: synced before anything is set aside.
    volumes: BTreeSet<String>,
}

impl Plan {
    /// The units of the enabled services (a disabled one has none).
    fn units(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| s.enabled)
            .flat_map(|s| s.units.iter().cloned())
            .collect()
    }
}

type StepFailure = super::moves::StepFailure<Step>;
type StepOutcome = Result<(), StepFailure>;

fn io(step: Step, path: &Path) -> impl FnOnce(std::io::Error) -> StepFailure + '_ {
    move |e| internal(step, format!("{}: {e}", path.display()))
}

impl Storage {
    /// Checks the whole migration (refusing before anything is touched),
    /// then runs it as one job. `requested` maps the services the app
    /// names to volumes; every other movable service goes to the volume
    /// its `location` names, or the system volume.
    pub async fn start_bind_migration(
        self: &Arc<Self>,
        locks: &Arc<ServiceLocks>,
        requested: BTreeMap<String, String>,
    ) -> Outcome<Job> {
        let userdata = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        if userdata["useBinds"] == true {
            return Err(Failure::conflict(
                "This server already keeps service data on volumes with bind mounts: nothing to migrate (use moveService to move a service)",
                "Этот сервер уже хранит данные сервисов на томах через bind-монтирование: переносить нечего (для переноса сервиса используйте moveService)",
            ));
        }
        if !self
            .store
            .bind_migrations()
            .map_err(|e| Failure::internal("reading migrations", e))?
            .is_empty()
        {
            return Err(Failure::conflict(
                "A migration to binds is already under way",
                "Миграция на bind-монтирование уже идёт",
            ));
        }
        for volume in requested.values() {
            check_volume_name(volume)?;
        }
        let movable: Vec<_> = self
            .catalogue
            .definitions()
            .iter()
            .filter(|d| d.meta.is_movable)
            .cloned()
            .collect();
        let mut leases = Vec::new();
        for definition in &movable {
            leases.push(locks.try_acquire(&definition.meta.id, ServiceOperation::Move)?);
        }
        let plan = self.plan_migration(&userdata, &movable, &requested).await?;
        let job = self.jobs.create(
            MIGRATION_JOB_TYPE,
            Text::new("Migrate to binds", "Миграция на bind-монтирование"),
            Text::new(
                "Moving service data onto volumes, bound back in place",
                "Перенос данных сервисов на тома с bind-монтированием",
            ),
        )?;
        let this = self.clone();
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let outcome = this.drive_migration(&plan, &uid, Step::Stopping).await;
            this.conclude_migration(&plan, &uid, outcome, None).await;
            drop(leases);
        });
        Ok(job)
    }

    async fn plan_migration(
        &self,
        userdata: &Value,
        movable: &[Arc<crate::domain::services::definition::Definition>],
        requested: &BTreeMap<String, String>,
    ) -> Outcome<Plan> {
        let volumes = self.volumes().await?;
        let system_volume = volumes.iter().find(|v| v.root).map(|v| v.name.clone());
        let mut services = Vec::new();
        let mut folders: Vec<FolderPlan> = Vec::new();
        let mut needed: BTreeMap<String, u64> = BTreeMap::new();
        let mut targets = BTreeSet::new();
        for definition in movable {
            let meta = &definition.meta;
            let module = &userdata["modules"][&meta.id];
            let previous_location = module["location"].as_str().map(str::to_owned);
            let volume = match (requested.get(&meta.id), &previous_location, &system_volume) {
                (Some(volume), _, _) => volume.clone(),
                (None, Some(location), _) if check_volume_name(location).is_ok() => {
                    location.clone()
                }
                (None, _, Some(system)) => system.clone(),
                (None, _, None) => {
                    return Err(Failure::conflict(
                        format!(
                            "No volume for {}: it has no location and the system disk is not an ext4 volume",
                            meta.name
                        ),
                        format!(
                            "Нет тома для {}: у него нет location, а системный диск не является томом ext4",
                            meta.name
                        ),
                    ));
                }
            };
            let Some(target_volume) = volumes
                .iter()
                .find(|v| v.name == volume && (v.root || v.mount_point.is_some()))
            else {
                return Err(Failure::bad_input(
                    format!("{volume} (for {}) is not a mounted volume", meta.name),
                    format!(
                        "{volume} (для {}) не является подключённым томом",
                        meta.name
                    ),
                ));
            };
            let volume_dir = Path::new(VOLUMES_DIR).join(&volume);
            if target_volume.root && !volume_dir.exists() {
                // The system volume's folder under /volumes is a plain
                // folder on it, made on first use.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&volume_dir)
                    .map_err(|e| Failure::internal("making the system volume's folder", e))?;
            }
            if std::fs::canonicalize(&volume_dir).ok().as_deref() != Some(volume_dir.as_path())
                || !super::moves::is_volume_dir(target_volume, &volume_dir)
            {
                return Err(Failure::conflict(
                    format!(
                        "{} is not the filesystem of volume {volume} as this service sees it",
                        volume_dir.display()
                    ),
                    format!(
                        "{} не является файловой системой тома {volume} с точки зрения службы API",
                        volume_dir.display()
                    ),
                ));
            }
            let enabled = module["enable"] == true;
            let mut owned: Vec<(&str, Option<(String, String)>)> = meta
                .folders
                .iter()
                .map(|p| {
                    (
                        p.as_str(),
                        Some((meta.user().to_owned(), meta.group().to_owned())),
                    )
                })
                .collect();
            for folder in &meta.owned_folders {
                owned.push((
                    folder.path.as_str(),
                    Some((folder.owner.clone(), folder.group.clone())),
                ));
            }
            for (path, owner) in owned {
                let path = PathBuf::from(path);
                let Some(name) = path.file_name().filter(|n| copy::is_plain_name(n)) else {
                    return Err(Failure::internal(
                        "planning the migration",
                        format!("{}'s folder {path:?} has no name", meta.id),
                    ));
                };
                if !path.is_absolute()
                    || path
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(Failure::internal(
                        "planning the migration",
                        format!("{}'s folder {path:?} is not an absolute path", meta.id),
                    ));
                }
                // Two services sharing a folder (a database's): moved once.
                if folders.iter().any(|f| f.path == path) {
                    continue;
                }
                let target = volume_dir.join(name);
                if !targets.insert(target.clone()) {
                    return Err(Failure::conflict(
                        format!(
                            "Two folders would both become {}: {path:?} and another",
                            target.display()
                        ),
                        format!(
                            "Две папки попали бы в {}: {path:?} и ещё одна",
                            target.display()
                        ),
                    ));
                }
                let existed = match path.symlink_metadata() {
                    Ok(found) if found.is_dir() => true,
                    Ok(_) => {
                        return Err(Failure::bad_input(
                            format!(
                                "{} is not a folder (a link?): nothing was moved",
                                path.display()
                            ),
                            format!(
                                "{} не папка (ссылка?): ничего не перенесено",
                                path.display()
                            ),
                        ));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                    Err(e) => return Err(Failure::internal("checking a data folder", e)),
                };
                if existed && is_mount_point(&path) {
                    return Err(Failure::conflict(
                        format!(
                            "{} is a mount point already: nothing was moved",
                            path.display()
                        ),
                        format!(
                            "{} уже является точкой монтирования: ничего не перенесено",
                            path.display()
                        ),
                    ));
                }
                if let Ok(found) = target.symlink_metadata() {
                    let empty_dir = found.is_dir()
                        && std::fs::read_dir(&target).is_ok_and(|mut d| d.next().is_none());
                    if !empty_dir {
                        return Err(Failure::conflict(
                            format!(
                                "{} already exists on volume {volume}: move or remove it first",
                                target.display()
                            ),
                            format!(
                                "{} уже есть на томе {volume}: сначала перенесите или удалите её",
                                target.display()
                            ),
                        ));
                    }
                }
                let rename = existed
                    && path.metadata().map(|m| m.dev()).ok()
                        == volume_dir.metadata().map(|m| m.dev()).ok();
                if existed && !rename {
                    let measured = path.clone();
                    let bytes =
                        tokio::task::spawn_blocking(move || copy::allocated_size(&measured))
                            .await
                            .map_err(|e| Failure::internal("measuring the data", e))?;
                    *needed.entry(volume.clone()).or_default() += bytes;
                }
                folders.push(FolderPlan {
                    path,
                    target,
                    rename,
                    existed,
                    owner,
                });
            }
            services.push(ServicePlan {
                id: meta.id.clone(),
                name: meta.name.clone(),
                enabled,
                units: meta.systemd_services.clone(),
                volume,
                previous_location,
            });
        }
        for (volume, bytes) in &needed {
            let free = volumes
                .iter()
                .find(|v| &v.name == volume)
                .map_or(0, |v| v.free);
            let margin = margin_for(*bytes);
            if free < bytes + margin {
                return Err(Failure::conflict(
                    format!(
                        "Volume {volume} has {free} bytes free; the data going there needs {bytes} bytes plus {margin} to spare"
                    ),
                    format!(
                        "На томе {volume} свободно {free} байт; данным нужно {bytes} байт и ещё {margin} в запас"
                    ),
                ));
            }
        }
        Ok(Plan {
            services,
            folders,
            volumes: needed.into_keys().collect(),
        })
    }

    fn note_migration_step(&self, plan: &Plan, uid: &str, step: Step) -> StepOutcome {
        let record = BindMigrationRecord {
            job_uid: uid.to_owned(),
            plan: serde_json::to_string(plan).map_err(|e| internal(step, e))?,
            step: step.as_str().to_owned(),
            updated_at: chrono::Utc::now(),
        };
        self.store
            .save_bind_migration(&record)
            .map_err(|e| internal(step, format!("recording the step: {e}")))?;
        self.set_progress(uid, step.progress(), Some(step.describe()));
        Ok(())
    }

    async fn drive_migration(&self, plan: &Plan, uid: &str, from: Step) -> StepOutcome {
        for step in Step::ALL.into_iter().filter(|s| *s >= from) {
            self.note_migration_step(plan, uid, step)?;
            match step {
                Step::Stopping => self
                    .control_units(&plan.units(), UnitAction::Stop)
                    .await
                    .map_err(failed_at(step))?,
                Step::Copying => self.copy_for_migration(plan, uid).await?,
                Step::Verifying => self.verify_for_migration(plan, uid).await?,
                Step::Moving => {
                    let folders = plan.folders.clone();
                    let enabled: BTreeSet<PathBuf> = self.folders_of_enabled(plan);
                    tokio::task::spawn_blocking(move || set_aside(&folders, &enabled))
                        .await
                        .map_err(|e| internal(step, e))??;
                }
                Step::Switching => self.switch_to_binds(plan).await.map_err(failed_at(step))?,
                Step::Removing => {
                    for folder in plan.folders.iter().filter(|f| f.existed && !f.rename) {
                        let aside = folder.aside();
                        tokio::task::spawn_blocking(move || copy::remove_tree(&aside))
                            .await
                            .map_err(|e| internal(step, e))?
                            .map_err(|e| internal(step, e))?;
                    }
                }
                Step::Starting => self
                    .control_units(&plan.units(), UnitAction::Start)
                    .await
                    .map_err(failed_at(step))?,
            }
            self.test_pause(uid, step.as_str(), step.progress()).await;
        }
        Ok(())
    }

    /// The folders of services that are enabled: only those get a new,
    /// empty home when they did not exist (a disabled service's user may
    /// not exist yet).
    fn folders_of_enabled(&self, plan: &Plan) -> BTreeSet<PathBuf> {
        let enabled: BTreeSet<&str> = plan
            .services
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.id.as_str())
            .collect();
        let mut out = BTreeSet::new();
        for definition in self.catalogue.definitions().iter() {
            if enabled.contains(definition.meta.id.as_str()) {
                out.extend(definition.meta.all_folders().into_iter().map(PathBuf::from));
            }
        }
        out
    }

    async fn copy_for_migration(&self, plan: &Plan, uid: &str) -> StepOutcome {
        let step = Step::Copying;
        let copied: Vec<&FolderPlan> = plan
            .folders
            .iter()
            .filter(|f| f.existed && !f.rename)
            .collect();
        let total = copied
            .iter()
            .map(|f| copy::allocated_size(&f.path))
            .sum::<u64>()
            .max(1);
        let mut done_before = 0;
        for folder in copied {
            copy_with_progress(
                &self.jobs,
                uid,
                &folder.path,
                &folder.partial(),
                (done_before, total),
                (Step::Copying.progress(), 50),
            )
            .await
            .map_err(|e| internal(step, e))?;
            done_before += copy::allocated_size(&folder.path);
        }
        Ok(())
    }

    async fn verify_for_migration(&self, plan: &Plan, uid: &str) -> StepOutcome {
        let step = Step::Verifying;
        for folder in plan.folders.iter().filter(|f| f.existed && !f.rename) {
            let target = &folder.target;
            verify_copy(&self.jobs, uid, &folder.path, &folder.partial())
                .await
                .map_err(|e| internal(step, e))?;
            if target.is_dir() {
                std::fs::remove_dir(target).map_err(io(step, target))?;
            }
            std::fs::rename(folder.partial(), target).map_err(io(step, target))?;
        }
        for volume in &plan.volumes {
            let root = Path::new(VOLUMES_DIR).join(volume);
            tokio::task::spawn_blocking(move || copy::sync_filesystem(&root))
                .await
                .map_err(|e| internal(step, e))?
                .map_err(|e| internal(step, e))?;
        }
        Ok(())
    }

    /// `useBinds` on and each service's `location`, and the rebuild that
    /// binds the folders (skipped when a previous daemon's rebuild did it).
    async fn switch_to_binds(&self, plan: &Plan) -> Outcome<()> {
        let userdata = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        let set = userdata["useBinds"] == true
            && plan
                .services
                .iter()
                .all(|s| userdata["modules"][&s.id]["location"] == s.volume.as_str());
        let bound = plan
            .folders
            .iter()
            .all(|f| !f.existed || super::moves::is_bound_from(&f.target));
        if set && bound {
            return Ok(());
        }
        let locations = plan
            .services
            .iter()
            .map(|s| (s.id.clone(), s.volume.clone()))
            .collect();
        let accepted = self
            .rebuilds
            .change(ConfigChange::from(UserdataChange::EnableBinds {
                locations,
            }))?;
        wait_for_job_end(&self.jobs, &accepted.job.uid, self.setup.rebuild_timeout).await
    }

    /// After a failed switch: `useBinds` off and the old locations back.
    async fn switch_back(&self, plan: &Plan) -> Outcome<()> {
        let locations = plan
            .services
            .iter()
            .map(|s| (s.id.clone(), s.previous_location.clone()))
            .collect();
        let accepted = self
            .rebuilds
            .change(ConfigChange::from(UserdataChange::DisableBinds {
                locations,
            }))?;
        wait_for_job_end(&self.jobs, &accepted.job.uid, self.setup.rebuild_timeout).await
    }

    /// Back to where the services kept their data, and started again.
    async fn roll_back_migration(&self, plan: &Plan) -> Outcome<()> {
        let folders = plan.folders.clone();
        tokio::task::spawn_blocking(move || put_back(&folders))
            .await
            .map_err(|e| Failure::internal("putting folders back", e))?
            .map_err(|e| Failure::internal("putting folders back", e))?;
        self.control_units(&plan.units(), UnitAction::Start).await
    }

    async fn conclude_migration(
        &self,
        plan: &Plan,
        uid: &str,
        outcome: StepOutcome,
        interrupted: Option<Step>,
    ) {
        let where_to = plan
            .services
            .iter()
            .map(|s| format!("{} on {}", s.name, s.volume))
            .collect::<Vec<_>>()
            .join(", ");
        let (status, result, error) = match outcome {
            Ok(()) => {
                let en = match interrupted {
                    Some(step) => format!(
                        "Recovered by finishing: the migration was cut off at step {}. Migration finished: {where_to}.",
                        step.as_str()
                    ),
                    None => format!("Migration finished: {where_to}."),
                };
                let ru = match interrupted {
                    Some(step) => format!(
                        "Восстановлено завершением: миграция прервалась на шаге {}. Миграция завершена.",
                        step.as_str()
                    ),
                    None => "Миграция завершена.".to_owned(),
                };
                (JobStatus::Finished, Some(Text::new(en, ru)), None)
            }
            Err(StepFailure { step, failure }) if !step.recovers_forward() => {
                let tail = match self.roll_back_migration(plan).await {
                    Ok(()) => "The data stays where it was and the services were started again."
                        .to_owned(),
                    Err(e) => format!(
                        "The data stays where it was, but going back failed: {}",
                        e.message.en
                    ),
                };
                (
                    JobStatus::Error,
                    None,
                    Some(Text::untranslated(format!(
                        "Migration failed at step {}: {}. {tail}",
                        step.as_str(),
                        failure.message.en
                    ))),
                )
            }
            Err(StepFailure {
                step: Step::Switching,
                failure,
            }) => {
                let back = match self.switch_back(plan).await {
                    Ok(()) => self.roll_back_migration(plan).await,
                    Err(e) => Err(e),
                };
                let tail = match back {
                    Ok(()) => "The data is back where it was and the services were started again."
                        .to_owned(),
                    Err(e) => format!(
                        "Going back failed too: {}; the originals are kept beside their folders (.<name>.sp-unbound) and the copies on the volumes.",
                        e.message.en
                    ),
                };
                (
                    JobStatus::Error,
                    None,
                    Some(Text::untranslated(format!(
                        "Migration failed while binding the folders: {}. {tail}",
                        failure.message.en
                    ))),
                )
            }
            Err(StepFailure { step, failure }) => (
                JobStatus::Error,
                None,
                Some(Text::untranslated(format!(
                    "The data was moved and bound ({where_to}), but step {} failed: {}",
                    step.as_str(),
                    failure.message.en
                ))),
            ),
        };
        if let Err(e) = self.store.end_bind_migration(uid) {
            tracing::error!(uid, "forgetting an ended migration: {e}");
        }
        self.end_job(uid, status, result, error);
    }

    /// Finishes or rolls back a migration a previous daemon was cut off
    /// in, as a new job saying which way it went.
    pub fn recover_interrupted_migration(self: &Arc<Self>, locks: &Arc<ServiceLocks>) {
        let records = match self.store.bind_migrations() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("reading interrupted migrations: {e}");
                return;
            }
        };
        for record in records {
            let plan: Plan = match serde_json::from_str(&record.plan) {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::error!(job = %record.job_uid, "an interrupted migration's plan does not read: {e}");
                    continue;
                }
            };
            let mut leases = Vec::new();
            for service in &plan.services {
                match locks.try_acquire(&service.id, ServiceOperation::Move) {
                    Ok(lease) => leases.push(lease),
                    Err(e) => tracing::error!(service = %service.id, "recovering a migration: {e}"),
                }
            }
            let this = self.clone();
            tokio::spawn(async move { this.recover_migration(record, plan, leases).await });
        }
    }

    async fn recover_migration(
        &self,
        record: BindMigrationRecord,
        plan: Plan,
        leases: Vec<ServiceLease>,
    ) {
        let step = Step::parse(&record.step).unwrap_or(Step::Stopping);
        tracing::warn!(
            step = step.as_str(),
            forward = step.recovers_forward(),
            "recovering an interrupted migration to binds"
        );
        let job = match self.jobs.create(
            MIGRATION_JOB_TYPE,
            Text::new(
                "Recover the migration to binds",
                "Восстановление миграции на bind-монтирование",
            ),
            Text::new(
                format!(
                    "The migration to binds (job {}) was cut off at step {}",
                    record.job_uid,
                    step.as_str()
                ),
                format!(
                    "Миграция на bind-монтирование (задача {}) прервалась на шаге {}",
                    record.job_uid,
                    step.as_str()
                ),
            ),
        ) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!("creating the recovery job: {e}");
                return;
            }
        };
        // This job's record first, then the old one goes: one always exists.
        if let Err(e) = self.note_migration_step(&plan, &job.uid, step) {
            tracing::error!("recording the recovery: {}", e.failure.message.en);
        }
        let _ = self.store.end_bind_migration(&record.job_uid);
        if step.recovers_forward() {
            let outcome = self.drive_migration(&plan, &job.uid, step).await;
            self.conclude_migration(&plan, &job.uid, outcome, Some(step))
                .await;
        } else {
            let back = self.roll_back_migration(&plan).await;
            let _ = self.store.end_bind_migration(&job.uid);
            let (status, result, error) = match back {
                Ok(()) => (
                    JobStatus::Finished,
                    Some(Text::new(
                        format!(
                            "Recovered by rolling back: the migration was cut off at step {}; the data stays where it was and the services were started again.",
                            step.as_str()
                        ),
                        format!(
                            "Восстановлено откатом: миграция прервалась на шаге {}; данные остались на месте, сервисы снова запущены.",
                            step.as_str()
                        ),
                    )),
                    None,
                ),
                Err(e) => (
                    JobStatus::Error,
                    None,
                    Some(Text::untranslated(format!(
                        "Rolling back the migration cut off at step {} failed: {}",
                        step.as_str(),
                        e.message.en
                    ))),
                ),
            };
            self.end_job(&job.uid, status, result, error);
        }
        drop(leases);
    }
}

/// Step "moving": each original goes aside (or onto its volume, when that
/// is the same filesystem), and an empty folder with its mode and owner
/// takes its place as the mount point. Each rename is atomic; repeating
/// the step after a crash finds the folders already done.
fn set_aside(folders: &[FolderPlan], enabled: &BTreeSet<PathBuf>) -> StepOutcome {
    let step = Step::Moving;
    for folder in folders {
        if !folder.existed {
            if enabled.contains(&folder.path) && !folder.target.exists() {
                std::fs::create_dir(&folder.target).map_err(io(step, &folder.target))?;
                if let Some((user, group)) = &folder.owner {
                    copy::set_owner(&folder.target, user, group).map_err(|e| internal(step, e))?;
                }
            }
            continue;
        }
        let moved_to = if folder.rename {
            folder.target.clone()
        } else {
            folder.aside()
        };
        if moved_to.exists() && folder.path.is_dir() && is_empty_dir(&folder.path) {
            continue; // done before a crash
        }
        let original = folder
            .path
            .symlink_metadata()
            .map_err(io(step, &folder.path))?;
        if folder.rename && folder.target.is_dir() {
            // The empty folder the volume had is replaced.
            std::fs::remove_dir(&folder.target).map_err(io(step, &folder.target))?;
        }
        std::fs::rename(&folder.path, &moved_to).map_err(io(step, &folder.path))?;
        make_mount_point(&folder.path, &original).map_err(io(step, &folder.path))?;
    }
    Ok(())
}

/// An empty folder with the original's mode and owner.
fn make_mount_point(path: &Path, like: &std::fs::Metadata) -> std::io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::chown(path, Some(like.uid()), Some(like.gid()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(like.mode() & 0o7777))
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

/// Undoes whatever of steps copying..moving was done, folder by folder:
/// an original set aside (or renamed onto its volume) comes back, then
/// copies are removed, but only while the original is in place.
fn put_back(folders: &[FolderPlan]) -> std::io::Result<()> {
    for folder in folders {
        copy::remove_tree(&folder.partial()).map_err(std::io::Error::other)?;
        if !folder.existed {
            if folder.target.is_dir() && is_empty_dir(&folder.target) {
                std::fs::remove_dir(&folder.target)?;
            }
            continue;
        }
        let moved_to = if folder.rename {
            folder.target.clone()
        } else {
            folder.aside()
        };
        let original_gone = !folder.path.exists() || is_empty_dir(&folder.path);
        if moved_to.is_dir() && original_gone {
            if folder.path.exists() {
                std::fs::remove_dir(&folder.path)?;
            }
            std::fs::rename(&moved_to, &folder.path)?;
        }
        if !folder.rename && folder.path.is_dir() && !folder.aside().exists() {
            copy::remove_tree(&folder.target).map_err(std::io::Error::other)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(root: &Path, name: &str, rename: bool) -> FolderPlan {
        FolderPlan {
            path: root.join("var/lib").join(name),
            target: root.join("volumes/sdb").join(name),
            rename,
            existed: true,
            owner: None,
        }
    }

    fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in walk(root) {
            if entry.is_file() {
                let key = entry
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(key, std::fs::read(&entry).unwrap());
            }
        }
        out
    }

    fn walk(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path.clone());
                }
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn setting_aside_then_putting_back_restores_every_folder_at_any_point() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::fs::create_dir_all(root.join("volumes/sdb")).unwrap();
        let folders = vec![folder(root, "copied", false), folder(root, "renamed", true)];
        for f in &folders {
            std::fs::create_dir_all(f.path.join("sub")).unwrap();
            std::fs::write(f.path.join("sub/data"), f.path.to_string_lossy().as_bytes()).unwrap();
            std::fs::set_permissions(&f.path, std::fs::Permissions::from_mode(0o750)).unwrap();
        }
        let before = tree(&root.join("var/lib"));
        // The copied folder's verified copy, as step verifying leaves it.
        std::fs::create_dir_all(folders[0].target.join("sub")).unwrap();
        std::fs::copy(
            folders[0].path.join("sub/data"),
            folders[0].target.join("sub/data"),
        )
        .unwrap();

        set_aside(&folders, &BTreeSet::new()).ok().unwrap();
        // The services' paths are empty mount points with their modes.
        for f in &folders {
            assert!(is_empty_dir(&f.path));
            let mode = f.path.metadata().unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o750);
            assert!(f.target.join("sub/data").is_file());
        }
        assert!(folders[0].aside().join("sub/data").is_file());
        // Repeating the step (a crash after it) changes nothing.
        set_aside(&folders, &BTreeSet::new()).ok().unwrap();

        put_back(&folders).unwrap();
        assert_eq!(tree(&root.join("var/lib")), before);
        for f in &folders {
            assert!(!f.target.exists(), "{} left", f.target.display());
            assert!(!f.aside().exists());
        }

        // Cut off halfway: the first folder set aside, the second not yet.
        std::fs::create_dir_all(folders[0].target.join("sub")).unwrap();
        set_aside(&folders[..1], &BTreeSet::new()).ok().unwrap();
        put_back(&folders).unwrap();
        assert_eq!(tree(&root.join("var/lib")), before);
        assert!(!folders[0].target.exists());
    }

    #[test]
    fn steps_before_the_switch_roll_back() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        let back: Vec<_> = Step::ALL
            .into_iter()
            .filter(|s| !s.recovers_forward())
            .map(Step::as_str)
            .collect();
        assert_eq!(back, ["stopping", "copying", "verifying", "moving"]);
    }
}
