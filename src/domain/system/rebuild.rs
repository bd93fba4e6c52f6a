//! NixOS rebuilds, upgrades and rollbacks as jobs.
//!
//! Each starts its unit (shipped by the project's NixOS module; it runs
//! `nixos-rebuild` on /etc/nixos), follows the unit's journal into the
//! job's status text and progress, and ends FINISHED or ERROR with the
//! failing lines. Two never run at once.

use crate::domain::error::{Failure, Outcome};
use crate::domain::i18n::Text;
use crate::domain::jobs::{Job, JobRegistry, JobStatus, JobUpdate};
use crate::domain::services::catalogue::Catalogue;
use crate::domain::system::changes::{ChangeContext, FileEdit, UserdataChange};
use crate::os::files::{copy_atomically, write_atomically};
use crate::os::journal;
use crate::os::systemd::{JobOutcome, SystemdLink, UnitAction};
use crate::os::userdata::UserdataFile;
use crate::state::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildKind {
    Rebuild,
    Upgrade,
    Rollback,
}

/// The units that do the work, one per kind.
#[derive(Debug, Clone)]
pub struct RebuildUnits {
    pub rebuild: String,
    pub upgrade: String,
    pub rollback: String,
}

impl RebuildKind {
    /// The kind of a rebuild job, by its type id.
    pub fn of_job(type_id: &str) -> Option<RebuildKind> {
        [
            RebuildKind::Rebuild,
            RebuildKind::Upgrade,
            RebuildKind::Rollback,
        ]
        .into_iter()
        .find(|k| k.type_id() == type_id)
    }

    fn type_id(self) -> &'static str {
        match self {
            RebuildKind::Rebuild => "system.nixos.rebuild",
            RebuildKind::Upgrade => "system.nixos.upgrade",
            RebuildKind::Rollback => "system.nixos.rollback",
        }
    }

    fn name(self) -> Text {
        match self {
            RebuildKind::Rebuild => Text::new("Rebuild system", "Пересборка системы"),
            RebuildKind::Upgrade => Text::new("Upgrade system", "Обновление системы"),
            RebuildKind::Rollback => Text::new("Roll back system", "Откат системы"),
        }
    }

    fn description(self) -> Text {
        match self {
            RebuildKind::Rebuild => Text::new(
                "Applying the new system configuration by building the new NixOS generation.",
                "Применение новой конфигурации: сборка нового поколения NixOS.",
            ),
            RebuildKind::Upgrade => Text::new(
                "Upgrading the system to the latest version.",
                "Обновление системы до последней версии.",
            ),
            RebuildKind::Rollback => Text::new(
                "Returning to the previous NixOS generation.",
                "Возврат к предыдущему поколению NixOS.",
            ),
        }
    }

    fn done(self) -> Text {
        match self {
            RebuildKind::Rebuild => Text::new("System rebuilt.", "Система пересобрана."),
            RebuildKind::Upgrade => Text::new("System upgraded.", "Система обновлена."),
            RebuildKind::Rollback => Text::new("System rolled back.", "Система откачена."),
        }
    }
}

/// A change to the declared configuration, as data: what it does to
/// userdata and the edit of another file that comes with it. A change
/// queued behind a running rebuild is stored as this (JSON) until the
/// follow-up rebuild writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChange {
    /// Edits userdata (and refuses what is invalid).
    pub userdata: UserdataChange,
    /// Made just before the userdata edit is written: for example adding a
    /// module's input to flake.nix. Queued with the change, restored with it.
    pub before_write: Option<FileEdit>,
}

impl From<UserdataChange> for ConfigChange {
    fn from(userdata: UserdataChange) -> Self {
        ConfigChange {
            userdata,
            before_write: None,
        }
    }
}

/// Where queued changes are kept and what applying a change needs.
pub struct ChangeSetup {
    pub store: Arc<Store>,
    /// The service definitions settings are checked against.
    pub catalogue: Catalogue,
    /// flake.nix, which [`FileEdit`]s edit.
    pub flake: PathBuf,
}

/// When an accepted change or rebuild request takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// A rebuild starts now.
    Now,
    /// A rebuild starts in a moment; changes made meanwhile join it.
    Shortly,
    /// Queued: applied by a rebuild that starts when the one under way ends.
    AfterCurrent,
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub job: Job,
    pub schedule: Schedule,
}

/// How a rebuild's run ended, with the job's error text. The job is not
/// ended by the run: `finished` ends it in one update, once the files are
/// kept or restored, so no one ever sees an ended job whose text is
/// still to be completed.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    Succeeded,
    /// Nothing was activated: the running system is what it was.
    Failed(Text),
    /// The new generation was activated, with errors (units that failed
    /// to start, or it was stopped midway): the system runs the new files.
    ActivatedWithErrors(Text),
}

enum Phase {
    Idle,
    /// A rebuild job is created and starts at `at` (changes coalesce).
    Scheduled {
        job: String,
    },
    Running {
        /// The follow-up rebuild's job and the changes it will apply.
        pending: Option<(String, Vec<ConfigChange>)>,
    },
}

/// The files of the declared configuration, each with a copy of what the
/// running system was built from (restored when a rebuild fails before
/// activating anything).
pub struct AppliedConfig {
    pub userdata: Arc<UserdataFile>,
    /// (live file, copy) pairs: userdata.json, flake.nix.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// The system profile link (`/nix/var/nix/profiles/system`):
    /// nixos-rebuild points it at the new generation before activating it,
    /// so a rebuild that changed it has activated its configuration.
    pub system_profile: PathBuf,
    /// Where the profile's target from before the latest rebuild is kept:
    /// it outlives a restart of the daemon in the middle of the rebuild.
    pub profile_before_run: PathBuf,
}

impl AppliedConfig {
    /// Takes the current files as applied if no copy exists yet (the
    /// system was built from them by the installer or a rebuild before
    /// this daemon kept copies).
    pub fn initialize(&self) {
        self.keep(true);
    }

    fn save(&self) {
        self.keep(false);
    }

    /// Copies each live file to its applied copy (only where no copy
    /// exists yet, if `only_missing`).
    fn keep(&self, only_missing: bool) {
        for (live, copy) in &self.files {
            if !live.exists() || (only_missing && copy.exists()) {
                continue;
            }
            if let Err(e) = copy_atomically(live, copy) {
                tracing::error!(file = %live.display(), "keeping an applied copy: {e}");
            }
        }
    }

    /// The generation the system profile points to ("" when there is none).
    fn profile_target(&self) -> String {
        std::fs::read_link(&self.system_profile)
            .map(|target| target.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Notes the profile's target before a rebuild starts.
    fn note_profile_before_run(&self) {
        let target = self.profile_target();
        if let Err(e) = write_atomically(&self.profile_before_run, target.as_bytes(), 0o600) {
            tracing::error!(file = %self.profile_before_run.display(), "noting the system profile: {e}");
        }
    }

    /// Whether the latest rebuild switched the system profile (and so
    /// activated its configuration); `None` if that cannot be told.
    fn activated_since_run_started(&self) -> Option<bool> {
        let before = std::fs::read_to_string(&self.profile_before_run).ok()?;
        Some(before != self.profile_target())
    }

    /// Puts back what the running system was built from; false if a copy
    /// was missing or could not be restored.
    fn restore(&self) -> bool {
        let mut all = true;
        for (live, copy) in &self.files {
            if !copy.exists() {
                all = false;
                continue;
            }
            if let Err(e) = copy_atomically(copy, live) {
                tracing::error!(file = %live.display(), "restoring the applied configuration: {e}");
                all = false;
            }
        }
        all
    }
}

/// Applies the changes queued behind the running rebuild, in order.
fn apply_queued(phase: &Phase, document: &mut Value, context: &ChangeContext) {
    if let Phase::Running {
        pending: Some((_, queued)),
    } = phase
    {
        for change in queued {
            // One that no longer applies is refused when it is written.
            let _ = change.userdata.apply(document, context);
        }
    }
}

pub struct Rebuilds {
    systemd: Arc<SystemdLink>,
    jobs: Arc<JobRegistry>,
    units: RebuildUnits,
    run_timeout: Duration,
    /// How long a scheduled rebuild waits for more changes to join.
    debounce: Duration,
    config: AppliedConfig,
    changes: ChangeSetup,
    phase: Mutex<Phase>,
}

impl Rebuilds {
    pub fn new(
        systemd: Arc<SystemdLink>,
        jobs: Arc<JobRegistry>,
        units: RebuildUnits,
        run_timeout: Duration,
        debounce: Duration,
        config: AppliedConfig,
        changes: ChangeSetup,
    ) -> Self {
        config.initialize();
        Rebuilds {
            systemd,
            jobs,
            units,
            run_timeout,
            debounce,
            config,
            changes,
            phase: Mutex::new(Phase::Idle),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while a rebuild runs or is about to start.
    pub fn is_running(&self) -> bool {
        !matches!(*self.phase(), Phase::Idle)
    }

    /// The refusal an upgrade, rollback or reboot gets during a rebuild.
    pub fn busy_failure() -> Failure {
        Failure::conflict(
            "A system rebuild is running; try again when it has finished (the request was not queued)",
            "Идёт пересборка системы; повторите, когда она закончится (запрос не поставлен в очередь)",
        )
    }

    fn create_job(&self, kind: RebuildKind) -> Outcome<Job> {
        self.jobs
            .create(kind.type_id(), kind.name(), kind.description())
    }

    fn note(&self, uid: &str, text: Text) {
        self.update(
            uid,
            JobUpdate {
                status_text: Some(text),
                ..Default::default()
            },
        );
    }

    /// Changes the declared configuration and has it applied by a rebuild:
    /// one starting shortly (so a batch of changes from the app is built
    /// once), or, during a rebuild, one queued behind it. Invalid changes
    /// are refused before anything is written or queued.
    pub fn change(self: &Arc<Self>, change: ConfigChange) -> Outcome<Accepted> {
        let mut phase = self.phase();
        match &mut *phase {
            Phase::Running { pending } => {
                // Check now against the file as the queued changes before
                // this one will leave it; apply later.
                let context = self.context();
                let mut preview = self.read_userdata()?;
                if let Some((_, queued)) = pending.as_ref() {
                    for earlier in queued {
                        let _ = earlier.userdata.apply(&mut preview, &context);
                    }
                }
                change.userdata.apply(&mut preview, &context)?;
                // Stored before the owner is told it is queued.
                let job = match pending {
                    Some((uid, changes)) => {
                        let job = self.jobs.get(uid).ok_or_else(|| {
                            Failure::internal("queueing a change", "the queued job vanished")
                        })?;
                        self.store_queued(uid, &change)?;
                        changes.push(change);
                        job
                    }
                    None => {
                        let job = self.create_job(RebuildKind::Rebuild)?;
                        if let Err(failure) = self.store_queued(&job.uid, &change) {
                            self.fail(&job.uid, failure.message.clone());
                            return Err(failure);
                        }
                        self.note(&job.uid, queued_text());
                        *pending = Some((job.uid.clone(), vec![change]));
                        job
                    }
                };
                Ok(Accepted {
                    job,
                    schedule: Schedule::AfterCurrent,
                })
            }
            Phase::Scheduled { job } => {
                let job = self.jobs.get(job).ok_or_else(|| {
                    Failure::internal("scheduling a rebuild", "the scheduled job vanished")
                })?;
                self.apply_now(&change, &self.context())?;
                Ok(Accepted {
                    job,
                    schedule: Schedule::Shortly,
                })
            }
            Phase::Idle => {
                // Nothing is written for a change that is refused.
                let context = self.context();
                let mut preview = self.read_userdata()?;
                change.userdata.apply(&mut preview, &context)?;
                let job = self.create_job(RebuildKind::Rebuild)?;
                if let Err(failure) = self.apply_now(&change, &context) {
                    self.fail(&job.uid, failure.message.clone());
                    return Err(failure);
                }
                self.note(
                    &job.uid,
                    Text::new(
                        "Starting in a moment; further changes join this rebuild",
                        "Начнётся через мгновение; следующие изменения войдут в эту пересборку",
                    ),
                );
                *phase = Phase::Scheduled {
                    job: job.uid.clone(),
                };
                let this = self.clone();
                let uid = job.uid.clone();
                let debounce = self.debounce;
                tokio::spawn(async move {
                    tokio::time::sleep(debounce).await;
                    this.start_scheduled(&uid);
                });
                Ok(Accepted {
                    job,
                    schedule: Schedule::Shortly,
                })
            }
        }
    }

    /// userdata as the owner declared it: the file with the changes queued
    /// behind the running rebuild applied, in order. Readers see a change
    /// as soon as it is accepted, written yet or not (a user created during
    /// a rebuild can be listed, given keys and deleted at once).
    pub fn declared_userdata(&self) -> Outcome<Value> {
        let context = self.context();
        let phase = self.phase();
        let mut document = self.read_userdata()?;
        apply_queued(&phase, &mut document, &context);
        Ok(document)
    }

    /// [`declared_userdata`](Self::declared_userdata), shared: the file's
    /// cached parse while nothing is queued, a new document otherwise (so
    /// views cached by document are built again while changes are queued).
    pub fn declared_userdata_shared(&self) -> Outcome<Arc<Value>> {
        let phase = self.phase();
        let file = self
            .config
            .userdata
            .read_shared()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        if !matches!(&*phase, Phase::Running { pending: Some((_, queued)) } if !queued.is_empty()) {
            return Ok(file);
        }
        let mut document = Value::clone(&file);
        apply_queued(&phase, &mut document, &self.context());
        Ok(Arc::new(document))
    }

    fn read_userdata(&self) -> Outcome<Value> {
        self.config
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))
    }

    /// What changes are checked against now.
    fn context(&self) -> ChangeContext {
        ChangeContext {
            definitions: self.changes.catalogue.definitions(),
        }
    }

    /// Applies `change` to `document` (a copy the caller previews), as it
    /// would be applied to userdata.
    pub fn preview(&self, change: &UserdataChange, document: &mut Value) -> Outcome<()> {
        change.apply(document, &self.context())
    }

    /// Keeps a change queued for the follow-up rebuild `uid`, durably.
    fn store_queued(&self, uid: &str, change: &ConfigChange) -> Outcome<()> {
        let json =
            serde_json::to_string(change).map_err(|e| Failure::internal("queueing a change", e))?;
        self.changes
            .store
            .queue_change(uid, &json)
            .map_err(|e| Failure::internal("queueing a change", e))
    }

    /// The changes stored for the queued rebuild `uid`, in order, and a
    /// description of each stored change this daemon cannot read (written
    /// by a newer version).
    fn stored_changes(&self, uid: &str) -> (Vec<ConfigChange>, Vec<String>) {
        let records = match self.changes.store.queued_changes() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(uid, "reading the queued changes: {e}");
                return (
                    Vec::new(),
                    vec![format!("the queue could not be read: {e}")],
                );
            }
        };
        let mut changes = Vec::new();
        let mut unreadable = Vec::new();
        for record in records.into_iter().filter(|r| r.job_uid == uid) {
            match serde_json::from_str::<ConfigChange>(&record.change) {
                Ok(change) => changes.push(change),
                Err(e) => {
                    // Not the decoder's message: it may quote a field.
                    tracing::error!(
                        uid,
                        kind = unreadable_change(&record.change),
                        "a queued change cannot be read ({:?} error at column {})",
                        e.classify(),
                        e.column()
                    );
                    unreadable.push(unreadable_change(&record.change));
                }
            }
        }
        (changes, unreadable)
    }

    /// Checks the change against the file, makes its `before_write` edit,
    /// then writes it. Callers hold the phase lock: config files are only
    /// ever written under it.
    fn apply_now(&self, change: &ConfigChange, context: &ChangeContext) -> Outcome<()> {
        let mut preview = self.read_userdata()?;
        change.userdata.apply(&mut preview, context)?;
        if let Some(edit) = &change.before_write {
            edit.apply(&self.changes.flake)?;
        }
        self.config
            .userdata
            .update(|document| change.userdata.apply(document, context))
            .map_err(|e| Failure::internal("writing userdata", e))?
    }

    /// Starts the scheduled rebuild, if it is still waiting.
    fn start_scheduled(self: &Arc<Self>, uid: &str) {
        let mut phase = self.phase();
        if matches!(&*phase, Phase::Scheduled { job } if job == uid) {
            *phase = Phase::Running { pending: None };
            drop(phase);
            self.spawn_run(RebuildKind::Rebuild, uid.to_owned());
        }
    }

    /// Starts a rebuild, upgrade or rollback as a job. A rebuild asked for
    /// while one is scheduled starts it at once; while one runs, it is
    /// queued behind it. Upgrades and rollbacks are refused meanwhile.
    pub fn start(self: &Arc<Self>, kind: RebuildKind) -> Outcome<Accepted> {
        let mut phase = self.phase();
        match (&mut *phase, kind) {
            (Phase::Idle, _) => {
                let job = self.create_job(kind)?;
                *phase = Phase::Running { pending: None };
                drop(phase);
                self.spawn_run(kind, job.uid.clone());
                Ok(Accepted {
                    job,
                    schedule: Schedule::Now,
                })
            }
            (Phase::Scheduled { job }, RebuildKind::Rebuild) => {
                let uid = job.clone();
                *phase = Phase::Running { pending: None };
                drop(phase);
                self.spawn_run(kind, uid.clone());
                let job = self.jobs.get(&uid).ok_or_else(|| {
                    Failure::internal("starting a rebuild", "the scheduled job vanished")
                })?;
                Ok(Accepted {
                    job,
                    schedule: Schedule::Now,
                })
            }
            (Phase::Running { pending }, RebuildKind::Rebuild) => {
                let job = match pending {
                    Some((uid, _)) => self.jobs.get(uid).ok_or_else(|| {
                        Failure::internal("queueing a rebuild", "the queued job vanished")
                    })?,
                    None => {
                        let job = self.create_job(kind)?;
                        self.note(&job.uid, queued_text());
                        *pending = Some((job.uid.clone(), Vec::new()));
                        job
                    }
                };
                Ok(Accepted {
                    job,
                    schedule: Schedule::AfterCurrent,
                })
            }
            _ => Err(Self::busy_failure()),
        }
    }

    /// Picks up a rebuild that was running when the daemon stopped (a
    /// switch that updates the daemon restarts it mid-rebuild): the unit
    /// went on without it, so wait for it and report how it ended.
    pub fn resume(self: &Arc<Self>, job: Job) {
        let Some(kind) = RebuildKind::of_job(&job.type_id) else {
            return;
        };
        if job.status == JobStatus::Created {
            self.resume_unstarted(kind, job);
            return;
        }
        *self.phase() = Phase::Running { pending: None };
        let this = self.clone();
        tokio::spawn(async move {
            let ending = this.follow_resumed(kind, &job).await;
            this.finished(kind, &job.uid, ending);
        });
    }

    /// A rebuild that was scheduled or queued when the daemon stopped: it
    /// builds the configuration as saved, with the changes that were
    /// queued for it (kept in the state database) applied first.
    fn resume_unstarted(self: &Arc<Self>, kind: RebuildKind, job: Job) {
        let (changes, unreadable) = self.stored_changes(&job.uid);
        let text = if changes.is_empty() {
            Text::new(
                "The API restarted before this rebuild started; it builds the configuration as saved",
                "Служба API перезапустилась до начала пересборки; собирается сохранённая конфигурация",
            )
        } else {
            let count = changes.len();
            Text::new(
                format!(
                    "The API restarted before this rebuild started; the {count} change(s) queued for it were kept across the restart and are applied when it starts"
                ),
                format!(
                    "Служба API перезапустилась до начала пересборки; изменения в очереди ({count}) сохранены при перезапуске и будут применены при её начале"
                ),
            )
        };
        self.note(&job.uid, text);
        if !unreadable.is_empty() {
            // Reported, never dropped silently: the owner made them.
            self.add_error(
                &job.uid,
                Text::new(
                    format!(
                        "Some queued changes could not be read (saved by a newer version of the API?) and were not applied: {}",
                        unreadable.join("; ")
                    ),
                    format!(
                        "Некоторые изменения из очереди не удалось прочитать (сохранены более новой версией API?), они не применены: {}",
                        unreadable.join("; ")
                    ),
                ),
            );
        }
        let mut phase = self.phase();
        match &mut *phase {
            Phase::Idle | Phase::Scheduled { .. } => {
                if kind == RebuildKind::Rebuild {
                    self.start_follow_up(phase, job.uid, changes);
                } else {
                    *phase = Phase::Running { pending: None };
                    drop(phase);
                    self.spawn_run(kind, job.uid);
                }
            }
            Phase::Running { pending } => match pending {
                None => *pending = Some((job.uid, changes)),
                Some((first, queued)) => {
                    let first = first.clone();
                    queued.extend(changes);
                    if let Err(e) = self.changes.store.move_queued_changes(&job.uid, &first) {
                        tracing::error!(uid = %job.uid, "handing queued changes to {first}: {e}");
                    }
                    drop(phase);
                    self.fail(
                        &job.uid,
                        Text::untranslated(format!("Merged into the rebuild {first}")),
                    );
                }
            },
        }
    }

    async fn follow_resumed(&self, kind: RebuildKind, job: &Job) -> Ending {
        let unit = self.unit(kind).to_owned();
        self.note(
            &job.uid,
            Text::new(
                "The API restarted; following the rebuild again...",
                "Служба API перезапустилась; снова следим за пересборкой...",
            ),
        );
        let systemd = match self.systemd.get().await {
            Ok(systemd) => systemd,
            Err(e) => {
                return Ending::Failed(Text::untranslated(format!("Cannot reach systemd: {e}")));
            }
        };
        let deadline = tokio::time::Instant::now() + self.run_timeout;
        loop {
            let states = systemd.unit_states(std::slice::from_ref(&unit)).await;
            let active = states
                .get(&unit)
                .map(|s| s.active_state.as_str())
                .unwrap_or("");
            if !matches!(active, "activating" | "deactivating" | "reloading") {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                // As a run that times out: the unit is stopped first.
                return self.report(&systemd, &unit, Ok(JobOutcome::TimedOut)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A second of slack: the job's clock reading and systemd's differ.
        let since = job.created_at - chrono::Duration::seconds(1);
        // journald may not have written systemd's last word yet.
        let mut result = None;
        for _ in 0..15 {
            result = journal::start_job_result(&unit, since).await;
            if result.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let outcome = match result {
            Some(result) if result == "done" => JobOutcome::Done,
            Some(result) => JobOutcome::Failed(result),
            None => {
                return Ending::Failed(Text::new(
                    "Interrupted: the API stopped before the rebuild started",
                    "Прервано: служба API остановилась до начала пересборки",
                ));
            }
        };
        self.report(&systemd, &unit, Ok(outcome)).await
    }

    fn spawn_run(self: &Arc<Self>, kind: RebuildKind, uid: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let ending = this.run(kind, &uid).await;
            this.finished(kind, &uid, ending);
        });
    }

    /// After a rebuild: keep the configuration the system now runs (the
    /// new one if it was activated, even with errors) or restore the one it
    /// was built from, end the job in one update saying which, then start
    /// the queued follow-up, if any, with its changes applied.
    fn finished(self: &Arc<Self>, kind: RebuildKind, uid: &str, ending: Ending) {
        // Config files are only written under the phase lock.
        let mut phase = self.phase();
        let keeps_files = kind != RebuildKind::Rollback;
        let error = match ending {
            Ending::Succeeded => {
                if keeps_files {
                    self.config.save();
                }
                None
            }
            Ending::ActivatedWithErrors(error) => {
                if keeps_files {
                    self.config.save();
                }
                Some(error)
            }
            Ending::Failed(error) if !keeps_files => Some(error),
            Ending::Failed(error) => Some(joined(
                &error,
                &if self.config.restore() {
                    Text::new(
                        "The configuration was restored to what the running system was built from.",
                        "Конфигурация возвращена к той, из которой собрана работающая система.",
                    )
                } else {
                    Text::new(
                        "The previous configuration could not be restored; see the server log.",
                        "Не удалось вернуть прежнюю конфигурацию; подробности в журнале сервера.",
                    )
                },
            )),
        };
        self.update(uid, self.final_update(kind, uid, error));
        let pending = match &mut *phase {
            Phase::Running { pending } => pending.take(),
            _ => None,
        };
        let Some((next, changes)) = pending else {
            *phase = Phase::Idle;
            return;
        };
        self.start_follow_up(phase, next, changes);
    }

    /// Applies the changes queued for the rebuild `next` and starts it.
    /// Each is checked again against the file as it is now; one refused is
    /// said in the job's error, the others are applied.
    fn start_follow_up(
        self: &Arc<Self>,
        mut phase: MutexGuard<'_, Phase>,
        next: String,
        changes: Vec<ConfigChange>,
    ) {
        let context = self.context();
        let mut refused = Vec::new();
        for change in &changes {
            if let Err(failure) = self.apply_now(change, &context) {
                refused.push(failure.message.en.clone());
            }
        }
        // Removed only once userdata holds them, so a crash loses none. A
        // crash between the two applies them again at the next start,
        // which does no harm: a change that sets values (services,
        // settings, locations, volumes) sets the same values again, and
        // one that adds or removes (users, SSH keys) finds it done and is
        // refused, leaving the file as it is (the job then names it).
        if let Err(e) = self.changes.store.remove_queued_changes(&next) {
            tracing::error!(uid = %next, "removing applied changes from the queue: {e}");
        }
        if !refused.is_empty() {
            // In `error`, which the run keeps (a status text it would not):
            // the app was told these changes were queued.
            self.add_error(
                &next,
                Text::untranslated(format!(
                    "Some queued changes were not applied: {}",
                    refused.join("; ")
                )),
            );
        }
        *phase = Phase::Running { pending: None };
        drop(phase);
        self.spawn_run(RebuildKind::Rebuild, next);
    }

    /// Adds `error` to the job's error, after what it says already.
    fn add_error(&self, uid: &str, error: Text) {
        let error = match self.jobs.get(uid).and_then(|job| job.error) {
            Some(earlier) => joined(&earlier, &error),
            None => error,
        };
        self.update(
            uid,
            JobUpdate {
                error: Some(error),
                ..Default::default()
            },
        );
    }

    /// The update that ends the job: FINISHED, or ERROR with `error`. An
    /// error the job already has (queued changes that were not applied)
    /// stays in front of it.
    fn final_update(&self, kind: RebuildKind, uid: &str, error: Option<Text>) -> JobUpdate {
        let Some(error) = error else {
            return JobUpdate {
                status: Some(JobStatus::Finished),
                status_text: Some(kind.done()),
                result: Some(kind.done()),
                ..Default::default()
            };
        };
        let error = match self.jobs.get(uid).and_then(|job| job.error) {
            Some(earlier) => joined(&earlier, &error),
            None => error,
        };
        JobUpdate {
            status: Some(JobStatus::Error),
            error: Some(error),
            ..Default::default()
        }
    }

    fn unit(&self, kind: RebuildKind) -> &str {
        match kind {
            RebuildKind::Rebuild => &self.units.rebuild,
            RebuildKind::Upgrade => &self.units.upgrade,
            RebuildKind::Rollback => &self.units.rollback,
        }
    }

    fn update(&self, uid: &str, update: JobUpdate) {
        if let Err(failure) = self.jobs.update(uid, update) {
            tracing::error!(uid, "updating a rebuild job: {failure}");
        }
    }

    fn fail(&self, uid: &str, error: Text) {
        self.update(
            uid,
            JobUpdate {
                status: Some(JobStatus::Error),
                error: Some(error),
                ..Default::default()
            },
        );
    }

    async fn run(&self, kind: RebuildKind, uid: &str) -> Ending {
        let unit = self.unit(kind).to_owned();
        self.update(
            uid,
            JobUpdate {
                status: Some(JobStatus::Running),
                status_text: Some(Text::new(
                    "Starting the system rebuild...",
                    "Запуск пересборки системы...",
                )),
                progress: Some(0),
                ..Default::default()
            },
        );
        let systemd = match self.systemd.get().await {
            Ok(systemd) => systemd,
            Err(e) => {
                return Ending::Failed(Text::untranslated(format!("Cannot reach systemd: {e}")));
            }
        };
        self.config.note_profile_before_run();
        // Follow the journal from before the start, so no line is missed.
        let mut follower = journal::Follower::start(&unit)
            .map_err(|e| tracing::warn!(unit, "cannot follow the journal: {e}"))
            .ok();
        let job = systemd.run_job(UnitAction::Start, &unit, self.run_timeout);
        tokio::pin!(job);
        let mut progress = Progress::default();
        let mut last_update = Instant::now() - Duration::from_secs(1);
        let outcome = loop {
            let line = async {
                match follower.as_mut() {
                    Some(f) => f.next_line().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = &mut job => break outcome,
                line = line => match line {
                    Some(line) => {
                        progress.see(&line);
                        // At most a few updates a second reach the app.
                        if last_update.elapsed() >= Duration::from_millis(200) {
                            last_update = Instant::now();
                            self.update(uid, JobUpdate {
                                status_text: Some(Text::untranslated(line)),
                                progress: Some(progress.percent),
                                ..Default::default()
                            });
                        }
                    }
                    None => follower = None,
                },
            }
        };
        drop(follower);
        self.report(&systemd, &unit, outcome).await
    }

    /// How the unit's run ended: success, or the error with the unit's
    /// last lines, saying whether the new configuration was activated (the
    /// system profile changed) and which units failed.
    async fn report(
        &self,
        systemd: &crate::os::systemd::Systemd,
        unit: &str,
        outcome: Result<JobOutcome, crate::os::systemd::SystemdError>,
    ) -> Ending {
        let (mut en, mut ru) = match outcome {
            Ok(JobOutcome::Done) => return Ending::Succeeded,
            Ok(JobOutcome::Failed(result)) => (
                format!("System rebuild failed ({result})."),
                format!("Пересборка системы не удалась ({result})."),
            ),
            Ok(JobOutcome::TimedOut) => {
                // Stop it before the configuration is restored under it: a
                // late switch must not install what userdata no longer says.
                if let Err(e) = systemd
                    .run_job(UnitAction::Stop, unit, Duration::from_secs(120))
                    .await
                {
                    tracing::error!(unit, "stopping a rebuild that ran too long: {e}");
                }
                let (en, ru) = duration_text(self.run_timeout);
                (
                    format!("System rebuild did not finish within {en} and was stopped."),
                    format!("Пересборка системы не завершилась за {ru} и была остановлена."),
                )
            }
            Err(e) => {
                return Ending::Failed(Text::untranslated(format!("Could not start {unit}: {e}")));
            }
        };
        let lines = self.last_lines(systemd, unit, LOG_LINES_SHOWN).await;
        let activated = self.config.activated_since_run_started() == Some(true);
        if activated {
            en.push_str(" The new configuration was activated and is kept");
            ru.push_str(" Новая конфигурация применена и сохранена");
            let failed = failed_units(&self.last_lines(systemd, unit, 200).await);
            if failed.is_empty() {
                en.push('.');
                ru.push('.');
            } else {
                let failed = failed.join(", ");
                en.push_str(&format!("; these units failed to start: {failed}."));
                ru.push_str(&format!("; эти службы не запустились: {failed}."));
            }
        }
        let error = Text::new(
            format!("{en} Last log lines:\n{lines}"),
            format!("{ru} Последние строки журнала:\n{lines}"),
        );
        if activated {
            Ending::ActivatedWithErrors(error)
        } else {
            Ending::Failed(error)
        }
    }

    /// The unit's last lines from its latest run. journald may not have
    /// read the unit's last output yet when the unit has ended: it is
    /// synced first, and an empty answer is asked again.
    async fn last_lines(
        &self,
        systemd: &crate::os::systemd::Systemd,
        unit: &str,
        count: usize,
    ) -> String {
        let invocation = systemd.invocation_id(unit).await;
        journal::sync(JOURNAL_SYNC_LIMIT).await;
        for attempt in 0..10 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let lines = journal::last_lines(unit, invocation.as_deref(), count).await;
            if !lines.is_empty() {
                return lines.join("\n");
            }
        }
        journal::last_lines(unit, None, count).await.join("\n")
    }
}

/// Progress from nixos-rebuild's output: known phases set a floor, each
/// build or copy line adds a little; it never goes back.
#[derive(Default)]
struct Progress {
    percent: i32,
}

impl Progress {
    const PHASES: &[(&str, i32)] = &[
        ("building the system configuration", 10),
        ("will be built", 20),
        ("will be fetched", 20),
        ("activating the configuration", 70),
        ("setting up /etc", 75),
        ("reloading user units", 80),
        ("stopping the following units", 85),
        ("restarting the following units", 88),
        ("starting the following units", 90),
        ("the following new units were started", 95),
    ];

    fn see(&mut self, line: &str) {
        let lower = line.to_lowercase();
        for (marker, floor) in Self::PHASES {
            if lower.contains(marker) {
                self.percent = self.percent.max(*floor);
            }
        }
        if (lower.starts_with("building '") || lower.starts_with("copying path"))
            && self.percent < 65
        {
            self.percent = (self.percent + 1).max(20);
        }
    }
}

/// How long journald may take to store what a unit wrote before it ended.
const JOURNAL_SYNC_LIMIT: Duration = Duration::from_secs(10);

/// How many of the unit's last lines a failed job shows.
const LOG_LINES_SHOWN: usize = 10;

/// The units switch-to-configuration reports as failed
/// (`warning: the following units failed: a.service, b.service`).
fn failed_units(log: &str) -> Vec<String> {
    const MARKER: &str = "the following units failed:";
    log.lines()
        .filter_map(|line| line.split_once(MARKER).map(|(_, units)| units))
        .flat_map(|units| units.split(',').map(str::trim))
        .filter(|unit| !unit.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `first`, then `second` on a new line, in each language.
fn joined(first: &Text, second: &Text) -> Text {
    let join = |a: &str, b: &str| format!("{a}\n{b}");
    Text {
        en: join(&first.en, &second.en),
        ru: Some(join(
            first.ru.as_deref().unwrap_or(&first.en),
            second.ru.as_deref().unwrap_or(&second.en),
        )),
    }
}

/// What a stored change this daemon cannot read is named by in the job
/// and the log: its kind if that can be told, never its fields (nor the
/// decoder's message, which may quote them: a password hash may be among
/// them).
fn unreadable_change(stored: &str) -> String {
    serde_json::from_str::<Value>(stored)
        .ok()
        .and_then(|v| v["userdata"]["change"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "an unreadable entry".to_owned())
}

fn queued_text() -> Text {
    Text::new(
        "Queued: starts when the rebuild under way has finished; its changes are checked again then",
        "В очереди: начнётся, когда закончится текущая пересборка; тогда её изменения будут проверены снова",
    )
}

/// "5 min" or "90 s" (English, Russian).
fn duration_text(duration: Duration) -> (String, String) {
    let seconds = duration.as_secs();
    if seconds >= 60 && seconds.is_multiple_of(60) {
        (
            format!("{} min", seconds / 60),
            format!("{} мин", seconds / 60),
        )
    } else {
        (format!("{seconds} s"), format!("{seconds} с"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_units_are_read_from_switch_to_configurations_warning() {
        let log = "starting the following units: a.service\n\
                   warning: the following units failed: a.service, b@x.service\n\
                   × a.service - A\n\
                   warning: error(s) occurred while switching to the new configuration";
        assert_eq!(failed_units(log), ["a.service", "b@x.service"]);
        assert!(failed_units("building the system configuration...").is_empty());
    }

    #[test]
    fn an_unreadable_change_is_named_by_its_kind_only() {
        let stored = r#"{"userdata": {"change": "addAdmin", "hashedPassword": "$6$secret"}}"#;
        let named = unreadable_change(stored);
        assert_eq!(named, "addAdmin");
        assert!(serde_json::from_str::<ConfigChange>(stored).is_err());
        assert_eq!(unreadable_change("{not json"), "an unreadable entry");
    }

    #[test]
    fn progress_follows_the_phases_and_never_goes_back() {
        let mut progress = Progress::default();
        progress.see("building the system configuration...");
        assert_eq!(progress.percent, 10);
        progress.see("these 3 derivations will be built:");
        progress.see("building '/nix/store/abc-foo.drv'...");
        assert_eq!(progress.percent, 21);
        progress.see("activating the configuration...");
        progress.see("building '/nix/store/late.drv'");
        assert_eq!(progress.percent, 70);
        progress.see("starting the following units: syncplay.service");
        assert_eq!(progress.percent, 90);
    }
}
