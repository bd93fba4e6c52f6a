//! The systemd journal, read through `journalctl` (present on every systemd
//! host; no C library binding needed).

use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// New lines of one unit's journal as they are written. Stops (kills
/// journalctl) when dropped.
pub struct Follower {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Follower {
    /// Starts following before the unit is started, so no line is missed.
    pub fn start(unit: &str) -> std::io::Result<Follower> {
        let mut child = Command::new("journalctl")
            .args([
                "--follow",
                "--lines=0",
                "--output=cat",
                "--no-pager",
                "--unit",
                unit,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Follower {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    pub async fn next_line(&mut self) -> Option<String> {
        self.lines.next_line().await.ok().flatten()
    }
}

/// Has journald store what it has been sent so far, the output streams of
/// units included: `journalctl --sync` answers once the messages queued
/// before it are processed. A unit's last lines may still be unread in
/// its stream when systemd reports the unit's end. Bounded: a journald
/// that does not answer only makes a later read incomplete.
pub async fn sync(limit: std::time::Duration) {
    let sync = Command::new("journalctl")
        .arg("--sync")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(limit, sync).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::warn!("journalctl --sync: {status}"),
        Ok(Err(e)) => tracing::warn!("journalctl --sync: {e}"),
        Err(_) => tracing::warn!("journalctl --sync did not answer within {limit:?}"),
    }
}

/// The last `count` lines a unit logged in its latest run (by invocation
/// id when known), oldest first.
pub async fn last_lines(unit: &str, invocation_id: Option<&str>, count: usize) -> Vec<String> {
    let mut command = Command::new("journalctl");
    command.args(["--output=cat", "--no-pager", "--lines", &count.to_string()]);
    match invocation_id {
        Some(id) => command.arg(format!("_SYSTEMD_INVOCATION_ID={id}")),
        None => command.args(["--unit", unit]),
    };
    match command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
    {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        Err(e) => {
            tracing::warn!(unit, "reading the journal: {e}");
            Vec::new()
        }
    }
}

/// How systemd's latest start job of `unit` since `since` ended (`done`,
/// `failed`, `canceled`...), from systemd's own journal entries: they
/// outlive the unit, which is unloaded once inactive.
pub async fn start_job_result(unit: &str, since: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let output = Command::new("journalctl")
        .args(["--output=json", "--no-pager", "_PID=1", "JOB_TYPE=start"])
        .arg(format!("UNIT={unit}"))
        .arg(format!("--since=@{}", since.timestamp()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|entry| entry["JOB_RESULT"].as_str().map(str::to_owned))
}

/// One journal entry, as `journalctl --output=json` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub message: String,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub priority: Option<i32>,
    pub unit: Option<String>,
    pub slice: Option<String>,
    pub cursor: String,
}

impl JournalEntry {
    /// One line of `--output=json`; None for a line that is not an entry.
    /// A field journald could not store as text (binary, or repeated)
    /// comes as an array: of bytes, shown lossily, or of values, the first
    /// one kept.
    pub fn parse(line: &str) -> Option<JournalEntry> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let text = |field: &str| -> Option<String> {
            match &value[field] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(items) if items.iter().all(|i| i.is_u64()) => {
                    let bytes: Vec<u8> = items
                        .iter()
                        .filter_map(|i| i.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                serde_json::Value::Array(items) => items.first()?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        let micros: i64 = text("__REALTIME_TIMESTAMP")?.parse().ok()?;
        Some(JournalEntry {
            message: text("MESSAGE").unwrap_or_default(),
            timestamp: chrono::DateTime::from_timestamp_micros(micros)?,
            priority: text("PRIORITY").and_then(|p| p.parse().ok()),
            unit: text("_SYSTEMD_UNIT"),
            slice: text("_SYSTEMD_SLICE"),
            cursor: text("__CURSOR")?,
        })
    }
}

/// Where a read starts and which way it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadFrom {
    /// The newest `count` entries, oldest first.
    Tail,
    /// From the entry at the cursor (included when it matches) towards
    /// older entries, newest first.
    CursorBackwards(String),
    /// From the entry at the cursor (included when it matches) towards
    /// newer entries, oldest first.
    CursorForwards(String),
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("running journalctl: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("journalctl failed: {0}")]
    Failed(String),
}

/// Up to `count` entries matching every `FIELD=value` of `matches`.
/// Arguments are passed without a shell; callers validate what they put
/// in `matches` and cursors.
pub async fn read(
    from: &ReadFrom,
    count: usize,
    matches: &[String],
) -> Result<Vec<JournalEntry>, JournalError> {
    let mut command = Command::new("journalctl");
    command.args(["--output=json", "--no-pager", "--quiet"]);
    command.arg(format!("--lines={count}"));
    match from {
        ReadFrom::Tail => {}
        ReadFrom::CursorBackwards(cursor) => {
            command.arg("--reverse").arg(format!("--cursor={cursor}"));
        }
        ReadFrom::CursorForwards(cursor) => {
            command.arg(format!("--cursor={cursor}"));
        }
    }
    command.args(matches);
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    if !output.status.success() {
        return Err(JournalError::Failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(JournalEntry::parse)
        .collect())
}

/// Entries as they are written from now on, matching every `FIELD=value`
/// of `matches`. Stops (kills journalctl) when dropped.
pub struct EntryFollower {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl EntryFollower {
    pub fn start(matches: &[String]) -> std::io::Result<EntryFollower> {
        let mut child = Command::new("journalctl")
            .args([
                "--follow",
                "--lines=0",
                "--output=json",
                "--no-pager",
                "--quiet",
            ])
            .args(matches)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(EntryFollower {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next entry; None once journalctl has ended.
    pub async fn next_entry(&mut self) -> Option<JournalEntry> {
        loop {
            let line = self.lines.next_line().await.ok().flatten()?;
            if let Some(entry) = JournalEntry::parse(&line) {
                return Some(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_binary_and_missing_fields() {
        let line = r#"{"__CURSOR":"s=ab;i=1","__REALTIME_TIMESTAMP":"1700000000123456","PRIORITY":"6","_SYSTEMD_UNIT":"a.service","_SYSTEMD_SLICE":"a.slice","MESSAGE":[104,105,255]}"#;
        let entry = JournalEntry::parse(line).unwrap();
        assert_eq!(entry.message, "hi\u{fffd}");
        assert_eq!(entry.priority, Some(6));
        assert_eq!(entry.unit.as_deref(), Some("a.service"));
        assert_eq!(entry.slice.as_deref(), Some("a.slice"));
        assert_eq!(entry.timestamp.timestamp_micros(), 1_700_000_000_123_456);
        let bare = r#"{"__CURSOR":"s=ab;i=2","__REALTIME_TIMESTAMP":"1700000000000000"}"#;
        let entry = JournalEntry::parse(bare).unwrap();
        assert_eq!((entry.message.as_str(), entry.priority), ("", None));
        assert!(JournalEntry::parse(r#"{"MESSAGE":"no cursor"}"#).is_none());
        assert!(JournalEntry::parse("not json").is_none());
    }

    mod generated {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Every entry journald can print reads back with its fields:
            /// messages as text or as bytes (shown lossily).
            #[test]
            fn entries_read_back(
                message in any::<String>(),
                as_bytes in any::<bool>(),
                micros in 0i64..4_102_444_800_000_000,
                priority in proptest::option::of(0i32..8),
                unit in proptest::option::of("[a-z@-]{1,12}\\.service"),
                cursor in "[!-~]{1,60}",
            ) {
                let mut fields = serde_json::json!({
                    "__CURSOR": cursor,
                    "__REALTIME_TIMESTAMP": micros.to_string(),
                    "MESSAGE": if as_bytes { serde_json::json!(message.as_bytes()) } else { serde_json::json!(message) },
                });
                if let Some(priority) = priority {
                    fields["PRIORITY"] = priority.to_string().into();
                }
                if let Some(unit) = &unit {
                    fields["_SYSTEMD_UNIT"] = unit.clone().into();
                }
                let entry = JournalEntry::parse(&fields.to_string()).unwrap();
                prop_assert_eq!(entry.message, message);
                prop_assert_eq!(entry.timestamp.timestamp_micros(), micros);
                prop_assert_eq!(entry.priority, priority);
                prop_assert_eq!(entry.unit, unit);
                prop_assert_eq!(entry.cursor, cursor);
            }
        }
    }
}
