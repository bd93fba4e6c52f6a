//! The secrets audit: through a sequence of operations that handle secrets
//! (tokens from a recovery key and a new-device key, user passwords, an
//! email password, a FILE backup repository and a backup, a DNS provider
//! token), no secret shows on any process's command line (host and
//! testbed), in the daemon's log or in the testbed's journal; the files
//! holding them are 0600 in 0700 folders; the state DB holds only hashes,
//! and a hash presented as a token opens nothing.

use crate::backups::all_command_lines;
use crate::bad_input::dump_db;
use crate::services::{rebuild, wait_job_done};
use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const STATE_DIR: &str = "/var/lib/selfprivacy-api";

/// Polls every process's command line until stopped; keeps each distinct
/// one (the testbed's processes are the host's too, seen from here).
struct CommandLineWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    polls: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommandLineWatch {
    fn start() -> CommandLineWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let polls = Arc::new(Mutex::new(0));
        let thread = {
            let (stop, seen, polls) = (stop.clone(), seen.clone(), polls.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let all = all_command_lines();
                    let mut seen = seen.lock().unwrap();
                    for line in all.lines() {
                        if !seen.contains(line) {
                            seen.insert(line.to_owned());
                        }
                    }
                    *polls.lock().unwrap() += 1;
                    drop(seen);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
        };
        CommandLineWatch {
            stop,
            seen,
            polls,
            thread: Some(thread),
        }
    }

    /// Stops polling: (polls, distinct command lines).
    fn finish(mut self) -> (usize, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let polls = *self.polls.lock().unwrap();
        (polls, std::mem::take(&mut *self.seen.lock().unwrap()))
    }
}

impl Drop for CommandLineWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A mutation's payload (`data.<namespace>.<field>` or `data.<field>`),
/// which must say success.
async fn succeed(client: &Client, document: &str, variables: Value) -> Value {
    let r = client.query(document, variables).await;
    assert_no_errors(&r);
    let mut payload = &r["data"];
    while payload.get("success").is_none() {
        payload = payload
            .as_object()
            .and_then(|o| o.values().next())
            .unwrap_or_else(|| panic!("no payload: {r}"));
    }
    assert_eq!(payload["success"], true, "{document}: {r}");
    payload.clone()
}

/// Files and folders (recursively) with their permission bits.
fn modes(root: &Path, out: &mut Vec<(String, bool, u32)>) {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    out.push((
        root.display().to_string(),
        meta.is_dir(),
        meta.permissions().mode() & 0o7777,
    ));
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap().flatten() {
            modes(&entry.path(), out);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_a_command_line_a_log_or_a_readable_file_and_the_db_holds_only_hashes() {
    let testbed = Testbed::up(Setup {
        modules: vec![(
            "echo",
            module(
                "echo",
                &["echo.service"],
                json!({"folders": ["/var/lib/echo"]}),
            ),
        )],
        userdata: json!({
            "domain": "example.org", "hostname": "testbed", "timezone": "Etc/UTC",
            "username": "owner", "hashedPassword": "$6$rounds=5000$salt$hash", "sshKeys": [],
            "users": [{"username": "alice", "hashedPassword": "$6$x$y", "sshKeys": []}],
            "modules": {"echo": {"enable": true}}
        }),
        volumes: vec!["sdb:64"],
        config: "rebuild_debounce_ms = 600000\n",
    });
    let watch = CommandLineWatch::start();
    let client = testbed.start_daemon().await;
    let mut secrets: Vec<(&str, String)> = vec![("the first device token", client.token.clone())];

    // Tokens through a recovery key and a new-device key, then used.
    let key = succeed(
        &client,
        "mutation { api { getNewRecoveryApiKey { success key } } }",
        json!({}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let issued = succeed(
        &client,
        "mutation($k: String!) { api { useRecoveryApiKey(input: {key: $k, deviceName: \"laptop\"}) { success token } } }",
        json!({"k": key}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(("the recovery key", key));
    let key = succeed(
        &client,
        "mutation { api { getNewDeviceApiKey { success key } } }",
        json!({}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let issued_too = succeed(
        &client,
        "mutation($k: String!) { api { authorizeWithNewDeviceApiKey(input: {key: $k, deviceName: \"tablet\"}) { success token } } }",
        json!({"k": key}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(("the new-device key", key));
    for token in [&issued, &issued_too] {
        let r = Client {
            token: token.clone(),
            ..client.clone()
        }
        .query("{ api { devices { name } } }", json!({}))
        .await;
        assert_no_errors(&r);
    }
    secrets.push(("a token from the recovery key", issued));
    secrets.push(("a token from the new-device key", issued_too));

    // Passwords: a new user's, a changed one, an email password.
    let password = "create-Password-0xC0FFEE".to_owned();
    succeed(
        &client,
        "mutation($p: String!) { users { createUser(user: {username: \"bob\", password: $p}) { success } } }",
        json!({"p": password}),
    )
    .await;
    secrets.push(("a new user's password", password));
    let password = "update-Password-0xBEEF".to_owned();
    succeed(
        &client,
        "mutation($p: String!) { users { updateUser(user: {username: \"alice\", password: $p}) { success } } }",
        json!({"p": password}),
    )
    .await;
    secrets.push(("a changed password", password));
    let email_password = testbed.run(&[
        "/opt/selfprivacy-api/selfprivacy-api",
        "email-password",
        "new",
        "--user",
        "alice",
        "--name",
        "phone",
        "--state-dir",
        STATE_DIR,
    ]);
    assert!(email_password.len() >= 20, "{email_password}");
    secrets.push(("an email password", email_password));

    // The DNS provider's token.
    let dns_token = "dns-Token-0xFEEDFACE-secret".to_owned();
    succeed(
        &client,
        "mutation($t: String!) { system { setDnsProvider(input: {provider: CLOUDFLARE, token: $t}) { success } } }",
        json!({"t": dns_token}),
    )
    .await;
    secrets.push(("the DNS provider token", dns_token));

    // A FILE repository on the volume, and a backup into it.
    let started = rebuild(&client).await;
    let job = wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    std::fs::create_dir_all(testbed.path("/var/lib/echo")).unwrap();
    std::fs::write(testbed.path("/var/lib/echo/data.txt"), "data").unwrap();
    succeed(
        &client,
        "mutation { backup { initializeRepository(repository: {provider: FILE, locationId: \"\", locationName: \"/volumes/sdb/repo\", login: \"\", password: \"\"}) { success } } }",
        json!({}),
    )
    .await;
    let r = client
        .query("{ backup { configuration { encryptionKey } } }", json!({}))
        .await;
    let encryption_key = r["data"]["backup"]["configuration"]["encryptionKey"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    assert!(encryption_key.len() >= 16, "{r}");
    secrets.push(("the repository's encryption key", encryption_key));
    let started = succeed(
        &client,
        "mutation { backup { startBackup(serviceId: \"echo\") { success job { uid } } } }",
        json!({}),
    )
    .await;
    let job = wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");

    // Command lines.
    let (polls, command_lines) = watch.finish();
    assert!(polls > 100, "only {polls} polls of /proc");
    for (what, secret) in &secrets {
        for line in &command_lines {
            assert!(
                !line.contains(secret.as_str()),
                "{what} on a command line: {line}"
            );
        }
    }
    // Logs: the daemon's (its unit's journal) and everything in the journal.
    let journal = testbed.run(&["journalctl", "--no-pager", "-o", "cat", "-b"]);
    assert!(
        journal.contains("serving the SelfPrivacy API"),
        "the daemon's log is in the journal"
    );
    for (what, secret) in &secrets {
        assert!(!journal.contains(secret.as_str()), "{what} in the journal");
    }

    // Files: every one in the state directory, the secrets file and
    // userdata (password hashes) is 0600 or stricter, their folders 0700.
    let mut found = Vec::new();
    for path in [STATE_DIR, "/etc/selfprivacy", "/etc/nixos/userdata.json"] {
        modes(&testbed.path(path), &mut found);
    }
    assert!(
        found.iter().any(|(p, _, _)| p.ends_with("secrets.json"))
            && found
                .iter()
                .any(|(p, _, _)| p.ends_with("repository-password")),
        "{found:?}"
    );
    let mut loose = Vec::new();
    for (path, is_dir, mode) in &found {
        // restic writes its cache's marker files itself (0644); they hold no
        // secret (what the cache keeps is encrypted) and sit in a 0700
        // folder, which this loop checks.
        if !is_dir && path.contains("/backups/cache/") {
            continue;
        }
        let allowed = if *is_dir { 0o700 } else { 0o600 };
        if mode & !allowed != 0 {
            loose.push(format!("{path}: {mode:o}"));
        }
    }
    assert!(
        loose.is_empty(),
        "more open than 0600/0700:\n{}",
        loose.join("\n")
    );
    // And the file's contents: no secret in plain text but where it must be.
    for (path, is_dir, _) in &found {
        if *is_dir {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        for (what, secret) in &secrets {
            let expected_here = (path.ends_with("secrets.json")
                && *what == "the DNS provider token")
                || (path.ends_with("repository-password")
                    && *what == "the repository's encryption key");
            assert!(
                expected_here || !text.contains(secret.as_str()),
                "{what} in plain text in {path}"
            );
        }
    }

    // The state DB: only hashes, and a hash opens nothing.
    let tables = dump_db(&testbed.path(&format!("{STATE_DIR}/state.db")));
    let rows: Vec<&String> = tables.values().flatten().collect();
    assert!(rows.len() >= 3, "{tables:?}");
    for (what, secret) in &secrets {
        for row in &rows {
            assert!(!row.contains(secret.as_str()), "{what} in the state DB");
        }
    }
    let copy = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let from = testbed.path(&format!("{STATE_DIR}/state.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, copy.path().join(format!("state.db{suffix}"))).unwrap();
        }
    }
    let db = rusqlite::Connection::open(copy.path().join("state.db")).unwrap();
    let hashes: Vec<Vec<u8>> = db
        .prepare("SELECT token_hash FROM device_tokens UNION ALL SELECT key_hash FROM api_keys")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(hashes.len() >= 3, "{} hashes", hashes.len());
    use base64::Engine;
    let mut tried = 0;
    for hash in &hashes {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        for form in [
            hex,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash),
            base64::engine::general_purpose::STANDARD.encode(hash),
        ] {
            let address = format!("10.7.0.{}", tried + 1);
            let r = post(
                &client.url,
                Some(&format!("Bearer {form}")),
                &[("X-Real-IP", address.as_str())],
                "{ api { devices { name } } }",
                json!({}),
            )
            .await;
            assert_eq!(
                error_code(&r).as_deref(),
                Some("UNAUTHENTICATED"),
                "a stored hash opened the API: {r}"
            );
            tried += 1;
        }
    }
    report(format!(
        "secrets audit: {} secrets, {polls} polls of /proc ({} distinct command lines), {} journal bytes, {} files checked, {tried} hashes refused as tokens",
        secrets.len(),
        command_lines.len(),
        journal.len(),
        found.len()
    ));
}
