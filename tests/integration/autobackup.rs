//! `selfprivacy-api backup run-due` (the autobackup timer's command) and the
//! daemon's control socket it talks to: root only, never TCP.

use crate::support::{BIN, Daemon, cli};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// `backup run-due --socket PATH` as the user `nobody` (setpriv, no
/// supplementary groups): (success, stdout + stderr).
fn run_due_as_nobody(socket: &Path) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN])
        .args(["backup", "run-due", "--socket"])
        .arg(socket)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn run_due_asks_the_daemon_over_its_root_only_socket() {
    let mut daemon = Daemon::start().await;
    let state_dir = daemon.state_dir.path().to_path_buf();
    let socket = state_dir.join("control.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "mode {:o}", meta.mode());
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    // The daemon answers; until backups are wired in, with an error that
    // says so, and the command fails.
    let (ok, out, err) = cli(&state_dir, &["backup", "run-due"], None);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("the daemon could not run the backups: backups are not configured"),
        "{err}"
    );

    // The daemon killed: its socket file stays, nobody answers, and the
    // command says so.
    daemon.kill();
    let (ok, _, err) = cli(&state_dir, &["backup", "run-due"], None);
    assert!(!ok);
    assert!(err.contains("cannot reach the daemon on"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    // A new daemon replaces the stale socket.
    daemon.launch().await;
    let (ok, _, err) = cli(&state_dir, &["backup", "run-due"], None);
    assert!(!ok);
    assert!(err.contains("backups are not configured"), "{err}");
}

#[tokio::test]
async fn a_peer_that_is_not_root_is_refused() {
    // A socket in a directory anyone may traverse, so that only the
    // socket's own protections stand in the way.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("control.sock");
    let daemon = Daemon::start_with_config(&format!("control_socket = {:?}\n", socket)).await;
    assert_eq!(
        std::fs::symlink_metadata(&socket).unwrap().mode() & 0o777,
        0o600
    );

    // Its mode keeps others out.
    let (ok, out) = run_due_as_nobody(&socket);
    assert!(!ok);
    assert!(out.contains("Permission denied"), "{out}");

    // Even with the mode loosened by mistake, the daemon refuses a peer
    // whose uid is not 0, before reading its request.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, out) = run_due_as_nobody(&socket);
    assert!(!ok);
    assert!(
        out.contains("refused: only root may use the control socket"),
        "{out}"
    );
    // Root still gets through.
    let (ok, _, err) = cli(
        daemon.state_dir.path(),
        &["backup", "run-due", "--socket", socket.to_str().unwrap()],
        None,
    );
    assert!(!ok);
    assert!(err.contains("backups are not configured"), "{err}");
}
