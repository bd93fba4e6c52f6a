//! The paths of a rebuild, in the testbed with the nixos-rebuild stand-in
//! (test scaffolding with a system profile and generations): a switch
//! that activated and then failed, builds that fail or run too long (also
//! after a restart of the daemon), flake.nix put back byte for byte,
//! changes queued behind a running rebuild (also across a kill of the
//! daemon), and the app's
//! `runSystemRebuild` joining the scheduled rebuild.

use crate::catalogue::{last_rebuild_done, mutate};
use crate::services::{job_by_uid, rebuild, wait_job_done, wait_unit_state};
use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const REBUILD_UNIT: &str = "sp-nixos-rebuild.service";
const USERDATA: &str = "/etc/nixos/userdata.json";
const FLAKE: &str = "/etc/nixos/flake.nix";
const PROFILES: &str = "/nix/var/nix/profiles";

fn setup(config: &'static str) -> Setup<'static> {
    Setup {
        modules: vec![
            (
                "echo",
                module("echo", &["echo.service", "echo-b.service"], json!({})),
            ),
            ("web", module("web", &["web.service"], json!({}))),
            ("notes", module("notes", &["notes.service"], json!({}))),
        ],
        userdata: json!({
            "domain": "example.org", "timezone": "Etc/UTC",
            "modules": {"echo": {"enable": true}, "web": {"enable": true, "subdomain": "www"},
                        "notes": {"enable": false}}
        }),
        volumes: vec![],
        config,
    }
}

/// A flake with the inputs of echo and web only: enabling notes installs it.
const FLAKE_WITHOUT_NOTES: &str = r#"# written by hand
{
  inputs = {
    selfprivacy-nixos-config.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes";
    sp-module-echo.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/echo";
    sp-module-web.url = "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/web";
  };
  outputs = { self, ... }: { };
}
"#;

fn standin_flag(testbed: &Testbed, name: &str, content: &str) {
    std::fs::write(testbed.path(&format!("/etc/nixos/{name}")), content).unwrap();
}

/// The generation the system profile points to ("" before the first).
fn profile(testbed: &Testbed) -> String {
    std::fs::read_link(testbed.path(&format!("{PROFILES}/system")))
        .map(|target| target.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn userdata(testbed: &Testbed) -> Value {
    serde_json::from_slice(&std::fs::read(testbed.path(USERDATA)).unwrap()).unwrap()
}

async fn set_subdomain(client: &Client, service: &str, subdomain: &str) -> Value {
    let r = mutate(
        client,
        "SetServiceConfiguration",
        json!({"input": {"serviceId": service, "configuration": {"subdomain": subdomain}}}),
    )
    .await;
    assert_eq!(r["code"], 200, "{r}");
    r
}

/// The uid of the rebuild job a change went to (the latest rebuild job).
async fn latest_rebuild_uid(client: &Client) -> String {
    let r = client
        .query("{ jobs { getJobs { uid typeId } } }", json!({}))
        .await;
    r["data"]["jobs"]["getJobs"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|j| j["typeId"] == "system.nixos.rebuild")
        .expect("a rebuild job")["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every job list the daemon publishes, in order, as a client subscribed to
/// `jobUpdates` (graphql-transport-ws) receives them: unlike polling, it
/// sees each state a job passes through.
struct JobUpdates {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// The list as it was when the subscription started, not yet looked at.
    current: Option<Value>,
}

impl JobUpdates {
    async fn subscribe(client: &Client) -> JobUpdates {
        let mut request = client
            .url
            .replace("http://", "ws://")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut updates = JobUpdates {
            socket,
            current: None,
        };
        updates
            .send(json!({"type": "connection_init",
                         "payload": {"Authorization": format!("Bearer {}", client.token)}}))
            .await;
        assert_eq!(updates.next().await["type"], "connection_ack");
        updates
            .send(json!({"id": "1", "type": "subscribe", "payload": {
                "query": "subscription { jobUpdates { uid typeId status error } }"}}))
            .await;
        // The current list comes first: from here on, every change is seen.
        let current = updates.next().await;
        assert_eq!(current["type"], "next", "{current}");
        updates.current = Some(current);
        updates
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
    }

    /// The next message other than a keep-alive (within 60 s).
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("no job list within 60 s")
                .expect("the daemon closed the subscription")
                .unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] != "ka" {
                    return value;
                }
            }
        }
    }

    /// The first published state of job `uid` that has ended.
    async fn first_end(&mut self, uid: &str) -> Value {
        loop {
            let message = match self.current.take() {
                Some(current) => current,
                None => self.next().await,
            };
            assert_eq!(message["type"], "next", "{message}");
            let list = message["payload"]["data"]["jobUpdates"].as_array().unwrap();
            if let Some(job) = list.iter().find(|j| j["uid"] == uid)
                && (job["status"] == "FINISHED" || job["status"] == "ERROR")
            {
                return job.clone();
            }
        }
    }
}

#[tokio::test]
async fn a_failed_builds_job_ends_in_one_update_that_says_the_files_were_restored() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 300\n"));
    let client = testbed.start_daemon().await;
    let mut updates = JobUpdates::subscribe(&client).await;
    standin_flag(
        &testbed,
        ".standin-fail",
        "error: undefined variable 'memo'",
    );
    let started = rebuild(&client).await;
    let uid = started["job"]["uid"].as_str().unwrap();
    // What the app sees the moment the job ends is its whole end.
    let ended = updates.first_end(uid).await;
    assert_eq!(ended["status"], "ERROR", "{ended}");
    let error = ended["error"].as_str().unwrap();
    assert!(error.contains("undefined variable 'memo'"), "{error}");
    assert!(error.contains("restored"), "{error}");
    assert_eq!(wait_job_done(&client, uid).await["error"], ended["error"]);
}

/// The container's journald, stopped (SIGSTOP) until dropped (SIGCONT),
/// even if the test fails.
struct FrozenJournald<'a> {
    testbed: &'a Testbed,
    pid: String,
}

impl<'a> FrozenJournald<'a> {
    fn freeze(testbed: &'a Testbed) -> FrozenJournald<'a> {
        let pid = testbed.run(&[
            "systemctl",
            "show",
            "--property=MainPID",
            "--value",
            "systemd-journald",
        ]);
        assert_ne!(pid, "0", "journald runs");
        let frozen = FrozenJournald { testbed, pid };
        frozen.testbed.run(&["kill", "-STOP", &frozen.pid]);
        frozen
    }
}

impl Drop for FrozenJournald<'_> {
    fn drop(&mut self) {
        let _ = self.testbed.exec(&["kill", "-CONT", &self.pid]);
    }
}

#[tokio::test]
async fn a_failed_builds_last_lines_reach_the_job_when_journald_lags_behind() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 300\n"));
    let client = testbed.start_daemon().await;
    standin_flag(&testbed, ".standin-fail", "error: the last word");
    let frozen = FrozenJournald::freeze(&testbed);
    let started = rebuild(&client).await;
    let uid = started["job"]["uid"].as_str().unwrap();
    // The build's output waits unread in its journal stream.
    wait_unit_state(&testbed, REBUILD_UNIT, "failed").await;
    // Not a wait for anything: how far journald lags behind (longer than
    // the daemon retries an empty read, shorter than it waits for a sync).
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(frozen);
    let job = wait_job_done(&client, uid).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("error: the last word"), "{error}");
    assert!(error.contains("restored"), "{error}");
}

#[tokio::test]
async fn a_rebuild_that_activated_and_then_failed_keeps_the_new_configuration() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 300\n"));
    let client = testbed.start_daemon().await;
    let first = rebuild(&client).await;
    let job = wait_job_done(&client, first["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let generation = profile(&testbed);
    assert_eq!(generation, "system-1-link");

    // A new setting restarts echo's units; echo-b fails to start.
    standin_flag(&testbed, ".standin-fail-units", "echo-b.service\n");
    let mut updates = JobUpdates::subscribe(&client).await;
    set_subdomain(&client, "echo", "hello").await;
    let job = updates.first_end(&latest_rebuild_uid(&client).await).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("activated and is kept"), "{error}");
    assert!(
        error.contains("failed to start: echo-b.service."),
        "{error}"
    );
    assert!(!error.contains("restored"), "{error}");
    assert_ne!(profile(&testbed), generation, "a new generation runs");
    assert_eq!(
        userdata(&testbed)["modules"]["echo"]["subdomain"],
        "hello",
        "the files say what runs"
    );
    assert_eq!(testbed.unit_state("echo.service"), "active");

    // The kept files are the applied ones now: a build that fails later
    // puts them back, not the older ones.
    std::fs::remove_file(testbed.path("/etc/nixos/.standin-fail-units")).unwrap();
    standin_flag(&testbed, ".standin-fail-once", "error: broken");
    set_subdomain(&client, "echo", "again").await;
    let job = last_rebuild_done(&client).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    assert!(job["error"].as_str().unwrap().contains("restored"), "{job}");
    assert_eq!(userdata(&testbed)["modules"]["echo"]["subdomain"], "hello");
}

#[tokio::test]
async fn flake_nix_is_restored_byte_for_byte_after_a_failed_build_that_installed_a_module() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 300\n"));
    std::fs::write(testbed.path(FLAKE), FLAKE_WITHOUT_NOTES).unwrap();
    let client = testbed.start_daemon().await;
    let userdata_before = std::fs::read(testbed.path(USERDATA)).unwrap();
    // Slow, so the installed input can be seen before the build fails.
    standin_flag(&testbed, ".standin-delay", "2");
    standin_flag(
        &testbed,
        ".standin-fail",
        "error: attribute 'notes' missing",
    );
    let r = mutate(&client, "EnableService", json!({"serviceId": "notes"})).await;
    assert_eq!(r["code"], 200, "{r}");
    let installed = std::fs::read_to_string(testbed.path(FLAKE)).unwrap();
    assert!(installed.contains("sp-module-notes.url"), "{installed}");

    let job = last_rebuild_done(&client).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("attribute 'notes' missing"), "{error}");
    assert!(error.contains("restored"), "{error}");
    assert_eq!(
        std::fs::read_to_string(testbed.path(FLAKE)).unwrap(),
        FLAKE_WITHOUT_NOTES
    );
    assert_eq!(
        std::fs::read(testbed.path(USERDATA)).unwrap(),
        userdata_before
    );
    assert_eq!(profile(&testbed), "", "nothing was activated");
}

#[tokio::test]
async fn a_rebuild_that_runs_too_long_is_stopped_before_the_files_are_restored() {
    let testbed = Testbed::up(setup(
        "rebuild_debounce_ms = 300\nrebuild_timeout_secs = 2\n",
    ));
    let client = testbed.start_daemon().await;
    let mut updates = JobUpdates::subscribe(&client).await;
    standin_flag(&testbed, ".standin-delay", "60");
    set_subdomain(&client, "echo", "late").await;
    let uid = latest_rebuild_uid(&client).await;
    let job = updates.first_end(&uid).await;
    // Looked at as soon as the job has ended.
    assert_stopped_then_restored(&testbed, &job);
}

#[tokio::test]
async fn a_resumed_rebuild_that_runs_too_long_is_stopped_before_the_files_are_restored() {
    let testbed = Testbed::up(setup(
        "rebuild_debounce_ms = 300\nrebuild_timeout_secs = 2\n",
    ));
    let client = testbed.start_daemon().await;
    standin_flag(&testbed, ".standin-delay", "60");
    set_subdomain(&client, "echo", "late").await;
    let uid = latest_rebuild_uid(&client).await;
    wait_unit_state(&testbed, REBUILD_UNIT, "activating").await;
    // The daemon dies mid-rebuild and follows it again after its restart.
    testbed.restart_daemon(&client).await;
    let job = JobUpdates::subscribe(&client).await.first_end(&uid).await;
    assert_stopped_then_restored(&testbed, &job);
}

#[tokio::test]
async fn changes_queued_during_a_rebuild_are_checked_again_when_applied() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 300\n"));
    let client = testbed.start_daemon().await;
    // The running rebuild frees "www", then fails and puts it back. Slow,
    // so the next change surely comes while it runs.
    standin_flag(&testbed, ".standin-delay", "5");
    standin_flag(&testbed, ".standin-fail-once", "error: broken");
    set_subdomain(&client, "web", "blog").await;
    let running = latest_rebuild_uid(&client).await;
    wait_unit_state(&testbed, REBUILD_UNIT, "activating").await;
    // Valid now ("www" is free): queued, and told it is checked again.
    let queued = set_subdomain(&client, "echo", "www").await;
    let message = queued["message"].as_str().unwrap();
    assert!(message.contains("Queued"), "{message}");
    assert!(message.contains("checked again"), "{message}");
    let next = latest_rebuild_uid(&client).await;
    assert_ne!(next, running);
    let r = client
        .query(
            "query($id: String!) { jobs { getJob(jobId: $id) { status statusText } } }",
            json!({"id": next}),
        )
        .await;
    let waiting = &r["data"]["jobs"]["getJob"];
    assert_eq!(waiting["status"], "CREATED", "{r}");
    assert!(
        waiting["statusText"]
            .as_str()
            .unwrap()
            .contains("checked again"),
        "{r}"
    );

    let first = wait_job_done(&client, &running).await;
    assert_eq!(first["status"], "ERROR", "{first}");
    // Checked again against the restored file: "www" is web's again.
    let second = wait_job_done(&client, &next).await;
    let error = second["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Some queued changes were not applied"),
        "{second}"
    );
    let modules = &userdata(&testbed)["modules"];
    assert_eq!(modules["web"]["subdomain"], "www");
    assert!(modules["echo"]["subdomain"].is_null(), "{modules}");
}

#[tokio::test]
async fn changes_queued_behind_a_rebuild_survive_a_kill_of_the_daemon() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 300\n"));
    std::fs::write(testbed.path(FLAKE), FLAKE_WITHOUT_NOTES).unwrap();
    let client = testbed.start_daemon().await;
    // Slow enough to queue behind and to outlive the daemon's restart.
    standin_flag(&testbed, ".standin-delay", "8");
    set_subdomain(&client, "echo", "first").await;
    let running = latest_rebuild_uid(&client).await;
    wait_unit_state(&testbed, REBUILD_UNIT, "activating").await;

    // Changes queued behind it: enabling notes (which also installs
    // its flake input) and a setting.
    let enabled = mutate(&client, "EnableService", json!({"serviceId": "notes"})).await;
    assert_eq!(enabled["code"], 200, "{enabled}");
    assert!(
        enabled["message"].as_str().unwrap().contains("Queued"),
        "{enabled}"
    );
    let r = client
        .query(
            "mutation { system { changeTimezone(timezone: \"Asia/Tokyo\") { code message } } }",
            json!({}),
        )
        .await;
    let timezone = &r["data"]["system"]["changeTimezone"];
    assert_eq!(timezone["code"], 200, "{r}");
    let queued = latest_rebuild_uid(&client).await;
    assert_ne!(queued, running);
    // A third, turned into one this version cannot read (as if a newer
    // version had stored it): reported, not applied, not dropped silently.
    let disabled = mutate(&client, "DisableService", json!({"serviceId": "web"})).await;
    assert_eq!(disabled["code"], 200, "{disabled}");
    testbed.run(&[
        "sqlite3",
        "-cmd",
        ".timeout 5000",
        "/var/lib/selfprivacy-api/state.db",
        "UPDATE queued_changes SET change = '{\"userdata\": {\"change\": \"teleport\"}}' \
         WHERE seq = (SELECT max(seq) FROM queued_changes)",
    ]);
    // Nothing of them is written yet.
    assert_eq!(userdata(&testbed)["timezone"], "Etc/UTC");
    assert!(
        !std::fs::read_to_string(testbed.path(FLAKE))
            .unwrap()
            .contains("sp-module-notes")
    );

    // SIGKILL while the first rebuild runs; it goes on in its unit.
    testbed.restart_daemon(&client).await;
    assert_eq!(
        testbed.unit_state(REBUILD_UNIT),
        "activating",
        "still running"
    );
    let waiting = job_by_uid(&client, &queued).await;
    assert_eq!(waiting["status"], "CREATED", "{waiting}");
    let text = waiting["statusText"].as_str().unwrap();
    assert!(
        text.contains("2 change(s) queued for it were kept across the restart"),
        "{waiting}"
    );
    std::fs::remove_file(testbed.path("/etc/nixos/.standin-delay")).unwrap();

    let first = wait_job_done(&client, &running).await;
    assert_eq!(first["status"], "FINISHED", "{first}");
    let second = wait_job_done(&client, &queued).await;
    assert_eq!(second["status"], "FINISHED", "{second}");
    let error = second["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("could not be read") && error.contains("teleport"),
        "{second}"
    );
    // The follow-up rebuild ran with both changes: a second generation.
    assert_eq!(profile(&testbed), "system-2-link");
    let after = userdata(&testbed);
    assert_eq!(after["timezone"], "Asia/Tokyo", "{after}");
    assert_eq!(after["modules"]["notes"]["enable"], true, "{after}");
    assert_eq!(after["modules"]["echo"]["subdomain"], "first", "{after}");
    assert_eq!(after["modules"]["web"]["enable"], true, "{after}");
    let flake = std::fs::read_to_string(testbed.path(FLAKE)).unwrap();
    assert!(flake.contains("sp-module-notes.url"), "{flake}");
    // Each applied once, and the queue is empty: a third start applies nothing.
    testbed.restart_daemon(&client).await;
    assert_eq!(userdata(&testbed), after);
    assert_eq!(latest_rebuild_uid(&client).await, queued, "no new rebuild");
}

#[tokio::test]
async fn run_system_rebuild_joins_the_scheduled_rebuild() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 3000\n"));
    let client = testbed.start_daemon().await;
    let changed_at = Instant::now();
    set_subdomain(&client, "echo", "joined").await;
    let scheduled = latest_rebuild_uid(&client).await;
    let asked = rebuild(&client).await;
    assert_eq!(asked["code"], 200, "{asked}");
    assert_eq!(asked["job"]["uid"], scheduled.as_str(), "the same job");
    let job = wait_job_done(&client, &scheduled).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(profile(&testbed), "system-1-link");
    // When the debounce would have started it, nothing else starts: one
    // rebuild, one generation (watched for a while past that moment).
    let watch_until = changed_at + Duration::from_millis(3000 + 2000);
    while Instant::now() < watch_until {
        assert!(
            !testbed.path(&format!("{PROFILES}/system-2-link")).exists(),
            "a second rebuild ran"
        );
        assert_ne!(testbed.unit_state(REBUILD_UNIT), "activating");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client
        .query("{ jobs { getJobs { uid typeId } } }", json!({}))
        .await;
    let rebuilds = r["data"]["jobs"]["getJobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["typeId"] == "system.nixos.rebuild")
        .count();
    assert_eq!(rebuilds, 1);
}

#[tokio::test]
async fn a_flake_that_does_not_parse_fails_the_build_and_activates_nothing() {
    let testbed = Testbed::up(setup("rebuild_debounce_ms = 300\n"));
    let client = testbed.start_daemon().await;
    let flake_before = std::fs::read_to_string(testbed.path(FLAKE)).unwrap();
    // A hand edit gone wrong.
    std::fs::write(testbed.path(FLAKE), "{\n  inputs = { x.url = ;\n}\n").unwrap();
    let started = rebuild(&client).await;
    let job = wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("syntax error"), "nix's own words: {error}");
    assert!(error.contains("restored"), "{error}");
    assert_eq!(profile(&testbed), "", "nothing was activated");
    assert_eq!(
        std::fs::read_to_string(testbed.path(FLAKE)).unwrap(),
        flake_before,
        "the flake the system was built from"
    );
}

/// A timed-out rebuild's job, looked at as soon as it ended: the unit was
/// stopped before the files were restored, and the job says so.
fn assert_stopped_then_restored(testbed: &Testbed, job: &Value) {
    let unit = testbed.unit_state(REBUILD_UNIT);
    assert_eq!(job["status"], "ERROR", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("did not finish within 2 s"), "{error}");
    assert!(error.contains("restored"), "{error}");
    assert!(
        unit == "inactive" || unit == "failed",
        "the rebuild was stopped first: {unit}"
    );
    assert!(userdata(testbed)["modules"]["echo"]["subdomain"].is_null());
}
