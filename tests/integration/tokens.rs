//! The whole token lifecycle over HTTP, as the app drives it.

use crate::support::*;
use serde_json::{Value, json};

const DEVICES: &str = "{ api { devices { name creationDate isCaller } } }";

async fn devices(daemon: &Daemon, token: &str) -> Vec<Value> {
    let r = daemon
        .query_as(Some(&format!("Bearer {token}")), DEVICES, json!({}))
        .await;
    assert_no_errors(&r);
    r["data"]["api"]["devices"].as_array().unwrap().clone()
}

async fn new_device_key(daemon: &Daemon) -> String {
    let r = daemon
        .query(
            "mutation { api { getNewDeviceApiKey { success message code key } } }",
            json!({}),
        )
        .await;
    let result = &r["data"]["api"]["getNewDeviceApiKey"];
    assert_eq!(result["code"], 200, "{r}");
    result["key"].as_str().unwrap().to_owned()
}

async fn authorize(daemon: &Daemon, key: &str, device: &str) -> Value {
    let r = daemon
        .query_as(
            None,
            "mutation($input: UseNewDeviceKeyInput!) { api { authorizeWithNewDeviceApiKey(input: $input) { success message code token } } }",
            json!({ "input": { "key": key, "deviceName": device } }),
        )
        .await;
    assert_no_errors(&r);
    r["data"]["api"]["authorizeWithNewDeviceApiKey"].clone()
}

#[tokio::test]
async fn new_device_key_adds_a_device_once_then_devices_are_listed_refreshed_and_deleted() {
    let daemon = Daemon::start().await;

    let listed = devices(&daemon, &daemon.token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "tests");
    assert_eq!(listed[0]["isCaller"], true);
    assert!(
        listed[0]["creationDate"]
            .as_str()
            .unwrap()
            .ends_with("+00:00")
    );

    let key = new_device_key(&daemon).await;
    assert_eq!(key.split(' ').count(), 12);
    let granted = authorize(&daemon, &key, "My phone!").await;
    assert_eq!(granted["code"], 200, "{granted}");
    let phone_token = granted["token"].as_str().unwrap().to_owned();
    assert!(phone_token.len() >= 43, "256-bit token");
    // Single use: the same key again is refused, with no hint why.
    let again = authorize(&daemon, &key, "other").await;
    assert_eq!(
        (again["success"].clone(), again["code"].clone()),
        (json!(false), json!(404))
    );
    assert!(again["token"].is_null());

    let listed = devices(&daemon, &phone_token).await;
    let names: Vec<_> = listed.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tests", "My_phone_"]);
    assert_eq!(listed[1]["isCaller"], true);
    assert_eq!(listed[0]["isCaller"], false);

    // A device cannot delete its own token; it can delete another's.
    let delete = "mutation($d: String!) { api { deleteDeviceApiToken(device: $d) { success message code } } }";
    let own = daemon
        .query_as(
            Some(&format!("Bearer {phone_token}")),
            delete,
            json!({"d": "My_phone_"}),
        )
        .await;
    assert_eq!(
        own["data"]["api"]["deleteDeviceApiToken"]["code"], 400,
        "{own}"
    );
    let missing = daemon.query(delete, json!({"d": "nobody"})).await;
    assert_eq!(missing["data"]["api"]["deleteDeviceApiToken"]["code"], 404);

    // Refresh: the old token stops working at once, the new one works.
    let refreshed = daemon
        .query_as(
            Some(&format!("Bearer {phone_token}")),
            "mutation { api { refreshDeviceApiToken { success code token } } }",
            json!({}),
        )
        .await;
    let refreshed = &refreshed["data"]["api"]["refreshDeviceApiToken"];
    assert_eq!(refreshed["code"], 200);
    let new_phone_token = refreshed["token"].as_str().unwrap().to_owned();
    assert_ne!(new_phone_token, phone_token);
    let old = daemon
        .query_as(Some(&format!("Bearer {phone_token}")), DEVICES, json!({}))
        .await;
    assert_eq!(error_code(&old).as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(devices(&daemon, &new_phone_token).await.len(), 2);

    let deleted = daemon.query(delete, json!({"d": "My_phone_"})).await;
    assert_eq!(
        deleted["data"]["api"]["deleteDeviceApiToken"]["code"], 200,
        "{deleted}"
    );
    let gone = daemon
        .query_as(
            Some(&format!("Bearer {new_phone_token}")),
            DEVICES,
            json!({}),
        )
        .await;
    assert_eq!(error_code(&gone).as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(devices(&daemon, &daemon.token).await.len(), 1);
}

#[tokio::test]
async fn new_device_key_expires_after_ten_minutes_and_can_be_invalidated() {
    let daemon = Daemon::start().await;
    let key = new_device_key(&daemon).await;
    daemon.hook("advance-clock 599");
    let key2 = new_device_key(&daemon).await; // replaces the first one
    assert_eq!(authorize(&daemon, &key, "a").await["code"], 404);
    daemon.hook("advance-clock 601");
    assert_eq!(authorize(&daemon, &key2, "a").await["code"], 404, "expired");

    let key3 = new_device_key(&daemon).await;
    let invalidate = "mutation { api { invalidateNewDeviceApiKey { success message code } } }";
    let r = daemon.query(invalidate, json!({})).await;
    assert_eq!(r["data"]["api"]["invalidateNewDeviceApiKey"]["code"], 200);
    assert_eq!(authorize(&daemon, &key3, "a").await["code"], 404);
    // Garbage is refused the same way as a wrong key.
    assert_eq!(authorize(&daemon, "not a mnemonic", "a").await["code"], 404);
}

#[tokio::test]
async fn new_device_key_still_works_just_before_its_ten_minutes_are_up() {
    let daemon = Daemon::start().await;
    let key = new_device_key(&daemon).await;
    // 9 min 59 s on the daemon's clock (the real time this test takes
    // stays well under the remaining second).
    daemon.hook("advance-clock 599");
    let granted = authorize(&daemon, &key, "late phone").await;
    assert_eq!(granted["code"], 200, "{granted}");
    let token = granted["token"].as_str().unwrap();
    assert!(
        devices(&daemon, token)
            .await
            .iter()
            .any(|d| d["name"] == "late_phone" && d["isCaller"] == true)
    );
}

/// As the Python API: invalidating when no key is pending succeeds, and
/// doing it twice is the same as once.
#[tokio::test]
async fn invalidating_the_new_device_key_is_idempotent() {
    let daemon = Daemon::start().await;
    let invalidate = "mutation { api { invalidateNewDeviceApiKey { success message code } } }";
    let flat = "mutation { invalidateNewDeviceApiKey { success message code } }";
    let r = daemon.query(invalidate, json!({})).await;
    assert_eq!(
        r["data"]["api"]["invalidateNewDeviceApiKey"],
        json!({"success": true, "message": "New device key deleted", "code": 200}),
        "no key was ever made: {r}"
    );
    let key = new_device_key(&daemon).await;
    for _ in 0..2 {
        let r = daemon.query(invalidate, json!({})).await;
        assert_eq!(
            r["data"]["api"]["invalidateNewDeviceApiKey"]["code"], 200,
            "{r}"
        );
        assert_eq!(
            r["data"]["api"]["invalidateNewDeviceApiKey"]["success"],
            true
        );
    }
    let r = daemon.query(flat, json!({})).await;
    assert_eq!(r["data"]["invalidateNewDeviceApiKey"]["code"], 200, "{r}");
    assert_eq!(
        authorize(&daemon, &key, "a").await["code"],
        404,
        "still invalidated"
    );
}

/// The app shows each device's creation date: a refresh changes the token,
/// not the device.
#[tokio::test]
async fn refreshing_a_token_keeps_the_device_name_and_creation_date() {
    let daemon = Daemon::start().await;
    let key = new_device_key(&daemon).await;
    let old_token = authorize(&daemon, &key, "phone").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = devices(&daemon, &old_token).await;
    let created = before.iter().find(|d| d["name"] == "phone").unwrap()["creationDate"].clone();
    assert!(created.is_string(), "{before:?}");

    // An hour later on the daemon's clock, so a new date would show.
    daemon.hook("advance-clock 3600");
    let refreshed = daemon
        .query_as(
            Some(&format!("Bearer {old_token}")),
            "mutation { api { refreshDeviceApiToken { success code token } } }",
            json!({}),
        )
        .await;
    let refreshed = &refreshed["data"]["api"]["refreshDeviceApiToken"];
    assert_eq!(refreshed["code"], 200, "{refreshed}");
    let new_token = refreshed["token"].as_str().unwrap().to_owned();

    let after = devices(&daemon, &new_token).await;
    assert_eq!(after.len(), before.len());
    let phone = after.iter().find(|d| d["name"] == "phone").unwrap();
    assert_eq!(phone["creationDate"], created, "{after:?}");
    assert_eq!(phone["isCaller"], true);
    let old = daemon
        .query_as(Some(&format!("Bearer {old_token}")), DEVICES, json!({}))
        .await;
    assert_eq!(
        error_code(&old).as_deref(),
        Some("UNAUTHENTICATED"),
        "{old}"
    );

    // The same through the deprecated flat mutation.
    let again = daemon
        .query_as(
            Some(&format!("Bearer {new_token}")),
            "mutation { refreshDeviceApiToken { code token } }",
            json!({}),
        )
        .await;
    let newest = again["data"]["refreshDeviceApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone = devices(&daemon, &newest).await;
    let phone = phone.iter().find(|d| d["name"] == "phone").unwrap();
    assert_eq!(phone["creationDate"], created);
}

const STATUS: &str =
    "{ api { recoveryKey { exists valid creationDate expirationDate usesLeft } } }";
const NEW_RECOVERY: &str = "mutation($limits: RecoveryKeyLimitsInput) { api { getNewRecoveryApiKey(limits: $limits) { success message code key } } }";
const USE_RECOVERY: &str = "mutation($input: UseRecoveryKeyInput!) { api { useRecoveryApiKey(input: $input) { success message code token } } }";

async fn use_recovery(daemon: &Daemon, key: &str, device: &str) -> Value {
    let r = daemon
        .query_as(
            None,
            USE_RECOVERY,
            json!({"input": {"key": key, "deviceName": device}}),
        )
        .await;
    assert_no_errors(&r);
    r["data"]["api"]["useRecoveryApiKey"].clone()
}

#[tokio::test]
async fn recovery_key_has_uses_and_expiry_and_reports_its_status() {
    let daemon = Daemon::start().await;
    let status = daemon.query(STATUS, json!({})).await;
    assert_eq!(
        status["data"]["api"]["recoveryKey"],
        json!({"exists": false, "valid": false, "creationDate": null, "expirationDate": null, "usesLeft": null})
    );

    // Bad limits: 400 and a sentence, no key.
    let past = daemon
        .query(
            NEW_RECOVERY,
            json!({"limits": {"expirationDate": "2000-01-01T00:00:00"}}),
        )
        .await;
    assert_eq!(
        past["data"]["api"]["getNewRecoveryApiKey"]["code"], 400,
        "{past}"
    );
    assert!(past["data"]["api"]["getNewRecoveryApiKey"]["key"].is_null());
    let zero = daemon
        .query(NEW_RECOVERY, json!({"limits": {"uses": 0}}))
        .await;
    assert_eq!(zero["data"]["api"]["getNewRecoveryApiKey"]["code"], 400);
    let status = daemon.query(STATUS, json!({})).await;
    assert_eq!(
        status["data"]["api"]["recoveryKey"]["exists"], false,
        "nothing was made"
    );

    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let made = daemon
        .query(
            NEW_RECOVERY,
            json!({"limits": {"expirationDate": expires, "uses": 2}}),
        )
        .await;
    let made = &made["data"]["api"]["getNewRecoveryApiKey"];
    assert_eq!(made["code"], 200);
    let key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(key.split(' ').count(), 18);

    let used = use_recovery(&daemon, &key, "laptop").await;
    assert_eq!(used["code"], 200);
    let laptop = used["token"].as_str().unwrap();
    let listed = devices(&daemon, laptop).await;
    assert!(
        listed
            .iter()
            .any(|d| d["name"] == "laptop" && d["isCaller"] == true)
    );

    let status = daemon.query(STATUS, json!({})).await;
    let status = &status["data"]["api"]["recoveryKey"];
    assert_eq!(
        (
            status["exists"].clone(),
            status["valid"].clone(),
            status["usesLeft"].clone()
        ),
        (json!(true), json!(true), json!(1))
    );
    assert!(status["expirationDate"].is_string() && status["creationDate"].is_string());

    assert_eq!(use_recovery(&daemon, "wrong words", "x").await["code"], 404);
    assert_eq!(use_recovery(&daemon, &key, "laptop").await["code"], 200);
    assert_eq!(
        use_recovery(&daemon, &key, "laptop").await["code"],
        404,
        "uses are spent"
    );
    let status = daemon.query(STATUS, json!({})).await;
    assert_eq!(status["data"]["api"]["recoveryKey"]["valid"], false);
    assert_eq!(status["data"]["api"]["recoveryKey"]["usesLeft"], 0);

    // Expiry, with the daemon's clock moved forward by the test hook.
    let made = daemon
        .query(NEW_RECOVERY, json!({"limits": {"expirationDate": expires}}))
        .await;
    let key = made["data"]["api"]["getNewRecoveryApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    daemon.hook("advance-clock 7200");
    assert_eq!(use_recovery(&daemon, &key, "late").await["code"], 404);
    let status = daemon.query(STATUS, json!({})).await;
    assert_eq!(status["data"]["api"]["recoveryKey"]["valid"], false);

    // The deprecated flat mutation is the same operation.
    let flat = daemon
        .query(
            "mutation { getNewRecoveryApiKey { success code key } }",
            json!({}),
        )
        .await;
    assert_eq!(flat["data"]["getNewRecoveryApiKey"]["code"], 200);
    let key = flat["data"]["getNewRecoveryApiKey"]["key"]
        .as_str()
        .unwrap();
    let r = daemon
        .query_as(None, "mutation($input: UseRecoveryKeyInput!) { useRecoveryApiKey(input: $input) { code token } }",
            json!({"input": {"key": key, "deviceName": ""}}))
        .await;
    assert_eq!(r["data"]["useRecoveryApiKey"]["code"], 200);
    let names: Vec<_> = devices(&daemon, &daemon.token)
        .await
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"Unknown device".to_owned()), "{names:?}");
}

#[tokio::test]
async fn tokens_cannot_be_recovered_from_the_state_directory() {
    let daemon = Daemon::start().await;
    let key = new_device_key(&daemon).await;
    let granted = authorize(&daemon, &key, "phone").await;
    let phone_token = granted["token"].as_str().unwrap().to_owned();
    let words = daemon.query(NEW_RECOVERY, json!({})).await["data"]["api"]["getNewRecoveryApiKey"]
        ["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(daemon.state_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(stored.len() > 4096, "the database was read");
    let haystack = String::from_utf8_lossy(&stored);
    for secret in [&daemon.token, &phone_token, &words, &key] {
        assert!(
            !haystack.contains(secret.as_str()),
            "a secret is stored in clear"
        );
    }
    let first_word = words.split(' ').next().unwrap();
    assert!(
        !haystack.contains(&format!("{first_word} ")),
        "mnemonic words are not stored"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(daemon.state_dir.path().join("state.db"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "state.db is private to root");
}

#[tokio::test]
async fn token_command_creates_imports_and_the_running_daemon_accepts_them() {
    let daemon = Daemon::start().await;
    let dir = daemon.state_dir.path();
    let (ok, out, _) = cli(dir, &["token", "new", "--device", "installer"], None);
    assert!(ok);
    let token = out.trim();
    assert_eq!(out.lines().count(), 1, "prints only the token");
    assert!(
        token.len() >= 43
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_eq!(
        devices(&daemon, token).await.len(),
        2,
        "the running daemon sees it"
    );

    let migrated = "MigratedTokenFromThePythonApi_0123456789abc";
    let (ok, _, err) = cli(
        dir,
        &["token", "import", "--device", "old phone"],
        Some(&format!("{migrated}\n")),
    );
    assert!(ok, "{err}");
    let listed = devices(&daemon, migrated).await;
    assert!(
        listed
            .iter()
            .any(|d| d["name"] == "old_phone" && d["isCaller"] == true)
    );
    let (ok, _, err) = cli(
        dir,
        &["token", "import", "--device", "short"],
        Some("tooshort"),
    );
    assert!(!ok && err.contains("32"), "{err}");
    let (ok, _, err) = cli(
        dir,
        &["token", "import", "--device", "old phone"],
        Some("AnotherTokenThatIsLongEnough_0123456789"),
    );
    assert!(!ok && err.contains("already"), "{err}");
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
        & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// The state directory: one the daemon makes is 0700; an existing one keeps
/// its mode, and is used only if it is the daemon's own.
#[test]
fn the_state_directory_keeps_its_mode_and_someone_elses_is_refused() {
    let root = tempfile::tempdir().unwrap();

    // An existing empty 0755 directory stays 0755; the database is 0600.
    let given = root.path().join("given");
    std::fs::create_dir(&given).unwrap();
    set_mode(&given, 0o755);
    let (ok, _, err) = cli(&given, &["token", "list"], None);
    assert!(ok, "{err}");
    assert_eq!(mode_of(&given), 0o755);
    assert_eq!(mode_of(&given.join("state.db")), 0o600);
    // And again, now that it holds the database.
    let (ok, _, err) = cli(&given, &["token", "new", "--device", "a"], None);
    assert!(ok, "{err}");
    assert_eq!(mode_of(&given), 0o755);

    // One the daemon creates is private.
    let made = root.path().join("made/state");
    let (ok, _, err) = cli(&made, &["token", "list"], None);
    assert!(ok, "{err}");
    assert_eq!(mode_of(&made), 0o700);
    assert_eq!(mode_of(&made.join("state.db")), 0o600);

    // A mistyped shared directory (`--state-dir /var/lib`): other files and
    // no database. Refused, untouched.
    let shared = root.path().join("shared");
    std::fs::create_dir_all(shared.join("postgresql")).unwrap();
    set_mode(&shared, 0o755);
    let (ok, _, err) = cli(&shared, &["token", "list"], None);
    assert!(!ok && err.contains("directory of its own"), "{err}");
    assert_eq!(mode_of(&shared), 0o755);
    assert!(!shared.join("state.db").exists());

    // Someone else's, or one others may write to: refused, untouched.
    let foreign = root.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    set_mode(&foreign, 0o755);
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let (ok, _, err) = cli(&foreign, &["token", "list"], None);
    assert!(!ok && err.contains("owned by uid 65534"), "{err}");
    assert_eq!(mode_of(&foreign), 0o755);
    assert!(!foreign.join("state.db").exists());

    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let (ok, _, err) = cli(&open, &["token", "list"], None);
    assert!(!ok && err.contains("0777"), "{err}");
    assert_eq!(mode_of(&open), 0o777);
    assert!(!open.join("state.db").exists());
}
