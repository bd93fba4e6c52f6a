//! Retention quotas: which of a service's snapshots to forget after an
//! automatic backup.
//!
//! The rules are restic's `forget --keep-last/--keep-daily/--keep-weekly/
//! --keep-monthly/--keep-yearly` (as documented for restic 0.17), so an owner
//! who knows restic gets no surprise:
//!
//! - Snapshots are walked newest first.
//! - `last = n` keeps the n newest snapshots.
//! - `daily = n` (likewise weekly, monthly, yearly) keeps, for each of the n
//!   most recent days that have a snapshot, the newest snapshot of that day.
//!   A day is a calendar day, a week an ISO week (Monday to Sunday, numbered
//!   in its ISO year), a month and a year calendar ones.
//! - `-1` is unlimited (every day, week... that has a snapshot), `0` none.
//! - The rules add up: a snapshot is kept if any rule keeps it, and each
//!   rule that keeps it uses up one of its slots.
//! - If a daily/weekly/monthly/yearly rule has slots left when the history
//!   runs out, the oldest snapshot is kept as well (restic 0.17 does the
//!   same: a short history is not thinned to nothing at the old end).
//!
//! Two differences from restic, both on the safe side of the owner's data:
//! the newest snapshot is always kept, whatever the quotas (all zeros keep
//! only it, where restic's empty policy would refuse to run); and the default
//! quotas are unlimited, which keeps everything.
//!
//! Calendar units are taken in the server's own time zone (the caller passes
//! `chrono::Local` in the daemon): it is the time zone the owner sets for the
//! server, so "the backup of the 3rd" is the owner's 3rd, and it is also what
//! restic itself would use, since restic buckets each snapshot by the local
//! time recorded when it was taken on this server. UTC would split a night's
//! backups across two days for servers far from Greenwich.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// How many snapshots of each kind to keep: -1 unlimited, 0 none (the
/// app's `Int`s; kept in the backup settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub last: i32,
    pub daily: i32,
    pub weekly: i32,
    pub monthly: i32,
    pub yearly: i32,
}

impl Default for Quotas {
    /// Unlimited: nothing is forgotten until the owner sets quotas.
    fn default() -> Self {
        Quotas {
            last: UNLIMITED,
            daily: UNLIMITED,
            weekly: UNLIMITED,
            monthly: UNLIMITED,
            yearly: UNLIMITED,
        }
    }
}

pub const UNLIMITED: i32 = -1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quota {name} = {value}: a quota is -1 (unlimited), 0 (none) or a positive count")]
pub struct InvalidQuota {
    pub name: &'static str,
    pub value: i32,
}

impl Quotas {
    /// Refuses values below -1 (the app sends plain integers).
    pub fn validate(&self) -> Result<(), InvalidQuota> {
        for (name, value) in self.named() {
            if value < UNLIMITED {
                return Err(InvalidQuota { name, value });
            }
        }
        Ok(())
    }

    fn named(&self) -> [(&'static str, i32); 5] {
        [
            ("last", self.last),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
    }
}

/// One snapshot of a service's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub id: String,
    pub time: DateTime<Utc>,
}

/// The calendar units of the duration rules, in `Quotas` order.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// A number naming the unit a local date falls in.
    fn bucket<Tz: TimeZone>(self, time: &DateTime<Tz>) -> i64 {
        let (year, month, day) = (time.year() as i64, time.month() as i64, time.day() as i64);
        match self {
            Unit::Day => year * 10_000 + month * 100 + day,
            Unit::Week => {
                let week = time.iso_week();
                week.year() as i64 * 100 + week.week() as i64
            }
            Unit::Month => year * 100 + month,
            Unit::Year => year,
        }
    }
}

/// A rule's remaining slots and the last unit it kept a snapshot for.
struct Rule {
    unit: Unit,
    left: i32,
    last_bucket: Option<i64>,
}

/// The snapshots to forget (oldest first), given the quotas. `tz` is the
/// time zone calendar units are counted in (see the module comment).
pub fn snapshots_to_forget<'a, Tz: TimeZone>(
    quotas: &Quotas,
    snapshots: &'a [SnapshotRef],
    tz: &Tz,
) -> Vec<&'a SnapshotRef> {
    let mut newest_first: Vec<&SnapshotRef> = snapshots.iter().collect();
    // Ties by id, so the answer does not depend on the input order.
    newest_first.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));

    let mut last_left = quotas.last;
    let mut rules = [
        (Unit::Day, quotas.daily),
        (Unit::Week, quotas.weekly),
        (Unit::Month, quotas.monthly),
        (Unit::Year, quotas.yearly),
    ]
    .map(|(unit, left)| Rule {
        unit,
        left,
        last_bucket: None,
    });

    let mut keep = vec![false; newest_first.len()];
    for (index, snapshot) in newest_first.iter().enumerate() {
        // The newest is kept whatever the quotas say.
        let mut kept = index == 0;
        if last_left != 0 {
            kept = true;
            if last_left > 0 {
                last_left -= 1;
            }
        }
        let local = snapshot.time.with_timezone(tz);
        for rule in rules.iter_mut().filter(|rule| rule.left != 0) {
            let bucket = rule.unit.bucket(&local);
            if rule.last_bucket != Some(bucket) {
                kept = true;
                rule.last_bucket = Some(bucket);
                if rule.left > 0 {
                    rule.left -= 1;
                }
            }
        }
        keep[index] = kept;
    }
    // A duration rule with slots left: the history is shorter than asked
    // for, so its oldest end is kept too.
    if rules.iter().any(|rule| rule.left > 0)
        && let Some(oldest) = keep.last_mut()
    {
        *oldest = true;
    }

    let mut forget: Vec<&SnapshotRef> = newest_first
        .into_iter()
        .zip(keep)
        .filter(|(_, kept)| !kept)
        .map(|(snapshot, _)| snapshot)
        .collect();
    forget.reverse();
    forget
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, FixedOffset, NaiveDate};
    use std::collections::BTreeSet;

    fn quotas(last: i32, daily: i32, weekly: i32, monthly: i32, yearly: i32) -> Quotas {
        Quotas {
            last,
            daily,
            weekly,
            monthly,
            yearly,
        }
    }

    fn at(date: &str, hour: u32, minute: u32) -> DateTime<Utc> {
        NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(hour, minute, 0)
            .unwrap()
            .and_utc()
    }

    /// Snapshot ids name their UTC time, so expectations read as dates.
    fn snap(time: DateTime<Utc>) -> SnapshotRef {
        SnapshotRef {
            id: time.format("%Y-%m-%dT%H:%M").to_string(),
            time,
        }
    }

    fn kept<Tz: TimeZone>(q: &Quotas, history: &[SnapshotRef], tz: &Tz) -> BTreeSet<String> {
        let forgotten: BTreeSet<&str> = snapshots_to_forget(q, history, tz)
            .into_iter()
            .map(|s| s.id.as_str())
            .collect();
        history
            .iter()
            .map(|s| s.id.clone())
            .filter(|id| !forgotten.contains(id.as_str()))
            .collect()
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// Two years of nightly automatic snapshots at 03:00, from 2024-12-01
    /// to 2026-11-30, plus explicit ones the owner took by hand: two on the
    /// last day (14:00 and 18:30), one on Sunday 2026-11-22 at 20:00, one
    /// on 2026-06-15 at 12:00 and one on 2025-12-31 at 23:00.
    fn history() -> Vec<SnapshotRef> {
        let mut history = Vec::new();
        let mut day = at("2024-12-01", 3, 0);
        while day <= at("2026-11-30", 3, 0) {
            history.push(snap(day));
            day += Duration::days(1);
        }
        for (date, hour, minute) in [
            ("2026-11-30", 14, 0),
            ("2026-11-30", 18, 30),
            ("2026-11-22", 20, 0),
            ("2026-06-15", 12, 0),
            ("2025-12-31", 23, 0),
        ] {
            history.push(snap(at(date, hour, minute)));
        }
        history
    }

    #[test]
    fn quotas_keep_exactly_the_right_snapshots_on_a_synthetic_history() {
        let history = history();
        assert_eq!(history.len(), 730 + 5);
        // last 3, daily 7, weekly 4, monthly 6, yearly unlimited. Worked out
        // by hand from a calendar (2026-11-30 is a Monday; ISO weeks run
        // Monday to Sunday):
        let expected = set(&[
            // last 3: the three newest, all on the last day.
            "2026-11-30T18:30",
            "2026-11-30T14:00",
            "2026-11-30T03:00",
            // daily 7: the newest of each of the last 7 days with a
            // snapshot: 30 (18:30, above), 29, 28, 27, 26, 25, and the 24th.
            "2026-11-29T03:00",
            "2026-11-28T03:00",
            "2026-11-27T03:00",
            "2026-11-26T03:00",
            "2026-11-25T03:00",
            "2026-11-24T03:00",
            // weekly 4: week 49 (Mon 30th: 18:30, above), week 48 (Sun the
            // 29th, above), week 47 ends Sun the 22nd: its newest is the
            // explicit 20:00 one, not the 03:00; week 46 ends Sun the 15th.
            "2026-11-22T20:00",
            "2026-11-15T03:00",
            // monthly 6: November (above), then the last night of October,
            // September, August, July and June.
            "2026-10-31T03:00",
            "2026-09-30T03:00",
            "2026-08-31T03:00",
            "2026-07-31T03:00",
            "2026-06-30T03:00",
            // yearly unlimited: 2026 (above), 2025's newest is the explicit
            // 23:00 of the 31st of December, 2024's the night of the 31st.
            "2025-12-31T23:00",
            "2024-12-31T03:00",
        ]);
        assert_eq!(kept(&quotas(3, 7, 4, 6, -1), &history, &Utc), expected);
    }

    #[test]
    fn a_short_history_keeps_its_oldest_snapshot_and_a_filled_rule_does_not() {
        // Monthly 12 with only three months: every month's newest, and the
        // oldest snapshot too (restic 0.17's rule).
        let history: Vec<SnapshotRef> = [
            at("2026-09-10", 3, 0),
            at("2026-09-20", 3, 0),
            at("2026-10-05", 3, 0),
            at("2026-11-01", 3, 0),
            at("2026-11-02", 3, 0),
        ]
        .into_iter()
        .map(snap)
        .collect();
        assert_eq!(
            kept(&quotas(0, 0, 0, 12, 0), &history, &Utc),
            set(&[
                "2026-09-10T03:00",
                "2026-09-20T03:00",
                "2026-10-05T03:00",
                "2026-11-02T03:00"
            ])
        );
        // Monthly 3: filled by September, so the oldest is not kept.
        assert_eq!(
            kept(&quotas(0, 0, 0, 3, 0), &history, &Utc),
            set(&["2026-09-20T03:00", "2026-10-05T03:00", "2026-11-02T03:00"])
        );
        // last = n is not a duration rule: it never keeps the oldest.
        assert_eq!(
            kept(&quotas(10, 0, 0, 0, 0), &history, &Utc).len(),
            history.len()
        );
    }

    #[test]
    fn the_newest_snapshot_is_never_forgotten() {
        let history = history();
        let kept = kept(&quotas(0, 0, 0, 0, 0), &history, &Utc);
        assert_eq!(kept, set(&["2026-11-30T18:30"]));
        assert!(snapshots_to_forget(&quotas(0, 0, 0, 0, 0), &[], &Utc).is_empty());
        let one = [snap(at("2026-01-01", 0, 0))];
        assert!(snapshots_to_forget(&quotas(0, 0, 0, 0, 0), &one, &Utc).is_empty());
    }

    #[test]
    fn unlimited_keeps_every_unit_and_the_default_keeps_everything() {
        let history = history();
        assert!(snapshots_to_forget(&Quotas::default(), &history, &Utc).is_empty());
        // Daily unlimited: one per day (730 days), the extra ones on the
        // same days forgotten except the newest of each day.
        let kept = kept(&quotas(0, -1, 0, 0, 0), &history, &Utc);
        assert_eq!(kept.len(), 730);
        assert!(kept.contains("2026-11-22T20:00"));
        assert!(!kept.contains("2026-11-22T03:00"));
        assert!(kept.contains("2025-12-31T23:00"));
        assert!(!kept.contains("2025-12-31T03:00"));
        // Forgotten ones come oldest first.
        let forgotten = snapshots_to_forget(&quotas(0, -1, 0, 0, 0), &history, &Utc);
        let ids: Vec<&str> = forgotten.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "2025-12-31T03:00",
                "2026-06-15T03:00",
                "2026-11-22T03:00",
                "2026-11-30T03:00",
                "2026-11-30T14:00"
            ]
        );
    }

    #[test]
    fn calendar_units_are_counted_in_the_given_time_zone() {
        // 22:30 UTC on the 31st of January is the 1st of February in UTC+3.
        let history = [
            snap(at("2025-12-15", 10, 0)),
            snap(at("2026-01-31", 10, 0)),
            snap(at("2026-01-31", 22, 30)),
        ];
        let monthly = quotas(0, 0, 0, 2, 0);
        // UTC: January (its newest) and December.
        assert_eq!(
            kept(&monthly, &history, &Utc),
            set(&["2026-01-31T22:30", "2025-12-15T10:00"])
        );
        // UTC+3: February (the 22:30) and January (the 10:00); the rule is
        // filled before December.
        let moscow = FixedOffset::east_opt(3 * 3600).unwrap();
        assert_eq!(
            kept(&monthly, &history, &moscow),
            set(&["2026-01-31T22:30", "2026-01-31T10:00"])
        );
        // Weekly in UTC-10: Monday 2026-02-02 03:00 UTC is Sunday the 1st
        // there, the same ISO week (5) as Saturday the 31st.
        let hawaii = FixedOffset::west_opt(10 * 3600).unwrap();
        let history = [
            snap(at("2026-01-20", 12, 0)),
            snap(at("2026-01-31", 20, 0)),
            snap(at("2026-02-02", 3, 0)),
        ];
        let weekly = quotas(0, 0, 2, 0, 0);
        assert_eq!(
            kept(&weekly, &history, &Utc),
            set(&["2026-02-02T03:00", "2026-01-31T20:00"])
        );
        assert_eq!(
            kept(&weekly, &history, &hawaii),
            set(&["2026-02-02T03:00", "2026-01-20T12:00"])
        );
    }

    #[test]
    fn iso_weeks_cross_the_new_year() {
        // 2026-12-31 (Thursday) and 2027-01-03 (Sunday) are both in ISO
        // week 53 of 2026; 2027-01-04 (Monday) starts week 1 of 2027.
        let history = [
            snap(at("2026-12-31", 3, 0)),
            snap(at("2027-01-03", 3, 0)),
            snap(at("2027-01-04", 3, 0)),
        ];
        assert_eq!(
            kept(&quotas(0, 0, 2, 0, 0), &history, &Utc),
            set(&["2027-01-03T03:00", "2027-01-04T03:00"])
        );
    }

    #[test]
    fn the_input_order_does_not_matter() {
        let mut history = history();
        let q = quotas(2, 5, 3, 4, 1);
        let sorted = kept(&q, &history, &Utc);
        history.reverse();
        history.swap(10, 400);
        assert_eq!(kept(&q, &history, &Utc), sorted);
    }

    #[test]
    fn quotas_below_minus_one_are_refused() {
        assert!(quotas(-1, 0, 3, 0, 0).validate().is_ok());
        let error = quotas(0, 0, -2, 0, 0).validate().unwrap_err();
        assert_eq!(error.name, "weekly");
        assert!(error.to_string().contains("weekly = -2"));
    }
}
