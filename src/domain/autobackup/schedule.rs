//! Which services are due for an automatic backup. Pure: the caller gives
//! the time.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// After a failed attempt, a service is left alone this long (a broken
/// repository or a full disk is not retried every timer tick).
pub fn failure_backoff() -> Duration {
    Duration::hours(1)
}

/// What the schedule needs to know about one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBackupState {
    pub id: String,
    pub enabled: bool,
    pub can_be_backed_up: bool,
    /// The time of its newest snapshot, if any.
    pub last_backup: Option<DateTime<Utc>>,
    /// The time of its newest failed backup attempt (automatic or not).
    pub last_failed_attempt: Option<DateTime<Utc>>,
}

/// Why a service is not due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotDue {
    /// `autobackupPeriod` is null: automatic backups are off.
    AutobackupOff,
    Disabled,
    CannotBeBackedUp,
    /// Backed up less than a period ago.
    RecentlyBackedUp {
        last_backup: DateTime<Utc>,
        next_due: DateTime<Utc>,
    },
    /// A backup failed less than an hour ago.
    FailedRecently {
        failed_at: DateTime<Utc>,
        retry_after: DateTime<Utc>,
    },
    /// Another backup, restore or move of the service was under way.
    Busy {
        detail: String,
    },
}

impl std::fmt::Display for NotDue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        match self {
            NotDue::AutobackupOff => write!(f, "automatic backups are off"),
            NotDue::Disabled => write!(f, "the service is disabled"),
            NotDue::CannotBeBackedUp => write!(f, "the service cannot be backed up"),
            NotDue::RecentlyBackedUp {
                last_backup,
                next_due,
            } => write!(
                f,
                "backed up at {}, next due at {}",
                time(last_backup),
                time(next_due)
            ),
            NotDue::FailedRecently {
                failed_at,
                retry_after,
            } => write!(
                f,
                "a backup failed at {}, next try after {}",
                time(failed_at),
                time(retry_after)
            ),
            NotDue::Busy { detail } => write!(f, "busy: {detail}"),
        }
    }
}

/// The period between automatic backups, from `autobackupPeriod` in
/// minutes: `None` (and, defensively, zero or less) means off.
pub fn period_of(minutes: Option<i64>) -> Option<Duration> {
    minutes.filter(|m| *m > 0).map(Duration::minutes)
}

/// Whether `service` is due at `now`, or why not.
///
/// A last backup in the future (the clock was set back since) counts from
/// its own time: the service is due a period after it, not at once and
/// then at every tick until the clock catches up.
pub fn is_due(
    period: Option<Duration>,
    now: DateTime<Utc>,
    service: &ServiceBackupState,
) -> Result<(), NotDue> {
    let Some(period) = period else {
        return Err(NotDue::AutobackupOff);
    };
    if !service.enabled {
        return Err(NotDue::Disabled);
    }
    if !service.can_be_backed_up {
        return Err(NotDue::CannotBeBackedUp);
    }
    if let Some(failed_at) = service.last_failed_attempt {
        let retry_after = failed_at + failure_backoff();
        if now < retry_after {
            return Err(NotDue::FailedRecently {
                failed_at,
                retry_after,
            });
        }
    }
    if let Some(last_backup) = service.last_backup {
        let next_due = last_backup + period;
        if now < next_due {
            return Err(NotDue::RecentlyBackedUp {
                last_backup,
                next_due,
            });
        }
    }
    Ok(())
}

/// The due services, most overdue first (never backed up, then oldest last
/// backup; ties by id), and the others with their reason.
pub fn partition_due(
    period: Option<Duration>,
    now: DateTime<Utc>,
    services: &[ServiceBackupState],
) -> (Vec<&ServiceBackupState>, Vec<(&ServiceBackupState, NotDue)>) {
    let mut due = Vec::new();
    let mut not_due = Vec::new();
    for service in services {
        match is_due(period, now, service) {
            Ok(()) => due.push(service),
            Err(reason) => not_due.push((service, reason)),
        }
    }
    due.sort_by(|a, b| {
        a.last_backup
            .cmp(&b.last_backup)
            .then_with(|| a.id.cmp(&b.id))
    });
    (due, not_due)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-02T03:00:00Z".parse().unwrap()
    }

    fn service(id: &str) -> ServiceBackupState {
        ServiceBackupState {
            id: id.into(),
            enabled: true,
            can_be_backed_up: true,
            last_backup: None,
            last_failed_attempt: None,
        }
    }

    fn day() -> Option<Duration> {
        period_of(Some(24 * 60))
    }

    #[test]
    fn off_when_the_period_is_null_or_not_positive() {
        assert_eq!(period_of(None), None);
        assert_eq!(period_of(Some(0)), None);
        assert_eq!(period_of(Some(-5)), None);
        assert_eq!(period_of(Some(90)), Some(Duration::minutes(90)));
        assert_eq!(
            is_due(None, now(), &service("a")),
            Err(NotDue::AutobackupOff)
        );
    }

    #[test]
    fn a_service_never_backed_up_is_due() {
        assert_eq!(is_due(day(), now(), &service("a")), Ok(()));
    }

    #[test]
    fn disabled_or_not_backupable_services_are_never_due() {
        let mut s = service("a");
        s.enabled = false;
        assert_eq!(is_due(day(), now(), &s), Err(NotDue::Disabled));
        let mut s = service("a");
        s.can_be_backed_up = false;
        assert_eq!(is_due(day(), now(), &s), Err(NotDue::CannotBeBackedUp));
    }

    #[test]
    fn due_once_the_last_backup_is_a_period_old() {
        let mut s = service("a");
        // One second short of a day: not yet.
        s.last_backup = Some(now() - Duration::hours(24) + Duration::seconds(1));
        assert_eq!(
            is_due(day(), now(), &s),
            Err(NotDue::RecentlyBackedUp {
                last_backup: s.last_backup.unwrap(),
                next_due: now() + Duration::seconds(1),
            })
        );
        s.last_backup = Some(now() - Duration::hours(24));
        assert_eq!(is_due(day(), now(), &s), Ok(()));
        // A night missed (the server was off): due at once when it is back.
        s.last_backup = Some(now() - Duration::days(3));
        assert_eq!(is_due(day(), now(), &s), Ok(()));
    }

    #[test]
    fn a_failure_in_the_last_hour_holds_the_service_back() {
        let mut s = service("a");
        s.last_backup = Some(now() - Duration::days(2));
        s.last_failed_attempt = Some(now() - Duration::minutes(59));
        assert_eq!(
            is_due(day(), now(), &s),
            Err(NotDue::FailedRecently {
                failed_at: now() - Duration::minutes(59),
                retry_after: now() + Duration::minutes(1),
            })
        );
        s.last_failed_attempt = Some(now() - Duration::minutes(60));
        assert_eq!(is_due(day(), now(), &s), Ok(()));
        // Also when it never had a backup.
        let mut s = service("b");
        s.last_failed_attempt = Some(now() - Duration::minutes(5));
        assert!(matches!(
            is_due(day(), now(), &s),
            Err(NotDue::FailedRecently { .. })
        ));
    }

    #[test]
    fn a_last_backup_in_the_future_waits_a_period_after_it() {
        let mut s = service("a");
        s.last_backup = Some(now() + Duration::hours(2));
        assert!(matches!(
            is_due(day(), now(), &s),
            Err(NotDue::RecentlyBackedUp { .. })
        ));
        assert_eq!(is_due(day(), now() + Duration::hours(26), &s), Ok(()));
    }

    #[test]
    fn due_services_come_most_overdue_first() {
        let mut recent = service("recent");
        recent.last_backup = Some(now() - Duration::hours(1));
        let mut old = service("old");
        old.last_backup = Some(now() - Duration::days(5));
        let mut older = service("older");
        older.last_backup = Some(now() - Duration::days(9));
        let never_b = service("never-b");
        let never_a = service("never-a");
        let mut off = service("off");
        off.enabled = false;
        let services = [recent, old, older, never_b, never_a, off];
        let (due, not_due) = partition_due(day(), now(), &services);
        let due: Vec<&str> = due.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(due, ["never-a", "never-b", "older", "old"]);
        let not_due: Vec<(&str, bool)> = not_due
            .iter()
            .map(|(s, r)| (s.id.as_str(), matches!(r, NotDue::Disabled)))
            .collect();
        assert_eq!(not_due, [("recent", false), ("off", true)]);
    }

    #[test]
    fn reasons_read_as_sentences() {
        let reason = NotDue::RecentlyBackedUp {
            last_backup: now(),
            next_due: now() + Duration::days(1),
        };
        assert_eq!(
            reason.to_string(),
            "backed up at 2026-12-02 03:00:00 UTC, next due at 2026-12-03 03:00:00 UTC"
        );
    }
}
