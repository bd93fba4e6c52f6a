//! Services controlled over D-Bus, in a real systemd (the testbed): status
//! from the units, start/stop/restart, units changed behind the daemon's
//! back, rebuild jobs.

use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long a change systemd signals may take to show: well under a
/// second here, with slack for two loaded cores.
pub const SIGNAL_SLACK: Duration = Duration::from_secs(5);

const SERVICES: &str = "{ services { allServices { id displayName description svgIcon isMovable isRequired isEnabled isSystemService canBeBackedUp backupDescription status url homepage sourcePage license { free fullName redistributable shortName url } supportLevel } } }";

fn setup() -> Setup<'static> {
    Setup {
        modules: vec![
            ("echo", module("echo", &["echo.service"], json!({}))),
            (
                "web",
                module(
                    "web",
                    &["web.service", "web-worker.service"],
                    json!({"primarySubdomain": "subdomain"}),
                ),
            ),
            (
                "idle",
                module("idle", &["idle.service"], json!({"showUrl": false})),
            ),
        ],
        userdata: json!({
            "domain": "example.org", "hostname": "testbed", "timezone": "Etc/UTC",
            "modules": {"echo": {"enable": true}, "web": {"enable": true, "subdomain": "www"}, "idle": {"enable": false}},
            "unknownKey": {"kept": true}
        }),
        volumes: vec![],
        config: "",
    }
}

async fn services(client: &Client) -> Vec<Value> {
    let r = client.query(SERVICES, json!({})).await;
    assert_no_errors(&r);
    r["data"]["services"]["allServices"]
        .as_array()
        .unwrap()
        .clone()
}

async fn status_of(client: &Client, id: &str) -> String {
    services(client)
        .await
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn job_by_uid(client: &Client, uid: &str) -> Value {
    let r = client
        .query("query($id: String!) { jobs { getJob(jobId: $id) { uid typeId status statusText progress error result } } }", json!({"id": uid}))
        .await;
    r["data"]["jobs"]["getJob"].clone()
}

pub async fn rebuild(client: &Client) -> Value {
    let r = client
        .query("mutation { system { runSystemRebuild { success message code job { uid typeId status } } } }", json!({}))
        .await;
    r["data"]["system"]["runSystemRebuild"].clone()
}

pub async fn wait_job_done(client: &Client, uid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = job_by_uid(client, uid).await;
        if job["status"] == "FINISHED" || job["status"] == "ERROR" {
            return job;
        }
        assert!(Instant::now() < deadline, "job {uid} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn services_report_their_units_and_follow_rebuilds_start_stop_and_kills() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;

    // Before any rebuild no unit exists: every service is OFF.
    let list = services(&client).await;
    let ids: Vec<_> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["echo", "idle", "web"]);
    assert!(list.iter().all(|s| s["status"] == "OFF"), "{list:?}");
    let echo = &list[0];
    assert_eq!(echo["displayName"], "echo (test)");
    assert_eq!(echo["isEnabled"], true);
    assert_eq!(echo["supportLevel"], "NORMAL");
    assert_eq!(echo["license"][0]["shortName"], "mit");
    assert_eq!(echo["url"], "https://echo.example.org");
    assert_eq!(
        list[2]["url"], "https://www.example.org",
        "subdomain from userdata"
    );
    assert!(list[1]["url"].is_null(), "showUrl false");
    assert_eq!(
        String::from_utf8(base64_decode(echo["svgIcon"].as_str().unwrap())).unwrap(),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>"
    );

    // A rebuild job applies userdata: the enabled modules' units run.
    let started = rebuild(&client).await;
    assert_eq!(started["code"], 200, "{started}");
    assert_eq!(started["job"]["typeId"], "system.nixos.rebuild");
    let job = wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(job["progress"], 100);
    assert_eq!(testbed.unit_state("echo.service"), "active");
    assert_eq!(status_of(&client, "echo").await, "ACTIVE");
    assert_eq!(status_of(&client, "web").await, "ACTIVE");
    assert_eq!(status_of(&client, "idle").await, "OFF");

    // Killed behind the daemon's back: FAILED as soon as systemd's signal
    // is read (well under a second; slack for two loaded cores).
    testbed.run(&["systemctl", "kill", "--signal=KILL", "echo.service"]);
    wait_for_status(&client, "echo", "FAILED", SIGNAL_SLACK).await;
    // One of two units stopped: the worst state wins.
    testbed.run(&["systemctl", "stop", "web-worker.service"]);
    wait_for_status(&client, "web", "INACTIVE", SIGNAL_SLACK).await;

    // The app's mutations wait for systemd and report what is true.
    let start = "mutation($id: String!) { services { startService(serviceId: $id) { success message code service { id status } } } }";
    let r = client.query(start, json!({"id": "echo"})).await;
    let result = &r["data"]["services"]["startService"];
    assert_eq!(result["code"], 200, "{r}");
    assert_eq!(result["service"]["status"], "ACTIVE");
    assert_eq!(testbed.unit_state("echo.service"), "active");

    let stop = "mutation($id: String!) { services { stopService(serviceId: $id) { success message code service { status } } } }";
    let r = client.query(stop, json!({"id": "echo"})).await;
    assert_eq!(
        r["data"]["services"]["stopService"]["service"]["status"], "INACTIVE",
        "{r}"
    );
    assert_eq!(testbed.unit_state("echo.service"), "inactive");

    let pid_before = testbed.run(&["systemctl", "show", "-P", "MainPID", "web.service"]);
    let r = client
        .query(
            "mutation { restartService(serviceId: \"web\") { success code message } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["restartService"]["code"], 200, "flat twin: {r}");
    let pid_after = testbed.run(&["systemctl", "show", "-P", "MainPID", "web.service"]);
    assert_ne!(pid_before, pid_after, "the unit really restarted");
    assert_eq!(
        status_of(&client, "web").await,
        "ACTIVE",
        "both units run again"
    );

    // Refusals are data, with codes.
    let r = client.query(start, json!({"id": "idle"})).await;
    assert_eq!(
        r["data"]["services"]["startService"]["code"], 409,
        "disabled: {r}"
    );
    let r = client.query(start, json!({"id": "nope"})).await;
    assert_eq!(r["data"]["services"]["startService"]["code"], 404);
    assert_eq!(
        r["data"]["services"]["startService"]["message"],
        "Service not found"
    );
}

/// Waits for `systemctl is-active UNIT` to say `state`.
pub async fn wait_unit_state(testbed: &Testbed, unit: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = testbed.unit_state(unit);
        if now == state {
            return;
        }
        assert!(Instant::now() < deadline, "{unit} is {now}, not {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_status(client: &Client, id: &str, status: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = status_of(client, id).await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is {now}, expected {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn a_failed_rebuild_ends_in_error_with_the_lines_and_rebuilds_never_overlap() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;

    // A slow rebuild: another rebuild is queued behind it (once, however
    // often asked), an upgrade and a reboot are refused meanwhile.
    std::fs::write(testbed.path("/etc/nixos/.standin-delay"), "2").unwrap();
    let first = rebuild(&client).await;
    assert_eq!(first["code"], 200);
    let second = rebuild(&client).await;
    assert_eq!(second["code"], 200, "{second}");
    assert!(
        second["message"].as_str().unwrap().starts_with("Queued"),
        "{second}"
    );
    assert_eq!(second["job"]["status"], "CREATED");
    assert_ne!(second["job"]["uid"], first["job"]["uid"]);
    let third = rebuild(&client).await;
    assert_eq!(third["job"]["uid"], second["job"]["uid"], "coalesced");
    let busy = client.query("{ system { busy } }", json!({})).await;
    assert_eq!(busy["data"]["system"]["busy"], true);
    let r = client
        .query(
            "mutation { system { runSystemUpgrade { code message } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["system"]["runSystemUpgrade"]["code"], 409, "{r}");
    assert!(
        r["data"]["system"]["runSystemUpgrade"]["message"]
            .as_str()
            .unwrap()
            .contains("not queued")
    );
    let r = client
        .query("mutation { system { rebootSystem { code } } }", json!({}))
        .await;
    assert_eq!(r["data"]["system"]["rebootSystem"]["code"], 409);
    let uid = first["job"]["uid"].as_str().unwrap();
    // The journal reaches the job as status text while it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = job_by_uid(&client, uid).await;
        if job["statusText"]
            .as_str()
            .is_some_and(|t| t.contains("derivations will be built") || t.contains("building"))
        {
            assert!(job["progress"].as_i64().unwrap() >= 10, "{job}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no journal line in the job: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(wait_job_done(&client, uid).await["status"], "FINISHED");
    let queued = wait_job_done(&client, second["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(
        queued["status"], "FINISHED",
        "the queued rebuild ran after: {queued}"
    );
    std::fs::remove_file(testbed.path("/etc/nixos/.standin-delay")).unwrap();

    // Told to fail: ERROR with the failing lines.
    std::fs::write(
        testbed.path("/etc/nixos/.standin-fail"),
        "error: syntax error, unexpected '}'",
    )
    .unwrap();
    let failed = rebuild(&client).await;
    let job = wait_job_done(&client, failed["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("failed with exit code 1"), "{error}");
    assert!(error.contains("syntax error, unexpected"), "{error}");
    let busy = client.query("{ system { busy } }", json!({})).await;
    assert_eq!(busy["data"]["system"]["busy"], false);

    // Upgrade and rollback are jobs too. The stand-in's generations show
    // what they did: an upgrade is a newer system, a rollback goes back.
    std::fs::remove_file(testbed.path("/etc/nixos/.standin-fail")).unwrap();
    let profile = testbed.path("/nix/var/nix/profiles/system");
    let generation_before = std::fs::read_link(&profile).unwrap();
    // The links point inside the container: followed by hand.
    let version = || {
        let generation = profile.with_file_name(std::fs::read_link(&profile).unwrap());
        let system = testbed.path(std::fs::read_link(generation).unwrap().to_str().unwrap());
        std::fs::read_to_string(system.join("nixos-version")).unwrap()
    };
    let version_before = version();
    let r = client
        .query(
            "mutation { system { runSystemUpgrade { code job { uid typeId } } } }",
            json!({}),
        )
        .await;
    let upgrade = &r["data"]["system"]["runSystemUpgrade"];
    assert_eq!(upgrade["job"]["typeId"], "system.nixos.upgrade");
    assert_eq!(
        wait_job_done(&client, upgrade["job"]["uid"].as_str().unwrap()).await["status"],
        "FINISHED"
    );
    assert_ne!(
        version(),
        version_before,
        "an upgrade brings a newer system"
    );
    let r = client
        .query(
            "mutation { system { runSystemRollback { code message } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["system"]["runSystemRollback"]["code"], 200, "{r}");
    let r = client
        .query("{ jobs { getJobs { uid typeId status } } }", json!({}))
        .await;
    let rollback = r["data"]["jobs"]["getJobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["typeId"] == "system.nixos.rollback")
        .unwrap()
        .clone();
    assert_eq!(
        wait_job_done(&client, rollback["uid"].as_str().unwrap()).await["status"],
        "FINISHED"
    );
    assert_eq!(
        std::fs::read_link(&profile).unwrap(),
        generation_before,
        "back to the generation before the upgrade"
    );
    assert_eq!(version(), version_before);
}

#[tokio::test]
async fn catalogue_changes_are_picked_up_and_broken_definitions_skipped() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    std::fs::write(testbed.path("/etc/sp-modules/broken"), "{ \"meta\": ").unwrap();
    std::fs::write(
        testbed.path("/etc/sp-modules/extra"),
        module("extra", &["extra.service"], json!({})),
    )
    .unwrap();
    let mut wrong =
        serde_json::from_str::<Value>(&module("wrongid", &["x.service"], json!({}))).unwrap();
    wrong["meta"]["id"] = "../../etc".into();
    std::fs::write(testbed.path("/etc/sp-modules/wrongid"), wrong.to_string()).unwrap();
    // The catalogue watches its directory: slack for two loaded cores.
    let deadline = Instant::now() + 2 * SIGNAL_SLACK;
    loop {
        let ids: Vec<String> = services(&client)
            .await
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        if ids.contains(&"extra".to_owned()) {
            assert_eq!(ids, ["echo", "extra", "idle", "web"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new definition not picked up: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = testbed.run(&["journalctl", "-u", "selfprivacy-api", "--no-pager"]);
    assert!(
        log.contains("skipping a broken sp-module definition"),
        "{log}"
    );
    assert!(
        log.contains("differs from the file name") || log.contains("must be 1 to 64 letters"),
        "{log}"
    );
}

#[tokio::test]
async fn reboot_system_really_reboots_the_server() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    let leader = testbed.env["TESTBED_LEADER"].clone();
    let r = client
        .query(
            "mutation { system { rebootSystem { success message code } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["system"]["rebootSystem"]["code"], 200, "{r}");
    // The container's systemd goes down (nspawn does not restart it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{leader}/root/run/dbus")).exists() {
        assert!(Instant::now() < deadline, "the server did not go down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rebuild_outlives_a_restart_of_the_daemon() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    // A switch that updates the daemon restarts it mid-rebuild.
    std::fs::write(testbed.path("/etc/nixos/.standin-delay"), "2").unwrap();
    let started = rebuild(&client).await;
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    wait_unit_state(&testbed, "sp-nixos-rebuild.service", "activating").await;
    testbed.restart_daemon(&client).await;
    let job = wait_job_done(&client, &uid).await;
    assert_eq!(
        job["status"], "FINISHED",
        "followed to the end after the restart: {job}"
    );
    assert_eq!(testbed.unit_state("echo.service"), "active");

    // The same when the rebuild fails while the daemon is down.
    std::fs::write(
        testbed.path("/etc/nixos/.standin-fail"),
        "error: broken while the API was away",
    )
    .unwrap();
    let started = rebuild(&client).await;
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    wait_unit_state(&testbed, "sp-nixos-rebuild.service", "activating").await;
    testbed.restart_daemon(&client).await;
    let job = wait_job_done(&client, &uid).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("broken while the API was away"),
        "{job}"
    );
}

/// A service's storage use is measured in the background: the first ask
/// answers at once (from no measurement: "0"), and the figure follows once
/// the walk of its folders ends.
#[tokio::test]
async fn storage_usage_comes_from_a_background_measurement() {
    let mut setup = setup();
    setup.modules.push((
        "files",
        module(
            "files",
            &["files.service"],
            json!({"folders": ["/var/lib/files"]}),
        ),
    ));
    setup.userdata["modules"]["files"] = json!({"enable": true});
    let testbed = Testbed::up(setup);
    std::fs::create_dir_all(testbed.path("/var/lib/files/sub")).unwrap();
    std::fs::write(testbed.path("/var/lib/files/a"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(testbed.path("/var/lib/files/sub/b"), vec![7u8; 4096]).unwrap();
    let client = testbed.start_daemon().await;
    let query = "{ services { allServices { id storageUsage { usedSpace title } } } }";
    let used = |r: &Value| -> String {
        assert_no_errors(r);
        r["data"]["services"]["allServices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "files")
            .unwrap()["storageUsage"]["usedSpace"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = used(&client.query(query, json!({})).await);
    let measured = (1 << 20) + 4096;
    assert!(
        first == "0" || first == measured.to_string(),
        "nothing measured yet, or the measurement: {first}"
    );
    let deadline = Instant::now() + 2 * SIGNAL_SLACK;
    loop {
        let now = used(&client.query(query, json!({})).await);
        if now == measured.to_string() {
            break;
        }
        assert_eq!(now, "0", "only ever nothing yet or the measurement");
        assert!(Instant::now() < deadline, "the measurement never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Services resolved once per view are resolved per selection: another
    // shape of the same list gets its own fields, aliases included.
    let other = client
        .query(
            "{ services { allServices { id size: storageUsage { usedSpace } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&other);
    let files = other["data"]["services"]["allServices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "files")
        .unwrap()
        .clone();
    assert_eq!(
        files,
        json!({"id": "files", "size": {"usedSpace": measured.to_string()}})
    );
}
