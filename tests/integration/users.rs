//! Users and groups as the app uses them (users.graphql): the JSON
//! repository (userdata.json) on a daemon whose rebuilds never start
//! (a long debounce), one rebuild in the testbed, the Kanidm repository
//! against its stand-in (test scaffolding), and the validation matrix.

use crate::app_operations::operation;
use crate::catalogue::last_rebuild_done;
use crate::support::*;
use crate::testbed::{Setup, Testbed};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// The mutation's result under `users` (or the first non-typename field).
async fn users_mutation(client: &Client, name: &str, variables: Value) -> Value {
    let r = client.query(&operation(name), variables).await;
    assert_no_errors(&r);
    let root = r["data"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "__typename")
        .unwrap()
        .1
        .clone();
    root.as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "__typename")
        .unwrap()
        .1
        .clone()
}

/// A fresh key pair's public line, made by `ssh-keygen`.
pub fn generate_key(kind: &str, bits: Option<u32>, dir: &Path) -> String {
    let path = dir.join(format!("key-{kind}-{}", bits.unwrap_or(0)));
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-N", "", "-C", "tests@example", "-t", kind, "-f"]);
    command.arg(&path);
    if let Some(bits) = bits {
        command.args(["-b", &bits.to_string()]);
    }
    let out = command.output().expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// An `sk-ssh-ed25519@openssh.com` public key (no hardware token here to
/// make one): type, 32-byte key, application, as OpenSSH encodes it.
fn sk_ed25519_key() -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    for field in [&b"sk-ssh-ed25519@openssh.com"[..], &[7u8; 32][..], b"ssh:"] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    format!(
        "sk-ssh-ed25519@openssh.com {} yubikey",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

const PRIMARY_HASH: &str = "$6$rounds=5000$salt$hash";

pub fn json_userdata() -> Value {
    json!({
        "domain": "example.org",
        "username": "owner",
        "hashedPassword": PRIMARY_HASH,
        "sshKeys": [],
        "ssh": {"enable": true, "rootKeys": [], "passwordAuthentication": false},
        "users": [{"username": "bob", "hashedPassword": "$6$x$y", "sshKeys": [],
                   "keepMe": {"nested": [1, 2]}}],
        "aKeyFromTheFuture": {"keep": true}
    })
}

/// A daemon whose scheduled rebuilds wait ten minutes: the userdata
/// changes are observed as written, with no bus to rebuild on.
async fn json_daemon(passwd: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let passwd_file = dir.path().join("passwd");
    std::fs::write(&passwd_file, passwd).unwrap();
    let daemon = Daemon::start_with_config(&format!(
        "rebuild_debounce_ms = 600000\npasswd_file = \"{}\"\n",
        passwd_file.display()
    ))
    .await;
    let userdata = daemon.state_dir.path().join("userdata.json");
    std::fs::write(
        &userdata,
        serde_json::to_string_pretty(&json_userdata()).unwrap(),
    )
    .unwrap();
    (daemon, dir)
}

fn read_userdata(daemon: &Daemon) -> Value {
    serde_json::from_slice(&std::fs::read(daemon.state_dir.path().join("userdata.json")).unwrap())
        .unwrap()
}

fn userdata_bytes(daemon: &Daemon) -> Vec<u8> {
    std::fs::read(daemon.state_dir.path().join("userdata.json")).unwrap()
}

/// Every field of the app's `userFields` fragment has the right shape.
fn assert_user_fields(user: &Value) {
    assert_eq!(user["__typename"], "User", "{user}");
    assert!(user["username"].is_string(), "{user}");
    assert!(
        ["NORMAL", "PRIMARY", "ROOT"].contains(&user["userType"].as_str().unwrap()),
        "{user}"
    );
    assert!(user["sshKeys"].is_array(), "{user}");
    for list in ["directmemberof", "memberof"] {
        assert!(user[list].is_array() || user[list].is_null(), "{user}");
    }
    assert!(
        user["emailPasswordMetadata"].is_array() || user["emailPasswordMetadata"].is_null(),
        "{user}"
    );
}

fn assert_unknown_keys_kept(userdata: &Value) {
    assert_eq!(
        userdata["aKeyFromTheFuture"],
        json!({"keep": true}),
        "{userdata}"
    );
    assert_eq!(
        userdata["ssh"]["passwordAuthentication"], false,
        "{userdata}"
    );
    assert_eq!(userdata["hashedPassword"], PRIMARY_HASH, "{userdata}");
    let bob = userdata["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "bob")
        .unwrap();
    assert_eq!(bob["keepMe"], json!({"nested": [1, 2]}), "{userdata}");
}

#[tokio::test]
async fn the_apps_user_operations_on_userdata_json() {
    let (daemon, _dir) = json_daemon("root:x:0:0::/root:/bin/sh\n").await;
    let keys = tempfile::tempdir().unwrap();

    let r = daemon.query(&operation("AllUsers"), json!({})).await;
    assert_no_errors(&r);
    let all = r["data"]["users"]["allUsers"].as_array().unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap(),
                u["userType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("owner", "PRIMARY"), ("bob", "NORMAL")]);
    all.iter().for_each(assert_user_fields);
    let root = &r["data"]["users"]["rootUser"];
    assert_user_fields(root);
    assert_eq!(root["userType"], "ROOT");

    let r = daemon.query(&operation("AllGroups"), json!({})).await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["groups"]["allGroups"], json!([]));

    let r = daemon
        .query(&operation("GetUser"), json!({"username": "nobody-here"}))
        .await;
    assert_no_errors(&r);
    assert!(r["data"]["users"]["getUser"].is_null());

    // Create, with the password hashed and never stored in clear.
    let created = users_mutation(
        &daemon,
        "CreateUser",
        json!({"user": {"username": "carol", "password": "s3cret-Pa55", "directmemberof": []}}),
    )
    .await;
    assert_eq!(created["code"], 201, "{created}");
    assert_eq!(created["success"], true);
    assert_user_fields(&created["user"]);
    assert_eq!(created["user"]["userType"], "NORMAL");
    let text = String::from_utf8(userdata_bytes(&daemon)).unwrap();
    assert!(!text.contains("s3cret-Pa55"));
    let userdata = read_userdata(&daemon);
    let carol = userdata["users"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(carol["username"], "carol");
    let first_hash = carol["hashedPassword"].as_str().unwrap().to_owned();
    assert!(first_hash.starts_with("$6$"), "{first_hash}");
    assert_unknown_keys_kept(&userdata);
    let r = daemon
        .query(&operation("GetUser"), json!({"username": "carol"}))
        .await;
    assert_eq!(r["data"]["users"]["getUser"]["username"], "carol", "{r}");

    // A second create of the same name changes nothing.
    let before = userdata_bytes(&daemon);
    let again = users_mutation(
        &daemon,
        "CreateUser",
        json!({"user": {"username": "carol", "password": "other"}}),
    )
    .await;
    assert_eq!(again["code"], 409, "{again}");
    assert_eq!(userdata_bytes(&daemon), before);

    let updated = users_mutation(
        &daemon,
        "UpdateUser",
        json!({"user": {"username": "carol", "password": "n3w-pass"}}),
    )
    .await;
    assert_eq!(updated["code"], 200, "{updated}");
    assert_user_fields(&updated["user"]);
    let userdata = read_userdata(&daemon);
    let hash = userdata["users"].as_array().unwrap().last().unwrap()["hashedPassword"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hash.starts_with("$6$") && hash != first_hash);
    assert_unknown_keys_kept(&userdata);

    // SSH keys for root, the primary user and a normal user, each where
    // NixOS reads them.
    let ed25519 = generate_key("ed25519", None, keys.path());
    let ecdsa = generate_key("ecdsa", Some(384), keys.path());
    let rsa = generate_key("rsa", Some(2048), keys.path());
    let sk = sk_ed25519_key();
    for (user, key) in [
        ("root", &ed25519),
        ("owner", &ecdsa),
        ("carol", &rsa),
        ("carol", &sk),
    ] {
        let added = users_mutation(
            &daemon,
            "AddSshKey",
            json!({"sshInput": {"username": user, "sshKey": key}}),
        )
        .await;
        assert_eq!(added["code"], 201, "{user}: {added}");
        assert_user_fields(&added["user"]);
        assert!(
            added["user"]["sshKeys"]
                .as_array()
                .unwrap()
                .contains(&json!(key)),
            "{added}"
        );
    }
    let userdata = read_userdata(&daemon);
    assert_eq!(userdata["ssh"]["rootKeys"], json!([ed25519]));
    assert_eq!(userdata["sshKeys"], json!([ecdsa]));
    assert_eq!(
        userdata["users"].as_array().unwrap().last().unwrap()["sshKeys"],
        json!([rsa, sk])
    );
    assert_unknown_keys_kept(&userdata);
    let r = daemon.query(&operation("AllUsers"), json!({})).await;
    assert_eq!(r["data"]["users"]["rootUser"]["sshKeys"], json!([ed25519]));

    // The same key again: 409, nothing written.
    let before = userdata_bytes(&daemon);
    let again = users_mutation(
        &daemon,
        "AddSshKey",
        json!({"sshInput": {"username": "root", "sshKey": ed25519}}),
    )
    .await;
    assert_eq!(again["code"], 409, "{again}");
    assert_eq!(userdata_bytes(&daemon), before);

    for (user, key) in [("root", &ed25519), ("owner", &ecdsa), ("carol", &rsa)] {
        let removed = users_mutation(
            &daemon,
            "RemoveSshKey",
            json!({"sshInput": {"username": user, "sshKey": key}}),
        )
        .await;
        assert_eq!(removed["code"], 200, "{user}: {removed}");
        assert!(
            !removed["user"]["sshKeys"]
                .as_array()
                .unwrap()
                .contains(&json!(key))
        );
    }
    let userdata = read_userdata(&daemon);
    assert_eq!(userdata["ssh"]["rootKeys"], json!([]));
    assert_eq!(userdata["sshKeys"], json!([]));
    let missing = users_mutation(
        &daemon,
        "RemoveSshKey",
        json!({"sshInput": {"username": "carol", "sshKey": rsa}}),
    )
    .await;
    assert_eq!(missing["code"], 404, "{missing}");

    // Root and the primary user cannot be deleted; others can.
    for user in ["root", "owner"] {
        let before = userdata_bytes(&daemon);
        let refused = users_mutation(&daemon, "DeleteUser", json!({"username": user})).await;
        assert_eq!(refused["code"], 400, "{user}: {refused}");
        assert_eq!(userdata_bytes(&daemon), before);
    }
    let deleted = users_mutation(&daemon, "DeleteUser", json!({"username": "carol"})).await;
    assert_eq!(deleted["code"], 200, "{deleted}");
    let userdata = read_userdata(&daemon);
    assert!(
        !userdata["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "carol")
    );
    assert_unknown_keys_kept(&userdata);
    let gone = users_mutation(&daemon, "DeleteUser", json!({"username": "carol"})).await;
    assert_eq!(gone["code"], 404, "{gone}");

    // No identity provider: no reset links, said clearly.
    let link = users_mutation(
        &daemon,
        "GeneratePasswordResetLink",
        json!({"username": "bob"}),
    )
    .await;
    assert_eq!(link["success"], false, "{link}");
    assert!(link["passwordResetLink"].is_null());
    assert!(
        link["message"]
            .as_str()
            .unwrap()
            .contains("identity provider")
    );

    // The primary user's password is the top-level one.
    let updated = users_mutation(
        &daemon,
        "UpdateUser",
        json!({"user": {"username": "owner", "password": "owner-pass-2"}}),
    )
    .await;
    assert_eq!(updated["code"], 200, "{updated}");
    assert_eq!(updated["user"]["userType"], "PRIMARY");
    let userdata = read_userdata(&daemon);
    let hash = userdata["hashedPassword"].as_str().unwrap();
    assert!(
        hash.starts_with("$6$") && hash != PRIMARY_HASH,
        "{userdata}"
    );
    assert_eq!(userdata["aKeyFromTheFuture"], json!({"keep": true}));
    assert_eq!(userdata["users"][0]["hashedPassword"], "$6$x$y");
}

#[tokio::test]
async fn bad_usernames_and_ssh_keys_get_400_and_change_nothing() {
    let (daemon, _dir) =
        json_daemon("root:x:0:0::/root:/bin/sh\nmysvc:x:990:990::/var/empty:/bin/false\n").await;
    let keys = tempfile::tempdir().unwrap();
    let long = "a".repeat(33);
    for username in [
        "", "Alice", "1bob", "-bob", "bo b", "bob$", "bo/b", "боб", "root", "nobody", &long,
        "mysvc",
    ] {
        let before = userdata_bytes(&daemon);
        let r = users_mutation(
            &daemon,
            "CreateUser",
            json!({"user": {"username": username, "password": "pw-123456"}}),
        )
        .await;
        assert_eq!(r["code"], 400, "{username:?}: {r}");
        assert_eq!(r["success"], false);
        assert!(r["user"].is_null());
        assert_eq!(userdata_bytes(&daemon), before, "{username:?}");
    }
    // A new user without a password (JSON has no reset links).
    let r = users_mutation(&daemon, "CreateUser", json!({"user": {"username": "dave"}})).await;
    assert_eq!(r["code"], 400, "{r}");

    let rsa_1024 = generate_key("rsa", Some(1024), keys.path());
    let good = generate_key("ed25519", None, keys.path());
    let (kind, blob) = good.split_once(' ').unwrap();
    let blob = blob.split(' ').next().unwrap();
    let bad_keys = [
        String::new(),
        "not a key".to_owned(),
        format!("{kind} {}", &blob[..blob.len() - 8]),
        format!("{kind} {blob}!!"),
        format!("ssh-rsa {blob}"),
        format!("{good}\n{good}"),
        rsa_1024,
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP".to_owned(),
    ];
    for user in ["root", "owner", "bob"] {
        for key in &bad_keys {
            let before = userdata_bytes(&daemon);
            let r = users_mutation(
                &daemon,
                "AddSshKey",
                json!({"sshInput": {"username": user, "sshKey": key}}),
            )
            .await;
            assert_eq!(r["code"], 400, "{user} {key:?}: {r}");
            assert_eq!(userdata_bytes(&daemon), before, "{user} {key:?}");
        }
    }
    // Keys of users that do not exist: 404, nothing written.
    let before = userdata_bytes(&daemon);
    let r = users_mutation(
        &daemon,
        "AddSshKey",
        json!({"sshInput": {"username": "ghost", "sshKey": good}}),
    )
    .await;
    assert_eq!(r["code"], 404, "{r}");
    assert_eq!(userdata_bytes(&daemon), before);
}

/// In the testbed: a new user is written and a rebuild (the nixos-rebuild
/// stand-in) applies it.
#[tokio::test]
async fn creating_a_user_rebuilds_the_system() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: json_userdata(),
        volumes: vec![],
        config: "rebuild_debounce_ms = 200\n",
    });
    let client = testbed.start_daemon().await;
    let created = users_mutation(
        &client,
        "CreateUser",
        json!({"user": {"username": "erin", "password": "pw-erin-1"}}),
    )
    .await;
    assert_eq!(created["code"], 201, "{created}");
    let job = last_rebuild_done(&client).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let userdata: Value =
        serde_json::from_slice(&std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap())
            .unwrap();
    assert!(
        userdata["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "erin"),
        "{userdata}"
    );
    assert_unknown_keys_kept(&userdata);
}

/// TEST SCAFFOLDING: scripts/testbed/kanidm-standin on a free port, with
/// `owner` (sp.admins) and `bob`; stopped by its pid on drop.
struct KanidmStandIn {
    child: std::process::Child,
    port: u16,
    token_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl KanidmStandIn {
    fn start() -> KanidmStandIn {
        KanidmStandIn::start_with(&[])
    }

    /// With extra arguments (`--tls-cert`, `--tls-key`).
    fn start_with(extra: &[&str]) -> KanidmStandIn {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "admin-token-1\n").unwrap();
        let seed = dir.path().join("seed.json");
        std::fs::write(
            &seed,
            json!({"persons": {"owner": {"displayname": "Owner"}, "bob": {"displayname": "Bob"}},
                   "groups": {"sp.admins": ["owner"], "sp.full_users": ["owner", "bob"]}})
            .to_string(),
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed/kanidm-standin");
        let port = free_port();
        let child = Command::new(script)
            .args(["--port", &port.to_string(), "--token-file"])
            .arg(&token_file)
            .arg("--seed")
            .arg(&seed)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let standin = KanidmStandIn {
            child,
            port,
            token_file,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the Kanidm stand-in did not listen within 15 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        standin
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KanidmStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn the_apps_user_operations_on_kanidm() {
    let mut kanidm = KanidmStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    // The daemon's copy of the token; the stand-in's file says which is
    // valid, so changing that one expires this one.
    let token_file = dir.path().join("kanidm-token");
    std::fs::write(&token_file, "admin-token-1\n").unwrap();
    let daemon = Daemon::start_with_config(&format!(
        "rebuild_debounce_ms = 600000\npasswd_file = \"{}\"\nusers_backend = \"kanidm\"\n\
         kanidm_url = \"http://127.0.0.1:{}\"\nkanidm_token_file = \"{}\"\n",
        dir.path().join("passwd").display(),
        kanidm.port,
        token_file.display()
    ))
    .await;
    let mut userdata = json_userdata();
    userdata["users"] = json!([]);
    std::fs::write(
        daemon.state_dir.path().join("userdata.json"),
        serde_json::to_string_pretty(&userdata).unwrap(),
    )
    .unwrap();

    let r = daemon.query(&operation("AllUsers"), json!({})).await;
    assert_no_errors(&r);
    let all = r["data"]["users"]["allUsers"].as_array().unwrap();
    all.iter().for_each(assert_user_fields);
    let kinds: Vec<_> = all
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap(),
                u["userType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [("owner", "PRIMARY"), ("bob", "NORMAL")]);
    assert_eq!(all[0]["displayName"], "Owner");
    assert!(
        all[0]["memberof"]
            .as_array()
            .unwrap()
            .contains(&json!("sp.admins"))
    );
    assert_eq!(r["data"]["users"]["rootUser"]["userType"], "ROOT");

    let r = daemon.query(&operation("AllGroups"), json!({})).await;
    assert_no_errors(&r);
    let groups: Vec<_> = r["data"]["groups"]["allGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        groups.contains(&"sp.admins".to_owned()) && groups.contains(&"sp.full_users".to_owned())
    );

    let created = users_mutation(
        &daemon,
        "CreateUser",
        json!({"user": {"username": "carol", "displayName": "Carol C", "directmemberof": [],
                        "password": "not set in Kanidm"}}),
    )
    .await;
    assert_eq!(created["code"], 201, "{created}");
    // Kanidm's passwords are set by the person: the answer says so.
    assert!(
        created["message"]
            .as_str()
            .unwrap()
            .contains("the password was not set"),
        "{created}"
    );
    assert_user_fields(&created["user"]);
    assert_eq!(created["user"]["displayName"], "Carol C");
    assert_eq!(created["user"]["userType"], "NORMAL");
    assert!(
        created["user"]["memberof"]
            .as_array()
            .unwrap()
            .contains(&json!("sp.full_users"))
    );
    let again = users_mutation(
        &daemon,
        "CreateUser",
        json!({"user": {"username": "carol"}}),
    )
    .await;
    assert_eq!(again["code"], 409, "{again}");

    // A group that does not exist: refused, and no half-made user left.
    let refused = users_mutation(
        &daemon,
        "CreateUser",
        json!({"user": {"username": "frank", "directmemberof": ["no.such.group"]}}),
    )
    .await;
    assert_eq!(refused["code"], 404, "{refused}");
    let r = daemon
        .query(&operation("GetUser"), json!({"username": "frank"}))
        .await;
    assert!(r["data"]["users"]["getUser"].is_null(), "{r}");

    let updated = users_mutation(
        &daemon,
        "UpdateUser",
        json!({"user": {"username": "carol", "displayName": "Carol D",
                        "directmemberof": ["sp.full_users", "idm_admins"]}}),
    )
    .await;
    assert_eq!(updated["code"], 200, "{updated}");
    assert_eq!(updated["user"]["displayName"], "Carol D");
    assert!(
        updated["user"]["directmemberof"]
            .as_array()
            .unwrap()
            .contains(&json!("idm_admins"))
    );

    // SSH keys stay in userdata.
    let keys = tempfile::tempdir().unwrap();
    let key = generate_key("ed25519", None, keys.path());
    let added = users_mutation(
        &daemon,
        "AddSshKey",
        json!({"sshInput": {"username": "carol", "sshKey": key}}),
    )
    .await;
    assert_eq!(added["code"], 201, "{added}");
    let written = read_userdata(&daemon);
    assert_eq!(
        written["users"],
        json!([{"username": "carol", "sshKeys": [key]}])
    );
    assert_eq!(written["aKeyFromTheFuture"], json!({"keep": true}));

    let link = users_mutation(
        &daemon,
        "GeneratePasswordResetLink",
        json!({"username": "carol"}),
    )
    .await;
    assert_eq!(link["code"], 200, "{link}");
    let url = link["passwordResetLink"].as_str().unwrap();
    assert!(
        url.starts_with("https://auth.example.org/ui/reset?token="),
        "{url}"
    );
    assert!(url.len() > "https://auth.example.org/ui/reset?token=".len());

    for user in ["owner", "root"] {
        let refused = users_mutation(&daemon, "DeleteUser", json!({"username": user})).await;
        assert_eq!(refused["code"], 400, "{user}: {refused}");
    }
    let deleted = users_mutation(&daemon, "DeleteUser", json!({"username": "carol"})).await;
    assert_eq!(deleted["code"], 200, "{deleted}");
    let r = daemon
        .query(&operation("GetUser"), json!({"username": "carol"}))
        .await;
    assert!(r["data"]["users"]["getUser"].is_null(), "{r}");
    assert_eq!(read_userdata(&daemon)["users"], json!([]));

    // An expired token: a clear error, nothing created.
    std::fs::write(&kanidm.token_file, "admin-token-2\n").unwrap();
    let r = daemon.query(&operation("AllUsers"), json!({})).await;
    let message = r["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("refused the admin token"), "{r}");
    let refused = users_mutation(&daemon, "CreateUser", json!({"user": {"username": "dan"}})).await;
    assert_eq!(refused["success"], false, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("expired"),
        "{refused}"
    );

    // Kanidm down: said so.
    kanidm.stop();
    let r = daemon.query(&operation("AllUsers"), json!({})).await;
    let message = r["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unreachable"), "{r}");
    let r = daemon
        .query(&operation("GetUser"), json!({"username": "bob"}))
        .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{r}"
    );
}

/// One check over the mail auth socket, as the mail server's PAM helper
/// makes it.
fn check_mail_login(socket: &Path, username: &str, password: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let line = json!({"username": username, "password": password}).to_string();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    answer.trim().to_owned()
}

#[tokio::test]
async fn email_passwords_are_checked_over_a_group_only_socket_with_a_rate_limit() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    // Others may traverse the directory: only the socket's mode decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // In a directory the daemon makes: the group must get through it.
    let socket = dir.path().join("mail").join("mail-auth.sock");
    let daemon = Daemon::start_with_config(&format!(
        "rebuild_debounce_ms = 600000\nmail_auth_socket = \"{}\"\nmail_auth_group = \"nogroup\"\n",
        socket.display()
    ))
    .await;
    std::fs::write(
        daemon.state_dir.path().join("userdata.json"),
        serde_json::to_string_pretty(&json_userdata()).unwrap(),
    )
    .unwrap();

    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.gid(), gid_of("nogroup"));
    let parent = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!(parent.mode() & 0o7777, 0o750);
    assert_eq!(parent.gid(), gid_of("nogroup"));
    // The mail server's group may connect; anyone else may not.
    assert!(can_connect_as(&socket, 65534, gid_of("nogroup")));
    assert!(!can_connect_as(&socket, 65534, 4242));

    let (ok, password, err) = cli(
        daemon.state_dir.path(),
        &["email-password", "new", "--user", "bob", "--name", "phone"],
        None,
    );
    assert!(ok, "{err}");
    let password = password.trim().to_owned();
    assert!(password.len() >= 20);

    assert_eq!(check_mail_login(&socket, "bob", &password), "OK");
    assert_eq!(check_mail_login(&socket, "owner", &password), "DENIED");
    assert_eq!(check_mail_login(&socket, "bob", "wrong"), "DENIED");

    // The app sees the metadata, with the last use.
    let r = daemon
        .query(&operation("GetUser"), json!({"username": "bob"}))
        .await;
    assert_no_errors(&r);
    let list = r["data"]["users"]["getUser"]["emailPasswordMetadata"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 1, "{r}");
    assert_eq!(list[0]["displayName"], "phone");
    assert!(
        list[0]["createdAt"].is_string() && list[0]["lastUsed"].is_string(),
        "{r}"
    );
    let uuid = list[0]["uuid"].as_str().unwrap().to_owned();
    let state = std::fs::read(daemon.state_dir.path().join("state.db")).unwrap();
    assert!(
        !state
            .windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the password is stored in clear"
    );

    // Four more failures make five in a minute: the right password is then
    // refused without being checked.
    for _ in 0..4 {
        assert_eq!(check_mail_login(&socket, "bob", "wrong"), "DENIED");
    }
    assert_eq!(check_mail_login(&socket, "bob", &password), "RATE_LIMITED");
    assert_eq!(check_mail_login(&socket, "bob-unknown", "x"), "DENIED");
    assert_eq!(
        {
            use std::io::{BufRead, BufReader, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            s.write_all(b"not json\n").unwrap();
            let mut answer = String::new();
            BufReader::new(s).read_line(&mut answer).unwrap();
            answer
        },
        "BAD_REQUEST\n"
    );

    let r = daemon
        .query(
            &operation("DeleteEmailPassword"),
            json!({"username": "bob", "uuid": uuid}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(
        r["data"]["emailPasswordMetadataMutations"]["deleteEmailPassword"]["code"], 200,
        "{r}"
    );
    let r = daemon
        .query(
            &operation("DeleteEmailPassword"),
            json!({"username": "bob", "uuid": uuid}),
        )
        .await;
    assert_eq!(
        r["data"]["emailPasswordMetadataMutations"]["deleteEmailPassword"]["code"], 404,
        "{r}"
    );
}

/// Kanidm serves HTTPS only, with a certificate for its public name: on a
/// loopback URL the daemon connects without checking it.
#[tokio::test]
async fn kanidm_over_https_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=auth.example.org",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kanidm = KanidmStandIn::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let daemon = Daemon::start_with_config(&format!(
        "users_backend = \"kanidm\"\nkanidm_url = \"https://127.0.0.1:{}\"\n\
         kanidm_token_file = \"{}\"\n",
        kanidm.port,
        kanidm.token_file.display()
    ))
    .await;
    let r = daemon.query(&operation("AllUsers"), json!({})).await;
    assert_no_errors(&r);
    assert_eq!(
        r["data"]["users"]["allUsers"][0]["username"], "owner",
        "{r}"
    );
}
