//! Upkeep the owner starts from the app: pulling the NixOS configuration's
//! git checkout, and collecting the Nix store's garbage as a job.

use crate::domain::error::{Failure, FailureKind, Outcome};
use crate::domain::i18n::Text;
use crate::domain::jobs::{Job, JobRegistry, JobStatus, JobUpdate};
use crate::os::command::{self, CommandError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The last lines of a command's output, for an error message.
fn tail(text: &str, lines: usize) -> String {
    // git's `hint:` lines are advice for a person at a terminal.
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("hint:"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn command_failure(what: &str, error: CommandError) -> Failure {
    match error {
        CommandError::TimedOut { limit, .. } => Failure::new(
            FailureKind::Internal,
            Text::new(
                format!(
                    "{what} did not finish within {} s and was stopped",
                    limit.as_secs()
                ),
                format!(
                    "{what}: не завершилось за {} с и было остановлено",
                    limit.as_secs()
                ),
            ),
        ),
        spawn => Failure::internal(what, spawn),
    }
}

/// What `nix-collect-garbage` reports at its end: "N store paths deleted,
/// X freed", the size as nix renders it ("12.50 MiB", "1.2 GiB", "0.0 KiB").
#[derive(Debug, Clone, PartialEq)]
pub struct Freed {
    pub paths: u64,
    pub bytes: u64,
    /// The size as nix printed it.
    pub size: String,
}

pub fn parse_freed(output: &str) -> Option<Freed> {
    let pattern = regex_lite::Regex::new(
        r"(?m)^(\d+) store paths deleted, (\d+(?:\.\d+)?) ?(B|KiB|MiB|GiB|TiB|PiB|EiB) freed",
    )
    .expect("a valid pattern");
    // The last report counts: -d may print more than one.
    let found = pattern.captures_iter(output).last()?;
    let paths = found[1].parse().ok()?;
    let amount: f64 = found[2].parse().ok()?;
    let exponent = match &found[3] {
        "B" => 0,
        "KiB" => 1,
        "MiB" => 2,
        "GiB" => 3,
        "TiB" => 4,
        "PiB" => 5,
        _ => 6,
    };
    Some(Freed {
        paths,
        bytes: (amount * 1024f64.powi(exponent)).round() as u64,
        size: format!("{} {}", &found[2], &found[3]),
    })
}

pub struct Maintenance {
    nixos_config_dir: PathBuf,
    git: PathBuf,
    git_timeout: Duration,
    collect_garbage: PathBuf,
    garbage_timeout: Duration,
    jobs: Arc<JobRegistry>,
    collecting: Arc<AtomicBool>,
}

pub struct MaintenanceSetup {
    pub nixos_config_dir: PathBuf,
    pub git: PathBuf,
    pub git_timeout: Duration,
    pub collect_garbage: PathBuf,
    pub garbage_timeout: Duration,
}

const GC_TYPE: &str = "system.nix.collect_garbage";
const NIX_DAEMON_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

impl Maintenance {
    pub fn new(setup: MaintenanceSetup, jobs: Arc<JobRegistry>) -> Self {
        Maintenance {
            nixos_config_dir: setup.nixos_config_dir,
            git: setup.git,
            git_timeout: setup.git_timeout,
            collect_garbage: setup.collect_garbage,
            garbage_timeout: setup.garbage_timeout,
            jobs,
            collecting: Arc::default(),
        }
    }

    /// `git pull --ff-only` in the configuration directory when it is a
    /// git checkout. Git never asks for credentials (there is no one to
    /// answer): a remote that wants them fails with git's message.
    pub async fn pull_configuration(&self) -> Outcome<String> {
        let dir = &self.nixos_config_dir;
        if !dir.join(".git").exists() {
            return Err(Failure::conflict(
                format!(
                    "{} is not a git checkout: there is nothing to pull",
                    dir.display()
                ),
                format!(
                    "{} не является git-репозиторием: нечего обновлять",
                    dir.display()
                ),
            ));
        }
        let env = [
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_ASKPASS", "/bin/false"),
            ("SSH_ASKPASS", "/bin/false"),
            ("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
            ("LC_ALL", "C"),
        ];
        let args = ["-C", path_str(dir)?, "pull", "--ff-only", "--no-rebase"];
        let done = command::run(&self.git, &args, Some(dir), &env, self.git_timeout)
            .await
            .map_err(|e| command_failure("git pull", e))?;
        if !done.success {
            let output = tail(&format!("{}\n{}", done.stdout, done.stderr), 6);
            tracing::warn!(code = ?done.code, "git pull failed: {output}");
            return Err(Failure::new(
                FailureKind::Internal,
                Text::new(
                    format!("git pull failed: {output}"),
                    format!("git pull не удался: {output}"),
                ),
            ));
        }
        let output = tail(&done.stdout, 3);
        tracing::info!("pulled the NixOS configuration: {output}");
        Ok(output)
    }

    /// Starts `nix-collect-garbage -d` as a job (one at a time); the job's
    /// result says how many store paths went and how much was freed.
    pub fn collect_garbage(&self) -> Outcome<Job> {
        if self.collecting.swap(true, Ordering::SeqCst) {
            return Err(Failure::conflict(
                "Garbage collection is already running",
                "Сборка мусора уже идёт",
            ));
        }
        let job = match self.jobs.create(
            GC_TYPE,
            Text::new("Collect garbage", "Сборка мусора"),
            Text::new(
                "Removing old NixOS generations and unused store paths",
                "Удаление старых поколений NixOS и неиспользуемых путей хранилища",
            ),
        ) {
            Ok(job) => job,
            Err(failure) => {
                self.collecting.store(false, Ordering::SeqCst);
                return Err(failure);
            }
        };
        let jobs = self.jobs.clone();
        let collecting = self.collecting.clone();
        let program = self.collect_garbage.clone();
        let limit = self.garbage_timeout;
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let update = collect(&jobs, &uid, &program, limit).await;
            if let Err(e) = jobs.update(&uid, update) {
                tracing::error!("ending the garbage collection job: {e}");
            }
            collecting.store(false, Ordering::SeqCst);
        });
        Ok(job)
    }
}

fn path_str(path: &Path) -> Outcome<&str> {
    path.to_str()
        .ok_or_else(|| Failure::internal("running git", "the configuration path is not UTF-8"))
}

/// Runs the collection and returns the job's final update.
async fn collect(jobs: &JobRegistry, uid: &str, program: &Path, limit: Duration) -> JobUpdate {
    let _ = jobs.update(
        uid,
        JobUpdate {
            status: Some(JobStatus::Running),
            status_text: Some(Text::new(
                "Deleting old generations and unused store paths",
                "Удаление старых поколений и неиспользуемых путей",
            )),
            progress: Some(0),
            ..Default::default()
        },
    );
    let failed = |text: Text| JobUpdate {
        status: Some(JobStatus::Error),
        error: Some(text),
        ..Default::default()
    };
    // With a nix-daemon (NixOS), go through it: the store is a read-only
    // mount this daemon's unit may not remount (no new namespaces).
    let mut env = vec![("LC_ALL", "C")];
    if Path::new(NIX_DAEMON_SOCKET).exists() {
        env.push(("NIX_REMOTE", "daemon"));
    }
    let done = match command::run(program, &["-d"], None, &env, limit).await {
        Ok(done) => done,
        Err(e) => return failed(command_failure("nix-collect-garbage", e).message),
    };
    let output = format!("{}\n{}", done.stdout, done.stderr);
    if !done.success {
        let tail = tail(&output, 6);
        tracing::warn!(code = ?done.code, "nix-collect-garbage failed: {tail}");
        return failed(Text::new(
            format!("nix-collect-garbage failed: {tail}"),
            format!("nix-collect-garbage завершился с ошибкой: {tail}"),
        ));
    }
    match parse_freed(&output) {
        Some(freed) => {
            tracing::info!(
                paths = freed.paths,
                bytes = freed.bytes,
                "collected garbage"
            );
            JobUpdate {
                status: Some(JobStatus::Finished),
                status_text: Some(Text::new("Garbage collected", "Мусор собран")),
                result: Some(Text::new(
                    format!("{} store paths deleted, {} freed", freed.paths, freed.size),
                    format!(
                        "Удалено путей хранилища: {}, освобождено {}",
                        freed.paths, freed.size
                    ),
                )),
                ..Default::default()
            }
        }
        None => failed(Text::new(
            format!(
                "nix-collect-garbage finished without saying what it freed: {}",
                tail(&output, 3)
            ),
            format!(
                "nix-collect-garbage завершился, не сообщив, сколько освобождено: {}",
                tail(&output, 3)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_as_old_and_new_nix_print_it() {
        // nix 2.8 (showBytes): two decimals, MiB.
        let old = "removing old generations of profile /nix/var/nix/profiles/system\nfinding garbage collector roots...\ndeleting garbage...\ndeleting '/nix/store/abc-hello'\ndeleting unused links...\nnote: currently hard linking saves -0.00 MiB\n3 store paths deleted, 12.50 MiB freed\n";
        assert_eq!(
            parse_freed(old).unwrap(),
            Freed {
                paths: 3,
                bytes: 13_107_200,
                size: "12.50 MiB".into()
            }
        );
        // Newer nix (renderSize): one decimal, any unit.
        let new = "0 store paths deleted, 0.0 KiB freed\n";
        assert_eq!(parse_freed(new).unwrap().bytes, 0);
        assert_eq!(
            parse_freed("1523 store paths deleted, 2.5 GiB freed")
                .unwrap()
                .bytes,
            2_684_354_560
        );
        assert_eq!(parse_freed("deleting garbage...\n"), None);
        assert_eq!(parse_freed("x store paths deleted, 1 MiB freed"), None);
    }
}
