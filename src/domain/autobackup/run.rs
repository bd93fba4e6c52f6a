//! `run_due`: the automatic backups that are due, one after another, each
//! followed by the retention quotas, and a report of what happened.

use super::quotas::{Quotas, SnapshotRef, snapshots_to_forget};
use super::schedule::{NotDue, ServiceBackupState, partition_due, period_of};
use crate::domain::clock::Clock;
use crate::os::control_socket::RunDueFn;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The owner's automatic backup settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AutobackupSettings {
    /// `autobackupPeriod` in minutes; `None` is off.
    pub period_minutes: Option<i64>,
    pub quotas: Quotas,
}

/// Why a backup did not run or did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupFailure {
    /// Another backup, restore or move of the service holds its lock: not a
    /// failure of the backup, so it does not hold the service back an hour.
    Busy(String),
    Failed(String),
}

/// What `run_due` needs from the backups (implemented over restic and the
/// service catalogue by the backups code).
#[async_trait::async_trait]
pub trait BackupRunner: Send + Sync {
    async fn settings(&self) -> anyhow::Result<AutobackupSettings>;
    /// Every service that may be backed up, with its last snapshot and its
    /// last failed attempt.
    async fn services(&self) -> anyhow::Result<Vec<ServiceBackupState>>;
    /// Backs `service` up with the reason AUTO, waiting for the end; the new
    /// snapshot's id.
    async fn auto_backup(&self, service: &str) -> Result<String, BackupFailure>;
    /// The service's snapshots (all reasons), fresh after the backup.
    async fn snapshots(&self, service: &str) -> anyhow::Result<Vec<SnapshotRef>>;
    async fn forget(&self, service: &str, snapshot_id: &str) -> anyhow::Result<()>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    BackedUp {
        snapshot: String,
        /// Snapshots forgotten by the quotas afterwards.
        forgotten: Vec<String>,
    },
    BackupFailed {
        error: String,
    },
    /// The backup was made, but applying the quotas failed part way.
    RetentionFailed {
        snapshot: String,
        forgotten: Vec<String>,
        error: String,
    },
    Skipped {
        why: NotDue,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub service: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDueReport {
    pub started_at: DateTime<Utc>,
    pub period_minutes: Option<i64>,
    /// The services that ran first, in the order they ran, then the skipped.
    pub services: Vec<ServiceReport>,
}

impl RunDueReport {
    /// Whether anything failed (a backup or its quotas).
    pub fn failed(&self) -> bool {
        self.services.iter().any(|s| {
            matches!(
                s.outcome,
                Outcome::BackupFailed { .. } | Outcome::RetentionFailed { .. }
            )
        })
    }

    /// One line per service, for the command line and the journal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.services.is_empty() {
            out.push_str("no service can be backed up\n");
        }
        for s in &self.services {
            let line = match &s.outcome {
                Outcome::BackedUp {
                    snapshot,
                    forgotten,
                } => format!(
                    "backed up  {}: snapshot {snapshot}, {} old snapshot(s) forgotten",
                    s.service,
                    forgotten.len()
                ),
                Outcome::BackupFailed { error } => format!("FAILED     {}: {error}", s.service),
                Outcome::RetentionFailed {
                    snapshot,
                    forgotten,
                    error,
                } => format!(
                    "FAILED     {}: snapshot {snapshot} made, but the quotas failed after {} forgotten: {error}",
                    s.service,
                    forgotten.len()
                ),
                Outcome::Skipped { why } => format!("skipped    {}: {why}", s.service),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// The control socket's `run-due` over `runner` (what the daemon gives
/// `ControlSocket::start`): the report as JSON at the clock's time, with
/// calendar units in the server's time zone.
pub fn control_handler<R: BackupRunner + 'static>(runner: Arc<R>, clock: Arc<Clock>) -> RunDueFn {
    Arc::new(move || {
        let (runner, clock) = (runner.clone(), clock.clone());
        Box::pin(async move {
            let report = run_due(runner.as_ref(), clock.now(), &chrono::Local)
                .await
                .map_err(|e| format!("{e:#}"))?;
            serde_json::to_value(report).map_err(|e| e.to_string())
        })
    })
}

/// Runs the backups due at `now`, one at a time, applying the quotas (in
/// time zone `tz`, see `quotas`) after each. A failure of one service does
/// not stop the others. Errors only if the settings or the service list
/// cannot be read.
pub async fn run_due<R, Tz>(runner: &R, now: DateTime<Utc>, tz: &Tz) -> anyhow::Result<RunDueReport>
where
    R: BackupRunner + ?Sized,
    Tz: TimeZone + Sync,
{
    let settings = runner.settings().await?;
    let services = runner.services().await?;
    let (due, not_due) = partition_due(period_of(settings.period_minutes), now, &services);
    let mut reports = Vec::new();
    for service in due {
        let outcome = back_up(runner, &service.id, &settings.quotas, tz).await;
        match &outcome {
            Outcome::BackupFailed { error } | Outcome::RetentionFailed { error, .. } => {
                tracing::error!(service = %service.id, "automatic backup: {error}")
            }
            _ => tracing::info!(service = %service.id, ?outcome, "automatic backup"),
        }
        reports.push(ServiceReport {
            service: service.id.clone(),
            outcome,
        });
    }
    reports.extend(not_due.into_iter().map(|(service, why)| ServiceReport {
        service: service.id.clone(),
        outcome: Outcome::Skipped { why },
    }));
    Ok(RunDueReport {
        started_at: now,
        period_minutes: settings.period_minutes,
        services: reports,
    })
}

async fn back_up<R, Tz>(runner: &R, service: &str, quotas: &Quotas, tz: &Tz) -> Outcome
where
    R: BackupRunner + ?Sized,
    Tz: TimeZone + Sync,
{
    let snapshot = match runner.auto_backup(service).await {
        Ok(snapshot) => snapshot,
        Err(BackupFailure::Busy(detail)) => {
            return Outcome::Skipped {
                why: NotDue::Busy { detail },
            };
        }
        Err(BackupFailure::Failed(error)) => return Outcome::BackupFailed { error },
    };
    let mut forgotten = Vec::new();
    let retention = async {
        let history = runner.snapshots(service).await?;
        let doomed: Vec<String> = snapshots_to_forget(quotas, &history, tz)
            .into_iter()
            // The snapshot just made stays, even if the clock put an
            // older-looking time on it.
            .filter(|s| s.id != snapshot)
            .map(|s| s.id.clone())
            .collect();
        for id in doomed {
            runner.forget(service, &id).await?;
            forgotten.push(id);
        }
        anyhow::Ok(())
    }
    .await;
    match retention {
        Ok(()) => Outcome::BackedUp {
            snapshot,
            forgotten,
        },
        Err(error) => Outcome::RetentionFailed {
            snapshot,
            forgotten,
            error: format!("{error:#}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    /// TEST DOUBLE of the backups: services and snapshots in memory, with
    /// failures on demand and a log of every call, to check the
    /// orchestration alone. The real runner is restic's (backups code).
    #[derive(Default)]
    struct InMemoryBackups {
        settings: AutobackupSettings,
        services: Vec<ServiceBackupState>,
        state: Mutex<DoubleState>,
        failing: BTreeSet<String>,
        busy: BTreeSet<String>,
        forget_fails_on: Option<String>,
        listing_fails: bool,
    }

    #[derive(Default)]
    struct DoubleState {
        snapshots: BTreeMap<String, Vec<SnapshotRef>>,
        calls: Vec<String>,
        next_id: u32,
        /// The time stamped on the next snapshot.
        clock: DateTime<Utc>,
    }

    #[async_trait::async_trait]
    impl BackupRunner for InMemoryBackups {
        async fn settings(&self) -> anyhow::Result<AutobackupSettings> {
            Ok(self.settings)
        }
        async fn services(&self) -> anyhow::Result<Vec<ServiceBackupState>> {
            anyhow::ensure!(!self.listing_fails, "the catalogue cannot be read");
            Ok(self.services.clone())
        }
        async fn auto_backup(&self, service: &str) -> Result<String, BackupFailure> {
            let mut state = self.state.lock().unwrap();
            state.calls.push(format!("backup {service}"));
            if self.busy.contains(service) {
                return Err(BackupFailure::Busy("a move is under way".into()));
            }
            if self.failing.contains(service) {
                return Err(BackupFailure::Failed("restic: repository is locked".into()));
            }
            state.next_id += 1;
            state.clock += Duration::minutes(1);
            let snapshot = SnapshotRef {
                id: format!("new{}", state.next_id),
                time: state.clock,
            };
            state
                .snapshots
                .entry(service.into())
                .or_default()
                .push(snapshot.clone());
            Ok(snapshot.id)
        }
        async fn snapshots(&self, service: &str) -> anyhow::Result<Vec<SnapshotRef>> {
            let mut state = self.state.lock().unwrap();
            state.calls.push(format!("snapshots {service}"));
            Ok(state.snapshots.get(service).cloned().unwrap_or_default())
        }
        async fn forget(&self, service: &str, snapshot_id: &str) -> anyhow::Result<()> {
            let mut state = self.state.lock().unwrap();
            state.calls.push(format!("forget {service} {snapshot_id}"));
            anyhow::ensure!(
                self.forget_fails_on.as_deref() != Some(snapshot_id),
                "restic: cannot remove {snapshot_id}"
            );
            let list = state.snapshots.get_mut(service).unwrap();
            list.retain(|s| s.id != snapshot_id);
            Ok(())
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-12-02T03:00:00Z".parse().unwrap()
    }

    fn service(id: &str, last_backup_days_ago: Option<i64>) -> ServiceBackupState {
        ServiceBackupState {
            id: id.into(),
            enabled: true,
            can_be_backed_up: true,
            last_backup: last_backup_days_ago.map(|d| now() - Duration::days(d)),
            last_failed_attempt: None,
        }
    }

    fn daily(quotas: Quotas) -> AutobackupSettings {
        AutobackupSettings {
            period_minutes: Some(24 * 60),
            quotas,
        }
    }

    fn backups(settings: AutobackupSettings, services: Vec<ServiceBackupState>) -> InMemoryBackups {
        InMemoryBackups {
            settings,
            services,
            state: Mutex::new(DoubleState {
                clock: now(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nightly_history(backups: &InMemoryBackups, service: &str, nights: i64) {
        let mut state = backups.state.lock().unwrap();
        let list = state.snapshots.entry(service.into()).or_default();
        for n in 1..=nights {
            list.push(SnapshotRef {
                id: format!("{service}-night-{n}"),
                time: now() - Duration::days(n),
            });
        }
    }

    fn calls(backups: &InMemoryBackups) -> Vec<String> {
        backups.state.lock().unwrap().calls.clone()
    }

    fn outcomes(report: &RunDueReport) -> Vec<(&str, &Outcome)> {
        report
            .services
            .iter()
            .map(|s| (s.service.as_str(), &s.outcome))
            .collect()
    }

    #[tokio::test]
    async fn due_services_are_backed_up_one_after_another_and_the_rest_skipped() {
        let mut off = service("off", None);
        off.enabled = false;
        let runner = backups(
            daily(Quotas::default()),
            vec![
                service("fresh", Some(0)),
                service("stale", Some(2)),
                off,
                service("new", None),
            ],
        );
        let report = run_due(&runner, now(), &Utc).await.unwrap();
        assert_eq!(
            calls(&runner),
            [
                "backup new",
                "snapshots new",
                "backup stale",
                "snapshots stale"
            ]
        );
        let outcomes = outcomes(&report);
        assert_eq!(
            outcomes[0],
            (
                "new",
                &Outcome::BackedUp {
                    snapshot: "new1".into(),
                    forgotten: vec![]
                }
            )
        );
        assert_eq!(outcomes[1].0, "stale");
        assert!(matches!(
            outcomes[2],
            (
                "fresh",
                Outcome::Skipped {
                    why: NotDue::RecentlyBackedUp { .. }
                }
            )
        ));
        assert!(matches!(
            outcomes[3],
            (
                "off",
                Outcome::Skipped {
                    why: NotDue::Disabled
                }
            )
        ));
        assert!(!report.failed());
        assert_eq!(report.period_minutes, Some(1440));
    }

    #[tokio::test]
    async fn one_failure_does_not_stop_the_others_and_fails_the_report() {
        let mut runner = backups(
            daily(Quotas::default()),
            vec![service("a", Some(3)), service("b", Some(2))],
        );
        runner.failing.insert("a".into());
        let report = run_due(&runner, now(), &Utc).await.unwrap();
        // No quotas after a failed backup.
        assert_eq!(calls(&runner), ["backup a", "backup b", "snapshots b"]);
        assert_eq!(
            outcomes(&report)[0],
            (
                "a",
                &Outcome::BackupFailed {
                    error: "restic: repository is locked".into()
                }
            )
        );
        assert!(matches!(outcomes(&report)[1].1, Outcome::BackedUp { .. }));
        assert!(report.failed());
        assert!(
            report
                .render()
                .contains("FAILED     a: restic: repository is locked")
        );
    }

    #[tokio::test]
    async fn quotas_are_applied_after_each_automatic_backup_oldest_first() {
        let quotas = Quotas {
            last: 3,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
        };
        let runner = backups(daily(quotas), vec![service("a", Some(1))]);
        nightly_history(&runner, "a", 5);
        let report = run_due(&runner, now(), &Utc).await.unwrap();
        // The new snapshot and the two newest nights stay.
        assert_eq!(
            outcomes(&report)[0],
            (
                "a",
                &Outcome::BackedUp {
                    snapshot: "new1".into(),
                    forgotten: vec!["a-night-5".into(), "a-night-4".into(), "a-night-3".into()]
                }
            )
        );
        let left: Vec<String> = runner.state.lock().unwrap().snapshots["a"]
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(left, ["a-night-1", "a-night-2", "new1"]);
    }

    #[tokio::test]
    async fn the_snapshot_just_made_survives_any_quota() {
        let none = Quotas {
            last: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
        };
        let runner = backups(daily(none), vec![service("a", Some(1))]);
        // Its clock is behind: the new snapshot looks older than the last
        // night's.
        runner.state.lock().unwrap().clock = now() - Duration::days(3);
        nightly_history(&runner, "a", 2);
        let report = run_due(&runner, now(), &Utc).await.unwrap();
        let Outcome::BackedUp { forgotten, .. } = &report.services[0].outcome else {
            panic!("{report:?}");
        };
        assert_eq!(forgotten, &["a-night-2"]);
        let left: Vec<String> = runner.state.lock().unwrap().snapshots["a"]
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(left, ["a-night-1", "new1"]);
    }

    #[tokio::test]
    async fn a_failed_forget_is_reported_with_what_was_forgotten() {
        let quotas = Quotas {
            last: 1,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
        };
        let mut runner = backups(daily(quotas), vec![service("a", Some(1))]);
        nightly_history(&runner, "a", 3);
        runner.forget_fails_on = Some("a-night-2".into());
        let report = run_due(&runner, now(), &Utc).await.unwrap();
        assert_eq!(
            outcomes(&report)[0],
            (
                "a",
                &Outcome::RetentionFailed {
                    snapshot: "new1".into(),
                    forgotten: vec!["a-night-3".into()],
                    error: "restic: cannot remove a-night-2".into()
                }
            )
        );
        assert!(report.failed());
    }

    #[tokio::test]
    async fn a_busy_service_is_skipped_not_failed() {
        let mut runner = backups(daily(Quotas::default()), vec![service("a", None)]);
        runner.busy.insert("a".into());
        let report = run_due(&runner, now(), &Utc).await.unwrap();
        assert_eq!(
            outcomes(&report)[0],
            (
                "a",
                &Outcome::Skipped {
                    why: NotDue::Busy {
                        detail: "a move is under way".into()
                    }
                }
            )
        );
        assert!(!report.failed());
    }

    #[tokio::test]
    async fn nothing_runs_when_automatic_backups_are_off() {
        let runner = backups(
            AutobackupSettings {
                period_minutes: None,
                quotas: Quotas::default(),
            },
            vec![service("a", None)],
        );
        let report = run_due(&runner, now(), &Utc).await.unwrap();
        assert!(calls(&runner).is_empty());
        assert_eq!(
            outcomes(&report)[0],
            (
                "a",
                &Outcome::Skipped {
                    why: NotDue::AutobackupOff
                }
            )
        );
    }

    #[tokio::test]
    async fn an_unreadable_service_list_is_an_error() {
        let mut runner = backups(daily(Quotas::default()), vec![]);
        runner.listing_fails = true;
        let error = run_due(&runner, now(), &Utc).await.unwrap_err();
        assert_eq!(error.to_string(), "the catalogue cannot be read");
    }

    #[tokio::test]
    async fn the_control_socket_answers_run_due_with_the_report() {
        use crate::os::control_socket::{ControlSocket, Request, request};
        // The daemon's clock is the real one: times relative to it.
        let clock = Arc::new(Clock::default());
        let (mut a, mut b) = (service("a", None), service("b", None));
        a.last_backup = Some(clock.now() - Duration::days(2));
        b.last_backup = Some(clock.now() - Duration::hours(1));
        let mut runner = backups(daily(Quotas::default()), vec![a, b]);
        runner.failing.insert("a".into());
        let runner = Arc::new(runner);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let _socket = ControlSocket::start(
            &path,
            control_handler(runner.clone(), Arc::new(Clock::default())),
        )
        .unwrap();
        let answer = tokio::task::spawn_blocking(move || request(&path, &Request::RunDue))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.ok, "{answer:?}");
        let report: RunDueReport = serde_json::from_value(answer.report.unwrap()).unwrap();
        assert!(report.failed());
        assert_eq!(
            report.render(),
            format!(
                "FAILED     a: restic: repository is locked\nskipped    b: backed up at {}, next due at {}\n",
                runner.services[1]
                    .last_backup
                    .unwrap()
                    .format("%Y-%m-%d %H:%M:%S UTC"),
                (runner.services[1].last_backup.unwrap() + Duration::days(1))
                    .format("%Y-%m-%d %H:%M:%S UTC"),
            )
        );
        assert_eq!(calls(&runner), ["backup a"]);
    }

    #[test]
    fn the_report_renders_a_line_per_service() {
        let report = RunDueReport {
            started_at: now(),
            period_minutes: Some(60),
            services: vec![
                ServiceReport {
                    service: "a".into(),
                    outcome: Outcome::BackedUp {
                        snapshot: "s1".into(),
                        forgotten: vec!["s0".into()],
                    },
                },
                ServiceReport {
                    service: "b".into(),
                    outcome: Outcome::RetentionFailed {
                        snapshot: "s2".into(),
                        forgotten: vec![],
                        error: "locked".into(),
                    },
                },
                ServiceReport {
                    service: "c".into(),
                    outcome: Outcome::Skipped {
                        why: NotDue::AutobackupOff,
                    },
                },
            ],
        };
        assert_eq!(
            report.render(),
            "backed up  a: snapshot s1, 1 old snapshot(s) forgotten\n\
             FAILED     b: snapshot s2 made, but the quotas failed after 0 forgotten: locked\n\
             skipped    c: automatic backups are off\n"
        );
        let empty = RunDueReport {
            services: vec![],
            ..report
        };
        assert_eq!(empty.render(), "no service can be backed up\n");
        assert!(!empty.failed());
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let report = RunDueReport {
            started_at: now(),
            period_minutes: Some(60),
            services: vec![
                ServiceReport {
                    service: "a".into(),
                    outcome: Outcome::BackedUp {
                        snapshot: "s1".into(),
                        forgotten: vec!["s0".into()],
                    },
                },
                ServiceReport {
                    service: "b".into(),
                    outcome: Outcome::Skipped {
                        why: NotDue::FailedRecently {
                            failed_at: now(),
                            retry_after: now() + Duration::hours(1),
                        },
                    },
                },
            ],
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["services"][0]["outcome"], "backed_up");
        assert_eq!(json["services"][1]["why"]["reason"], "failed_recently");
        let back: RunDueReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
