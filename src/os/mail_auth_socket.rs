//! The unix socket where the mail server checks an email password. It is
//! never on TCP: the file is root's, mode 0660, group the mail server's,
//! so nothing else on the machine can connect.
//!
//! Protocol: one JSON line `{"username": "...", "password": "..."}` in,
//! one line out: `OK`, `DENIED`, `RATE_LIMITED` or `BAD_REQUEST`.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Denied,
    /// Too many failures for this username lately: not even checked.
    RateLimited,
}

impl Verdict {
    fn answer(self) -> &'static [u8] {
        match self {
            Verdict::Accepted => b"OK\n",
            Verdict::Denied => b"DENIED\n",
            Verdict::RateLimited => b"RATE_LIMITED\n",
        }
    }
}

pub type Checker = Arc<dyn Fn(&str, &str) -> Verdict + Send + Sync>;

/// Longest request line: a username and a password, JSON-encoded.
const MAX_REQUEST: u64 = 4096;
/// How long a client may take to send its line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Checks running at once (argon2 is costly on purpose).
const CONCURRENT_CHECKS: usize = 2;

#[derive(serde::Deserialize)]
struct Request {
    username: String,
    password: String,
}

/// Binds `path` (replacing a stale socket, never another kind of file),
/// owned by root and `group`, mode 0660.
pub fn bind(path: &Path, group: &str) -> anyhow::Result<UnixListener> {
    let gid = nix::unistd::Group::from_name(group)?
        .ok_or_else(|| anyhow::anyhow!("no group {group} for the mail auth socket"))?
        .gid;
    // A directory made here is the mail server's way in: root's, group
    // `group`, 0750 (the daemon's umask would make it 0700). One that exists
    // is left as its owner set it.
    if let Some(parent) = path.parent().filter(|p| !p.exists()) {
        std::fs::create_dir_all(parent)?;
        nix::unistd::chown(parent, None, Some(gid))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o750))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    crate::os::unix_socket::bind_staged(path, 0o660, Some(gid))
}

/// Answers checks on `path` until the process ends.
pub fn spawn(path: PathBuf, group: String, checker: Checker) {
    let listener = match bind(&path, &group) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(
                "mail auth socket {} not started: {e:#}; mail logins with email passwords will fail",
                path.display()
            );
            return;
        }
    };
    tracing::info!("mail auth socket on {}", path.display());
    let permits = Arc::new(Semaphore::new(CONCURRENT_CHECKS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("mail auth socket: {e}");
                    continue;
                }
            };
            let (checker, permits) = (checker.clone(), permits.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
                let read = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await;
                let request = match read {
                    Ok(Ok(_)) => serde_json::from_str::<Request>(line.trim_end()).ok(),
                    _ => None,
                };
                let answer: &[u8] = match request {
                    None => b"BAD_REQUEST\n",
                    Some(request) => {
                        let Ok(_permit) = permits.acquire_owned().await else {
                            return;
                        };
                        let verdict = tokio::task::spawn_blocking(move || {
                            checker(&request.username, &request.password)
                        })
                        .await
                        .unwrap_or(Verdict::Denied);
                        verdict.answer()
                    }
                };
                let _ = write.write_all(answer).await;
            });
        }
    });
}
