//! Concurrency: 50 clients at once changing settings, users and service
//! configuration in a testbed, several rounds while rebuilds run. No
//! accepted change is lost, userdata agrees with the answers, changes are
//! coalesced into few rebuilds and two never run at once, and a race for
//! the same name or key has exactly one winner.

use crate::catalogue::last_rebuild_done;
use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 50;
const ROUNDS: usize = 4;
/// Services m0..m9: each round, client i changes only service i / 5, so
/// every service's end state is known.
const SERVICES: usize = 10;
const TIMEZONES: [&str; 4] = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Europe/Moscow",
];
const USERDATA: &str = "/etc/nixos/userdata.json";

fn setup() -> Setup<'static> {
    let modules: Vec<(&'static str, String)> = (0..SERVICES)
        .map(|k| {
            let id: &'static str = Box::leak(format!("m{k}").into_boxed_str());
            (id, module(id, &[&format!("{id}.service")], json!({})))
        })
        .collect();
    let enabled: serde_json::Map<String, Value> = (0..SERVICES)
        .map(|k| (format!("m{k}"), json!({"enable": k % 2 == 0})))
        .collect();
    Setup {
        modules,
        userdata: json!({
            "domain": "example.org", "hostname": "testbed", "timezone": "Etc/UTC",
            "username": "owner", "hashedPassword": "$6$rounds=5000$salt$hash", "sshKeys": [],
            "ssh": {"enable": true, "rootKeys": [], "passwordAuthentication": false},
            "users": [{"username": "keyholder", "hashedPassword": "$6$x$y", "sshKeys": []}],
            "modules": enabled,
            "unknownKey": {"kept": [1, 2, 3]}
        }),
        volumes: vec![],
        // Short enough that rounds meet running rebuilds (changes queue
        // behind them), long enough that a round is coalesced.
        config: "rebuild_debounce_ms = 300\n",
    }
}

/// A distinct, well-formed ed25519 public key line.
fn ssh_key(n: usize) -> String {
    let mut blob = Vec::new();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(n as u64).to_be_bytes());
    key[8] = 0x5a;
    for field in [&b"ssh-ed25519"[..], &key[..]] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    format!(
        "ssh-ed25519 {} client{n}@test",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// 200, or 201 for a user created.
fn is_success(code: i64) -> bool {
    code == 200 || code == 201
}

/// The `code` of the mutation's result (two levels under `data`).
fn code_of(r: &Value) -> i64 {
    assert_no_errors(r);
    let namespace = r["data"].as_object().unwrap().values().next().unwrap();
    let result = namespace.as_object().unwrap().values().next().unwrap();
    result["code"].as_i64().unwrap_or_else(|| panic!("{r}"))
}

const TIMEZONE: &str =
    "mutation($t: String!) { system { changeTimezone(timezone: $t) { code message timezone } } }";
const SSH: &str = "mutation($e: Boolean!) { system { changeSshSettings(settings: {enable: $e}) { code message enable } } }";
const CREATE_USER: &str = "mutation($u: String!) { users { createUser(user: {username: $u, password: \"Concurrent-Pass-1\"}) { code message user { username } } } }";
const DELETE_USER: &str =
    "mutation($u: String!) { users { deleteUser(username: $u) { code message } } }";
const ADD_KEY: &str = "mutation($u: String!, $k: String!) { users { addSshKey(sshInput: {username: $u, sshKey: $k}) { code message } } }";
const ENABLE: &str =
    "mutation($id: String!) { services { enableService(serviceId: $id) { code message } } }";
const DISABLE: &str =
    "mutation($id: String!) { services { disableService(serviceId: $id) { code message } } }";
const CONFIGURE: &str = "mutation($id: String!, $c: JSON!) { services { setServiceConfiguration(input: {serviceId: $id, configuration: $c}) { code message } } }";

/// What client `i` does in round `round`: a mix of every kind of change.
fn operation(round: usize, i: usize) -> (&'static str, Value) {
    let service = format!("m{}", i / 5);
    match i % 5 {
        // Everyone in a round asks for the same value: the end state is
        // the last round's.
        0 if i.is_multiple_of(10) => (TIMEZONE, json!({"t": TIMEZONES[round % 4]})),
        0 => (SSH, json!({"e": round % 2 == 1})),
        // A user of this round's, and the one of the previous round's
        // deleted at the same time.
        1 => (CREATE_USER, json!({"u": format!("r{round}c{i}")})),
        2 if round > 0 => (
            DELETE_USER,
            json!({"u": format!("r{}c{}", round - 1, i - 1)}),
        ),
        2 => (ADD_KEY, json!({"u": "keyholder", "k": ssh_key(10_000 + i)})),
        3 => {
            // Flip the service's state each round.
            let initially_on = (i / 5).is_multiple_of(2);
            let on = initially_on != round.is_multiple_of(2);
            (if on { ENABLE } else { DISABLE }, json!({"id": service}))
        }
        _ => (
            CONFIGURE,
            json!({"id": service, "c": {"subdomain": format!("r{round}s{}", i / 5)}}),
        ),
    }
}

/// Runs `requests` at once, one task each; returns their answers' codes.
async fn at_once(client: &Client, requests: Vec<(&'static str, Value)>) -> Vec<i64> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(query, variables)| {
            let client = client.clone();
            tokio::spawn(async move { code_of(&client.query(query, variables).await) })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes
}

/// Polls the job list until `stop`, counting the most rebuild jobs seen
/// RUNNING at once.
fn watch_running_rebuilds(
    client: Client,
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut polls = 0;
        while !stop.load(Ordering::Relaxed) {
            let r = client
                .query("{ jobs { getJobs { typeId status } } }", json!({}))
                .await;
            let running = r["data"]["jobs"]["getJobs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| j["typeId"] == "system.nixos.rebuild" && j["status"] == "RUNNING")
                .count();
            most.fetch_max(running, Ordering::Relaxed);
            polls += 1;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        polls
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_at_once_lose_no_change_and_never_overlap_rebuilds() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let most_running = Arc::new(AtomicUsize::new(0));
    let watcher = watch_running_rebuilds(client.clone(), stop.clone(), most_running.clone());

    let mut operations = 0;
    let mut accepted = 0;
    for round in 0..ROUNDS {
        let requests: Vec<_> = (0..CLIENTS).map(|i| operation(round, i)).collect();
        let codes = at_once(&client, requests).await;
        operations += codes.len();
        for (i, code) in codes.iter().enumerate() {
            assert!(
                is_success(*code),
                "round {round}, client {i}: {code} for {:?}",
                operation(round, i)
            );
        }
        accepted += codes.len();
    }

    // 50 keys added to one user at once: every one is kept.
    let keys: Vec<String> = (0..CLIENTS).map(ssh_key).collect();
    let codes = at_once(
        &client,
        keys.iter()
            .map(|k| (ADD_KEY, json!({"u": "keyholder", "k": k})))
            .collect(),
    )
    .await;
    operations += codes.len();
    assert!(codes.iter().all(|c| is_success(*c)), "{codes:?}");
    accepted += codes.len();

    // Races for one name and one key: exactly one winner, the rest 409.
    let codes = at_once(
        &client,
        (0..CLIENTS)
            .map(|_| (CREATE_USER, json!({"u": "contested"})))
            .collect(),
    )
    .await;
    operations += codes.len();
    assert_eq!(
        codes.iter().filter(|c| is_success(**c)).count(),
        1,
        "{codes:?}"
    );
    assert!(
        codes.iter().all(|c| is_success(*c) || *c == 409),
        "{codes:?}"
    );
    accepted += 1;
    let contested_key = ssh_key(99_999);
    let codes = at_once(
        &client,
        (0..CLIENTS)
            .map(|_| (ADD_KEY, json!({"u": "keyholder", "k": contested_key})))
            .collect(),
    )
    .await;
    operations += codes.len();
    assert_eq!(
        codes.iter().filter(|c| is_success(**c)).count(),
        1,
        "{codes:?}"
    );
    assert!(
        codes.iter().all(|c| is_success(*c) || *c == 409),
        "{codes:?}"
    );
    accepted += 1;

    let job = last_rebuild_done(&client).await;
    stop.store(true, Ordering::Relaxed);
    let polls = watcher.await.unwrap();
    assert_eq!(job["status"], "FINISHED", "{job}");

    // Every accepted change is in userdata.
    let userdata: Value =
        serde_json::from_slice(&std::fs::read(testbed.path(USERDATA)).unwrap()).unwrap();
    let last = ROUNDS - 1;
    assert_eq!(userdata["timezone"], TIMEZONES[last % 4]);
    assert_eq!(userdata["ssh"]["enable"], last % 2 == 1);
    assert_eq!(userdata["unknownKey"], json!({"kept": [1, 2, 3]}));
    let users: BTreeSet<String> = userdata["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    let mut expected_users: BTreeSet<String> = (0..CLIENTS)
        .filter(|i| i % 5 == 1)
        .map(|i| format!("r{last}c{i}"))
        .collect();
    expected_users.insert("keyholder".into());
    expected_users.insert("contested".into());
    assert_eq!(users, expected_users, "users created and deleted");
    let holder = userdata["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "keyholder")
        .unwrap();
    let held: BTreeSet<&str> = holder["sshKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut expected_keys: BTreeSet<String> = keys.iter().cloned().collect();
    expected_keys.extend(
        (0..CLIENTS)
            .filter(|i| i % 5 == 2)
            .map(|i| ssh_key(10_000 + i)),
    );
    expected_keys.insert(contested_key.clone());
    let lost_keys: Vec<_> = expected_keys
        .iter()
        .filter(|k| !held.contains(k.as_str()))
        .collect();
    assert!(lost_keys.is_empty(), "lost SSH keys: {lost_keys:?}");
    assert_eq!(held.len(), expected_keys.len(), "no key twice");
    let mut lost_services = 0;
    for k in 0..SERVICES {
        let module = &userdata["modules"][format!("m{k}")];
        let on = k.is_multiple_of(2) != last.is_multiple_of(2);
        lost_services += usize::from(module["enable"] != on);
        lost_services += usize::from(module["subdomain"] != format!("r{last}s{k}"));
    }
    assert_eq!(
        lost_services, 0,
        "service changes lost: {:?}",
        userdata["modules"]
    );

    // The answers agree with the file.
    let r = client
        .query("{ users { allUsers { username sshKeys } } }", json!({}))
        .await;
    let listed: BTreeSet<String> = r["data"]["users"]["allUsers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .filter(|u| u != "owner" && u != "root")
        .collect();
    assert_eq!(listed, expected_users, "{r}");

    // Few rebuilds (changes coalesced), never two at once, and one run of
    // the rebuild unit per rebuild job that ran.
    let r = client
        .query("{ jobs { getJobs { typeId status } } }", json!({}))
        .await;
    let rebuilds: Vec<Value> = r["data"]["jobs"]["getJobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["typeId"] == "system.nixos.rebuild")
        .cloned()
        .collect();
    let finished = rebuilds
        .iter()
        .filter(|j| j["status"] == "FINISHED")
        .count();
    assert_eq!(
        finished,
        rebuilds.len(),
        "every rebuild finished: {rebuilds:?}"
    );
    assert!(
        rebuilds.len() * 10 <= accepted,
        "{} rebuilds for {accepted} changes",
        rebuilds.len()
    );
    let most = most_running.load(Ordering::Relaxed);
    assert!(most <= 1, "{most} rebuild jobs ran at once");
    let journal = testbed.run(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "sp-nixos-rebuild.service",
    ]);
    let unit_runs = journal
        .lines()
        .filter(|l| l.starts_with("Starting "))
        .count();
    assert_eq!(
        unit_runs,
        rebuilds.len(),
        "unit runs per rebuild job:\n{journal}"
    );

    report(format!(
        "concurrency: {CLIENTS} clients, {operations} operations ({accepted} accepted, the rest \
         409 in races), {} rebuild jobs (most running at once: {most}, seen over {polls} polls), \
         lost updates 0 (keys {}, users {}, services {SERVICES}) in {:.1}s",
        rebuilds.len(),
        expected_keys.len(),
        expected_users.len(),
        started.elapsed().as_secs_f64()
    ));
}

/// The content of every regular file under `folder` (path -> sha256): what
/// a move, a backup and a restore must all keep.
fn contents(testbed: &Testbed, folder: &str) -> std::collections::BTreeMap<String, Value> {
    crate::storage::manifest(testbed, folder)
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(path, entry)| Some((path.clone(), entry.get("sha256")?.clone())))
        .collect()
}

async fn notes_jobs(client: &Client) -> Vec<Value> {
    let r = client
        .query("{ jobs { getJobs { uid typeId status } } }", json!({}))
        .await;
    r["data"]["jobs"]["getJobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["typeId"].as_str().unwrap().contains("notes"))
        .cloned()
        .collect()
}

/// 50 clients at once ask to move, back up and restore the same service:
/// exactly one is accepted, the others get 409 and start nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_operation_per_service_when_fifty_clients_move_back_up_and_restore_it_at_once() {
    use crate::storage::{CONFIG, location, prepared};
    let (testbed, client) = prepared(vec!["sdb:96", "sdc:96"], CONFIG, 1000).await;
    // restic restores sparse files in full: 600 MB would not fit back.
    testbed.run(&["sh", "-c", "rm /var/lib/notes/sparse*.img"]);
    let original = contents(&testbed, "/var/lib/notes");
    let r = client
        .query(
            "mutation { backup { initializeRepository(repository: {provider: FILE, locationId: \"\", locationName: \"/var/lib/backup-repo\", login: \"\", password: \"\"}) { code message } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r["data"]["backup"]["initializeRepository"]["code"], 200,
        "{r}"
    );
    const BACKUP: &str =
        "mutation { backup { startBackup(serviceId: \"notes\") { code message job { uid } } } }";
    let r = client.query(BACKUP, json!({})).await;
    let uid = r["data"]["backup"]["startBackup"]["job"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    let first = crate::services::wait_job_done(&client, &uid).await;
    assert_eq!(first["status"], "FINISHED", "{first}");
    let r = client
        .query(
            "{ backup { allSnapshots { id service { id } } } }",
            json!({}),
        )
        .await;
    let snapshot = r["data"]["backup"]["allSnapshots"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    let jobs_before = notes_jobs(&client).await.len();

    const MOVE: &str = "mutation { services { moveService(input: {serviceId: \"notes\", location: \"sdc\"}) { code message job { uid } } } }";
    const RESTORE: &str = "mutation($s: String!) { backup { restoreBackup(snapshotId: $s) { code message job { uid } } } }";
    let requests: Vec<(&'static str, Value)> = (0..CLIENTS)
        .map(|i| match i % 3 {
            0 => (MOVE, json!({})),
            1 => (BACKUP, json!({})),
            _ => (RESTORE, json!({"s": snapshot})),
        })
        .collect();
    let codes = at_once(&client, requests).await;
    let accepted: Vec<usize> = (0..CLIENTS).filter(|i| codes[*i] == 200).collect();
    assert_eq!(accepted.len(), 1, "exactly one accepted: {codes:?}");
    assert!(
        codes.iter().all(|c| *c == 200 || *c == 409),
        "the others 409: {codes:?}"
    );

    // One job started, and it ends well; the data is all there.
    let jobs = notes_jobs(&client).await;
    assert_eq!(jobs.len(), jobs_before + 1, "{jobs:?}");
    let winner = jobs.last().unwrap()["uid"].as_str().unwrap().to_owned();
    let job = crate::services::wait_job_done(&client, &winner).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(contents(&testbed, "/var/lib/notes"), original);
    let kind = ["move", "backup", "restore"][accepted[0] % 3];
    if kind == "move" {
        assert_eq!(location(&testbed), "sdc");
    }
    assert_eq!(testbed.unit_state("notes.service"), "active");
    report(format!(
        "concurrency: {CLIENTS} clients moving, backing up and restoring one service at once: \
         1 accepted ({kind}), {} refused with 409, overlapping jobs 0, files lost 0 of {}",
        CLIENTS - 1,
        original.len()
    ));
}

/// Changes accepted while a rebuild runs are queued in memory until it
/// ends; the app sees them at once all the same (a user it created can be
/// listed and deleted, a service it enabled shows enabled).
#[tokio::test]
async fn changes_queued_behind_a_running_rebuild_are_seen_at_once() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    std::fs::write(testbed.path("/etc/nixos/.standin-delay"), "4").unwrap();
    let r = client
        .query(
            "mutation { system { runSystemRebuild { code job { uid } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code_of(&r), 200);
    let running = r["data"]["system"]["runSystemRebuild"]["job"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::services::wait_unit_state(&testbed, "sp-nixos-rebuild.service", "activating").await;

    let created = client.query(CREATE_USER, json!({"u": "queued"})).await;
    assert!(is_success(code_of(&created)), "{created}");
    let r = client
        .query("mutation { services { enableService(serviceId: \"m1\") { code service { isEnabled } } } }", json!({}))
        .await;
    assert_eq!(code_of(&r), 200);
    assert_eq!(
        r["data"]["services"]["enableService"]["service"]["isEnabled"], true,
        "{r}"
    );
    let r = client
        .query(
            "{ users { allUsers { username } } services { allServices { id isEnabled } } }",
            json!({}),
        )
        .await;
    assert!(
        r["data"]["users"]["allUsers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "queued"),
        "{r}"
    );
    let m1 = r["data"]["services"]["allServices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "m1")
        .unwrap();
    assert_eq!(m1["isEnabled"], true, "{r}");
    let key = client
        .query(ADD_KEY, json!({"u": "queued", "k": ssh_key(1)}))
        .await;
    assert!(is_success(code_of(&key)), "{key}");
    // Still queued: the file has none of it yet.
    let job = crate::services::job_by_uid(&client, &running).await;
    assert_eq!(job["status"], "RUNNING", "{job}");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(testbed.path(USERDATA)).unwrap()).unwrap();
    assert_eq!(on_disk["modules"]["m1"]["enable"], false);

    let deleted = client.query(DELETE_USER, json!({"u": "queued"})).await;
    assert_eq!(code_of(&deleted), 200, "{deleted}");
    let job = last_rebuild_done(&client).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(testbed.path(USERDATA)).unwrap()).unwrap();
    assert_eq!(on_disk["modules"]["m1"]["enable"], true);
    assert!(
        !on_disk["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "queued")
    );
}
