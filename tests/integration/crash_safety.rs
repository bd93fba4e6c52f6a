//! Crash safety: the daemon is SIGKILLed at random moments while it writes
//! userdata.json over and over. After every kill the file parses and holds
//! either the content before the interrupted write or after it, no temp
//! file is left once the daemon is back, and the daemon starts cleanly.
//! And the copying child of a move killed mid-copy (not the daemon): the
//! move fails and rolls back with the data intact.

use crate::support::{Client, Daemon, http_client, report};
use rand::{Rng, RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writes attempted in all, across restarts.
const WRITES: usize = 1000;
/// The longest a daemon lives before it is killed; the delays are uniform
/// below it, so some kills land before the first write of a life.
const MAX_LIFE_MS: u64 = 400;
const TIMEZONES: [&str; 4] = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Etc/UTC"];

/// A settings change as the app sends it, and what it does to userdata
/// (as the daemon's settings code does it).
struct Write {
    query: &'static str,
    variables: Value,
    apply: Box<dyn Fn(&mut Value) + Send>,
}

/// A change of one setting to a value other than the one `document` holds:
/// every write changes the file.
fn next_write(rng: &mut impl rand::Rng, document: &Value) -> Write {
    match rng.random_range(0..3) {
        0 => {
            let current = document["timezone"].as_str().unwrap_or("Etc/UTC");
            let choices: Vec<_> = TIMEZONES.iter().filter(|t| **t != current).collect();
            let timezone = *choices[rng.random_range(0..choices.len())];
            Write {
                query: "mutation($t: String!) { system { changeTimezone(timezone: $t) { code message timezone } } }",
                variables: json!({"t": timezone}),
                apply: Box::new(move |d| d["timezone"] = json!(timezone)),
            }
        }
        1 => {
            let enable = document["ssh"]["enable"] != true;
            Write {
                query: "mutation($e: Boolean!) { system { changeSshSettings(settings: {enable: $e}) { code message enable } } }",
                variables: json!({"e": enable}),
                apply: Box::new(move |d| d["ssh"]["enable"] = json!(enable)),
            }
        }
        _ => {
            let enable = document["autoUpgrade"]["enable"] != true;
            let allow_reboot = rng.random_bool(0.5);
            Write {
                query: "mutation($e: Boolean!, $r: Boolean!) { system { changeAutoUpgradeSettings(settings: {enableAutoUpgrade: $e, allowReboot: $r}) { code message enableAutoUpgrade allowReboot } } }",
                variables: json!({"e": enable, "r": allow_reboot}),
                apply: Box::new(move |d| {
                    d["autoUpgrade"]["enable"] = json!(enable);
                    d["autoUpgrade"]["allowReboot"] = json!(allow_reboot);
                }),
            }
        }
    }
}

/// A request that may fail (the daemon is killed under it).
async fn try_query(client: &Client, query: &str, variables: &Value) -> Option<Value> {
    let response = http_client()
        .post(&client.url)
        .timeout(Duration::from_secs(30))
        .header("Authorization", format!("Bearer {}", client.token))
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// What the writer knows: the file as the last answered write left it, and
/// the write under way (the file as it leaves it), if any.
#[derive(Default)]
struct Known {
    answered: Value,
    in_flight: Option<Value>,
    attempted: usize,
    answered_count: usize,
}

/// Sends writes one after another until the daemon goes away.
async fn write_until_killed(client: Client, known: Arc<Mutex<Known>>, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    loop {
        let (write, expected) = {
            let mut known = known.lock().unwrap();
            let write = next_write(&mut rng, &known.answered);
            let mut expected = known.answered.clone();
            (write.apply)(&mut expected);
            known.in_flight = Some(expected.clone());
            known.attempted += 1;
            (write, expected)
        };
        let Some(answer) = try_query(&client, write.query, &write.variables).await else {
            return;
        };
        let result = answer["data"]["system"]
            .as_object()
            .and_then(|fields| fields.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(result["code"], 200, "{answer}");
        let mut known = known.lock().unwrap();
        known.answered = expected;
        known.in_flight = None;
        known.answered_count += 1;
    }
}

fn temp_files_beside(file: &Path) -> Vec<String> {
    let name = file.file_name().unwrap().to_str().unwrap();
    std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&format!(".{name}.")) && n.ends_with(".tmp"))
        .collect()
}

fn read_json(file: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Waits until no rebuild is scheduled or running: one resumed at start
/// fails here (there is no system bus) and puts back the applied copy of
/// userdata, which is a write of the daemon's own, not one of ours.
async fn wait_rebuilds_settled(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = try_query(client, "{ jobs { getJobs { typeId status } } }", &json!({}))
            .await
            .expect("the daemon answers");
        let busy = jobs["data"]["jobs"]["getJobs"]
            .as_array()
            .expect("a job list")
            .iter()
            .any(|j| {
                j["typeId"] == "system.nixos.rebuild"
                    && (j["status"] == "CREATED" || j["status"] == "RUNNING")
            });
        if !busy {
            return;
        }
        assert!(Instant::now() < deadline, "a rebuild stayed busy: {jobs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// userdata as a server has it, large enough (tens of KiB) that a write
/// takes a while, with keys the daemon does not know.
fn initial_userdata() -> Value {
    let users: Vec<Value> = (0..150)
        .map(|i| {
            json!({
                "username": format!("user{i}"),
                "hashedPassword": format!("$y$j9T${i:0>40}"),
                "sshKeys": [format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i:0>43} user{i}@phone")],
            })
        })
        .collect();
    json!({
        "domain": "crash.test",
        "username": "owner",
        "hashedMasterPassword": "$y$j9T$owner",
        "timezone": "Etc/UTC",
        "ssh": {"enable": true, "rootKeys": ["ssh-ed25519 AAAA root@laptop"]},
        "autoUpgrade": {"enable": true, "allowReboot": false},
        "users": users,
        "unknownKey": {"kept": [1, 2, 3]},
    })
}

#[tokio::test]
async fn userdata_survives_a_thousand_writes_with_random_kill_9() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash safety: seed {seed} (CRASH_SEED={seed} repeats its delays and values)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();

    // No rebuild starts on its own: every accepted change is written at
    // once, not queued behind a rebuild.
    let mut daemon = Daemon::start_with_config("rebuild_debounce_ms = 600000\n").await;
    let userdata = daemon.state_dir.path().join("userdata.json");
    std::fs::write(
        &userdata,
        serde_json::to_string_pretty(&initial_userdata()).unwrap(),
    )
    .unwrap();
    // Restarted so that it takes this file as the applied configuration.
    daemon.kill();
    assert!(daemon.try_launch().await, "the daemon did not start");

    let (mut attempted, mut answered, mut kills) = (0, 0, 0);
    let (mut unparsable, mut bytes_lost, mut mismatches) = (0, 0, 0);
    let (mut kills_mid_write, mut in_flight_landed) = (0, 0);
    while attempted < WRITES {
        wait_rebuilds_settled(&daemon).await;
        let before = read_json(&userdata).expect("userdata parses at the start of a life");
        let known = Arc::new(Mutex::new(Known {
            answered: before,
            ..Default::default()
        }));
        let writer = tokio::spawn(write_until_killed(
            daemon.client.clone(),
            known.clone(),
            rng.random(),
        ));
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..MAX_LIFE_MS))).await;
        daemon.kill();
        kills += 1;
        writer.await.expect("the writer ends when the daemon dies");

        let known = std::mem::take(&mut *known.lock().unwrap());
        attempted += known.attempted;
        answered += known.answered_count;
        let leftovers = temp_files_beside(&userdata);
        if !leftovers.is_empty() {
            kills_mid_write += 1;
        }
        match read_json(&userdata) {
            Err(e) => {
                unparsable += 1;
                bytes_lost += serde_json::to_vec_pretty(&known.answered).unwrap().len();
                eprintln!("kill {kills}: userdata does not parse: {e}");
            }
            Ok(on_disk) if on_disk == known.answered => {}
            Ok(on_disk) if Some(&on_disk) == known.in_flight.as_ref() => in_flight_landed += 1,
            Ok(on_disk) => {
                mismatches += 1;
                bytes_lost += serde_json::to_vec_pretty(&known.answered).unwrap().len();
                eprintln!(
                    "kill {kills}: userdata is neither the answered content nor the one in flight:\n{on_disk}\nanswered: {}",
                    known.answered
                );
            }
        }

        assert!(
            daemon.try_launch().await,
            "kill {kills}: the daemon did not start cleanly"
        );
        // Once the daemon is idle again: a temp file now is one the killed
        // daemon left and the new one did not clear.
        wait_rebuilds_settled(&daemon).await;
        let left = temp_files_beside(&userdata);
        assert!(
            left.is_empty(),
            "kill {kills}: temp files left after a restart: {left:?}"
        );
    }
    // The last state is still there after all those lives.
    wait_rebuilds_settled(&daemon).await;
    let last = read_json(&userdata).unwrap();
    assert_eq!(last["unknownKey"], json!({"kept": [1, 2, 3]}));
    assert_eq!(last["users"].as_array().unwrap().len(), 150);

    report(format!(
        "crash safety: {attempted} userdata writes attempted ({answered} answered) in {:.1}s, \
         {kills} kill -9s ({kills_mid_write} left a temp file mid-write, \
         {in_flight_landed} after an unanswered write had landed), \
         unparsable files {unparsable}, files neither old nor new {mismatches}, bytes lost {bytes_lost}",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(unparsable, 0);
    assert_eq!(mismatches, 0);
    assert_eq!(bytes_lost, 0);
    assert!(answered > 0 && kills > 1);
}

/// The host PIDs of `cp` processes copying into `volume` (the testbed's
/// processes are in the host's /proc).
fn copiers_into(volume: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let copying = args.first() == Some(&&b"cp"[..])
                && args.iter().any(|a| a.starts_with(volume.as_bytes()));
            copying.then_some(pid)
        })
        .collect()
}

#[tokio::test]
async fn cp_killed_mid_copy_fails_the_move_rolls_back_and_restarts_the_service() {
    use crate::storage::{
        CONFIG, assert_same_files, exists, follow, invocation, location, manifest, move_notes,
        prepared,
    };
    let (testbed, client) = prepared(vec!["sdb:96", "sdc:96"], CONFIG, 3000).await;
    let original = manifest(&testbed, "/var/lib/notes");
    let before = invocation(&testbed);

    let started = move_notes(&client, "sdc").await;
    assert_eq!(started["code"], 200, "{started}");
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    // The copying child is killed, not the daemon.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed = loop {
        let copiers = copiers_into("/volumes/sdc");
        if let Some(pid) = copiers.first() {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -KILL {pid}");
            break *pid;
        }
        assert!(Instant::now() < deadline, "cp never ran");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let (job, _) = follow(&client, &uid).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("copying") && error.contains("stays on sdb"),
        "{job}"
    );

    // Rolled back: the data where it was and complete, nothing left on the
    // target, the service running again (a new invocation), userdata as it was.
    assert_same_files(
        &testbed,
        "/var/lib/notes",
        &original,
        "after the failed move",
    );
    assert_eq!(location(&testbed), "sdb");
    assert!(!exists(&testbed, "/volumes/sdc/notes"));
    assert!(!exists(&testbed, "/volumes/sdc/.notes.sp-moving"));
    assert_eq!(testbed.unit_state("notes.service"), "active");
    assert_ne!(
        invocation(&testbed),
        before,
        "the service was started again"
    );
    report(format!(
        "crash safety: cp (pid {killed}) killed mid-copy: move ERROR, rolled back, {} entries intact, bytes lost 0",
        original.as_object().unwrap().len()
    ));
}

/// An upgrade (not only a rebuild) that the daemon dies in the middle of is
/// followed again after the restart and ends; it never stays RUNNING.
#[tokio::test]
async fn an_upgrade_outlives_a_kill_9_of_the_daemon_and_ends() {
    use crate::services::{wait_job_done, wait_unit_state};
    use crate::testbed::{Setup, Testbed, module};
    let testbed = Testbed::up(Setup {
        modules: vec![("echo", module("echo", &["echo.service"], json!({})))],
        userdata: json!({"domain": "example.org", "modules": {"echo": {"enable": true}}}),
        volumes: vec![],
        config: "",
    });
    let client = testbed.start_daemon().await;
    std::fs::write(testbed.path("/etc/nixos/.standin-delay"), "2").unwrap();
    let r = client
        .query(
            "mutation { system { runSystemUpgrade { code message job { uid typeId } } } }",
            json!({}),
        )
        .await;
    let started = &r["data"]["system"]["runSystemUpgrade"];
    assert_eq!(started["code"], 200, "{r}");
    assert_eq!(started["job"]["typeId"], "system.nixos.upgrade");
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    wait_unit_state(&testbed, "sp-nixos-upgrade.service", "activating").await;
    testbed.restart_daemon(&client).await;
    let job = wait_job_done(&client, &uid).await;
    assert_eq!(job["status"], "FINISHED", "followed after the kill: {job}");
    assert_eq!(testbed.unit_state("echo.service"), "active");
    report(
        "crash safety: upgrade killed mid-run (kill -9 of the daemon): job FINISHED after the restart"
            .to_owned(),
    );
}

/// `bytes` of seeded random data at `path`.
fn random_file(path: &Path, bytes: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; bytes];
    rng.fill_bytes(&mut data);
    std::fs::write(path, data).unwrap();
}

/// A total backup (every service, one job) the daemon is killed in: at
/// the next start the job is marked interrupted, the service it had
/// stopped runs again, the data is as it was, and the next total backup
/// completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_total_backup_killed_mid_run_is_marked_interrupted_and_the_next_one_completes() {
    use crate::services::{job_by_uid, wait_job_done};
    use crate::testbed::{Setup, Testbed, module};
    let services = ["echo", "web"];
    let testbed = Testbed::up(Setup {
        modules: services
            .iter()
            .map(|id| {
                (
                    *id,
                    module(
                        id,
                        &[&format!("{id}.service")],
                        json!({"folders": [format!("/var/lib/{id}")]}),
                    ),
                )
            })
            .collect(),
        userdata: json!({
            "domain": "example.org", "hostname": "testbed", "timezone": "Etc/UTC",
            "modules": {"echo": {"enable": true}, "web": {"enable": true}}
        }),
        volumes: vec![],
        config: "",
    });
    let client = testbed.start_daemon().await;
    let r = client
        .query(
            "mutation { system { runSystemRebuild { job { uid } } } }",
            json!({}),
        )
        .await;
    let uid = r["data"]["system"]["runSystemRebuild"]["job"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_job_done(&client, &uid).await["status"], "FINISHED");
    let mut original = Vec::new();
    for (s, id) in services.iter().enumerate() {
        let folder = testbed.path(&format!("/var/lib/{id}"));
        std::fs::create_dir_all(&folder).unwrap();
        for n in 0..4 {
            random_file(
                &folder.join(format!("part-{n}")),
                16 << 20,
                (s * 100 + n) as u64,
            );
        }
        original.push(std::fs::read_dir(&folder).unwrap().count());
    }
    let digest = || testbed.run(&["sh", "-c", "cd /var/lib && sha256sum echo/* web/*"]);
    let before = digest();
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
    const TOTAL: &str = "mutation { backup { totalBackup { code message job { uid } } } }";
    let r = client.query(TOTAL, json!({})).await;
    let uid = r["data"]["backup"]["totalBackup"]["job"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    // Killed while one of the services is stopped for its backup.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stopped = loop {
        if let Some(id) = services
            .iter()
            .find(|id| testbed.unit_state(&format!("{id}.service")) != "active")
        {
            break *id;
        }
        assert!(Instant::now() < deadline, "no service was ever stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    testbed.restart_daemon(&client).await;

    let job = job_by_uid(&client, &uid).await;
    assert_eq!(job["status"], "ERROR", "marked interrupted at start: {job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Interrupted"),
        "{job}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in services {
        while testbed.unit_state(&format!("{id}.service")) != "active" {
            assert!(
                Instant::now() < deadline,
                "{id}.service was not started again after the daemon came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(digest(), before, "the data is as it was");

    let r = client.query(TOTAL, json!({})).await;
    let again = r["data"]["backup"]["totalBackup"]["job"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    let job = wait_job_done(&client, &again).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let r = client
        .query(
            "{ backup { allSnapshots { id service { id } } } }",
            json!({}),
        )
        .await;
    let snapshotted: BTreeSet<&str> = r["data"]["backup"]["allSnapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["service"]["id"].as_str())
        .collect();
    for id in services {
        assert!(snapshotted.contains(id), "{id} has a snapshot: {r}");
    }
    report(format!(
        "crash safety: total backup killed while {stopped} was stopped: job ERROR (interrupted), \
         services running again, {} files unchanged, the next total backup FINISHED",
        original.iter().sum::<usize>()
    ));
}
