//! restic, run as a child process. Secrets never go on its command line:
//! the repository (which may carry credentials in a REST URL) and the
//! password file are given by environment, provider credentials too, and
//! the environment is otherwise cleared. `--json` output is parsed
//! leniently: unknown fields and unknown message types are ignored, so a
//! newer restic keeps working.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// Where a repository is and how to open it.
#[derive(Clone)]
pub struct Repository {
    /// `RESTIC_REPOSITORY`: a path, `s3:...`, `sftp:...`, `rest:...`, `rclone:...`.
    pub location: String,
    /// A file (0600) holding the repository password.
    pub password_file: PathBuf,
    /// Provider credentials and settings (`AWS_ACCESS_KEY_ID`, rclone's
    /// `RCLONE_CONFIG_*`...).
    pub env: Vec<(String, String)>,
    /// restic's cache.
    pub cache_dir: PathBuf,
    /// Extended options (`-o sftp.command=...`): built from paths and
    /// names only, never a secret (they are on restic's command line).
    pub options: Vec<String>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The location and the environment may hold credentials.
        f.debug_struct("Repository").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    #[error("cannot run restic: {0}")]
    Spawn(std::io::Error),
    #[error("restic {command} failed ({status}): {stderr}")]
    Failed {
        command: &'static str,
        status: String,
        stderr: String,
    },
    #[error("restic {0}: unexpected output: {1}")]
    Output(&'static str, String),
}

/// One snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub hostname: String,
}

/// A `restic backup --json` line; only the fields used here.
#[derive(Debug, Deserialize)]
struct BackupMessage {
    message_type: String,
    #[serde(default)]
    percent_done: Option<f64>,
    #[serde(default)]
    snapshot_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Stats {
    total_size: u64,
}

/// What a `restic backup --json` line tells, if anything.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupEvent {
    /// Done so far, 0..=100.
    Progress(i32),
    /// The run's summary, with the new snapshot's id if restic gave one.
    Summary(Option<String>),
}

impl BackupEvent {
    /// None for a line that is not JSON, a status without a percentage,
    /// or a message type this daemon does not use.
    pub fn parse(line: &str) -> Option<BackupEvent> {
        let message = serde_json::from_str::<BackupMessage>(line).ok()?;
        match message.message_type.as_str() {
            "status" => message
                .percent_done
                .map(|done| BackupEvent::Progress((done * 100.0).clamp(0.0, 100.0) as i32)),
            "summary" => Some(BackupEvent::Summary(message.snapshot_id)),
            _ => None,
        }
    }
}

/// `restic snapshots --json`: a list, or nothing (`null`, empty) for an
/// empty repository.
pub fn parse_snapshots(out: &str) -> Result<Vec<Snapshot>, ResticError> {
    let trimmed = out.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Vec::new());
    }
    serde_json::from_str(trimmed).map_err(|e| ResticError::Output("snapshots", e.to_string()))
}

/// `restic stats --json --mode restore-size`: the size in bytes.
pub fn parse_restore_size(out: &str) -> Result<u64, ResticError> {
    let stats: Stats = serde_json::from_str(out.trim())
        .map_err(|e| ResticError::Output("stats", e.to_string()))?;
    Ok(stats.total_size)
}

pub struct Restic {
    binary: PathBuf,
    repository: Repository,
}

/// Backups are tagged with this host name, so that a new server (another
/// host name) finds the old server's snapshots.
const HOST: &str = "selfprivacy";

impl Restic {
    pub fn new(binary: PathBuf, repository: Repository) -> Restic {
        Restic { binary, repository }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        for option in &self.repository.options {
            command.arg("-o").arg(option);
        }
        command
            .args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.repository.cache_dir)
            .env("RESTIC_REPOSITORY", &self.repository.location)
            .env("RESTIC_PASSWORD_FILE", &self.repository.password_file)
            .env("RESTIC_CACHE_DIR", &self.repository.cache_dir)
            .envs(self.repository.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A cancelled operation (its job's future dropped) stops restic.
            .kill_on_drop(true);
        command
    }

    /// Runs restic to the end: its stdout, or its error.
    async fn run(&self, name: &'static str, args: &[&str]) -> Result<String, ResticError> {
        let output = self
            .command(args)
            .output()
            .await
            .map_err(ResticError::Spawn)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(self.failed(
                name,
                &output.status,
                &String::from_utf8_lossy(&output.stderr),
            ))
        }
    }

    fn failed(
        &self,
        command: &'static str,
        status: &std::process::ExitStatus,
        stderr: &str,
    ) -> ResticError {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        ResticError::Failed {
            command,
            status: status.to_string(),
            stderr: self.redact(&tail.join("; ")),
        }
    }

    /// Removes every credential restic may echo back (a REST URL with its
    /// password, a key in an error).
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let secrets = std::iter::once(self.repository.location.as_str())
            .chain(self.repository.env.iter().map(|(_, v)| v.as_str()))
            .filter(|s| s.len() >= 4);
        for secret in secrets {
            text = text.replace(secret, "***");
        }
        text
    }

    /// Whether a repository exists at the location (its config is readable
    /// with the password).
    pub async fn is_initialized(&self) -> Result<bool, ResticError> {
        match self
            .run("cat config", &["cat", "config", "--no-lock"])
            .await
        {
            Ok(_) => Ok(true),
            Err(ResticError::Failed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the repository, or opens the existing one (same password).
    pub async fn init(&self) -> Result<(), ResticError> {
        if self.is_initialized().await? {
            return Ok(());
        }
        self.run("init", &["init"]).await.map(|_| ())
    }

    /// Backs up `paths` with `tags`, leaving out files and folders named
    /// like `excludes`, calling `progress` with 0..=100 as restic reports
    /// it. Returns the new snapshot's id.
    pub async fn backup(
        &self,
        paths: &[PathBuf],
        tags: &[String],
        excludes: &[&str],
        mut progress: impl FnMut(i32),
    ) -> Result<String, ResticError> {
        let mut args: Vec<String> = vec!["backup".into(), "--json".into()];
        args.extend(["--host".into(), HOST.into()]);
        for exclude in excludes {
            args.extend(["--exclude".into(), (*exclude).to_owned()]);
        }
        for tag in tags {
            args.extend(["--tag".into(), tag.clone()]);
        }
        args.push("--".into());
        args.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self.command(&args).spawn().map_err(ResticError::Spawn)?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let stderr_text = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut lines = BufReader::new(stdout).lines();
        let mut snapshot = None;
        let mut last_percent = -1;
        while let Ok(Some(line)) = lines.next_line().await {
            match BackupEvent::parse(&line) {
                Some(BackupEvent::Progress(percent)) if percent != last_percent => {
                    last_percent = percent;
                    progress(percent);
                }
                Some(BackupEvent::Summary(id)) => snapshot = id,
                _ => {}
            }
        }
        let status = child.wait().await.map_err(ResticError::Spawn)?;
        let stderr = stderr_text.await.unwrap_or_default();
        // Exit 3: some files could not be read; the snapshot is incomplete,
        // which a backup the owner relies on must not be.
        if !status.success() {
            return Err(self.failed("backup", &status, &stderr));
        }
        snapshot
            .ok_or_else(|| ResticError::Output("backup", "no summary with a snapshot id".into()))
    }

    /// Every snapshot in the repository.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, ResticError> {
        let out = self
            .run("snapshots", &["snapshots", "--json", "--no-lock"])
            .await?;
        parse_snapshots(&out)
    }

    /// Restores the parts `include` of snapshot `id` under `target`
    /// (absolute paths keep their structure below it), reading back every
    /// restored file's content to check it.
    pub async fn restore(
        &self,
        id: &str,
        target: &Path,
        include: &[PathBuf],
    ) -> Result<(), ResticError> {
        let target = target.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "restore".into(),
            id.into(),
            "--verify".into(),
            "--target".into(),
            target,
        ];
        for path in include {
            args.extend(["--include".into(), path.to_string_lossy().into_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self
            .command(&args)
            .output()
            .await
            .map_err(ResticError::Spawn)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // restic 0.14 reports verification failures on stdout and in its
        // exit status; any "error" line means the restored tree is not the
        // snapshot.
        if !out.status.success() || stdout.contains("Fatal") {
            return Err(self.failed("restore", &out.status, &format!("{stderr}{stdout}")));
        }
        Ok(())
    }

    /// The size of snapshot `id` once restored, in bytes.
    pub async fn restore_size(&self, id: &str) -> Result<u64, ResticError> {
        let out = self
            .run(
                "stats",
                &["stats", "--json", "--no-lock", "--mode", "restore-size", id],
            )
            .await?;
        parse_restore_size(&out)
    }

    /// Forgets snapshots and prunes the data only they used.
    pub async fn forget(&self, ids: &[String]) -> Result<(), ResticError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["forget", "--prune"];
        args.extend(ids.iter().map(String::as_str));
        self.run("forget", &args).await.map(|_| ())
    }

    /// Checks the repository's structure and reads back `subset` of its
    /// data (restic's `--read-data-subset`, e.g. "10%"); None reads all.
    pub async fn check(&self, subset: Option<&str>) -> Result<(), ResticError> {
        match subset {
            Some(subset) => {
                let flag = format!("--read-data-subset={subset}");
                self.run("check", &["check", &flag]).await.map(|_| ())
            }
            None => self
                .run("check", &["check", "--read-data"])
                .await
                .map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_json_with_unknown_fields_parses() {
        let json = r#"[{"time":"2026-12-02T06:00:00.123456789Z","tree":"ab","paths":["/var/lib/x"],
            "hostname":"selfprivacy","username":"root","uid":0,"gid":0,"tags":["x","reason:auto"],
            "program_version":"restic 0.17.0","summary":{"files_new":1},"id":"0123abcd","short_id":"0123abcd"}]"#;
        let snapshots: Vec<Snapshot> = serde_json::from_str(json).unwrap();
        assert_eq!(snapshots[0].id, "0123abcd");
        assert_eq!(snapshots[0].tags, ["x", "reason:auto"]);
    }

    #[test]
    fn backup_messages_of_newer_restic_parse_and_unknown_types_are_skipped() {
        let status: BackupMessage = serde_json::from_str(
            r#"{"message_type":"status","seconds_elapsed":1,"percent_done":0.5,"total_files":3,"new_field":[1]}"#,
        )
        .unwrap();
        assert_eq!(status.percent_done, Some(0.5));
        let summary: BackupMessage = serde_json::from_str(
            r#"{"message_type":"summary","files_new":1,"snapshot_id":"feed","backup_start":"x"}"#,
        )
        .unwrap();
        assert_eq!(summary.snapshot_id.as_deref(), Some("feed"));
        let other: BackupMessage =
            serde_json::from_str(r#"{"message_type":"verbose_status","action":"new"}"#).unwrap();
        assert_eq!(other.message_type, "verbose_status");
    }

    #[test]
    fn errors_do_not_repeat_credentials() {
        let restic = Restic::new(
            "restic".into(),
            Repository {
                location: "rest:http://user:hunter22@host/repo".into(),
                password_file: "/p".into(),
                env: vec![("AWS_SECRET_ACCESS_KEY".into(), "s3cr3tkey".into())],
                cache_dir: "/c".into(),
                options: vec![],
            },
        );
        let text = restic.redact("Fatal: rest:http://user:hunter22@host/repo: bad key s3cr3tkey");
        assert!(
            !text.contains("hunter22") && !text.contains("s3cr3tkey"),
            "{text}"
        );
    }

    #[test]
    fn backup_lines_give_progress_and_the_snapshot() {
        let progress = |line: &str| BackupEvent::parse(line);
        assert_eq!(
            progress(r#"{"message_type":"status","percent_done":0.505}"#),
            Some(BackupEvent::Progress(50))
        );
        // Out of range reports are clamped, not passed on.
        assert_eq!(
            progress(r#"{"message_type":"status","percent_done":1e300}"#),
            Some(BackupEvent::Progress(100))
        );
        assert_eq!(
            progress(r#"{"message_type":"status","percent_done":-3}"#),
            Some(BackupEvent::Progress(0))
        );
        assert_eq!(progress(r#"{"message_type":"status"}"#), None);
        assert_eq!(
            progress(r#"{"message_type":"summary","snapshot_id":"feed"}"#),
            Some(BackupEvent::Summary(Some("feed".into())))
        );
        assert_eq!(progress("restic: not json"), None);
        assert!(parse_snapshots(" null\n").unwrap().is_empty());
        assert!(parse_snapshots("").unwrap().is_empty());
        assert!(parse_snapshots("{").is_err());
        assert_eq!(parse_restore_size(r#"{"total_size":42}"#).unwrap(), 42);
        assert!(parse_restore_size(r#"{"total_size":-1}"#).is_err());
    }
}
