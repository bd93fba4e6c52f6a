//! The daemon's control socket: local commands from root (the autobackup
//! timer's `selfprivacy-api backup run-due`) to the running daemon, so that
//! what they start runs, and shows, in the daemon. A unix socket only, never
//! TCP: mode 0600, owned by the daemon's user (root), and every peer whose
//! uid is not 0 (SO_PEERCRED) is refused even if the mode was loosened.
//!
//! Protocol: one JSON request per line, one JSON answer per line.
//!   -> {"request":"run-due"}
//!   <- {"ok":true,"report":{...}}   or   {"ok":false,"error":"..."}
//! The answer to `run-due` comes when the backups are done (hours, maybe).
//! A run goes on to its end if the client goes away, and runs one at a time.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};

/// What `run-due` runs: the report as JSON, or why it could not run.
pub type RunDueFn = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>>
        + Send
        + Sync,
>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    RunDue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    fn error(message: impl Into<String>) -> Answer {
        Answer {
            ok: false,
            report: None,
            error: Some(message.into()),
        }
    }
}

/// A request line longer than this is refused (requests are a few bytes).
const MAX_REQUEST_BYTES: u64 = 4096;

/// The listening socket; its file is removed when this is dropped.
pub struct ControlSocket {
    path: PathBuf,
    inode: u64,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Listens on `path` (inside a tokio runtime). A stale socket file left
    /// by a daemon that died is replaced; a live one, or a file that is not
    /// a socket, is an error.
    pub fn start(path: &Path, run_due: RunDueFn) -> anyhow::Result<ControlSocket> {
        let listener = bind_private(path)?;
        let inode = std::fs::metadata(path)?.ino();
        let runs = Arc::new(tokio::sync::Mutex::new(()));
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_client(stream, run_due.clone(), runs.clone()));
                    }
                    Err(e) => {
                        tracing::error!("control socket: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(socket = %path.display(), "control socket listening");
        Ok(ControlSocket {
            path: path.to_path_buf(),
            inode,
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        // Only our own socket: a new daemon may have replaced it.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds in a fresh 0700 directory beside `path`, sets 0600, then renames
/// into place: the socket is never reachable with a wider mode.
fn bind_private(path: &Path) -> anyhow::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| anyhow::anyhow!("control socket {}: no directory", path.display()))?;
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "control socket {}: another daemon is listening there",
                    path.display()
                );
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => anyhow::bail!(
            "control socket {}: the path exists and is not a socket",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    crate::os::unix_socket::bind_staged(path, 0o600, None)
        .map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))
}

async fn serve_client(stream: UnixStream, run_due: RunDueFn, runs: Arc<tokio::sync::Mutex<()>>) {
    let uid = stream.peer_cred().map(|cred| cred.uid());
    let (read, mut write) = stream.into_split();
    let answer = match uid {
        Ok(0) => {
            let mut line = String::new();
            let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST_BYTES));
            match reader.read_line(&mut line).await {
                Ok(_) if !line.ends_with('\n') => Answer::error("request: one JSON line expected"),
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(Request::RunDue) => run(run_due, runs).await,
                    Err(e) => Answer::error(format!("request: {e}")),
                },
                Err(e) => Answer::error(format!("request: {e}")),
            }
        }
        Ok(uid) => {
            tracing::warn!(uid, "control socket: refused a peer that is not root");
            Answer::error("refused: only root may use the control socket")
        }
        Err(e) => Answer::error(format!("refused: cannot tell who you are: {e}")),
    };
    let mut line = serde_json::to_string(&answer).expect("an answer serializes");
    line.push('\n');
    let _ = write.write_all(line.as_bytes()).await;
}

/// One run at a time, spawned apart from the connection so that it ends
/// even if the client is killed.
async fn run(run_due: RunDueFn, runs: Arc<tokio::sync::Mutex<()>>) -> Answer {
    let outcome = tokio::spawn(async move {
        let _one_at_a_time = runs.lock().await;
        run_due().await
    })
    .await;
    match outcome {
        Ok(Ok(report)) => Answer {
            ok: true,
            report: Some(report),
            error: None,
        },
        Ok(Err(error)) => Answer::error(error),
        Err(e) => Answer::error(format!("the run failed: {e}")),
    }
}

/// The client side (blocking): sends `request` and waits for the answer,
/// as long as it takes.
pub fn request(path: &Path, request: &Request) -> anyhow::Result<Answer> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the daemon on {}: {e} (is selfprivacy-api running?)",
            path.display()
        )
    })?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // A refused peer's request is never read: the daemon may have answered
    // and closed before it is written, so read the answer even then.
    let written = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        written?;
        anyhow::bail!("the daemon closed the control socket without answering");
    }
    Ok(serde_json::from_str(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answering(report: serde_json::Value, calls: Arc<AtomicUsize>) -> RunDueFn {
        Arc::new(move || {
            let report = report.clone();
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(report)
            })
        })
    }

    async fn ask(path: &Path, request: Request) -> Answer {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || super::request(&path, &request))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn run_due_answers_the_report_on_a_0600_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let calls = Arc::new(AtomicUsize::new(0));
        let socket = ControlSocket::start(
            &path,
            answering(serde_json::json!({"services": []}), calls.clone()),
        )
        .unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600);
        let answer = ask(&path, Request::RunDue).await;
        assert_eq!(
            answer,
            Answer {
                ok: true,
                report: Some(serde_json::json!({"services": []})),
                error: None
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Nothing left beside it (the staging directory is gone).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["control.sock"]);
        drop(socket);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    #[tokio::test]
    async fn an_unknown_or_malformed_request_is_answered_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let calls = Arc::new(AtomicUsize::new(0));
        let _socket =
            ControlSocket::start(&path, answering(serde_json::json!({}), calls.clone())).unwrap();
        for line in ["{\"request\":\"reboot\"}\n", "run-due\n"] {
            let path = path.clone();
            let answer = tokio::task::spawn_blocking(move || {
                let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
                stream.write_all(line.as_bytes()).unwrap();
                let mut answer = String::new();
                BufReader::new(stream).read_line(&mut answer).unwrap();
                serde_json::from_str::<Answer>(&answer).unwrap()
            })
            .await
            .unwrap();
            assert!(!answer.ok);
            assert!(answer.error.unwrap().starts_with("request: "));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_or_a_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // A socket file nobody listens on (a daemon that was killed).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let live =
            ControlSocket::start(&path, answering(serde_json::json!(1), calls.clone())).unwrap();
        let error = ControlSocket::start(&path, answering(serde_json::json!(2), calls.clone()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("another daemon is listening"));
        assert_eq!(
            ask(&path, Request::RunDue).await.report,
            Some(serde_json::json!(1))
        );
        drop(live);
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        let error = ControlSocket::start(&file, answering(serde_json::json!(3), calls))
            .err()
            .unwrap();
        assert!(error.to_string().contains("not a socket"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn runs_happen_one_at_a_time_and_a_failure_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (running2, most2) = (running.clone(), most.clone());
        let run_due: RunDueFn = Arc::new(move || {
            let (running, most) = (running2.clone(), most2.clone());
            Box::pin(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Long enough for the other request to arrive meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Err("backups are not configured".to_owned())
            })
        });
        let _socket = ControlSocket::start(&path, run_due).unwrap();
        let (a, b) = tokio::join!(ask(&path, Request::RunDue), ask(&path, Request::RunDue));
        for answer in [a, b] {
            assert_eq!(answer, Answer::error("backups are not configured"));
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
