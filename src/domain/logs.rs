//! The system journal, page by page and live, with the app's cursor
//! semantics: entries are listed oldest first; `down_cursor` asks for the
//! entries older than an entry, `up_cursor` for the newer ones, the entry
//! itself excluded. A page's `up_cursor` is its oldest entry's cursor
//! (the app passes it back as `down_cursor` to load older entries) and its
//! `down_cursor` its newest's, as the Python API answered.

use super::error::{Failure, Outcome};
use crate::os::journal::{self, EntryFollower, JournalEntry, ReadFrom};

pub const MAX_PAGE: i32 = 50;
/// Longer than any cursor journald writes (six `k=hex` fields).
const MAX_CURSOR_LEN: usize = 512;
/// systemd's limit on unit names.
const MAX_UNIT_LEN: usize = 255;
const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "slice",
    "scope",
    "target",
    "timer",
    "mount",
    "automount",
    "swap",
    "path",
    "device",
];

/// Which entries: those of a slice, a unit, or both (all must match).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    pub slice: Option<String>,
    pub unit: Option<String>,
}

impl LogFilter {
    /// Checks the names; an invalid one is refused, never passed on.
    pub fn new(slice: Option<String>, unit: Option<String>) -> Outcome<LogFilter> {
        if let Some(slice) = &slice
            && !(is_unit_name(slice) && slice.ends_with(".slice"))
        {
            return Err(Failure::bad_input(
                format!("\"{slice}\" is not a systemd slice name such as nextcloud.slice"),
                format!("«{slice}» — не имя слайса systemd (например, nextcloud.slice)"),
            ));
        }
        if let Some(unit) = &unit
            && !is_unit_name(unit)
        {
            return Err(Failure::bad_input(
                format!("\"{unit}\" is not a systemd unit name such as nginx.service"),
                format!("«{unit}» — не имя юнита systemd (например, nginx.service)"),
            ));
        }
        Ok(LogFilter { slice, unit })
    }

    fn matches(&self) -> Vec<String> {
        let mut matches = Vec::new();
        if let Some(slice) = &self.slice {
            matches.push(format!("_SYSTEMD_SLICE={slice}"));
        }
        if let Some(unit) = &self.unit {
            matches.push(format!("_SYSTEMD_UNIT={unit}"));
        }
        matches
    }
}

/// systemd's rules: a name, a dot and a known type; letters, digits and
/// `:_.\@-` only.
fn is_unit_name(name: &str) -> bool {
    let Some((prefix, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    name.len() <= MAX_UNIT_LEN
        && !prefix.is_empty()
        && UNIT_SUFFIXES.contains(&suffix)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.\\@-".contains(c))
}

/// A journald cursor: `k=hex` fields separated by `;`.
fn check_cursor(cursor: &str) -> Outcome<()> {
    let well_formed = !cursor.is_empty()
        && cursor.len() <= MAX_CURSOR_LEN
        && cursor.split(';').all(|field| {
            field.split_once('=').is_some_and(|(key, value)| {
                key.len() == 1
                    && key.chars().all(|c| c.is_ascii_lowercase())
                    && !value.is_empty()
                    && value.chars().all(|c| c.is_ascii_hexdigit())
            })
        });
    if well_formed {
        Ok(())
    } else {
        Err(Failure::bad_input(
            "The cursor is not one this server gave (expected s=...;i=...;...)",
            "Курсор не из выданных этим сервером (ожидается s=...;i=...;...)",
        ))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    /// Oldest first.
    pub entries: Vec<JournalEntry>,
    /// The oldest entry's cursor: pass it as `down_cursor` for older ones.
    pub up_cursor: Option<String>,
    /// The newest entry's cursor: pass it as `up_cursor` for newer ones.
    pub down_cursor: Option<String>,
}

/// One page of at most `limit` (1 to 50) entries: the newest ones, those
/// older than `down_cursor`, or those newer than `up_cursor` (not both).
pub async fn page(
    limit: i32,
    up_cursor: Option<&str>,
    down_cursor: Option<&str>,
    filter: &LogFilter,
) -> Outcome<LogPage> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Failure::bad_input(
            format!("limit must be between 1 and {MAX_PAGE}, not {limit}"),
            format!("limit должен быть от 1 до {MAX_PAGE}, а не {limit}"),
        ));
    }
    let limit = limit as usize;
    let matches = filter.matches();
    let read = |from: ReadFrom, count: usize| {
        let matches = matches.clone();
        async move {
            journal::read(&from, count, &matches)
                .await
                .map_err(|e| Failure::internal("reading the journal", e))
        }
    };
    let entries = match (up_cursor, down_cursor) {
        (None, None) => read(ReadFrom::Tail, limit).await?,
        (None, Some(cursor)) => {
            check_cursor(cursor)?;
            // One more: the entry at the cursor itself, left out below.
            let mut older = read(ReadFrom::CursorBackwards(cursor.to_owned()), limit + 1).await?;
            older.retain(|e| e.cursor != cursor);
            older.truncate(limit);
            older.reverse();
            older
        }
        (Some(cursor), None) => {
            check_cursor(cursor)?;
            let mut newer = read(ReadFrom::CursorForwards(cursor.to_owned()), limit + 1).await?;
            newer.retain(|e| e.cursor != cursor);
            newer.truncate(limit);
            newer
        }
        (Some(_), Some(_)) => {
            return Err(Failure::bad_input(
                "Give upCursor or downCursor, not both",
                "Укажите upCursor или downCursor, но не оба",
            ));
        }
    };
    Ok(LogPage {
        up_cursor: entries.first().map(|e| e.cursor.clone()),
        down_cursor: entries.last().map(|e| e.cursor.clone()),
        entries,
    })
}

/// New entries as journald stores them, until the follower is dropped.
pub fn follow(filter: &LogFilter) -> Outcome<EntryFollower> {
    EntryFollower::start(&filter.matches())
        .map_err(|e| Failure::internal("following the journal", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_and_slice_names_follow_systemd_rules() {
        assert!(LogFilter::new(Some("my_app.slice".into()), Some("nginx.service".into())).is_ok());
        assert!(LogFilter::new(None, Some("getty@tty1.service".into())).is_ok());
        for bad in [
            "nginx",
            ".service",
            "a b.service",
            "x.service;rm",
            "-n.foo",
            "--all",
        ] {
            assert!(LogFilter::new(None, Some(bad.into())).is_err(), "{bad}");
        }
        assert!(LogFilter::new(Some("nginx.service".into()), None).is_err());
        assert!(LogFilter::new(Some("a".repeat(300) + ".slice"), None).is_err());
    }

    #[test]
    fn cursors_must_look_like_journald_ones() {
        let real = "s=6b3d1f0c2e4a4b8f9a1e2d3c4b5a6978;i=1a2b;b=0f1e2d3c4b5a69788796a5b4c3d2e1f0;m=5f5e100;t=5f8a1b2c3d4e5;x=1122334455667788";
        assert!(check_cursor(real).is_ok());
        for bad in [
            "",
            "s=",
            "s=xyz",
            "--all",
            "s=12;;i=3",
            "S=12",
            &"s=1;".repeat(200),
        ] {
            assert!(check_cursor(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn limits_outside_one_to_fifty_and_both_cursors_are_refused() {
        let filter = LogFilter::default();
        for limit in [0, -1, 51] {
            let failure = page(limit, None, None, &filter).await.unwrap_err();
            assert_eq!(failure.kind, crate::domain::error::FailureKind::BadInput);
        }
        let failure = page(10, Some("s=1"), Some("s=2"), &filter)
            .await
            .unwrap_err();
        assert_eq!(failure.kind, crate::domain::error::FailureKind::BadInput);
    }
}
