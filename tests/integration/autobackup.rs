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

    // The daemon answers: no repository yet, so nothing is due, which is
    // not a failure (the timer runs every few minutes).
    let (ok, out, err) = cli(&state_dir, &["backup", "run-due"], None);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("skipped    selfprivacy-api: automatic backups are off"),
        "{out}"
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
    let (ok, out, err) = cli(&state_dir, &["backup", "run-due"], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("automatic backups are off"), "{out}");
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
    assert!(ok, "{err}");
}

/// The timer's command end to end: a FILE repository and a period set over
/// GraphQL, `backup run-due` backs up what is due (the server's own
/// settings here, a daemon outside a testbed has no modules) with the
/// reason AUTO, and a second run finds nothing due.
#[tokio::test]
async fn run_due_backs_up_what_is_due_through_the_daemon() {
    let daemon = Daemon::start().await;
    let state_dir = daemon.state_dir.path().to_path_buf();
    std::fs::write(
        state_dir.join("userdata.json"),
        r#"{"domain": "example.org"}"#,
    )
    .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let answer = daemon
        .query(
            "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) { success message } } }",
            serde_json::json!({"r": {"provider": "FILE", "locationId": "", "locationName": repo.path(),
                                     "login": "", "password": ""}}),
        )
        .await;
    assert_eq!(
        answer["data"]["backup"]["initializeRepository"]["success"], true,
        "{answer}"
    );
    let answer = daemon
        .query(
            "mutation { backup { setAutobackupPeriod(period: 60) { success configuration { autobackupPeriod } } } }",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        answer["data"]["backup"]["setAutobackupPeriod"]["configuration"]["autobackupPeriod"], 60,
        "{answer}"
    );

    let (ok, out, err) = cli(&state_dir, &["backup", "run-due"], None);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("backed up  selfprivacy-api: snapshot "),
        "{out}"
    );
    let snapshots = daemon
        .query(
            "{ backup { allSnapshots { id reason service { id } } } }",
            serde_json::json!({}),
        )
        .await;
    let all = snapshots["data"]["backup"]["allSnapshots"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 1, "{snapshots}");
    assert_eq!(all[0]["reason"], "AUTO", "{snapshots}");
    assert_eq!(all[0]["service"]["id"], "selfprivacy-api", "{snapshots}");

    let (ok, out, err) = cli(&state_dir, &["backup", "run-due"], None);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("skipped    selfprivacy-api: backed up at "),
        "{out}"
    );
}

/// The timer as the NixOS module makes it (`Persistent=true`) catches up a
/// night missed while the server was off: its stamp says it last ran two
/// days ago and its next calendar time is hours away, yet starting it runs
/// `backup run-due` at once, through the daemon, which makes an AUTO
/// snapshot of the enabled service.
#[tokio::test(flavor = "multi_thread")]
async fn the_persistent_timer_catches_up_a_missed_night() {
    use crate::testbed::{Setup, Testbed, module};
    use serde_json::json;
    use std::time::{Duration, Instant};

    let testbed = Testbed::up(Setup {
        modules: vec![(
            "echo",
            module(
                "echo",
                &["echo.service"],
                json!({"folders": ["/var/lib/echo"]}),
            ),
        )],
        userdata: json!({"domain": "example.org", "modules": {"echo": {"enable": true}}}),
        volumes: vec![],
        config: "",
    });
    let client = testbed.start_daemon().await;
    std::fs::create_dir_all(testbed.path("/var/lib/echo")).unwrap();
    std::fs::write(testbed.path("/var/lib/echo/data"), "echo's data").unwrap();
    for mutation in [
        "mutation { backup { initializeRepository(repository: {provider: FILE, locationId: \"\", locationName: \"/var/lib/backup-repo\", login: \"\", password: \"\"}) { success message } } }",
        "mutation { backup { setAutobackupPeriod(period: 1440) { success message } } }",
    ] {
        let answer = client.query(mutation, json!({})).await;
        let result = &answer["data"]["backup"];
        assert!(result.to_string().contains("\"success\":true"), "{answer}");
    }

    // The timer and its service, with the NixOS module's settings; the
    // calendar time twelve hours from now, the last run two days ago.
    let hour = (chrono::Utc::now() + chrono::Duration::hours(12)).format("%H");
    std::fs::write(
        testbed.path("/etc/systemd/system/selfprivacy-api-autobackup.service"),
        "[Service]\nType=oneshot\nExecStart=/opt/selfprivacy-api/selfprivacy-api backup run-due\n",
    )
    .unwrap();
    std::fs::write(
        testbed.path("/etc/systemd/system/selfprivacy-api-autobackup.timer"),
        format!("[Timer]\nOnCalendar=*-*-* {hour}:00:00 UTC\nPersistent=true\n"),
    )
    .unwrap();
    testbed.run(&["mkdir", "-p", "/var/lib/systemd/timers"]);
    testbed.run(&[
        "touch",
        "-d",
        "2 days ago",
        "/var/lib/systemd/timers/stamp-selfprivacy-api-autobackup.timer",
    ]);
    testbed.run(&["systemctl", "daemon-reload"]);
    testbed.run(&["systemctl", "start", "selfprivacy-api-autobackup.timer"]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let snapshots = loop {
        let answer = client
            .query(
                "{ backup { allSnapshots { reason service { id } } } }",
                json!({}),
            )
            .await;
        let all = answer["data"]["backup"]["allSnapshots"].clone();
        if all
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["service"]["id"] == "echo"))
        {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "no catch-up backup within 120 s: {answer}\n{}",
            testbed.run(&[
                "journalctl",
                "-u",
                "selfprivacy-api-autobackup",
                "--no-pager"
            ])
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let echo: Vec<_> = snapshots
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["service"]["id"] == "echo")
        .collect();
    assert_eq!(echo.len(), 1, "{snapshots}");
    assert_eq!(echo[0]["reason"], "AUTO", "{snapshots}");
    // Its calendar time is twelve hours away: it ran because a run was
    // missed, and it succeeded.
    let result = testbed.run(&[
        "systemctl",
        "show",
        "-P",
        "Result",
        "selfprivacy-api-autobackup.service",
    ]);
    assert_eq!(result, "success");
}
