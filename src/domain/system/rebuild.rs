//! NixOS rebuilds, upgrades and rollbacks as jobs.
//!
//! Each starts its unit (shipped by the project's NixOS module; it runs
//! `nixos-rebuild` on /etc/nixos), follows the unit's journal into the
//! job's status text and progress, and ends FINISHED or ERROR with the
//! failing lines. Two never run at once.

use crate::domain::error::{Failure, Outcome};
use crate::domain::i18n::Text;
use crate::domain::jobs::{Job, JobRegistry, JobStatus, JobUpdate};
use crate::os::journal;
use crate::os::systemd::{JobOutcome, SystemdLink, UnitAction};
use std::sync::{Arc, Mutex};
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

/// Called when a rebuild ends, with whether it succeeded (the catalogue
/// uses it to keep userdata in step with what runs).
pub type AfterRebuild = Box<dyn FnOnce(bool) + Send>;

pub struct Rebuilds {
    systemd: Arc<SystemdLink>,
    jobs: Arc<JobRegistry>,
    units: RebuildUnits,
    run_timeout: Duration,
    /// The uid of the job of the rebuild under way.
    running: Mutex<Option<String>>,
}

impl Rebuilds {
    pub fn new(
        systemd: Arc<SystemdLink>,
        jobs: Arc<JobRegistry>,
        units: RebuildUnits,
        run_timeout: Duration,
    ) -> Self {
        Rebuilds {
            systemd,
            jobs,
            units,
            run_timeout,
            running: Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self) -> bool {
        self.slot().is_some()
    }

    /// The refusal a change to the configuration gets while a rebuild runs.
    pub fn busy_failure() -> Failure {
        Failure::conflict(
            "A system rebuild is running; try again when it has finished (the change was not queued)",
            "Идёт пересборка системы; повторите, когда она закончится (изменение не поставлено в очередь)",
        )
    }

    /// Starts a rebuild of `kind` as a job, or refuses with 409 if one is
    /// already running. `after` runs when it ends.
    pub fn start(self: &Arc<Self>, kind: RebuildKind, after: Option<AfterRebuild>) -> Outcome<Job> {
        let mut slot = self.slot();
        if slot.is_some() {
            return Err(Self::busy_failure());
        }
        let job = self
            .jobs
            .create(kind.type_id(), kind.name(), kind.description())?;
        *slot = Some(job.uid.clone());
        drop(slot);
        let this = self.clone();
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let succeeded = this.run(kind, &uid).await;
            *this.slot() = None;
            if let Some(after) = after {
                after(succeeded);
            }
        });
        Ok(job)
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

    async fn run(&self, kind: RebuildKind, uid: &str) -> bool {
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
                self.fail(
                    uid,
                    Text::untranslated(format!("Cannot reach systemd: {e}")),
                );
                return false;
            }
        };
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
        match outcome {
            Ok(JobOutcome::Done) => {
                self.update(
                    uid,
                    JobUpdate {
                        status: Some(JobStatus::Finished),
                        status_text: Some(kind.done()),
                        result: Some(kind.done()),
                        ..Default::default()
                    },
                );
                true
            }
            Ok(JobOutcome::Failed(result)) => {
                let lines = self.last_lines(systemd, &unit).await;
                self.fail(
                    uid,
                    Text::new(
                        format!("System rebuild failed ({result}). Last log lines:\n{lines}"),
                        format!("Пересборка системы не удалась ({result}). Последние строки журнала:\n{lines}"),
                    ),
                );
                false
            }
            Ok(JobOutcome::TimedOut) => {
                let lines = self.last_lines(systemd, &unit).await;
                let minutes = self.run_timeout.as_secs() / 60;
                self.fail(
                    uid,
                    Text::new(
                        format!("System rebuild did not finish within {minutes} min. Last log lines:\n{lines}"),
                        format!("Пересборка системы не завершилась за {minutes} мин. Последние строки журнала:\n{lines}"),
                    ),
                );
                false
            }
            Err(e) => {
                self.fail(
                    uid,
                    Text::untranslated(format!("Could not start {unit}: {e}")),
                );
                false
            }
        }
    }

    /// The unit's last lines from its latest run.
    async fn last_lines(&self, systemd: &crate::os::systemd::Systemd, unit: &str) -> String {
        // journald may still be writing the unit's last output.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let invocation = systemd.invocation_id(unit).await;
        journal::last_lines(unit, invocation.as_deref(), 10)
            .await
            .join("\n")
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

#[cfg(test)]
mod tests {
    use super::*;

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
