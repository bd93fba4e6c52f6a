//! Moving a service's data folders from one volume to another, as a job.
//!
//! Each step is recorded in SQLite before its work starts. The old copy is
//! removed only once the new one has been read back and the service has
//! been switched to it, so at every moment one complete copy exists:
//!
//! | step        | work                                              | if cut off here |
//! |-------------|---------------------------------------------------|-----------------|
//! | stopping    | stop the service's units                          | roll back       |
//! | copying     | `cp -a` each folder to `.<name>.sp-moving`        | roll back       |
//! | verifying   | read both back, compare, rename into place, syncfs| roll back       |
//! | owning      | give each folder to its owner                     | roll back       |
//! | switching   | set `location` in userdata, rebuild (bind mounts) | finish          |
//! | removing    | remove the old folders                            | finish          |
//! | starting    | start the units                                   | finish          |
//!
//! The order removes the old copy before the switch; here it goes
//! after it, so a failed rebuild can go back without copying anything back.

use super::{Storage, VOLUMES_DIR, check_volume_name};
use crate::domain::error::{Failure, FailureKind, Outcome};
use crate::domain::i18n::Text;
use crate::domain::jobs::{Job, JobRegistry, JobStatus, JobUpdate};
use crate::domain::locks::{ServiceLease, ServiceLocks, ServiceOperation};
use crate::domain::system::changes::UserdataChange;
use crate::domain::system::rebuild::ConfigChange;
use crate::os::copy;
use crate::os::systemd::{JobOutcome, UnitAction};
use crate::state::MoveRecord;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Stopping,
    Copying,
    Verifying,
    Owning,
    Switching,
    Removing,
    Starting,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::Stopping,
        Step::Copying,
        Step::Verifying,
        Step::Owning,
        Step::Switching,
        Step::Removing,
        Step::Starting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Stopping => "stopping",
            Step::Copying => "copying",
            Step::Verifying => "verifying",
            Step::Owning => "owning",
            Step::Switching => "switching",
            Step::Removing => "removing",
            Step::Starting => "starting",
        }
    }

    pub fn parse(text: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Until the switch, the old copy is what the service uses: going back
    /// is safe and cheap. From the switch on, the new copy is complete and
    /// verified: going on is.
    pub fn recovers_forward(self) -> bool {
        self >= Step::Switching
    }

    fn progress(self) -> i32 {
        match self {
            Step::Stopping => 5,
            Step::Copying => 10,
            Step::Verifying => 60,
            Step::Owning => 82,
            Step::Switching => 85,
            Step::Removing => 95,
            Step::Starting => 98,
        }
    }

    fn describe(self) -> Text {
        match self {
            Step::Stopping => Text::new("Stopping the service", "Остановка сервиса"),
            Step::Copying => Text::new("Copying the data", "Копирование данных"),
            Step::Verifying => Text::new("Checking the copy", "Проверка копии"),
            Step::Owning => Text::new("Setting owners", "Назначение владельцев"),
            Step::Switching => Text::new(
                "Switching the service to the new volume (system rebuild)",
                "Переключение сервиса на новый том (пересборка системы)",
            ),
            Step::Removing => Text::new("Removing the old copy", "Удаление старой копии"),
            Step::Starting => Text::new("Starting the service", "Запуск сервиса"),
        }
    }
}

/// One folder to move: its name under the volume, and its owner.
#[derive(Debug, Clone)]
struct Folder {
    name: String,
    owner: Option<(String, String)>,
}

/// Everything a move needs, from the definition and userdata only.
#[derive(Debug, Clone)]
struct Plan {
    service: String,
    display_name: String,
    units: Vec<String>,
    from: String,
    to: String,
    folders: Vec<Folder>,
}

impl Plan {
    fn source(&self, folder: &Folder) -> PathBuf {
        Path::new(VOLUMES_DIR).join(&self.from).join(&folder.name)
    }

    fn target(&self, folder: &Folder) -> PathBuf {
        Path::new(VOLUMES_DIR).join(&self.to).join(&folder.name)
    }

    /// Where the copy is made before it is checked: a crash leaves a name
    /// that is plainly not the service's folder.
    fn partial(&self, folder: &Folder) -> PathBuf {
        Path::new(VOLUMES_DIR)
            .join(&self.to)
            .join(format!(".{}.sp-moving", folder.name))
    }

    fn record(&self, job_uid: &str, step: Step) -> MoveRecord {
        MoveRecord {
            job_uid: job_uid.to_owned(),
            service: self.service.clone(),
            from_volume: self.from.clone(),
            to_volume: self.to.clone(),
            folders: self.folders.iter().map(|f| f.name.clone()).collect(),
            step: step.as_str().to_owned(),
            updated_at: chrono::Utc::now(),
        }
    }
}

/// Bytes kept free on the target beyond the data: 5% and 8 MiB.
pub fn margin_for(bytes: u64) -> u64 {
    bytes / 20 + 8 * 1024 * 1024
}

fn refused(en: String, ru: String) -> Failure {
    Failure::conflict(en, ru)
}

/// How a failed step is reported: which step, and why.
pub(super) struct StepFailure<S> {
    pub step: S,
    pub failure: Failure,
}

type StepOutcome = Result<(), StepFailure<Step>>;

pub(super) fn at<S>(step: S) -> impl FnOnce(Failure) -> StepFailure<S> {
    move |failure| StepFailure { step, failure }
}

pub(super) fn internal<S>(step: S, what: impl std::fmt::Display) -> StepFailure<S> {
    StepFailure {
        step,
        failure: Failure::new(FailureKind::Internal, Text::untranslated(what.to_string())),
    }
}

impl Storage {
    /// Checks the move (refusing before anything is touched), then runs
    /// it as a job. Refused with 409 while the service is being moved,
    /// backed up or restored.
    pub async fn start_move(
        self: &Arc<Self>,
        locks: &Arc<ServiceLocks>,
        service: &str,
        location: &str,
    ) -> Outcome<Job> {
        let lease = locks.try_acquire(service, ServiceOperation::Move)?;
        let plan = self.plan(service, location).await?;
        let job = self.jobs.create(
            &format!("services.{}.move", plan.service),
            Text::new(
                format!("Move {}", plan.display_name),
                format!("Перенос {}", plan.display_name),
            ),
            Text::new(
                format!("Moving {} data to volume {}", plan.display_name, plan.to),
                format!("Перенос данных {} на том {}", plan.display_name, plan.to),
            ),
        )?;
        let this = self.clone();
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let outcome = this.drive(&plan, &uid, Step::Stopping).await;
            this.conclude(&plan, &uid, outcome, None).await;
            drop(lease);
        });
        Ok(job)
    }

    /// Step 1: everything is checked before anything is stopped.
    async fn plan(&self, service: &str, location: &str) -> Outcome<Plan> {
        let definition = self
            .catalogue
            .get(service)
            .ok_or_else(|| Failure::not_found("Service not found", "Сервис не найден"))?;
        let meta = &definition.meta;
        let name = meta.name.clone();
        if !meta.is_movable {
            return Err(Failure::bad_input(
                format!("{name} cannot be moved"),
                format!("{name} нельзя перенести"),
            ));
        }
        check_volume_name(location)?;
        let userdata = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        if userdata["useBinds"] != true {
            return Err(refused(
                "This server does not keep service data on volumes yet (useBinds is off): migrate to binds first".into(),
                "Этот сервер ещё не хранит данные сервисов на томах (useBinds выключен): сначала выполните миграцию".into(),
            ));
        }
        let module = &userdata["modules"][&meta.id];
        if module["enable"] != true {
            return Err(refused(
                format!("{name} is disabled: enable it first"),
                format!("{name} выключен: сначала включите его"),
            ));
        }
        let Some(from) = module["location"].as_str().map(str::to_owned) else {
            return Err(refused(
                format!("{name} has no volume set in userdata"),
                format!("Для {name} в userdata не указан том"),
            ));
        };
        check_volume_name(&from)?;
        if from == location {
            return Err(refused(
                format!("{name} is already on volume {location}"),
                format!("{name} уже находится на томе {location}"),
            ));
        }
        let volumes = self.volumes().await?;
        // The data must be reachable where it is: a volume that is not
        // mounted would show an empty folder, and "move" nothing.
        let source_root = Path::new(VOLUMES_DIR).join(&from);
        if !volumes
            .iter()
            .any(|v| v.name == from && is_volume_dir(v, &source_root))
        {
            return Err(refused(
                format!(
                    "Volume {from}, which holds {name}'s data, is not mounted at {}",
                    source_root.display()
                ),
                format!(
                    "Том {from} с данными {name} не подключён в {}",
                    source_root.display()
                ),
            ));
        }
        let target_root = Path::new(VOLUMES_DIR).join(location);
        let Some(target_volume) = volumes
            .iter()
            .find(|v| v.name == location && (v.root || v.mount_point.is_some()))
        else {
            return Err(Failure::bad_input(
                format!("{location} is not a mounted volume"),
                format!("{location} не является подключённым томом"),
            ));
        };
        // The mount point itself must be the directory, not a link elsewhere.
        let real = std::fs::canonicalize(&target_root)
            .map_err(|e| Failure::internal("checking the target volume", e))?;
        if real != target_root {
            return Err(Failure::bad_input(
                format!("{} leads outside {VOLUMES_DIR}", target_root.display()),
                format!("{} ведёт за пределы {VOLUMES_DIR}", target_root.display()),
            ));
        }
        // And what this process sees there must be the volume's own
        // filesystem: in a private mount namespace a volume mounted later
        // may not show, and a copy would land in the bare directory under
        // the mount point, hidden from the service.
        if !is_volume_dir(target_volume, &target_root) {
            return Err(Failure::conflict(
                format!(
                    "{} is not the filesystem of volume {location} as this service sees it (restart the API service after mounting a volume)",
                    target_root.display()
                ),
                format!(
                    "{} не является файловой системой тома {location} с точки зрения службы API (перезапустите её после подключения тома)",
                    target_root.display()
                ),
            ));
        }
        let mut folders = Vec::new();
        for path in meta.folders.iter() {
            folders.push((path.as_str(), None));
        }
        for owned in &meta.owned_folders {
            folders.push((
                owned.path.as_str(),
                Some((owned.owner.clone(), owned.group.clone())),
            ));
        }
        let plan = Plan {
            service: meta.id.clone(),
            display_name: name.clone(),
            units: meta.systemd_services.clone(),
            from: from.clone(),
            to: location.to_owned(),
            folders: folders
                .into_iter()
                .map(|(path, owner)| {
                    let base = Path::new(path).file_name().unwrap_or_default();
                    if !Path::new(path).is_absolute() || !copy::is_plain_name(base) {
                        return Err(Failure::internal(
                            "planning a move",
                            format!("the definition's folder {path:?} is not an absolute path"),
                        ));
                    }
                    Ok(Folder {
                        name: base.to_string_lossy().into_owned(),
                        owner: owner
                            .or_else(|| Some((meta.user().to_owned(), meta.group().to_owned()))),
                    })
                })
                .collect::<Outcome<_>>()?,
        };
        let mut needed = 0;
        for folder in &plan.folders {
            let source = plan.source(folder);
            match source.symlink_metadata() {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(Failure::bad_input(
                        format!("{} is not a folder (a link?): not moved", source.display()),
                        format!("{} не папка (ссылка?): перенос отменён", source.display()),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Failure::internal("checking a data folder", e)),
            }
            let target = plan.target(folder);
            if let Ok(meta) = target.symlink_metadata() {
                let empty_dir = meta.is_dir()
                    && std::fs::read_dir(&target).is_ok_and(|mut d| d.next().is_none());
                if !empty_dir {
                    return Err(refused(
                        format!(
                            "{} already exists on volume {location}: move or remove it first",
                            folder.name
                        ),
                        format!(
                            "{} уже есть на томе {location}: сначала перенесите или удалите её",
                            folder.name
                        ),
                    ));
                }
            }
            let measured = source.clone();
            needed += tokio::task::spawn_blocking(move || copy::allocated_size(&measured))
                .await
                .map_err(|e| Failure::internal("measuring the data", e))?;
        }
        let margin = margin_for(needed);
        if target_volume.free < needed + margin {
            return Err(refused(
                format!(
                    "Volume {location} has {} bytes free; {name} needs {needed} bytes plus {margin} to spare",
                    target_volume.free
                ),
                format!(
                    "На томе {location} свободно {} байт; {name} нужно {needed} байт и ещё {margin} в запас",
                    target_volume.free
                ),
            ));
        }
        Ok(plan)
    }

    fn note_step(&self, plan: &Plan, uid: &str, step: Step) -> StepOutcome {
        self.store
            .save_move(&plan.record(uid, step))
            .map_err(|e| internal(step, format!("recording the step: {e}")))?;
        self.set_progress(uid, step.progress(), Some(step.describe()));
        Ok(())
    }

    pub(super) fn set_progress(&self, uid: &str, progress: i32, text: Option<Text>) {
        let _ = self.jobs.update(
            uid,
            JobUpdate {
                status: Some(JobStatus::Running),
                status_text: text,
                progress: Some(progress),
                ..Default::default()
            },
        );
    }

    /// Ends a move's or a migration's job: its status, and its result or
    /// error, in one update.
    pub(super) fn end_job(
        &self,
        uid: &str,
        status: JobStatus,
        result: Option<Text>,
        error: Option<Text>,
    ) {
        let _ = self.jobs.update(
            uid,
            JobUpdate {
                status: Some(status),
                result,
                error,
                ..Default::default()
            },
        );
    }

    /// TEST SCAFFOLDING: stops a move or a migration dead after the step
    /// named `step` when the configuration says so, for a test to kill the
    /// daemon there.
    pub(super) async fn test_pause(&self, uid: &str, step: &str, progress: i32) {
        if self.setup.test_pause_move_at_step.as_deref() == Some(step) {
            tracing::warn!(step, "test hook: paused for good");
            self.set_progress(
                uid,
                progress,
                Some(Text::untranslated(format!(
                    "TEST HOOK: paused after step {step}"
                ))),
            );
            std::future::pending::<()>().await;
        }
    }

    /// Runs the steps from `from` on.
    async fn drive(&self, plan: &Plan, uid: &str, from: Step) -> StepOutcome {
        for step in Step::ALL.into_iter().filter(|s| *s >= from) {
            self.note_step(plan, uid, step)?;
            match step {
                Step::Stopping => self
                    .control_units(&plan.units, UnitAction::Stop)
                    .await
                    .map_err(at(step))?,
                Step::Copying => self.copy_all(plan, uid).await?,
                Step::Verifying => self.verify_all(plan, uid).await?,
                Step::Owning => {
                    for folder in &plan.folders {
                        if let Some((user, group)) = &folder.owner {
                            copy::set_owner(&plan.target(folder), user, group)
                                .map_err(|e| internal(step, e))?;
                        }
                    }
                }
                Step::Switching => self.set_location(plan, &plan.to).await.map_err(at(step))?,
                Step::Removing => {
                    for folder in &plan.folders {
                        let source = plan.source(folder);
                        tokio::task::spawn_blocking(move || copy::remove_tree(&source))
                            .await
                            .map_err(|e| internal(step, e))?
                            .map_err(|e| internal(step, e))?;
                    }
                }
                Step::Starting => self
                    .control_units(&plan.units, UnitAction::Start)
                    .await
                    .map_err(at(step))?,
            }
            self.test_pause(uid, step.as_str(), step.progress()).await;
        }
        Ok(())
    }

    async fn copy_all(&self, plan: &Plan, uid: &str) -> StepOutcome {
        let step = Step::Copying;
        let total: u64 = plan
            .folders
            .iter()
            .map(|f| copy::allocated_size(&plan.source(f)))
            .sum::<u64>()
            .max(1);
        let mut done_before = 0;
        for folder in &plan.folders {
            let (source, partial) = (plan.source(folder), plan.partial(folder));
            if !source.exists() {
                copy::remove_tree(&partial).map_err(|e| internal(step, e))?;
                std::fs::create_dir(&partial).map_err(|e| internal(step, e))?;
                continue;
            }
            copy_with_progress(
                &self.jobs,
                uid,
                &source,
                &partial,
                (done_before, total),
                (Step::Copying.progress(), 50),
            )
            .await
            .map_err(|e| internal(step, e))?;
            done_before += copy::allocated_size(&source);
        }
        Ok(())
    }

    async fn verify_all(&self, plan: &Plan, uid: &str) -> StepOutcome {
        let step = Step::Verifying;
        for folder in &plan.folders {
            let (source, partial, target) = (
                plan.source(folder),
                plan.partial(folder),
                plan.target(folder),
            );
            if source.exists() {
                verify_copy(&self.jobs, uid, &source, &partial)
                    .await
                    .map_err(|e| internal(step, e))?;
            }
            // An empty folder the target had is replaced by the copy.
            if target.is_dir() {
                std::fs::remove_dir(&target).map_err(|e| internal(step, e))?;
            }
            std::fs::rename(&partial, &target).map_err(|e| internal(step, e))?;
        }
        // Durable before anything of the old copy goes.
        let root = Path::new(VOLUMES_DIR).join(&plan.to);
        tokio::task::spawn_blocking(move || copy::sync_filesystem(&root))
            .await
            .map_err(|e| internal(step, e))?
            .map_err(|e| internal(step, e))?;
        self.set_progress(uid, 80, None);
        Ok(())
    }

    /// Stops or starts each unit, waiting for systemd.
    pub(super) async fn control_units(&self, units: &[String], action: UnitAction) -> Outcome<()> {
        let systemd = self
            .systemd
            .get()
            .await
            .map_err(|e| Failure::internal("connecting to systemd", e))?;
        for unit in units {
            let outcome = systemd
                .run_job(action, unit, self.setup.unit_timeout)
                .await
                .map_err(|e| Failure::internal("controlling a unit", e))?;
            let verb = if action == UnitAction::Stop {
                "stop"
            } else {
                "start"
            };
            match outcome {
                JobOutcome::Done => {}
                JobOutcome::Failed(result) => {
                    return Err(Failure::new(
                        FailureKind::Internal,
                        Text::untranslated(format!("Could not {verb} {unit}: {result}")),
                    ));
                }
                JobOutcome::TimedOut => {
                    return Err(Failure::new(
                        FailureKind::Internal,
                        Text::untranslated(format!("{unit} did not {verb} in time")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sets the module's `location` and waits for the rebuild that binds
    /// its folders from there (nothing to do if it is set already and
    /// no rebuild is needed).
    async fn set_location(&self, plan: &Plan, location: &str) -> Outcome<()> {
        let userdata = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        let bound = plan
            .folders
            .first()
            .is_none_or(|f| is_bound_from(&Path::new(VOLUMES_DIR).join(location).join(&f.name)));
        if userdata["modules"][&plan.service]["location"] == location && bound {
            return Ok(());
        }
        let accepted =
            self.rebuilds
                .change(ConfigChange::from(UserdataChange::SetServiceLocation {
                    service: plan.service.clone(),
                    volume: location.to_owned(),
                }))?;
        wait_for_job_end(&self.jobs, &accepted.job.uid, self.setup.rebuild_timeout).await
    }

    /// Ends the job after the steps ran: done, or failed and gone back.
    /// `interrupted` is the step a previous daemon was cut off at.
    async fn conclude(
        &self,
        plan: &Plan,
        uid: &str,
        outcome: StepOutcome,
        interrupted: Option<Step>,
    ) {
        let (status, result, error) = match outcome {
            Ok(()) => {
                let (en, ru) = match interrupted {
                    Some(step) => (
                        format!(
                            "Recovered by finishing: the move was cut off at step {}; {} now lives on {}.",
                            step.as_str(),
                            plan.display_name,
                            plan.to
                        ),
                        format!(
                            "Восстановлено завершением: перенос прервался на шаге {}; {} теперь на томе {}.",
                            step.as_str(),
                            plan.display_name,
                            plan.to
                        ),
                    ),
                    None => (
                        format!("{} moved to {}.", plan.display_name, plan.to),
                        format!("{} перенесён на том {}.", plan.display_name, plan.to),
                    ),
                };
                (JobStatus::Finished, Some(Text::new(en, ru)), None)
            }
            Err(StepFailure { step, failure }) if !step.recovers_forward() => {
                let back = self.roll_back(plan).await;
                let (en, ru) = match back {
                    Ok(()) => (
                        format!(
                            "Moving failed at step {}: {}. The data stays on {} and the service was started again.",
                            step.as_str(),
                            failure.message.en,
                            plan.from
                        ),
                        format!(
                            "Перенос не удался на шаге {}: {}. Данные остались на томе {}, сервис снова запущен.",
                            step.as_str(),
                            failure.message.ru.as_deref().unwrap_or(&failure.message.en),
                            plan.from
                        ),
                    ),
                    Err(again) => (
                        format!(
                            "Moving failed at step {}: {}. The data is on {}, but going back failed: {}",
                            step.as_str(),
                            failure.message.en,
                            plan.from,
                            again.message.en
                        ),
                        format!(
                            "Перенос не удался на шаге {}: {}. Данные на томе {}, но возврат не удался: {}",
                            step.as_str(),
                            failure.message.ru.as_deref().unwrap_or(&failure.message.en),
                            plan.from,
                            again.message.en
                        ),
                    ),
                };
                (JobStatus::Error, None, Some(Text::new(en, ru)))
            }
            Err(StepFailure {
                step: Step::Switching,
                failure,
            }) => {
                // The rebuild failed: the old copy is complete; go back to it.
                let back = match self.set_location(plan, &plan.from).await {
                    Ok(()) => self.roll_back(plan).await,
                    Err(e) => Err(e),
                };
                let tail = match back {
                    Ok(()) => format!(
                        "The service is back on {} and was started again.",
                        plan.from
                    ),
                    Err(e) => format!(
                        "Going back to {} failed too: {}; both copies are kept.",
                        plan.from, e.message.en
                    ),
                };
                (
                    JobStatus::Error,
                    None,
                    Some(Text::untranslated(format!(
                        "Moving failed while switching the service: {}. {tail}",
                        failure.message.en
                    ))),
                )
            }
            Err(StepFailure { step, failure }) => (
                JobStatus::Error,
                None,
                Some(Text::untranslated(format!(
                    "The data was moved to {}, but step {} failed: {}",
                    plan.to,
                    step.as_str(),
                    failure.message.en
                ))),
            ),
        };
        // Ended either way: nothing is left for a restart to recover. (A
        // forward step that failed is not retried at every start.)
        if let Err(e) = self.store.end_move(uid) {
            tracing::error!(uid, "forgetting an ended move: {e}");
        }
        self.end_job(uid, status, result, error);
    }

    /// Back to the old copy: the partial and new copies are removed (the
    /// old one is complete, as nothing of it is removed before the switch)
    /// and the units are started.
    async fn roll_back(&self, plan: &Plan) -> Outcome<()> {
        for folder in &plan.folders {
            // Only ever remove a copy while the original is there.
            if !plan.source(folder).is_dir() {
                continue;
            }
            let (partial, target) = (plan.partial(folder), plan.target(folder));
            tokio::task::spawn_blocking(move || {
                copy::remove_tree(&partial)?;
                copy::remove_tree(&target)
            })
            .await
            .map_err(|e| Failure::internal("removing a partial copy", e))?
            .map_err(|e| Failure::internal("removing a partial copy", e))?;
        }
        self.control_units(&plan.units, UnitAction::Start).await
    }

    /// Finishes or rolls back the moves a previous daemon was cut off in.
    /// Each gets a job saying which way it went.
    pub fn recover_interrupted(self: &Arc<Self>, locks: &Arc<ServiceLocks>) {
        let records = match self.store.moves() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("reading interrupted moves: {e}");
                return;
            }
        };
        for record in records {
            let lease = match locks.try_acquire(&record.service, ServiceOperation::Move) {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::error!(service = %record.service, "recovering a move: {e}");
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move { this.recover(record, lease).await });
        }
    }

    async fn recover(&self, record: MoveRecord, lease: ServiceLease) {
        let step = Step::parse(&record.step).unwrap_or(Step::Stopping);
        let definition = self.catalogue.get(&record.service);
        let plan = Plan {
            service: record.service.clone(),
            display_name: definition
                .as_ref()
                .map(|d| d.meta.name.clone())
                .unwrap_or_else(|| record.service.clone()),
            units: definition
                .as_ref()
                .map(|d| d.meta.systemd_services.clone())
                .unwrap_or_default(),
            from: record.from_volume.clone(),
            to: record.to_volume.clone(),
            folders: record
                .folders
                .iter()
                .map(|name| Folder {
                    name: name.clone(),
                    owner: None,
                })
                .collect(),
        };
        tracing::warn!(
            service = %plan.service,
            step = step.as_str(),
            forward = step.recovers_forward(),
            "recovering an interrupted move"
        );
        let job = match self.jobs.create(
            &format!("services.{}.move", plan.service),
            Text::new(
                format!("Recover the move of {}", plan.display_name),
                format!("Восстановление переноса {}", plan.display_name),
            ),
            Text::new(
                format!(
                    "The move of {} from {} to {} (job {}) was cut off at step {}",
                    plan.display_name,
                    plan.from,
                    plan.to,
                    record.job_uid,
                    step.as_str()
                ),
                format!(
                    "Перенос {} с {} на {} (задача {}) прервался на шаге {}",
                    plan.display_name,
                    plan.from,
                    plan.to,
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
        // The interrupted job's record is replaced by this one's (saved
        // first: a crash in between leaves one record, never none).
        if let Err(e) = self.store.save_move(&plan.record(&job.uid, step)) {
            tracing::error!("recording the recovery: {e}");
        }
        let _ = self.store.end_move(&record.job_uid);
        if step.recovers_forward() {
            let outcome = self.drive(&plan, &job.uid, step).await;
            self.conclude(&plan, &job.uid, outcome, Some(step)).await;
        } else {
            let back = self.roll_back(&plan).await;
            let _ = self.store.end_move(&job.uid);
            let (status, result, error) = match back {
                Ok(()) => (
                    JobStatus::Finished,
                    Some(Text::new(
                        format!(
                            "Recovered by rolling back: the move was cut off at step {}; the data stays on {} and the service was started again.",
                            step.as_str(),
                            plan.from
                        ),
                        format!(
                            "Восстановлено откатом: перенос прервался на шаге {}; данные остались на томе {}, сервис снова запущен.",
                            step.as_str(),
                            plan.from
                        ),
                    )),
                    None,
                ),
                Err(e) => (
                    JobStatus::Error,
                    None,
                    Some(Text::untranslated(format!(
                        "Rolling back the move cut off at step {} failed: {}. The data is on {}.",
                        step.as_str(),
                        e.message.en,
                        plan.from
                    ))),
                ),
            };
            self.end_job(&job.uid, status, result, error);
        }
        drop(lease);
    }
}

/// Waits for a rebuild's job to end: Ok when it finished, its error else.
pub(super) async fn wait_for_job_end(
    jobs: &JobRegistry,
    uid: &str,
    rebuild_timeout: Duration,
) -> Outcome<()> {
    let deadline = tokio::time::Instant::now() + rebuild_timeout + Duration::from_secs(60);
    loop {
        let job = jobs
            .get(uid)
            .ok_or_else(|| Failure::internal("following a rebuild", "its job vanished"))?;
        match job.status {
            JobStatus::Finished => return Ok(()),
            JobStatus::Error => {
                let why = job.error.unwrap_or_else(|| Text::untranslated("unknown"));
                return Err(Failure::new(
                    FailureKind::Internal,
                    Text::new(
                        format!("The system rebuild failed: {}", why.en),
                        format!(
                            "Пересборка системы не удалась: {}",
                            why.ru.as_deref().unwrap_or(&why.en)
                        ),
                    ),
                ));
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::internal(
                "following a rebuild",
                "it did not end in time",
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Copies `source` to `partial` (`cp -a`, a stale partial removed first),
/// reporting progress each second: `done.0` of `done.1` bytes were copied
/// before this tree, and copying spans `span.1` points from `span.0`.
pub(super) async fn copy_with_progress(
    jobs: &Arc<JobRegistry>,
    uid: &str,
    source: &Path,
    partial: &Path,
    done: (u64, u64),
    span: (i32, i32),
) -> Result<(), String> {
    copy::remove_tree(partial).map_err(|e| e.to_string())?;
    let work = {
        let (source, partial) = (source.to_path_buf(), partial.to_path_buf());
        tokio::task::spawn_blocking(move || copy::copy_tree(&source, &partial))
    };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (done_before, total) = (done.0, done.1.max(1));
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = tick.tick() => {
                let copied = done_before + copy::allocated_size(partial);
                let share = (copied.min(total) * span.1 as u64 / total) as i32;
                let _ = jobs.update(
                    uid,
                    JobUpdate {
                        status: Some(JobStatus::Running),
                        progress: Some(span.0 + share),
                        ..Default::default()
                    },
                );
            }
        }
    };
    result
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Reads `copy` back against `original` (`copy::verify_tree`), touching
/// the job each second as a sign of life (the share is not known cheaply).
pub(super) async fn verify_copy(
    jobs: &Arc<JobRegistry>,
    uid: &str,
    original: &Path,
    copy: &Path,
) -> Result<(), String> {
    let (jobs, uid) = (jobs.clone(), uid.to_owned());
    let (a, b) = (original.to_path_buf(), copy.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut last = std::time::Instant::now();
        copy::verify_tree(&a, &b, |_| {
            if last.elapsed() > Duration::from_secs(1) {
                last = std::time::Instant::now();
                let _ = jobs.update(&uid, JobUpdate::default());
            }
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Whether `dir` (`/volumes/<name>`) is where this process reaches the
/// volume: its mount point, or for the system volume a folder on it.
pub(super) fn is_volume_dir(volume: &super::VolumeView, dir: &Path) -> bool {
    if volume.mount_point.as_deref() == Some(dir) {
        return is_filesystem_of(dir, &volume.device);
    }
    volume.root && is_filesystem_of(dir, &volume.device) && dir.is_dir()
}

/// Whether `path` is on the filesystem of the block device `device`.
fn is_filesystem_of(path: &Path, device: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), std::fs::metadata(device)) {
        (Ok(at), Ok(node)) => at.dev() == node.rdev(),
        _ => false,
    }
}

/// Whether `folder` is the source of a mount (some mount's root is it).
pub(super) fn is_bound_from(folder: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = folder.metadata() else {
        return false;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // A bind mount of the folder shows as a mount point with the same
    // device and inode.
    mountinfo.lines().any(|line| {
        let mount_point = line.split(' ').nth(4).unwrap_or("");
        mount_point != folder.to_string_lossy()
            && Path::new(mount_point)
                .metadata()
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_before_the_switch_roll_back_and_the_rest_finish() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        let back: Vec<_> = Step::ALL
            .into_iter()
            .filter(|s| !s.recovers_forward())
            .map(Step::as_str)
            .collect();
        assert_eq!(back, ["stopping", "copying", "verifying", "owning"]);
        assert_eq!(Step::parse("nonsense"), None);
        assert!(margin_for(0) >= 8 << 20);
        assert_eq!(margin_for(2000 << 20), (100 << 20) + (8 << 20));
    }
}
