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
