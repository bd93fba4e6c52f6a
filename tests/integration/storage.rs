//! Volumes and moves of a service's data between them, in the testbed on
//! real ext4 volumes (loop devices): a round trip keeping every file as it
//! was, a daemon killed at each step of a move, refusals before anything
//! is stopped, and mounting, unmounting and resizing volumes.

use crate::app_operations::operation;
use crate::services::{job_by_uid, rebuild, wait_job_done};
use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub const CONFIG: &str = "rebuild_debounce_ms = 300\n";

/// A movable module whose data folder is /var/lib/notes, owned by www-data.
pub fn notes_module() -> String {
    let mut definition: Value = serde_json::from_str(&module(
        "notes",
        &["notes.service"],
        json!({"folders": ["/var/lib/notes"], "isMovable": true,
               "user": "www-data", "group": "www-data"}),
    ))
    .unwrap();
    definition["options"].as_object_mut().unwrap().insert(
        "location".into(),
        json!({"name": "location", "default": null, "meta": {"type": "location"}}),
    );
    definition.to_string()
}

fn setup(volumes: Vec<&'static str>, config: &'static str) -> Setup<'static> {
    Setup {
        modules: vec![("notes", notes_module())],
        userdata: json!({
            "domain": "example.org", "useBinds": true, "timezone": "Etc/UTC",
            "modules": {"notes": {"enable": true, "location": "sdb"}}
        }),
        volumes,
        config,
    }
}

/// Fills /var/lib/notes (what the service sees), or the folder given
/// second, with `count` small files
/// in folders, some owned by nobody, odd modes, symlinks (one dangling),
/// hard links, sparse files and files with extended attributes.
const POPULATE: &str = r#"
import os, sys
root = sys.argv[2] if len(sys.argv) > 2 else '/var/lib/notes'
count = int(sys.argv[1])
os.makedirs(root, exist_ok=True)
os.chown(root, 33, 33)
os.chmod(root, 0o750)
for i in range(count):
    d = os.path.join(root, 'd%02d' % (i % 40))
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, 'f%05d.txt' % i)
    with open(p, 'wb') as f:
        f.write((('line %d ' % i) * (i % 50 + 1)).encode())
    if i % 7 == 0:
        os.chown(p, 65534, 65534)
    if i % 11 == 0:
        os.chmod(p, 0o600)
    if i % 13 == 0:
        os.chmod(p, 0o4755)
    if i % 17 == 0:
        os.setxattr(p, 'user.sp.test', ('value %d' % i).encode())
    if i % 19 == 0:
        os.symlink('f%05d.txt' % i, p + '.link')
    if i % 23 == 0:
        os.link(p, p + '.hard')
os.symlink('/nonexistent/target', os.path.join(root, 'dangling'))
os.symlink('/etc/hostname', os.path.join(root, 'absolute'))
for n in range(3):
    with open(os.path.join(root, 'sparse%d.img' % n), 'wb') as f:
        f.truncate(200 * 1024 * 1024)
        f.seek(n * 50 * 1024 * 1024)
        f.write(os.urandom(4096))
with open(os.path.join(root, 'random.bin'), 'wb') as f:
    f.write(os.urandom(4 * 1024 * 1024))
os.makedirs(os.path.join(root, 'private'), mode=0o700)
os.chown(os.path.join(root, 'private'), 65534, 65534)
os.setxattr(os.path.join(root, 'private'), 'user.sp.dir', b'on a folder')
"#;

/// Every entry under a folder: type, mode, owner, size, times, content
/// hash, link target, link count and extended attributes.
const MANIFEST: &str = r#"
import os, sys, json, hashlib, stat
root = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in [''] + sorted(dirnames) + sorted(filenames):
        if name == '' and dirpath != root:
            continue
        p = os.path.join(dirpath, name) if name else dirpath
        st = os.lstat(p)
        e = {'mode': oct(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid}
        if stat.S_ISLNK(st.st_mode):
            e['target'] = os.readlink(p)
        else:
            e['xattrs'] = sorted((k, os.getxattr(p, k).hex()) for k in os.listxattr(p))
        if stat.S_ISREG(st.st_mode):
            with open(p, 'rb') as f:
                e['sha256'] = hashlib.sha256(f.read()).hexdigest()
            e['size'] = st.st_size
            e['mtime'] = st.st_mtime_ns
            e['nlink'] = st.st_nlink
            e['sparse'] = st.st_blocks * 512 < st.st_size
        out[os.path.relpath(p, root)] = e
print(json.dumps(out, sort_keys=True))
"#;

pub fn manifest(testbed: &Testbed, folder: &str) -> Value {
    let text = testbed.run(&["python3", "-c", MANIFEST, folder]);
    serde_json::from_str(&text).unwrap()
}

/// Fails naming the first entries that differ (not the whole tree).
pub fn assert_same_files(testbed: &Testbed, folder: &str, original: &Value, what: &str) {
    let found = manifest(testbed, folder);
    if &found == original {
        return;
    }
    let (a, b) = (original.as_object().unwrap(), found.as_object().unwrap());
    let differing: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .take(5)
        .map(|k| format!("{k}: {:?} -> {:?}", a.get(k), b.get(k)))
        .collect();
    panic!(
        "{folder} ({what}): {} entries, {} expected; first differences:\n{}",
        b.len(),
        a.len(),
        differing.join("\n")
    );
}

pub fn exists(testbed: &Testbed, path: &str) -> bool {
    testbed.exec(&["test", "-e", path]).status.success()
}

pub fn location(testbed: &Testbed) -> Value {
    let text = std::fs::read_to_string(testbed.path("/etc/nixos/userdata.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["modules"]["notes"]["location"].clone()
}

pub async fn move_notes(client: &Client, to: &str) -> Value {
    let r = client
        .query(
            &operation("MoveService"),
            json!({"input": {"serviceId": "notes", "location": to}}),
        )
        .await;
    assert_no_errors(&r);
    r["data"]["services"]["moveService"].clone()
}

async fn volumes(client: &Client) -> Vec<Value> {
    let r = client
        .query(&operation("GetServerDiskVolumes"), json!({}))
        .await;
    assert_no_errors(&r);
    r["data"]["storage"]["volumes"].as_array().unwrap().clone()
}

fn volume<'a>(volumes: &'a [Value], name: &str) -> &'a Value {
    volumes
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {volumes:?}"))
}

fn users_of(volume: &Value) -> Vec<String> {
    volume["usages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["service"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows a move job to its end, noting every progress value seen.
pub async fn follow(client: &Client, uid: &str) -> (Value, Vec<i64>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let job = job_by_uid(client, uid).await;
        if let Some(p) = job["progress"].as_i64()
            && seen.last() != Some(&p)
        {
            seen.push(p);
        }
        if job["status"] == "FINISHED" || job["status"] == "ERROR" {
            return (job, seen);
        }
        assert!(Instant::now() < deadline, "move {uid} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn invocation(testbed: &Testbed) -> String {
    testbed.run(&["systemctl", "show", "-P", "InvocationID", "notes.service"])
}

pub async fn prepared(
    volumes: Vec<&'static str>,
    config: &'static str,
    files: usize,
) -> (Testbed, Client) {
    let testbed = Testbed::up(setup(volumes, config));
    let client = testbed.start_daemon().await;
    let started = rebuild(&client).await;
    let job = wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(testbed.unit_state("notes.service"), "active");
    testbed.run(&["python3", "-c", POPULATE, &files.to_string()]);
    (testbed, client)
}

#[tokio::test]
async fn a_service_moves_to_another_volume_and_back_keeping_every_file() {
    let (testbed, client) = prepared(vec!["sdb:96", "sdc:96", "sdd:12"], CONFIG, 3000).await;
    let original = manifest(&testbed, "/var/lib/notes");
    assert!(original.as_object().unwrap().len() > 3000);
    assert_eq!(original["sparse1.img"]["sparse"], true);
    assert_eq!(original["d17/f00017.txt"]["xattrs"][0][0], "user.sp.test");
    assert_eq!(original["d00/f00000.txt"]["uid"], 65534);

    // The volumes as the app sees them: named as userdata names them.
    let listed = volumes(&client).await;
    assert_eq!(users_of(volume(&listed, "sdb")), ["notes"]);
    assert!(users_of(volume(&listed, "sdc")).is_empty());
    let sdc = volume(&listed, "sdc");
    assert_eq!(sdc["type"], "loop");
    assert!(sdc["totalSpace"].as_str().unwrap().parse::<u64>().unwrap() > 80 << 20);

    // Refused before anything is stopped: too small, not a volume, escapes.
    let before = invocation(&testbed);
    let small = move_notes(&client, "sdd").await;
    assert_eq!(small["code"], 409, "{small}");
    assert!(
        small["message"].as_str().unwrap().contains("bytes free"),
        "{small}"
    );
    assert!(small["job"].is_null());
    for bad in ["../sdc", "nowhere", "sdb"] {
        let r = move_notes(&client, bad).await;
        assert!(matches!(r["code"].as_i64(), Some(400 | 409)), "{bad}: {r}");
    }
    assert_eq!(
        invocation(&testbed),
        before,
        "the service was not restarted"
    );
    assert_eq!(testbed.unit_state("notes.service"), "active");
    assert_eq!(location(&testbed), "sdb");

    for (from, to) in [("sdb", "sdc"), ("sdc", "sdb")] {
        let started = move_notes(&client, to).await;
        assert_eq!(started["code"], 200, "{started}");
        let uid = started["job"]["uid"].as_str().unwrap().to_owned();
        assert_eq!(started["job"]["typeId"], "services.notes.move");
        // One operation per service at a time.
        let second = move_notes(&client, from).await;
        assert_eq!(second["code"], 409, "{second}");
        assert!(second["message"].as_str().unwrap().contains("being moved"));
        let (job, progress) = follow(&client, &uid).await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        assert!(
            progress.iter().any(|p| *p > 0 && *p < 100),
            "progress seen: {progress:?}"
        );
        assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
        assert_eq!(location(&testbed), to);
        assert!(!exists(&testbed, &format!("/volumes/{from}/notes")));
        assert!(!exists(
            &testbed,
            &format!("/volumes/{to}/.notes.sp-moving")
        ));
        assert_same_files(&testbed, &format!("/volumes/{to}/notes"), &original, "");
        assert_same_files(&testbed, "/var/lib/notes", &original, "seen by the service");
        assert_eq!(testbed.unit_state("notes.service"), "active");
        let listed = volumes(&client).await;
        assert_eq!(users_of(volume(&listed, to)), ["notes"]);
        assert!(users_of(volume(&listed, from)).is_empty());
    }
}

/// The steps a move records, in order; the first four roll back.
const STEPS: [&str; 7] = [
    "stopping",
    "copying",
    "verifying",
    "owning",
    "switching",
    "removing",
    "starting",
];

#[tokio::test]
async fn a_move_killed_at_any_step_leaves_one_complete_copy_and_recovers_at_start() {
    let (testbed, client) = prepared(vec!["sdb:48", "sdc:48"], CONFIG, 300).await;
    let original = manifest(&testbed, "/var/lib/notes");
    let config_file = testbed.path("/etc/selfprivacy-api/config.toml");
    for step in STEPS {
        let from = location(&testbed).as_str().unwrap().to_owned();
        let to = if from == "sdb" { "sdc" } else { "sdb" };
        std::fs::write(
            &config_file,
            format!("{CONFIG}test_pause_move_at_step = \"{step}\"\n"),
        )
        .unwrap();
        testbed.restart_daemon(&client).await;
        let started = move_notes(&client, to).await;
        assert_eq!(started["code"], 200, "{step}: {started}");
        let uid = started["job"]["uid"].as_str().unwrap().to_owned();
        wait_paused(&client, &uid, step).await;
        // SIGKILL in the middle of the move, and a start without the hook.
        std::fs::write(&config_file, CONFIG).unwrap();
        testbed.restart_daemon(&client).await;
        let cut = job_by_uid(&client, &uid).await;
        assert_eq!(cut["status"], "ERROR", "{step}: {cut}");
        assert!(
            cut["error"].as_str().unwrap().contains("Interrupted"),
            "{cut}"
        );
        let recovery = wait_recovery(&client, &uid).await;
        assert_eq!(recovery["status"], "FINISHED", "{step}: {recovery}");
        let forward = STEPS.iter().position(|s| *s == step).unwrap() >= 4;
        let (kept, gone) = if forward {
            (to, from.as_str())
        } else {
            (from.as_str(), to)
        };
        let result = recovery["result"].as_str().unwrap();
        let way = if forward { "finishing" } else { "rolling back" };
        assert!(
            result.contains(way) && result.contains(step),
            "{step}: {result}"
        );
        assert_eq!(location(&testbed), kept, "{step}");
        assert_same_files(&testbed, &format!("/volumes/{kept}/notes"), &original, step);
        assert!(
            !exists(&testbed, &format!("/volumes/{gone}/notes")),
            "{step}"
        );
        assert!(!exists(
            &testbed,
            &format!("/volumes/{to}/.notes.sp-moving")
        ));
        assert_same_files(&testbed, "/var/lib/notes", &original, step);
        assert_eq!(testbed.unit_state("notes.service"), "active", "{step}");
    }
}

/// Waits until the job `uid` stopped dead after `step` (the test hook),
/// running until then.
async fn wait_paused(client: &Client, uid: &str, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = job_by_uid(client, uid).await;
        let text = job["statusText"].as_str().unwrap_or("");
        if text.contains(&format!("TEST HOOK: paused after step {step}")) {
            return;
        }
        assert!(
            job["status"] == "RUNNING" || job["status"] == "CREATED",
            "{step}: {job}"
        );
        assert!(Instant::now() < deadline, "{step}: never paused: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The recovery job that names the interrupted job `uid`, once it ended.
async fn wait_recovery(client: &Client, uid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = client
            .query(
                "{ jobs { getJobs { uid typeId description status statusText error result } } }",
                json!({}),
            )
            .await;
        let jobs = r["data"]["jobs"]["getJobs"].as_array().unwrap().clone();
        if let Some(job) = jobs
            .iter()
            .find(|j| j["description"].as_str().unwrap_or("").contains(uid))
            && (job["status"] == "FINISHED" || job["status"] == "ERROR")
        {
            return job.clone();
        }
        assert!(Instant::now() < deadline, "no recovery of {uid}: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a storage mutation of the app and returns its result.
async fn storage_mutation(client: &Client, name: &str, field: &str, volume: &str) -> Value {
    let r = client
        .query(&operation(name), json!({"name": volume}))
        .await;
    assert_no_errors(&r);
    r["data"]["storage"][field].clone()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn volumes_are_mounted_unmounted_and_resized_with_the_real_outcome() {
    let testbed = Testbed::up(setup(vec!["sdb:32", "sdc:32", "sde:32:unmounted"], CONFIG));
    let state_dir = testbed.env["TESTBED_STATE_DIR"].clone();
    let loops = std::fs::read_to_string(format!("{state_dir}/loops")).unwrap();
    let loops: Vec<&str> = loops.lines().collect();
    let (sdb_dev, sdc_dev) = (loops[0].to_owned(), loops[1].to_owned());
    let spare_dev = loops[2].to_owned();
    let spare_name = spare_dev.trim_start_matches("/dev/").to_owned();
    // userdata lists both volumes, as on a server.
    let userdata_path = testbed.path("/etc/nixos/userdata.json");
    let mut userdata: Value =
        serde_json::from_str(&std::fs::read_to_string(&userdata_path).unwrap()).unwrap();
    userdata["volumes"] = json!([
        {"device": sdb_dev, "mountPoint": "/volumes/sdb", "fsType": "ext4"},
        {"device": sdc_dev, "mountPoint": "/volumes/sdc", "fsType": "ext4"}
    ]);
    std::fs::write(&userdata_path, userdata.to_string()).unwrap();
    let client = testbed.start_daemon().await;
    let started = rebuild(&client).await;
    wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;

    // A volume holding a service's data is not unmounted; the answer says whose.
    let refused = storage_mutation(&client, "UnmountVolume", "unmountVolume", "sdb").await;
    assert_eq!(refused["code"], 409, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("notes"),
        "{refused}"
    );
    assert!(
        testbed
            .exec(&["mountpoint", "-q", "/volumes/sdb"])
            .status
            .success()
    );

    // sdc is unmounted by the rebuild, and then shows under its device name.
    let done = storage_mutation(&client, "UnmountVolume", "unmountVolume", "sdc").await;
    assert_eq!(done["code"], 200, "{done}");
    wait_until("sdc unmounted", || {
        !testbed
            .exec(&["mountpoint", "-q", "/volumes/sdc"])
            .status
            .success()
    })
    .await;
    let kernel_name = sdc_dev.trim_start_matches("/dev/").to_owned();
    let listed = volumes(&client).await;
    assert!(listed.iter().all(|v| v["name"] != "sdc"), "{listed:?}");
    assert_eq!(volume(&listed, &kernel_name)["freeSpace"], "0");

    // Online growth: the testbed lacks CAP_SYS_RESOURCE, so resize2fs
    // fails, and the answer says so (the Python API said success).
    let grow = |image: &str, device: &str| {
        let image = format!("{state_dir}/volumes/{image}.img");
        let truncated = std::process::Command::new("truncate")
            .args(["-s", "64M", &image])
            .status()
            .unwrap();
        assert!(truncated.success());
        let refreshed = std::process::Command::new("losetup")
            .args(["-c", device])
            .status()
            .unwrap();
        assert!(refreshed.success());
    };
    grow("sdb", &sdb_dev);
    let online = storage_mutation(&client, "ResizeVolume", "resizeVolume", "sdb").await;
    assert_eq!(online["success"], false, "{online}");
    assert!(
        online["message"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{online}"
    );
    // Offline growth of a volume mounted nowhere (a new disk) works, and
    // once mounted it shows the new size. (The unmounted sdc cannot be
    // used: the container's setup still holds its filesystem.)
    let spare = volume(&listed, &spare_name).clone();
    assert_eq!(spare["freeSpace"], "0", "not mounted: {spare}");
    grow("sde", &spare_dev);
    let offline = storage_mutation(&client, "ResizeVolume", "resizeVolume", &spare_name).await;
    assert_eq!(offline["success"], true, "{offline}");
    let mounted = storage_mutation(&client, "MountVolume", "mountVolume", &spare_name).await;
    assert_eq!(mounted["code"], 200, "{mounted}");
    let mount_point = format!("/volumes/{spare_name}");
    wait_until("the volume mounted", || {
        testbed
            .exec(&["mountpoint", "-q", &mount_point])
            .status
            .success()
    })
    .await;
    let listed = volumes(&client).await;
    let total: u64 = volume(&listed, &spare_name)["totalSpace"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 48 << 20, "grown: {total}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&userdata_path).unwrap()).unwrap();
    assert_eq!(
        written["volumes"][1],
        json!({"device": spare_dev, "mountPoint": mount_point, "fsType": "ext4"})
    );
    // A name that is not a volume.
    let unknown = storage_mutation(&client, "MountVolume", "mountVolume", "../etc").await;
    assert_eq!(unknown["code"], 400, "{unknown}");

    // The volume holding the data gets unmounted behind the daemon's back
    // (dropped from userdata by hand, then a rebuild): a move would find
    // an empty folder there and carry nothing; it is refused instead.
    let mut edited: Value =
        serde_json::from_str(&std::fs::read_to_string(&userdata_path).unwrap()).unwrap();
    edited["volumes"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["mountPoint"] != "/volumes/sdb");
    std::fs::write(&userdata_path, edited.to_string()).unwrap();
    let started = rebuild(&client).await;
    wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert!(
        !testbed
            .exec(&["mountpoint", "-q", "/volumes/sdb"])
            .status
            .success()
    );
    let refused = move_notes(&client, &spare_name).await;
    assert_eq!(refused["code"], 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("is not mounted"),
        "{refused}"
    );
    assert_eq!(location(&testbed), "sdb");
}

/// The hardening of the NixOS module's `confineFilesystem` (and the
/// protections it always applies that matter for files), as systemd-run
/// properties: the daemon runs in its own mount namespace with a
/// read-only system. `protect_system` and `writable` vary.
fn confined(protect_system: &str, writable: &str) -> Vec<String> {
    [
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectHome=read-only",
        "NoNewPrivileges=yes",
        "RestrictNamespaces=yes",
        "SystemCallFilter=@system-service @mount",
        "SystemCallErrorNumber=EPERM",
    ]
    .iter()
    .map(|p| p.to_string())
    .chain([
        format!("ProtectSystem={protect_system}"),
        format!("ReadWritePaths={writable}"),
    ])
    .collect()
}

/// Starts the daemon inside with `properties`, as the NixOS module would.
async fn start_confined_daemon(testbed: &Testbed, properties: Vec<String>) -> Client {
    let daemon = "/opt/selfprivacy-api/selfprivacy-api";
    std::fs::create_dir_all(testbed.path("/etc/selfprivacy-api")).unwrap();
    std::fs::write(testbed.path("/etc/selfprivacy-api/config.toml"), CONFIG).unwrap();
    let token = testbed.run(&[
        daemon,
        "token",
        "new",
        "--device",
        "tests",
        "--state-dir",
        "/var/lib/selfprivacy-api",
    ]);
    let client = Client::new(free_port(), &token);
    let port = client.base.rsplit(':').next().unwrap().to_owned();
    let mut args = vec![
        "systemd-run".to_owned(),
        "--unit=selfprivacy-api".to_owned(),
        "--property=Type=notify".to_owned(),
    ];
    args.extend(properties.iter().map(|p| format!("--property={p}")));
    args.extend([
        daemon.to_owned(),
        "serve".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--state-dir".to_owned(),
        "/var/lib/selfprivacy-api".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    testbed.run(&args);
    testbed
        .assert_daemon_answers(&client, "the confined daemon did not answer")
        .await;
    client
}

/// A confined daemon; a volume mounted by the rebuild (another unit,
/// outside the daemon's namespace) after the daemon started; and a move of
/// the service onto it. Returns the move's answer.
async fn move_onto_a_volume_mounted_later(
    properties: Vec<String>,
) -> (Testbed, Client, Value, Value, String) {
    let testbed = Testbed::up(setup(vec!["sdb:64", "sdf:64:unmounted"], CONFIG));
    let state_dir = testbed.env["TESTBED_STATE_DIR"].clone();
    let loops = std::fs::read_to_string(format!("{state_dir}/loops")).unwrap();
    let spare = loops
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("/dev/")
        .to_owned();
    // userdata lists sdb, as on a server (else the rebuild unmounts it).
    let userdata_path = testbed.path("/etc/nixos/userdata.json");
    let mut userdata: Value =
        serde_json::from_str(&std::fs::read_to_string(&userdata_path).unwrap()).unwrap();
    let sdb_dev = loops.lines().next().unwrap();
    userdata["volumes"] =
        json!([{"device": sdb_dev, "mountPoint": "/volumes/sdb", "fsType": "ext4"}]);
    std::fs::write(&userdata_path, userdata.to_string()).unwrap();
    let client = start_confined_daemon(&testbed, properties).await;
    let started = rebuild(&client).await;
    let job = wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    testbed.run(&["python3", "-c", POPULATE, "300"]);
    let original = manifest(&testbed, "/var/lib/notes");
    let mounted = storage_mutation(&client, "MountVolume", "mountVolume", &spare).await;
    assert_eq!(mounted["code"], 200, "{mounted}");
    let mount_point = format!("/volumes/{spare}");
    wait_until("the volume mounted", || {
        testbed
            .exec(&["mountpoint", "-q", &mount_point])
            .status
            .success()
    })
    .await;
    let moved = move_notes(&client, &spare).await;
    (testbed, client, moved, original, spare)
}

/// ProtectSystem=strict makes /volumes writable by binding it over itself
/// in the daemon's namespace. A volume the rebuild mounts later (from the
/// app, outside that namespace) still shows there, as a slave of the host's
/// mounts, and the move onto it works: strict can be on by default.
#[tokio::test]
async fn under_protect_system_strict_a_volume_mounted_later_takes_a_move() {
    let properties = confined(
        "strict",
        "/etc/nixos -/etc/selfprivacy /var/lib -/volumes /root",
    );
    let (testbed, client, moved, original, spare) =
        move_onto_a_volume_mounted_later(properties).await;
    assert_eq!(moved["code"], 200, "{moved}");
    let (job, _) = follow(&client, moved["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_same_files(&testbed, &format!("/volumes/{spare}/notes"), &original, "");
    assert_same_files(&testbed, "/var/lib/notes", &original, "");
    assert_eq!(testbed.unit_state("notes.service"), "active");
}

/// The usual case: the daemon as it runs by default, a disk mounted from
/// the app, and the service moved onto it.
#[tokio::test]
async fn a_volume_mounted_from_the_app_takes_a_move() {
    let (testbed, client, moved, original, spare) = move_onto_a_volume_mounted_later(vec![]).await;
    assert_eq!(moved["code"], 200, "{moved}");
    let (job, _) = follow(&client, moved["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_same_files(&testbed, &format!("/volumes/{spare}/notes"), &original, "");
    assert_same_files(&testbed, "/var/lib/notes", &original, "");
    assert!(
        testbed
            .exec(&["mountpoint", "-q", "/volumes/sdb"])
            .status
            .success()
    );
}

/// A benchmark, not a check (run it with `--ignored`): the move of a tree
/// against `cp -a` of the same tree between the same two volumes. Prints
/// the figures; asserts only that the move finished.
#[tokio::test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
async fn move_throughput_against_cp_a() {
    let (testbed, client) = prepared(vec!["sdb:600", "sdc:600"], CONFIG, 2000).await;
    testbed.run(&[
        "sh",
        "-c",
        "for i in $(seq 1 24); do head -c 10M /dev/urandom > /var/lib/notes/big$i; done; sync",
    ]);
    let bytes: u64 = testbed
        .run(&["du", "-s", "-B1", "--apparent-size", "/volumes/sdb/notes"])
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let timed = |script: &str| -> f64 {
        let out = testbed.run(&[
            "bash",
            "-c",
            &format!(
                "s=$(date +%s%N); {script}; sync; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))"
            ),
        ]);
        out.lines().last().unwrap().parse::<f64>().unwrap() / 1000.0
    };
    let mut cp_runs = Vec::new();
    for _ in 0..3 {
        cp_runs.push(timed("cp -a /volumes/sdb/notes /volumes/sdc/cp-probe"));
        testbed.run(&["sh", "-c", "rm -rf /volumes/sdc/cp-probe; sync"]);
    }
    cp_runs.sort_by(f64::total_cmp);
    let cp = cp_runs[1];
    // The move, with the time each step began (status text changes).
    let started_at = Instant::now();
    let moved = move_notes(&client, "sdc").await;
    let uid = moved["job"]["uid"].as_str().unwrap().to_owned();
    let mut marks: Vec<(String, f64)> = Vec::new();
    let job = loop {
        let job = job_by_uid(&client, &uid).await;
        let text = job["statusText"].as_str().unwrap_or("").to_owned();
        if marks.last().is_none_or(|(t, _)| *t != text) {
            marks.push((text, started_at.elapsed().as_secs_f64()));
        }
        if job["status"] == "FINISHED" || job["status"] == "ERROR" {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let total = started_at.elapsed().as_secs_f64();
    assert_eq!(job["status"], "FINISHED", "{job}");
    let at = |prefix: &str| {
        marks
            .iter()
            .find(|(t, _)| t.starts_with(prefix))
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no step {prefix} in {marks:?}"))
    };
    // Setting owners takes a moment too short to be seen every time.
    let data_phase = at("Switching") - at("Copying the data");
    let copy_phase = at("Checking the copy") - at("Copying the data");
    let mb = bytes as f64 / 1e6;
    eprintln!(
        "THROUGHPUT {mb:.0} MB: cp -a {cp:.2} s ({:.0} MB/s; runs {cp_runs:?}); move copy step {copy_phase:.2} s ({:.0} MB/s), copy+verify {data_phase:.2} s ({:.0} MB/s = {:.0}% of cp -a), whole job {total:.2} s ({:.0}% of cp -a); steps {marks:?}",
        mb / cp,
        mb / copy_phase,
        mb / data_phase,
        100.0 * cp / data_phase,
        100.0 * cp / total,
    );
}

// ---- migrateToBinds: an older server without bind mounts ----

/// A movable module of one of the fixed services the app names.
fn fixed_module(id: &str, extra: Value) -> String {
    let mut definition: Value =
        serde_json::from_str(&module(id, &[&format!("{id}.service")], extra)).unwrap();
    definition["options"].as_object_mut().unwrap().insert(
        "location".into(),
        json!({"name": "location", "default": null, "meta": {"type": "location"}}),
    );
    definition.to_string()
}

/// nextcloud (enabled, its data in /var/lib/nextcloud, going to sdb) and
/// gitea (disabled, an owned folder, going to sdc), without binds.
fn unbound_setup(volumes: Vec<&'static str>, config: &'static str) -> Setup<'static> {
    Setup {
        modules: vec![
            (
                "nextcloud",
                fixed_module(
                    "nextcloud",
                    json!({"folders": ["/var/lib/nextcloud"], "isMovable": true,
                           "user": "www-data", "group": "www-data"}),
                ),
            ),
            (
                "gitea",
                fixed_module(
                    "gitea",
                    json!({"ownedFolders": [{"path": "/var/lib/gitea", "owner": "gitea", "group": "gitea"}],
                           "isMovable": true}),
                ),
            ),
        ],
        userdata: json!({
            "domain": "example.org", "useBinds": false, "timezone": "Etc/UTC",
            "modules": {"nextcloud": {"enable": true}, "gitea": {"enable": false}}
        }),
        volumes,
        config,
    }
}

fn userdata_of(testbed: &Testbed) -> Value {
    let text = std::fs::read_to_string(testbed.path("/etc/nixos/userdata.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn migrate(client: &Client, nextcloud: &str, gitea: &str) -> Value {
    let input = json!({"emailBlockDevice": "sdb", "bitwardenBlockDevice": "sdb",
        "giteaBlockDevice": gitea, "nextcloudBlockDevice": nextcloud, "pleromaBlockDevice": "sdb"});
    let r = client
        .query(&operation("MigrateToBinds"), json!({ "input": input }))
        .await;
    assert_no_errors(&r);
    r["data"]["storage"]["migrateToBinds"].clone()
}

/// The testbed as an older server: data in the folders, no binds.
async fn unbound(volumes: Vec<&'static str>, config: &'static str) -> (Testbed, Client, Value) {
    let testbed = Testbed::up(unbound_setup(volumes, config));
    let client = testbed.start_daemon().await;
    let started = rebuild(&client).await;
    let job = wait_job_done(&client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(testbed.unit_state("nextcloud.service"), "active");
    testbed.run(&["python3", "-c", POPULATE, "400", "/var/lib/nextcloud"]);
    testbed.run(&[
        "sh",
        "-c",
        "mkdir -p /var/lib/gitea/repos && echo data >/var/lib/gitea/repos/a && chmod 700 /var/lib/gitea",
    ]);
    let original = json!({
        "nextcloud": manifest(&testbed, "/var/lib/nextcloud"),
        "gitea": manifest(&testbed, "/var/lib/gitea"),
    });
    (testbed, client, original)
}

/// Checks the server is as before the migration: data in the folders,
/// nothing bound, nothing left on the volumes, the service running.
fn assert_unmigrated(testbed: &Testbed, original: &Value, what: &str) {
    let userdata = userdata_of(testbed);
    assert_eq!(userdata["useBinds"], false, "{what}");
    assert!(
        userdata["modules"]["nextcloud"]["location"].is_null(),
        "{what}"
    );
    assert_same_files(testbed, "/var/lib/nextcloud", &original["nextcloud"], what);
    assert_same_files(testbed, "/var/lib/gitea", &original["gitea"], what);
    for gone in [
        "/volumes/sdb/nextcloud",
        "/volumes/sdb/.nextcloud.sp-moving",
        "/volumes/sdc/gitea",
        "/var/lib/.nextcloud.sp-unbound",
        "/var/lib/.gitea.sp-unbound",
    ] {
        assert!(!exists(testbed, gone), "{what}: {gone} left");
    }
    assert!(
        !testbed
            .exec(&["mountpoint", "-q", "/var/lib/nextcloud"])
            .status
            .success(),
        "{what}"
    );
    assert_eq!(testbed.unit_state("nextcloud.service"), "active", "{what}");
}

/// Checks the migration's outcome: each folder's data on its volume,
/// bound back in place, nothing set aside left, the service running.
fn assert_migrated(testbed: &Testbed, original: &Value, what: &str) {
    let userdata = userdata_of(testbed);
    assert_eq!(userdata["useBinds"], true, "{what}");
    assert_eq!(
        userdata["modules"]["nextcloud"]["location"], "sdb",
        "{what}"
    );
    assert_eq!(userdata["modules"]["gitea"]["location"], "sdc", "{what}");
    assert_eq!(userdata["modules"]["gitea"]["enable"], false, "{what}");
    let source = testbed.run(&["findmnt", "-n", "-o", "SOURCE", "/var/lib/nextcloud"]);
    assert!(
        source.contains("[/nextcloud]"),
        "{what}: bound from {source}"
    );
    assert_same_files(
        testbed,
        "/volumes/sdb/nextcloud",
        &original["nextcloud"],
        what,
    );
    assert_same_files(testbed, "/var/lib/nextcloud", &original["nextcloud"], what);
    assert_same_files(testbed, "/volumes/sdc/gitea", &original["gitea"], what);
    for gone in [
        "/var/lib/.nextcloud.sp-unbound",
        "/var/lib/.gitea.sp-unbound",
        "/volumes/sdb/.nextcloud.sp-moving",
    ] {
        assert!(!exists(testbed, gone), "{what}: {gone} left");
    }
    assert_eq!(testbed.unit_state("nextcloud.service"), "active", "{what}");
}

#[tokio::test]
async fn an_older_server_migrates_to_binds_keeping_every_file() {
    let (testbed, client, original) = unbound(vec!["sdb:96", "sdc:32", "sdd:12"], CONFIG).await;
    let before = invocation_of(&testbed, "nextcloud.service");
    let userdata_before = std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap();

    // Refused before anything is stopped or written.
    for (nextcloud, gitea, code, says) in [
        ("sdd", "sdc", 409, "bytes free"),
        ("nowhere", "sdc", 400, "not a mounted volume"),
        ("../sdb", "sdc", 400, "not a volume name"),
        ("sdb", "/volumes/sdc", 400, "not a volume name"),
    ] {
        let r = migrate(&client, nextcloud, gitea).await;
        assert_eq!(r["code"], code, "{nextcloud}/{gitea}: {r}");
        assert!(r["message"].as_str().unwrap().contains(says), "{r}");
        assert!(r["job"].is_null());
    }
    assert_eq!(invocation_of(&testbed, "nextcloud.service"), before);
    assert_eq!(
        std::fs::read(testbed.path("/etc/nixos/userdata.json")).unwrap(),
        userdata_before
    );
    assert_unmigrated(&testbed, &original, "after the refusals");

    let started = migrate(&client, "sdb", "sdc").await;
    assert_eq!(started["code"], 200, "{started}");
    assert_eq!(started["job"]["typeId"], "migrations.migrate_to_binds");
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    // One migration at a time, and the services are taken meanwhile.
    let second = migrate(&client, "sdb", "sdc").await;
    assert_eq!(second["code"], 409, "{second}");
    let (job, progress) = follow(&client, &uid).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert!(
        job["result"]
            .as_str()
            .unwrap()
            .contains("Migration finished")
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_migrated(&testbed, &original, "migrated");

    // Binds are on now: a second migration is refused, a move works.
    let again = migrate(&client, "sdb", "sdc").await;
    assert_eq!(again["code"], 409, "{again}");
    assert!(again["message"].as_str().unwrap().contains("already"));
    let listed = volumes(&client).await;
    assert_eq!(users_of(volume(&listed, "sdb")), ["nextcloud"]);
}

fn invocation_of(testbed: &Testbed, unit: &str) -> String {
    testbed.run(&["systemctl", "show", "-P", "InvocationID", unit])
}

/// The steps a migration records, in order; the first four roll back.
const MIGRATION_STEPS: [&str; 7] = [
    "stopping",
    "copying",
    "verifying",
    "moving",
    "switching",
    "removing",
    "starting",
];

/// Undoes a finished migration by hand, as the test's reset: binds off,
/// rebuilt (unbound), the data moved back into the folders.
async fn unmigrate(testbed: &Testbed, client: &Client) {
    let path = testbed.path("/etc/nixos/userdata.json");
    let mut userdata = userdata_of(testbed);
    userdata["useBinds"] = json!(false);
    for id in ["nextcloud", "gitea"] {
        userdata["modules"][id]
            .as_object_mut()
            .unwrap()
            .remove("location");
    }
    std::fs::write(&path, userdata.to_string()).unwrap();
    let started = rebuild(client).await;
    let job = wait_job_done(client, started["job"]["uid"].as_str().unwrap()).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    testbed.run(&[
        "sh",
        "-ec",
        "systemctl stop nextcloud.service
         rmdir /var/lib/nextcloud /var/lib/gitea
         mv /volumes/sdb/nextcloud /var/lib/nextcloud
         mv /volumes/sdc/gitea /var/lib/gitea
         systemctl start nextcloud.service",
    ]);
}

#[tokio::test]
async fn a_migration_killed_at_any_step_is_rolled_back_or_finished_at_start() {
    let (testbed, client, original) = unbound(vec!["sdb:64", "sdc:32"], CONFIG).await;
    let config_file = testbed.path("/etc/selfprivacy-api/config.toml");
    for (index, step) in MIGRATION_STEPS.iter().enumerate() {
        std::fs::write(
            &config_file,
            format!("{CONFIG}test_pause_move_at_step = \"{step}\"\n"),
        )
        .unwrap();
        testbed.restart_daemon(&client).await;
        let started = migrate(&client, "sdb", "sdc").await;
        assert_eq!(started["code"], 200, "{step}: {started}");
        let uid = started["job"]["uid"].as_str().unwrap().to_owned();
        wait_paused(&client, &uid, step).await;
        // SIGKILL in the middle, and a start without the hook.
        std::fs::write(&config_file, CONFIG).unwrap();
        testbed.restart_daemon(&client).await;
        let cut = job_by_uid(&client, &uid).await;
        assert_eq!(cut["status"], "ERROR", "{step}: {cut}");
        let recovery = wait_recovery(&client, &uid).await;
        assert_eq!(recovery["status"], "FINISHED", "{step}: {recovery}");
        assert_eq!(recovery["typeId"], "migrations.migrate_to_binds");
        let forward = index >= 4;
        let result = recovery["result"].as_str().unwrap();
        let way = if forward { "finishing" } else { "rolling back" };
        assert!(
            result.contains(way) && result.contains(step),
            "{step}: {result}"
        );
        if forward {
            assert_migrated(&testbed, &original, step);
            unmigrate(&testbed, &client).await;
        }
        assert_unmigrated(&testbed, &original, step);
    }
}
