//! The catalogue's configuration side in the testbed, driven by the app's
//! own operations (services.graphql): settings, enabling and disabling
//! through rebuild jobs, installs into a hand-edited flake.nix, and a
//! failed rebuild leaving the configuration as the running system has it.

use crate::app_operations::operation;
use crate::services::SIGNAL_SLACK;
use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A web-like module with every kind of setting, a required one and a
/// plain one (hand-written test fixtures).
fn notes_module() -> String {
    let mut definition: Value = serde_json::from_str(&module(
        "notes",
        &["notes.service"],
        json!({
            "primarySubdomain": "subdomain", "folders": ["/var/lib/notes"], "isMovable": true
        }),
    ))
    .unwrap();
    let options = definition["options"].as_object_mut().unwrap();
    options.insert(
        "location".into(),
        json!({"name": "location", "default": null, "meta": {"type": "location"}}),
    );
    options.insert(
        "theme".into(),
        json!({"name": "theme", "default": "light", "description": "Theme",
        "meta": {"type": "enum", "options": ["light", "dark"], "weight": 5}}),
    );
    options.insert(
        "debug".into(),
        json!({"name": "debug", "default": false, "description": "Debug logging",
        "meta": {"type": "bool", "weight": 6}}),
    );
    options.insert(
        "maxUploadMb".into(),
        json!({"name": "maxUploadMb", "default": 10, "description": "Largest upload, MB",
        "meta": {"type": "int", "minValue": 1, "maxValue": 1024, "weight": 2}}),
    );
    options.insert(
        "motd".into(),
        json!({"name": "motd", "default": "", "description": "Message of the day",
        "meta": {"type": "string", "allowEmpty": true, "weight": 7}}),
    );
    definition.to_string()
}

const HAND_WRITTEN_FLAKE: &str = r#"# My server's flake. I edited this by hand; keep my comments!
{
  description = "SelfPrivacy NixOS configuration local flake";

  inputs = {
    selfprivacy-nixos-config.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes";
    # my own input, pinned:
    extras = { url = "path:/etc/nixos/extras"; flake = false; };
    sp-module-echo.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/echo";
    sp-module-core.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/core";
  };

  outputs = { self, selfprivacy-nixos-config, ... }@inputs: {
    # note: braces } in comments and "strings {" must not confuse anyone
    nixosConfigurations = { };
  };
}
"#;

fn setup() -> Setup<'static> {
    Setup {
        modules: vec![
            ("echo", module("echo", &["echo.service"], json!({}))),
            ("notes", notes_module()),
            (
                "core",
                module("core", &["core.service"], json!({"isRequired": true})),
            ),
        ],
        userdata: json!({
            "domain": "example.org", "useBinds": true, "timezone": "Etc/UTC",
            "modules": {"echo": {"enable": true}, "core": {"enable": true}, "notes": {"enable": false, "location": "sdb"}},
            "ssh": {"enable": true, "rootKeys": ["ssh-ed25519 AAAA kept@example"]}
        }),
        volumes: vec!["sdb:64"],
        config: "rebuild_debounce_ms = 300\npublic_ipv4 = \"203.0.113.10\"\npublic_ipv6 = \"2001:db8::10\"\n",
    }
}

async fn all_services(client: &Client) -> Vec<Value> {
    let r = client.query(&operation("AllServices"), json!({})).await;
    assert_no_errors(&r);
    r["data"]["services"]["allServices"]
        .as_array()
        .unwrap()
        .clone()
}

fn find<'a>(services: &'a [Value], id: &str) -> &'a Value {
    services.iter().find(|s| s["id"] == id).unwrap()
}

pub async fn mutate(client: &Client, name: &str, variables: Value) -> Value {
    let r = client.query(&operation(name), variables).await;
    assert_no_errors(&r);
    let services = r["data"]["services"].as_object().unwrap();
    services
        .iter()
        .find(|(k, _)| *k != "__typename")
        .unwrap()
        .1
        .clone()
}

pub async fn last_rebuild_done(client: &Client) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .query(
                "{ jobs { getJobs { uid typeId status error statusText } } }",
                json!({}),
            )
            .await;
        let jobs = r["data"]["jobs"]["getJobs"].as_array().unwrap().clone();
        let rebuilds: Vec<&Value> = jobs
            .iter()
            .filter(|j| j["typeId"] == "system.nixos.rebuild")
            .collect();
        if let Some(last) = rebuilds.last()
            && rebuilds
                .iter()
                .all(|j| j["status"] == "FINISHED" || j["status"] == "ERROR")
        {
            return (*last).clone();
        }
        assert!(Instant::now() < deadline, "rebuild did not end: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_rebuilt(client: &Client) {
    let job = last_rebuild_done(client).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
}

#[tokio::test]
async fn the_apps_services_operations_configure_enable_and_disable_for_real() {
    let testbed = Testbed::up(setup());
    std::fs::write(testbed.path("/etc/nixos/flake.nix"), HAND_WRITTEN_FLAKE).unwrap();
    let client = testbed.start_daemon().await;
    client
        .query(
            "mutation { system { runSystemRebuild { code } } }",
            json!({}),
        )
        .await;
    last_rebuild_done(&client).await;

    // AllServices, exactly as the app sends it.
    let services = all_services(&client).await;
    let notes = find(&services, "notes");
    assert_eq!(notes["isInstalled"], false);
    assert_eq!(notes["isEnabled"], false);
    assert_eq!(notes["status"], "OFF");
    assert_eq!(notes["url"], "https://notes.example.org");
    let dns = &notes["dnsRecords"];
    assert_eq!(
        (
            dns[0]["recordType"].clone(),
            dns[0]["name"].clone(),
            dns[0]["content"].clone(),
            dns[0]["ttl"].clone()
        ),
        (
            json!("A"),
            json!("notes"),
            json!("203.0.113.10"),
            json!(3600)
        ),
        "{dns}"
    );
    assert_eq!(dns[0]["displayName"], "notes (test)");
    assert_eq!(dns[1]["recordType"], "AAAA");
    assert_eq!(dns[1]["content"], "2001:db8::10");
    let items = notes["configuration"].as_array().unwrap();
    let ids: Vec<_> = items
        .iter()
        .map(|i| i["fieldId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["subdomain", "maxUploadMb", "theme", "debug", "motd"],
        "by weight"
    );
    assert_eq!(items[0]["__typename"], "StringConfigItem");
    assert_eq!(
        items[1]["__typename"], "StringConfigItem",
        "ints reach the app as strings"
    );
    assert_eq!(items[1]["stringValue"], "10");
    assert_eq!(items[1]["regex"], "^[0-9]+$");
    assert_eq!(items[2]["__typename"], "EnumConfigItem");
    assert_eq!(items[2]["options"], json!(["light", "dark"]));
    assert_eq!(items[3]["__typename"], "BoolConfigItem");
    assert_eq!(items[3]["boolValue"], false);
    let echo = find(&services, "echo");
    assert_eq!(
        (echo["isInstalled"].clone(), echo["status"].clone()),
        (json!(true), json!("ACTIVE"))
    );
    assert_eq!(echo["storageUsage"]["usedSpace"], "0");
    assert!(echo["storageUsage"]["volume"]["name"].is_string());

    // Bad values: 400, and userdata.json is untouched, byte for byte.
    let userdata_before = std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap();
    for bad in [
        json!({"subdomain": "echo"}),
        json!({"subdomain": "bad name"}),
        json!({"maxUploadMb": "5000"}),
        json!({"maxUploadMb": "ten"}),
        json!({"theme": "neon"}),
        json!({"debug": "yes"}),
        json!({"unknownOption": 1}),
        json!({"theme": "dark", "maxUploadMb": "0"}),
        json!("not an object"),
    ] {
        let result = mutate(
            &client,
            "SetServiceConfiguration",
            json!({"input": {"serviceId": "notes", "configuration": bad}}),
        )
        .await;
        assert_eq!(result["code"], 400, "{bad}: {result}");
        assert_eq!(result["success"], false);
    }
    let missing = mutate(
        &client,
        "SetServiceConfiguration",
        json!({"input": {"serviceId": "nope", "configuration": {}}}),
    )
    .await;
    assert_eq!(missing["code"], 404);
    assert_eq!(
        std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap(),
        userdata_before
    );

    // A good change is written (keeping every other key) and rebuilt.
    let ok = mutate(&client, "SetServiceConfiguration", json!({"input": {"serviceId": "notes",
        "configuration": {"subdomain": "memo", "maxUploadMb": "512", "theme": "dark", "debug": true}}})).await;
    assert_eq!(ok["code"], 200, "{ok}");
    let userdata: Value =
        serde_json::from_slice(&std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap())
            .unwrap();
    assert_eq!(
        userdata["modules"]["notes"],
        json!({"enable": false, "location": "sdb", "subdomain": "memo", "maxUploadMb": 512, "theme": "dark", "debug": true})
    );
    assert_eq!(
        userdata["ssh"]["rootKeys"][0],
        "ssh-ed25519 AAAA kept@example"
    );
    assert_rebuilt(&client).await;
    // Re-submitting the current subdomain is fine.
    let same = mutate(
        &client,
        "SetServiceConfiguration",
        json!({"input": {"serviceId": "notes", "configuration": {"subdomain": "memo"}}}),
    )
    .await;
    assert_eq!(same["code"], 200, "{same}");
    last_rebuild_done(&client).await;

    // Enable: installs the module into the hand-written flake, rebuilds, runs.
    let enabled = mutate(&client, "EnableService", json!({"serviceId": "notes"})).await;
    assert_eq!(enabled["code"], 200, "{enabled}");
    let flake = std::fs::read_to_string(testbed.path("/etc/nixos/flake.nix")).unwrap();
    let added = "    sp-module-notes.url = \"git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/notes\";\n";
    assert!(flake.contains(added), "{flake}");
    assert_eq!(
        flake.replace(added, ""),
        HAND_WRITTEN_FLAKE,
        "nothing else in flake.nix changed"
    );
    // The app asks for a rebuild after its batch: it joins the scheduled one.
    let rebuild = client
        .query(&operation("RunSystemRebuild"), json!({}))
        .await;
    assert_no_errors(&rebuild);
    assert_rebuilt(&client).await;
    assert_eq!(testbed.unit_state("notes.service"), "active");
    let services = all_services(&client).await;
    let notes = find(&services, "notes");
    assert_eq!(
        (
            notes["isInstalled"].clone(),
            notes["isEnabled"].clone(),
            notes["status"].clone()
        ),
        (json!(true), json!(true), json!("ACTIVE"))
    );
    assert_eq!(notes["url"], "https://memo.example.org");

    // Disable: rebuild stops the units. A required service refuses.
    let disabled = mutate(&client, "DisableService", json!({"serviceId": "notes"})).await;
    assert_eq!(disabled["code"], 200);
    assert_rebuilt(&client).await;
    assert_ne!(testbed.unit_state("notes.service"), "active");
    // The reload that removed the unit reaches the status (well under a
    // second; slack for two loaded cores).
    let deadline = Instant::now() + SIGNAL_SLACK;
    while find(&all_services(&client).await, "notes")["status"] != "OFF" {
        assert!(
            Instant::now() < deadline,
            "notes did not turn OFF: systemd says {}",
            testbed.run(&[
                "systemctl",
                "show",
                "-p",
                "LoadState,ActiveState",
                "notes.service"
            ])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let required = mutate(&client, "DisableService", json!({"serviceId": "core"})).await;
    assert_eq!(required["code"], 400, "{required}");

    // Stop / start / restart through the app's operations.
    let main_pid = || testbed.run(&["systemctl", "show", "-P", "MainPID", "echo.service"]);
    for (name, state) in [
        ("StopService", "inactive"),
        ("StartService", "active"),
        ("RestartService", "active"),
    ] {
        let pid_before = main_pid();
        let result = mutate(&client, name, json!({"serviceId": "echo"})).await;
        assert_eq!(result["code"], 200, "{name}: {result}");
        assert_eq!(testbed.unit_state("echo.service"), state, "{name}");
        if name == "RestartService" {
            let pid_after = main_pid();
            assert_ne!(pid_after, "0", "running after the restart");
            assert_ne!(pid_before, pid_after, "a restart shows a new main PID");
        }
    }

    // Moving is the storage capability's (tests/integration/storage.rs);
    // here notes is disabled, so the move is refused before anything.
    let r = client
        .query(
            &operation("MoveService"),
            json!({"input": {"serviceId": "notes", "location": "sdb"}}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["services"]["moveService"]["code"], 409, "{r}");
}

#[tokio::test]
async fn a_failed_rebuild_leaves_userdata_as_the_running_system_has_it() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    let before = std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap();
    std::fs::write(
        testbed.path("/etc/nixos/.standin-fail"),
        "error: undefined variable 'memo'",
    )
    .unwrap();

    let ok = mutate(
        &client,
        "SetServiceConfiguration",
        json!({"input": {"serviceId": "notes", "configuration": {"subdomain": "memo"}}}),
    )
    .await;
    assert_eq!(ok["code"], 200);
    let enable = mutate(&client, "EnableService", json!({"serviceId": "notes"})).await;
    assert_eq!(enable["code"], 200);
    let job = last_rebuild_done(&client).await;
    assert_eq!(job["status"], "ERROR");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("undefined variable 'memo'"), "{error}");
    assert!(error.contains("restored"), "{error}");
    assert_eq!(
        std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap(),
        before,
        "userdata is what runs"
    );
    let services = all_services(&client).await;
    let notes = find(&services, "notes");
    assert_eq!(
        (notes["isEnabled"].clone(), notes["url"].clone()),
        (json!(false), json!("https://notes.example.org"))
    );

    // Once the cause is fixed, the same change goes through.
    std::fs::remove_file(testbed.path("/etc/nixos/.standin-fail")).unwrap();
    let ok = mutate(&client, "EnableService", json!({"serviceId": "notes"})).await;
    assert_eq!(ok["code"], 200);
    assert_rebuilt(&client).await;
    assert_eq!(testbed.unit_state("notes.service"), "active");
    let probe = testbed.run(&[
        "sh",
        "-c",
        "echo from-sdb > /volumes/sdb/notes/probe && cat /var/lib/notes/probe",
    ]);
    assert_eq!(
        probe, "from-sdb",
        "the data folder is bound from the volume"
    );
    let services = all_services(&client).await;
    let usage = &find(&services, "notes")["storageUsage"];
    assert_eq!(
        usage["volume"]["name"], "sdb",
        "named as userdata names it: {usage}"
    );
    assert_eq!(usage["title"], "notes (test)");
}

#[tokio::test]
async fn a_scheduled_rebuild_still_runs_after_a_restart_of_the_daemon() {
    let mut slow = setup();
    slow.config = "rebuild_debounce_ms = 3000\npublic_ipv4 = \"203.0.113.10\"\n";
    let testbed = Testbed::up(slow);
    let client = testbed.start_daemon().await;
    let enabled = mutate(&client, "EnableService", json!({"serviceId": "notes"})).await;
    assert_eq!(enabled["code"], 200);
    // Killed while the rebuild waits for more changes to join it.
    testbed.restart_daemon(&client).await;
    assert_rebuilt(&client).await;
    assert_eq!(
        testbed.unit_state("notes.service"),
        "active",
        "what the app shows is what runs"
    );
}
