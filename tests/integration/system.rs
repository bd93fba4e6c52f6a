//! The system screens of the app (server_settings.graphql and the system
//! parts of server_api.graphql) against the daemon in a testbed with the
//! rebuild stand-in: settings and their changes, DNS records, versions,
//! provider, busy and status; every refused change leaves userdata as it
//! was; the DNS token lands in a 0600 secrets file only; a git pull of the
//! configuration; garbage collection of the testbed's own Nix store.

use crate::app_operations::operation;
use crate::catalogue::last_rebuild_done;
use crate::services::wait_job_done;
use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const USERDATA: &str = "/etc/nixos/userdata.json";
const SECRETS: &str = "/etc/selfprivacy/secrets.json";
const DKIM_FILE: &str = "/var/dkim/example.org.selector.txt";
const DNS_TOKEN: &str = "cf-token-4b1d0e2a9f7c";

/// The key file as opendkim-genkey writes it.
const DKIM_KEY_FILE: &str = "selector._domainkey\tIN\tTXT\t( \"v=DKIM1; k=rsa; \"\n\t  \"p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAv3\"\n\t  \"Xq9IDAQAB\" )  ; ----- DKIM key selector for example.org\n";

const CONFIG: &str = r#"
public_ipv4 = "203.0.113.7"
public_ipv6 = "2001:db8::7"
nixos_version_file = "/nix/var/nix/profiles/system/nixos-version"
nix_collect_garbage_command = "/usr/bin/nix-collect-garbage"
rebuild_debounce_ms = 200
"#;

fn setup() -> Setup<'static> {
    Setup {
        modules: vec![
            ("echo", module("echo", &["echo.service"], json!({}))),
            (
                "web",
                module(
                    "web",
                    &["web.service"],
                    json!({"primarySubdomain": "subdomain"}),
                ),
            ),
            ("idle", module("idle", &["idle.service"], json!({}))),
        ],
        userdata: json!({
            "domain": "example.org", "hostname": "sp-test", "timezone": "Etc/UTC",
            "useBinds": true,
            "server": {"provider": "HETZNER"},
            "dns": {"provider": "DESEC"},
            "ssh": {"enable": true, "rootKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2aQ root@laptop"]},
            "modules": {"echo": {"enable": true}, "web": {"enable": true, "subdomain": "www"},
                        "idle": {"enable": false}},
            "unknownKey": {"kept": [1, 2, 3]}
        }),
        volumes: vec![],
        config: CONFIG,
    }
}

fn read_userdata(testbed: &Testbed) -> Value {
    serde_json::from_slice(&std::fs::read(testbed.path(USERDATA)).unwrap()).unwrap()
}

/// The app's operation `name` under `system`, as the app sends it.
async fn app_system(client: &Client, name: &str, variables: Value) -> Value {
    let r = client.query(&operation(name), variables).await;
    assert_no_errors(&r);
    r["data"]["system"].clone()
}

async fn rebuild_jobs(client: &Client) -> usize {
    let r = client
        .query("{ jobs { getJobs { typeId } } }", json!({}))
        .await;
    r["data"]["jobs"]["getJobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["typeId"] == "system.nixos.rebuild")
        .count()
}

fn record<'a>(records: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["recordType"] == kind && r["name"] == name)
}

#[tokio::test]
async fn the_apps_system_screens_show_real_settings_records_and_versions() {
    let testbed = Testbed::up(setup());
    std::fs::create_dir_all(testbed.path("/var/dkim")).unwrap();
    std::fs::write(testbed.path(DKIM_FILE), DKIM_KEY_FILE).unwrap();
    let client = testbed.start_daemon().await;

    let settings = app_system(&client, "SystemSettings", json!({})).await;
    assert_eq!(
        settings["settings"],
        json!({"__typename": "SystemSettings",
               "autoUpgrade": {"__typename": "AutoUpgradeOptions", "allowReboot": false, "enable": true},
               "ssh": {"__typename": "SshSettings", "enable": true},
               "timezone": "Etc/UTC"})
    );
    let binds = app_system(&client, "SystemIsUsingBinds", json!({})).await;
    assert_eq!(binds["info"]["usingBinds"], true);
    let provider = app_system(&client, "SystemServerProvider", json!({})).await;
    assert_eq!(provider["provider"]["provider"], "HETZNER");
    let dns_provider = app_system(&client, "SystemDnsProvider", json!({})).await;
    assert_eq!(dns_provider["domainInfo"]["provider"], "DESEC");

    let info = app_system(&client, "GetDnsRecords", json!({})).await["domainInfo"].clone();
    assert_eq!(info["domain"], "example.org");
    assert_eq!(info["hostname"], "sp-test");
    let records = info["requiredDnsRecords"].as_array().unwrap();
    for (kind, name, content) in [
        ("A", "example.org", "203.0.113.7"),
        ("AAAA", "example.org", "2001:db8::7"),
        ("A", "api", "203.0.113.7"),
        ("A", "www", "203.0.113.7"),
        ("AAAA", "www", "2001:db8::7"),
        ("A", "echo", "203.0.113.7"),
        ("MX", "example.org", "example.org"),
        ("TXT", "_dmarc", "v=DMARC1; p=none"),
        (
            "TXT",
            "selector._domainkey",
            "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAv3Xq9IDAQAB",
        ),
        ("CAA", "example.org", "0 issue \"letsencrypt.org\""),
    ] {
        let found = record(records, kind, name)
            .unwrap_or_else(|| panic!("no {kind} record for {name}: {records:?}"));
        assert_eq!(found["content"], content, "{found}");
        assert!(found["ttl"].as_i64().unwrap() > 0, "{found}");
        assert!(
            !found["displayName"].as_str().unwrap().is_empty(),
            "{found}"
        );
    }
    assert_eq!(
        record(records, "MX", "example.org").unwrap()["priority"],
        10
    );
    let spf = records
        .iter()
        .find(|r| r["recordType"] == "TXT" && r["content"].as_str().unwrap().starts_with("v=spf1"))
        .expect("an SPF record");
    assert_eq!(
        spf["content"],
        "v=spf1 a mx ip4:203.0.113.7 ip6:2001:db8::7 -all"
    );
    assert!(
        record(records, "A", "idle").is_none(),
        "a disabled service got a record"
    );

    let r = client
        .query(
            "{ system { info { systemVersion pythonVersion } busy workingDirectory
                        status { severity title message }
                        provider { id } settings { ssh { rootSshKeys passwordAuthentication } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let system = &r["data"]["system"];
    // No generation yet: the os-release name of the testbed's system.
    assert_eq!(
        system["info"]["systemVersion"],
        "Debian GNU/Linux 12 (bookworm)"
    );
    let build = system["info"]["pythonVersion"].as_str().unwrap();
    assert!(
        build.starts_with("selfprivacy-api 0.1.0 (rustc 1."),
        "{build}"
    );
    assert_eq!(system["busy"], false);
    assert_eq!(system["provider"]["id"], "UNKNOWN");
    assert_eq!(
        system["settings"]["ssh"]["rootSshKeys"],
        json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2aQ root@laptop"])
    );
    let state = String::from_utf8_lossy(&testbed.exec(&["systemctl", "is-system-running"]).stdout)
        .trim()
        .to_owned();
    let expected = if state == "running" {
        "INFO"
    } else {
        "WARNING"
    };
    assert_eq!(
        system["status"]["severity"], expected,
        "systemd says {state}: {system}"
    );

    // The three setting changes, each as the app sends it.
    let r = app_system(
        &client,
        "ChangeTimezone",
        json!({"timezone": "Europe/Berlin"}),
    )
    .await;
    assert_eq!(r["changeTimezone"]["code"], 200, "{r}");
    assert_eq!(r["changeTimezone"]["timezone"], "Europe/Berlin");
    let r = app_system(
        &client,
        "ChangeAutoUpgradeSettings",
        json!({"settings": {"enableAutoUpgrade": false, "allowReboot": true}}),
    )
    .await;
    assert_eq!(r["changeAutoUpgradeSettings"]["code"], 200, "{r}");
    assert_eq!(r["changeAutoUpgradeSettings"]["enableAutoUpgrade"], false);
    assert_eq!(r["changeAutoUpgradeSettings"]["allowReboot"], true);
    let r = app_system(
        &client,
        "ChangeSshSettings",
        json!({"settings": {"enable": false}}),
    )
    .await;
    assert_eq!(r["changeSshSettings"]["code"], 200, "{r}");
    assert_eq!(r["changeSshSettings"]["enable"], false);
    let job = last_rebuild_done(&client).await;
    assert_eq!(job["status"], "FINISHED", "{job}");

    let userdata = read_userdata(&testbed);
    assert_eq!(userdata["timezone"], "Europe/Berlin");
    assert_eq!(
        userdata["autoUpgrade"],
        json!({"enable": false, "allowReboot": true})
    );
    assert_eq!(userdata["ssh"]["enable"], false);
    assert_eq!(userdata["ssh"]["rootKeys"].as_array().unwrap().len(), 1);
    assert_eq!(userdata["unknownKey"], json!({"kept": [1, 2, 3]}));
    let settings = app_system(&client, "SystemSettings", json!({})).await;
    assert_eq!(settings["settings"]["timezone"], "Europe/Berlin");
    assert_eq!(settings["settings"]["autoUpgrade"]["enable"], false);
    assert_eq!(settings["settings"]["ssh"]["enable"], false);
    // The rebuild made a generation: its NixOS version is the system's.
    let r = client
        .query("{ system { info { systemVersion } } }", json!({}))
        .await;
    let version = r["data"]["system"]["info"]["systemVersion"]
        .as_str()
        .unwrap();
    assert!(version.starts_with("NixOS 24.05"), "{r}");

    // Busy while a rebuild runs, not after.
    std::fs::write(testbed.path("/etc/nixos/.standin-delay"), "4").unwrap();
    let r = client
        .query(
            "mutation { system { runSystemRebuild { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["system"]["runSystemRebuild"]["code"], 200, "{r}");
    let r = client.query("{ system { busy } }", json!({})).await;
    assert_eq!(r["data"]["system"]["busy"], true, "{r}");
    last_rebuild_done(&client).await;
    std::fs::remove_file(testbed.path("/etc/nixos/.standin-delay")).unwrap();
    let r = client.query("{ system { busy } }", json!({})).await;
    assert_eq!(r["data"]["system"]["busy"], false, "{r}");

    // A failed unit degrades the system: the status says so.
    let _ = testbed.exec(&[
        "systemd-run",
        "--unit=sp-broken",
        "--property=Type=oneshot",
        "/usr/bin/false",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while testbed.unit_state("sp-broken") != "failed" {
        assert!(Instant::now() < deadline, "sp-broken did not fail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .query("{ system { status { severity message } } }", json!({}))
        .await;
    let status = &r["data"]["system"]["status"];
    assert_eq!(status["severity"], "WARNING", "{r}");
    assert!(
        status["message"].as_str().unwrap().contains("degraded"),
        "{r}"
    );
}

#[tokio::test]
async fn bad_settings_get_400_and_change_nothing_and_the_dns_token_stays_secret() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    let before = std::fs::read(testbed.path(USERDATA)).unwrap();
    let jobs_before = rebuild_jobs(&client).await;

    for timezone in [
        "Mars/Olympus_Mons",
        "",
        "Europe",
        "../../../etc/passwd",
        "/usr/share/zoneinfo/Europe/Berlin",
        "Europe/Berlin\n",
        "Europe/Berlin ",
        "zone.tab",
        "Europe//Berlin",
    ] {
        let r = app_system(&client, "ChangeTimezone", json!({"timezone": timezone})).await;
        let r = &r["changeTimezone"];
        assert_eq!(r["code"], 400, "{timezone:?}: {r}");
        assert_eq!(r["success"], false, "{timezone:?}: {r}");
        assert!(r["timezone"].is_null(), "{r}");
    }
    let r = app_system(
        &client,
        "ChangeSshSettings",
        json!({"settings": {"enable": true, "passwordAuthentication": true}}),
    )
    .await;
    assert_eq!(r["changeSshSettings"]["code"], 400, "{r}");
    assert_eq!(
        r["changeSshSettings"]["enable"], true,
        "the current value: {r}"
    );
    // A bad subdomain through the app's service configuration.
    for subdomain in ["bad_sub!", "-www", "a.b", ""] {
        let r = client
            .query(
                &operation("SetServiceConfiguration"),
                json!({"input": {"serviceId": "web", "configuration": {"subdomain": subdomain}}}),
            )
            .await;
        assert_no_errors(&r);
        let r = &r["data"]["services"]["setServiceConfiguration"];
        assert_eq!(r["code"], 400, "{subdomain:?}: {r}");
    }
    for (token, field) in [
        ("", "token"),
        ("two words", "token"),
        ("ok-token", "tokenId"),
    ] {
        let mut input = json!({"provider": "CLOUDFLARE", "token": token});
        if field == "tokenId" {
            input["tokenId"] = json!("line\nbreak");
        }
        let r = client
            .query(
                "mutation($input: SetDnsProviderInput!) { system { setDnsProvider(input: $input) { success code message } } }",
                json!({"input": input}),
            )
            .await;
        assert_eq!(r["data"]["system"]["setDnsProvider"]["code"], 400, "{r}");
    }
    assert!(
        !testbed.path(SECRETS).exists(),
        "a refused token was written"
    );
    assert_eq!(
        std::fs::read(testbed.path(USERDATA)).unwrap(),
        before,
        "a refused change wrote userdata"
    );
    assert_eq!(
        rebuild_jobs(&client).await,
        jobs_before,
        "a refused change started a rebuild"
    );

    // The token: in the secrets file, 0600, and nowhere else.
    let r = client
        .query(
            "mutation($input: SetDnsProviderInput!) { system { setDnsProvider(input: $input) { success code message } } }",
            json!({"input": {"provider": "CLOUDFLARE", "token": DNS_TOKEN}}),
        )
        .await;
    assert_eq!(r["data"]["system"]["setDnsProvider"]["code"], 200, "{r}");
    let secrets_path = testbed.path(SECRETS);
    let mode = std::fs::metadata(&secrets_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "secrets file mode {mode:o}");
    let secrets: Value = serde_json::from_slice(&std::fs::read(&secrets_path).unwrap()).unwrap();
    assert_eq!(secrets["dns"]["apiKey"], DNS_TOKEN);
    let job = last_rebuild_done(&client).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let userdata_text = std::fs::read_to_string(testbed.path(USERDATA)).unwrap();
    assert!(
        !userdata_text.contains(DNS_TOKEN),
        "the token is in userdata"
    );
    let userdata: Value = serde_json::from_str(&userdata_text).unwrap();
    assert_eq!(userdata["dns"]["provider"], "CLOUDFLARE");
    assert_eq!(userdata["unknownKey"], json!({"kept": [1, 2, 3]}));
    let journal = testbed.run(&["journalctl", "--no-pager", "-o", "cat"]);
    assert!(!journal.contains(DNS_TOKEN), "the token is in the journal");
    let r = app_system(&client, "SystemDnsProvider", json!({})).await;
    assert_eq!(r["domainInfo"]["provider"], "CLOUDFLARE");
}

#[tokio::test]
async fn nix_garbage_collection_reports_what_it_freed() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    // Garbage in the testbed's own store (a tmpfs; the host's is untouched):
    // 3 MiB of random bytes nothing refers to.
    testbed.run(&["sh", "-c", "head -c 3145728 /dev/urandom > /tmp/garbage"]);
    let path = testbed.run(&["nix-store", "--add", "/tmp/garbage"]);
    assert!(testbed.path(&path).exists(), "{path}");

    let r = client
        .query(&operation("NixCollectGarbage"), json!({}))
        .await;
    assert_no_errors(&r);
    let r = &r["data"]["system"]["nixCollectGarbage"];
    assert_eq!(r["code"], 200, "{r}");
    let uid = r["job"]["uid"].as_str().unwrap();
    let job = wait_job_done(&client, uid).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(
        job["result"], "1 store paths deleted, 3.00 MiB freed",
        "{job}"
    );
    assert!(!testbed.path(&path).exists(), "the garbage is still there");

    // Nothing left: nix says so, and so does the job.
    let r = client
        .query(&operation("NixCollectGarbage"), json!({}))
        .await;
    let uid = r["data"]["system"]["nixCollectGarbage"]["job"]["uid"]
        .as_str()
        .unwrap();
    let job = wait_job_done(&client, uid).await;
    assert_eq!(
        job["result"], "0 store paths deleted, 0.00 MiB freed",
        "{job}"
    );

    // With a nix-daemon (as on NixOS) the collection goes through it.
    testbed.run(&["systemd-run", "--unit=nix-daemon", "/usr/bin/nix-daemon"]);
    let socket = testbed.path("/nix/var/nix/daemon-socket/socket");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "nix-daemon made no socket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    testbed.run(&["sh", "-c", "head -c 1048576 /dev/urandom > /tmp/garbage2"]);
    let path = testbed.run(&["nix-store", "--add", "/tmp/garbage2"]);
    let r = client
        .query(&operation("NixCollectGarbage"), json!({}))
        .await;
    let uid = r["data"]["system"]["nixCollectGarbage"]["job"]["uid"]
        .as_str()
        .unwrap();
    let job = wait_job_done(&client, uid).await;
    assert_eq!(
        job["result"], "1 store paths deleted, 1.00 MiB freed",
        "{job}"
    );
    assert!(!testbed.path(&path).exists(), "the garbage is still there");
    let daemon_log = testbed.run(&["journalctl", "-u", "nix-daemon", "--no-pager", "-o", "cat"]);
    assert!(
        daemon_log.contains("accepted connection"),
        "the collection did not go through nix-daemon: {daemon_log}"
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn pull(client: &Client) -> Value {
    let r = client
        .query(&operation("PullRepositoryChanges"), json!({}))
        .await;
    assert_no_errors(&r);
    r["data"]["system"]["pullRepositoryChanges"].clone()
}

#[tokio::test]
async fn pull_repository_changes_pulls_a_git_checkout_and_refuses_anything_else() {
    // Only files in its own directories: the daemon needs no testbed.
    let daemon = Daemon::start().await;
    let nixos = daemon.state_dir.path().join("nixos");
    std::fs::create_dir_all(&nixos).unwrap();
    let r = pull(&daemon).await;
    assert_eq!(r["code"], 409, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("not a git checkout"),
        "{r}"
    );

    // A real origin, a checkout of it as the configuration, and a commit
    // pushed from elsewhere.
    let work = tempfile::tempdir().unwrap();
    let origin = work.path().join("origin.git");
    let author = work.path().join("author");
    git(
        work.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            origin.to_str().unwrap(),
        ],
    );
    git(
        work.path(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            author.to_str().unwrap(),
        ],
    );
    std::fs::write(author.join("flake.nix"), "{ outputs = { ... }: { }; }\n").unwrap();
    git(&author, &["add", "flake.nix"]);
    git(&author, &["commit", "-q", "-m", "first"]);
    git(&author, &["push", "-q", "origin", "HEAD:main"]);
    std::fs::remove_dir(&nixos).unwrap();
    git(
        work.path(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            nixos.to_str().unwrap(),
        ],
    );
    std::fs::write(
        author.join("flake.nix"),
        "{ outputs = { self, ... }: { }; }\n",
    )
    .unwrap();
    git(&author, &["commit", "-q", "-am", "second"]);
    git(&author, &["push", "-q", "origin", "HEAD:main"]);

    let r = pull(&daemon).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(
        std::fs::read_to_string(nixos.join("flake.nix")).unwrap(),
        "{ outputs = { self, ... }: { }; }\n"
    );
    assert_eq!(git(&nixos, &["log", "-1", "--format=%s"]), "second");

    // A local commit the origin does not have: no fast-forward, git's
    // reason in the message, the checkout as it was.
    std::fs::write(nixos.join("local.nix"), "{ }\n").unwrap();
    git(&nixos, &["add", "local.nix"]);
    git(&nixos, &["commit", "-q", "-m", "local"]);
    std::fs::write(author.join("flake.nix"), "{ outputs = _: { }; }\n").unwrap();
    git(&author, &["commit", "-q", "-am", "third"]);
    git(&author, &["push", "-q", "origin", "HEAD:main"]);
    let head = git(&nixos, &["rev-parse", "HEAD"]);
    let r = pull(&daemon).await;
    assert_eq!(r["code"], 500, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("git pull failed"),
        "{r}"
    );
    assert_eq!(git(&nixos, &["rev-parse", "HEAD"]), head);
}
