//! Backups and restores through the daemon with real restic, a real FILE
//! repository and a real PostgreSQL cluster started by the test. The
//! services here have no systemd units (the daemon runs outside a testbed,
//! with no bus), so nothing is stopped; their files and database are real.

use crate::support::{Daemon, assert_no_errors};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A throwaway PostgreSQL cluster: initdb in a temporary directory, run as
/// `postgres`, listening only on a unix socket there; stopped by its data
/// directory on drop, even when the test fails.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    started: bool,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("sp-backup-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut pg = Postgres {
            dir,
            bin,
            started: false,
        };
        let owned = Command::new("chown")
            .arg("postgres:postgres")
            .arg(pg.dir.path())
            .status()
            .unwrap();
        assert!(owned.success());
        pg.as_postgres(
            "initdb",
            &["--auth=trust", "--username=postgres", "--no-sync", "-D"],
            &[pg.data()],
        );
        let options = format!("-k {} -c listen_addresses=", pg.dir.path().display());
        pg.started = true;
        let log = pg.dir.path().join("log");
        pg.as_postgres(
            "pg_ctl",
            &[
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "-D",
            ],
            &[pg.data(), "start".into()],
        );
        pg
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn as_postgres(&self, program: &str, args: &[&str], more: &[String]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .args(more)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `sql` in `db` as the superuser: its unaligned output.
    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.started {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-m", "immediate", "-D"])
                .arg(self.data())
                .arg("stop")
                .output();
        }
    }
}

/// A service's data: two real folders (a folder and an owned folder) and,
/// optionally, a database; and a daemon whose catalogue has that service.
struct Setup {
    daemon: Daemon,
    data: tempfile::TempDir,
    repo: PathBuf,
}

impl Setup {
    async fn new(service: &str, pg: Option<&Postgres>, databases: &[&str]) -> Setup {
        Setup::with_config(service, pg, databases, "").await
    }

    /// With `extra` (TOML) in the daemon's configuration file.
    async fn with_config(
        service: &str,
        pg: Option<&Postgres>,
        databases: &[&str],
        extra: &str,
    ) -> Setup {
        let data = tempfile::Builder::new()
            .prefix("sp-backup-data-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut config = String::new();
        if let Some(pg) = pg {
            config.push_str(&format!(
                "postgres_bin_dir = {:?}\npostgres_host = {:?}\n",
                pg.bin.to_string_lossy(),
                pg.socket_dir().to_string_lossy()
            ));
        }
        // After the top-level keys: `extra` may hold tables.
        config.push_str(extra);
        let daemon = Daemon::start_with_config(&config).await;
        let setup = Setup {
            repo: data.path().join("repository"),
            daemon,
            data,
        };
        setup.define(service, databases);
        setup
    }

    fn folder(&self) -> PathBuf {
        self.data.path().join("app")
    }

    fn owned(&self) -> PathBuf {
        self.data.path().join("app-static")
    }

    /// The service's sp-module definition, in the daemon's catalogue.
    fn define(&self, id: &str, databases: &[&str]) {
        let modules = self.daemon.state_dir.path().join("sp-modules");
        std::fs::create_dir_all(&modules).unwrap();
        let definition = json!({
            "meta": {
                "spModuleSchemaVersion": 1, "id": id, "name": format!("App {id}"),
                "description": "Test service", "svgIcon": "<svg/>",
                "systemdServices": [], "supportLevel": "community",
                "folders": [self.folder()],
                "ownedFolders": [{"path": self.owned(), "owner": "root", "group": "root"}],
                "postgreDatabases": databases,
            },
            "options": {
                "enable": {"name": "enable", "default": false, "meta": {"type": "enable"}}
            }
        });
        std::fs::write(modules.join(id), definition.to_string()).unwrap();
    }

    async fn initialize(&self) -> Value {
        let answer = self
            .daemon
            .query(
                "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) {
                    success code message configuration { provider encryptionKey isInitialized locationName } } } }",
                json!({"r": {"provider": "FILE", "locationId": "", "locationName": self.repo,
                             "login": "", "password": ""}}),
            )
            .await;
        assert_no_errors(&answer);
        let result = answer["data"]["backup"]["initializeRepository"].clone();
        assert_eq!(result["success"], true, "{result}");
        result
    }

    async fn start_backup(&self, service: &str) -> Value {
        let answer = self
            .daemon
            .query(
                "mutation($s: String!) { backup { startBackup(serviceId: $s) { success code message job { uid } } } }",
                json!({"s": service}),
            )
            .await;
        assert_no_errors(&answer);
        answer["data"]["backup"]["startBackup"].clone()
    }

    async fn restore(&self, snapshot: &str, strategy: &str) -> Value {
        let answer = self
            .daemon
            .query(
                "mutation($id: String!, $s: RestoreStrategy!) { backup { restoreBackup(snapshotId: $id, strategy: $s) {
                    success code message job { uid } } } }",
                json!({"id": snapshot, "s": strategy}),
            )
            .await;
        assert_no_errors(&answer);
        answer["data"]["backup"]["restoreBackup"].clone()
    }

    /// Waits (deadline: `limit`) for the job to end: the job.
    async fn wait_job(&self, uid: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let answer = self
                .daemon
                .query(
                    "query($id: String!) { jobs { getJob(jobId: $id) { uid status progress error result statusText } } }",
                    json!({"id": uid}),
                )
                .await;
            let job = answer["data"]["jobs"]["getJob"].clone();
            if job["status"] == "FINISHED" || job["status"] == "ERROR" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {uid} did not end: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn backup_and_wait(&self, service: &str) -> Value {
        let started = self.start_backup(service).await;
        assert_eq!(started["success"], true, "{started}");
        self.wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await
    }

    async fn snapshots(&self) -> Vec<Value> {
        let answer = self
            .daemon
            .query(
                "{ backup { allSnapshots { id createdAt reason } } }",
                json!({}),
            )
            .await;
        assert_no_errors(&answer);
        answer["data"]["backup"]["allSnapshots"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Every file and folder under `roots`: relative path -> (mode, content).
fn tree(roots: &[PathBuf]) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let key = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(key, (mode, Vec::new()));
                walk(root, &path, out);
            } else {
                out.insert(key, (mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    for root in roots {
        out.insert(root.to_string_lossy().into_owned(), (0, Vec::new()));
        walk(root, root, &mut out);
    }
    out
}

/// Writes `bytes` pseudo-random (incompressible) bytes to `path`.
fn random_file(path: &Path, bytes: usize, seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(bytes);
    while data.len() < bytes {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes());
    }
    data.truncate(bytes);
    std::fs::write(path, data).unwrap();
}

fn fill(setup: &Setup, big: usize) {
    let folder = setup.folder();
    std::fs::create_dir_all(folder.join("nested/deeper")).unwrap();
    std::fs::create_dir_all(setup.owned()).unwrap();
    std::fs::write(folder.join("config.ini"), "[app]\nname = test\n").unwrap();
    std::fs::write(folder.join("nested/deeper/note.txt"), "keep me").unwrap();
    std::fs::set_permissions(
        folder.join("config.ini"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    random_file(&folder.join("nested/blob.bin"), 256 * 1024, 1);
    std::fs::write(setup.owned().join("index.html"), "<h1>hello</h1>").unwrap();
    if big > 0 {
        for n in 0..(big / (16 << 20)).max(1) {
            random_file(
                &folder.join(format!("big-{n}.bin")),
                16 << 20,
                100 + n as u64,
            );
        }
    }
}

/// Changes the service's data: one file edited, one added, one removed.
fn change(setup: &Setup) {
    let folder = setup.folder();
    std::fs::write(folder.join("config.ini"), "[app]\nname = changed\n").unwrap();
    std::fs::write(folder.join("added.txt"), "new").unwrap();
    std::fs::remove_file(folder.join("nested/deeper/note.txt")).unwrap();
    std::fs::write(setup.owned().join("index.html"), "<h1>changed</h1>").unwrap();
}

fn roots(setup: &Setup) -> Vec<PathBuf> {
    vec![setup.folder(), setup.owned()]
}

const ROWS: &str = "SELECT string_agg(id || ':' || body, ',' ORDER BY id) FROM notes";

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_files_and_a_database_is_restored_with_each_strategy() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE ROLE appuser LOGIN");
    pg.psql("postgres", "CREATE DATABASE appdb OWNER appuser");
    pg.psql(
        "appdb",
        "SET ROLE appuser; CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes VALUES (1, 'first'), (2, 'second');",
    );
    let setup = Setup::new("app", Some(&pg), &["appdb"]).await;
    fill(&setup, 0);
    let original = tree(&roots(&setup));
    let original_rows = pg.psql("appdb", ROWS);
    assert_eq!(original_rows, "1:first,2:second");

    // Before a repository exists, a backup is refused, not faked.
    let refused = setup.start_backup("app").await;
    assert_eq!(refused["success"], false, "{refused}");
    assert_eq!(refused["code"], 409, "{refused}");

    let init = setup.initialize().await;
    let config = &init["configuration"];
    assert_eq!(config["provider"], "FILE");
    assert_eq!(config["isInitialized"], true);
    let key = config["encryptionKey"].as_str().unwrap();
    assert!(key.len() >= 40, "{config}");
    let password_file = setup
        .daemon
        .state_dir
        .path()
        .join("backups/repository-password");
    assert_eq!(std::fs::read_to_string(&password_file).unwrap(), key);
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        setup.repo.join("config").exists(),
        "restic made the repository"
    );

    let job = setup.backup_and_wait("app").await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(job["progress"], 100);
    let snapshots = setup.snapshots().await;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0]["reason"], "EXPLICIT");
    let snapshot = snapshots[0]["id"].as_str().unwrap().to_owned();
    // The database dump is not left lying around after the backup.
    let dumps = setup.daemon.state_dir.path().join("backups/dumps/app");
    assert!(!dumps.exists(), "dump folder removed after the backup");

    // DOWNLOAD_VERIFY_OVERWRITE brings back files, modes and rows.
    change(&setup);
    pg.psql(
        "appdb",
        "UPDATE notes SET body = 'edited' WHERE id = 1; INSERT INTO notes VALUES (3, 'third');",
    );
    assert_ne!(tree(&roots(&setup)), original);
    let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    assert_eq!(started["success"], true, "{started}");
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
    assert_eq!(pg.psql("appdb", ROWS), original_rows);
    // Owned by its role still, and no staging database left behind.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb'"
        ),
        "appuser"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'appdb_sp_%'"
        ),
        "0"
    );

    // INPLACE takes a PRE_RESTORE snapshot of the changed data first.
    change(&setup);
    pg.psql("appdb", "DELETE FROM notes WHERE id = 2;");
    let changed = tree(&roots(&setup));
    let started = setup.restore(&snapshot, "INPLACE").await;
    assert_eq!(started["success"], true, "{started}");
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
    assert_eq!(pg.psql("appdb", ROWS), original_rows);
    let snapshots = setup.snapshots().await;
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let pre = snapshots
        .iter()
        .find(|s| s["reason"] == "PRE_RESTORE")
        .expect("a PRE_RESTORE snapshot");
    let pre_id = pre["id"].as_str().unwrap().to_owned();

    // The PRE_RESTORE snapshot holds the changed data: restoring it gives
    // the changed tree back.
    let started = setup.restore(&pre_id, "DOWNLOAD_VERIFY_OVERWRITE").await;
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), changed);
    assert_eq!(pg.psql("appdb", ROWS), "1:first");

    // Forget it; the list (and a forced reload) no longer has it.
    let answer = setup
        .daemon
        .query(
            "mutation($id: String!) { backup { forgetSnapshot(snapshotId: $id) { success code message } } }",
            json!({"id": pre_id}),
        )
        .await;
    assert_eq!(
        answer["data"]["backup"]["forgetSnapshot"]["success"], true,
        "{answer}"
    );
    let answer = setup
        .daemon
        .query(
            "mutation { backup { forceSnapshotsReload { success code } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        answer["data"]["backup"]["forceSnapshotsReload"]["success"], true,
        "{answer}"
    );
    // Listed under restic's short id right after the backup, the full one
    // once the list is read again.
    let ids: Vec<String> = setup
        .snapshots()
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].starts_with(&snapshot), "{ids:?} {snapshot}");

    // A snapshot id that does not exist: 404, nothing started.
    let missing = setup.restore("0123456789abcdef", "INPLACE").await;
    assert_eq!(missing["code"], 404, "{missing}");
}

/// The processes the daemon started whose program is restic, with their
/// command lines.
fn restic_children(daemon: &Daemon) -> Vec<(i32, String)> {
    let parent = daemon.child.as_ref().unwrap().id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).unwrap_or("");
        if ppid == parent && comm.ends_with("(restic") {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// Every process's command line, as one text.
pub fn all_command_lines() -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&cmdline));
            all.push('\n');
        }
    }
    all
}

/// Waits for a restic child running `command` and kills it (SIGKILL, by
/// its pid). While waiting, checks no process shows `secret`.
async fn kill_restic(daemon: &Daemon, command: &str, secret: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut checks = 0;
    loop {
        let all = all_command_lines();
        assert!(!all.contains(secret), "a secret is in a command line");
        checks += 1;
        if let Some((pid, cmdline)) = restic_children(daemon)
            .into_iter()
            .find(|(_, c)| c.contains(&format!(" {command} ")))
        {
            assert!(!cmdline.contains(secret));
            let killed = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
            return checks;
        }
        assert!(Instant::now() < deadline, "restic {command} never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restic_killed_mid_backup_or_mid_restore_leaves_the_data_and_fails_the_job() {
    let setup = Setup::new("bulk", None, &[]).await;
    fill(&setup, 128 << 20);
    let key = setup.initialize().await["configuration"]["encryptionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let original = tree(&roots(&setup));

    // Mid-backup: the job ends ERROR, no snapshot, the data as it was; and
    // a second backup of the service is refused while the first runs.
    let started = setup.start_backup("bulk").await;
    assert_eq!(started["success"], true, "{started}");
    let second = setup.start_backup("bulk").await;
    assert_eq!(second["code"], 409, "{second}");
    let checks = kill_restic(&setup.daemon, "backup", &key).await;
    assert!(checks > 0);
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["status"], "ERROR", "{job}");
    assert!(job["error"].as_str().unwrap().contains("backup"), "{job}");
    let answer = setup
        .daemon
        .query("{ jobs { getJobs { uid typeId } } }", json!({}))
        .await;
    let listed = answer["data"]["jobs"]["getJobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["uid"] == started["job"]["uid"])
        .unwrap()
        .clone();
    assert_eq!(listed["typeId"], "backups.bulk.backup");
    assert_eq!(tree(&roots(&setup)), original);
    assert!(setup.snapshots().await.is_empty());

    // A whole backup, then a restore killed midway: the changed live data
    // stays exactly as it was, and no staging folder is left.
    let job = setup.backup_and_wait("bulk").await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let snapshot = setup.snapshots().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    change(&setup);
    let changed = tree(&roots(&setup));
    let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    assert_eq!(started["success"], true, "{started}");
    kill_restic(&setup.daemon, "restore", &key).await;
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["status"], "ERROR", "{job}");
    assert_eq!(tree(&roots(&setup)), changed);

    // The lock was given back: the service can be restored now.
    let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_pack_is_refused_by_download_verify_overwrite_and_live_data_kept() {
    let setup = Setup::new("fragile", None, &[]).await;
    fill(&setup, 0);
    setup.initialize().await;
    let job = setup.backup_and_wait("fragile").await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let snapshot = setup.snapshots().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Damage every pack file in the middle (the tree packs restic caches
    // locally too, so the data packs are the ones that count).
    let mut damaged = 0;
    for sub in std::fs::read_dir(setup.repo.join("data"))
        .unwrap()
        .flatten()
    {
        for pack in std::fs::read_dir(sub.path()).unwrap().flatten() {
            let path = pack.path();
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            for b in &mut bytes[middle.saturating_sub(64)..middle + 64] {
                *b ^= 0xA5;
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    change(&setup);
    let changed = tree(&roots(&setup));
    let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    assert_eq!(started["success"], true, "{started}");
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["status"], "ERROR", "{job}");
    assert_eq!(tree(&roots(&setup)), changed, "live data untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_of_a_removed_service_are_listed_with_an_orphaned_placeholder() {
    let setup = Setup::new("gone", None, &[]).await;
    fill(&setup, 0);
    setup.initialize().await;
    let job = setup.backup_and_wait("gone").await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    std::fs::remove_file(setup.daemon.state_dir.path().join("sp-modules/gone")).unwrap();
    let query = "{ backup { allSnapshots { id reason service { id displayName isEnabled status canBeBackedUp } } } }";
    let deadline = Instant::now() + Duration::from_secs(10);
    let service = loop {
        // The catalogue rescans within a second.
        let answer = setup.daemon.query(query, json!({})).await;
        if answer.get("errors").is_none() {
            break answer["data"]["backup"]["allSnapshots"][0]["service"].clone();
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(service["id"], "gone");
    assert!(
        service["displayName"]
            .as_str()
            .unwrap()
            .contains("orphaned"),
        "{service}"
    );
    assert_eq!(service["isEnabled"], false);
    assert_eq!(service["status"], "OFF");
    assert_eq!(service["canBeBackedUp"], false);

    // removeRepository forgets the settings, not the data.
    let answer = setup
        .daemon
        .query(
            "mutation { backup { removeRepository { success configuration { provider isInitialized encryptionKey } } } }",
            json!({}),
        )
        .await;
    let result = &answer["data"]["backup"]["removeRepository"];
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(result["configuration"]["provider"], "NONE");
    assert_eq!(result["configuration"]["isInitialized"], false);
    assert!(setup.repo.join("config").exists());
    assert!(
        std::fs::read_dir(setup.repo.join("snapshots"))
            .unwrap()
            .next()
            .is_some()
    );
}

mod in_testbed {
    //! A service with a running unit, in a real systemd: stopped for its
    //! backup and restore and always started again; the app's queries
    //! over real services; the whole server backed up and restored.

    use super::tree;
    use crate::support::{Client, assert_no_errors};
    use crate::testbed::{Setup, Testbed, module};
    use serde_json::{Value, json};
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    async fn wait_job(client: &Client, uid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let answer = client
                .query(
                    "query($id: String!) { jobs { getJob(jobId: $id) { uid status progress error } } }",
                    json!({"id": uid}),
                )
                .await;
            let job = answer["data"]["jobs"]["getJob"].clone();
            if job["status"] == "FINISHED" || job["status"] == "ERROR" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {uid} did not end: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn mutation(client: &Client, query: &str, variables: Value) -> Value {
        let answer = client.query(query, variables).await;
        assert_no_errors(&answer);
        let backup = &answer["data"]["backup"];
        let result = backup.as_object().unwrap().values().next().unwrap().clone();
        assert_eq!(result["success"], true, "{answer}");
        result
    }

    async fn run_job(client: &Client, query: &str, variables: Value) -> Value {
        let result = mutation(client, query, variables).await;
        wait_job(client, result["job"]["uid"].as_str().unwrap()).await
    }

    fn invocation(testbed: &Testbed, unit: &str) -> String {
        testbed.run(&["systemctl", "show", "-p", "InvocationID", "--value", unit])
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_running_service_is_stopped_for_its_backup_and_restore_and_started_again() {
        let testbed = Testbed::up(Setup {
            modules: vec![
                (
                    "echo",
                    module(
                        "echo",
                        &["echo.service"],
                        json!({"folders": ["/var/lib/echo"]}),
                    ),
                ),
                (
                    "idle",
                    module(
                        "idle",
                        &["idle.service"],
                        json!({"folders": ["/var/lib/idle"]}),
                    ),
                ),
            ],
            userdata: json!({
                "domain": "example.org", "hostname": "testbed", "timezone": "Etc/UTC",
                "modules": {"echo": {"enable": true}, "idle": {"enable": false}}
            }),
            volumes: vec![],
            config: "",
        });
        let client = testbed.start_daemon().await;
        let rebuild = client
            .query(
                "mutation { system { runSystemRebuild { job { uid } } } }",
                json!({}),
            )
            .await;
        let job = wait_job(
            &client,
            rebuild["data"]["system"]["runSystemRebuild"]["job"]["uid"]
                .as_str()
                .unwrap(),
        )
        .await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        assert_eq!(testbed.unit_state("echo.service"), "active");

        let folder: PathBuf = testbed.path("/var/lib/echo");
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        std::fs::write(folder.join("data.txt"), "original").unwrap();
        std::fs::write(folder.join("sub/more.txt"), "more").unwrap();
        let original = tree(std::slice::from_ref(&folder));

        mutation(
            &client,
            "mutation { backup { initializeRepository(repository: {provider: FILE, locationId: \"\", locationName: \"/var/lib/backup-repo\", login: \"\", password: \"\"}) { success message } } }",
            json!({}),
        )
        .await;

        let before = invocation(&testbed, "echo.service");
        let job = run_job(
            &client,
            "mutation { backup { startBackup(serviceId: \"echo\") { success message job { uid } } } }",
            json!({}),
        )
        .await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        assert_eq!(
            testbed.unit_state("echo.service"),
            "active",
            "started again"
        );
        let after_backup = invocation(&testbed, "echo.service");
        assert_ne!(
            before, after_backup,
            "stopped for the backup and started again"
        );
        assert_eq!(testbed.unit_state("idle.service"), "inactive");

        // The app's AllServices with backupSnapshots, and allSnapshots with
        // the real service.
        let answer = client
            .query(
                "{ services { allServices { id backupSnapshots { id reason service { id } } } } backup { allSnapshots { id service { id displayName status } } } }",
                json!({}),
            )
            .await;
        assert_no_errors(&answer);
        let services = answer["data"]["services"]["allServices"]
            .as_array()
            .unwrap();
        let echo = services.iter().find(|s| s["id"] == "echo").unwrap();
        assert_eq!(
            echo["backupSnapshots"].as_array().unwrap().len(),
            1,
            "{answer}"
        );
        assert_eq!(echo["backupSnapshots"][0]["reason"], "EXPLICIT");
        let idle = services.iter().find(|s| s["id"] == "idle").unwrap();
        assert_eq!(idle["backupSnapshots"], json!([]));
        let all = &answer["data"]["backup"]["allSnapshots"];
        assert_eq!(all[0]["service"]["displayName"], "echo (test)", "{answer}");
        assert_eq!(all[0]["service"]["status"], "ACTIVE");
        let snapshot = all[0]["id"].as_str().unwrap().to_owned();

        std::fs::write(folder.join("data.txt"), "changed").unwrap();
        std::fs::remove_file(folder.join("sub/more.txt")).unwrap();
        let job = run_job(
            &client,
            "mutation($id: String!) { backup { restoreBackup(snapshotId: $id) { success message job { uid } } } }",
            json!({"id": snapshot}),
        )
        .await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        assert_eq!(tree(std::slice::from_ref(&folder)), original);
        assert_eq!(
            testbed.unit_state("echo.service"),
            "active",
            "started again"
        );
        assert_ne!(invocation(&testbed, "echo.service"), after_backup);

        // The whole server: every service with data, then its settings;
        // restoreAll brings back both the service's data and userdata.
        let job = run_job(
            &client,
            "mutation { backup { totalBackup { success message job { uid } } } }",
            json!({}),
        )
        .await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        let answer = client
            .query(
                "{ backup { lastSlice { service { id displayName } reason } } }",
                json!({}),
            )
            .await;
        assert_no_errors(&answer);
        let mut ids: Vec<String> = answer["data"]["backup"]["lastSlice"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["service"]["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        assert_eq!(ids, ["echo", "selfprivacy-api"], "{answer}");
        let userdata = testbed.path("/etc/nixos/userdata.json");
        let settings = std::fs::read(&userdata).unwrap();
        std::fs::write(&userdata, "{\"broken\": true}").unwrap();
        std::fs::write(folder.join("data.txt"), "changed again").unwrap();
        let job = run_job(
            &client,
            "mutation { backup { restoreAll { success message job { uid } } } }",
            json!({}),
        )
        .await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        assert_eq!(std::fs::read(&userdata).unwrap(), settings);
        // ...and a rebuild applies the restored settings.
        let answer = client
            .query("{ jobs { getJobs { uid typeId } } }", json!({}))
            .await;
        let rebuilds: Vec<String> = answer["data"]["jobs"]["getJobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["typeId"] == "system.nixos.rebuild")
            .map(|j| j["uid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            rebuilds.len(),
            2,
            "the first rebuild and restoreAll's: {answer}"
        );
        let rebuild = wait_job(&client, &rebuilds[1]).await;
        assert_eq!(rebuild["status"], "FINISHED", "{rebuild}");
        assert_eq!(tree(std::slice::from_ref(&folder)), original);
        assert_eq!(testbed.unit_state("echo.service"), "active");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_daemon_killed_mid_backup_starts_the_stopped_service_when_it_comes_back() {
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
                "modules": {"echo": {"enable": true}}
            }),
            volumes: vec![],
            config: "",
        });
        let client = testbed.start_daemon().await;
        let rebuild = client
            .query(
                "mutation { system { runSystemRebuild { job { uid } } } }",
                json!({}),
            )
            .await;
        let uid = rebuild["data"]["system"]["runSystemRebuild"]["job"]["uid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(wait_job(&client, &uid).await["status"], "FINISHED");
        assert_eq!(testbed.unit_state("echo.service"), "active");
        let folder = testbed.path("/var/lib/echo");
        std::fs::create_dir_all(&folder).unwrap();
        for n in 0..16 {
            super::random_file(&folder.join(format!("part-{n}")), 16 << 20, n);
        }
        mutation(
            &client,
            "mutation { backup { initializeRepository(repository: {provider: FILE, locationId: \"\", locationName: \"/var/lib/backup-repo\", login: \"\", password: \"\"}) { success message } } }",
            json!({}),
        )
        .await;
        let started = mutation(
            &client,
            "mutation { backup { startBackup(serviceId: \"echo\") { success message job { uid } } } }",
            json!({}),
        )
        .await;
        let uid = started["job"]["uid"].as_str().unwrap().to_owned();
        // Killed while the service is stopped for its backup.
        let deadline = Instant::now() + Duration::from_secs(60);
        while testbed.unit_state("echo.service") == "active" {
            assert!(Instant::now() < deadline, "echo.service was never stopped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        testbed.restart_daemon(&client).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while testbed.unit_state("echo.service") != "active" {
            assert!(
                Instant::now() < deadline,
                "echo.service was not started again after the daemon came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let job = wait_job(&client, &uid).await;
        assert_eq!(job["status"], "ERROR", "{job}");
    }

    /// The app's own backup operations (backups.graphql, as it sends them)
    /// against a daemon in a testbed with a FILE repository.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_apps_backup_operations_replay_clean() {
        use crate::app_operations::operation;
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
                "modules": {"echo": {"enable": true}}
            }),
            volumes: vec![],
            config: "",
        });
        let client = testbed.start_daemon().await;
        let folder = testbed.path("/var/lib/echo");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("data.txt"), "original").unwrap();
        let run = |name: &'static str, variables: Value| {
            let client = client.clone();
            async move {
                let answer = client.query(&operation(name), variables).await;
                assert_no_errors(&answer);
                answer["data"].clone()
            }
        };
        // The one field under `backup` that is not `__typename`.
        let result = |data: &Value| {
            let field = |v: &Value| {
                v.as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| *k != "__typename")
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            field(&field(data))
        };

        let config = run("BackupConfiguration", json!({})).await;
        assert_eq!(config["backup"]["configuration"]["provider"], "NONE");
        assert_eq!(config["backup"]["configuration"]["isInitialized"], false);
        let init = result(
            &run(
                "InitializeRepository",
                json!({"repository": {"provider": "FILE", "locationId": "",
                    "locationName": "/var/lib/backup-repo", "login": "", "password": ""}}),
            )
            .await,
        );
        assert_eq!(init["success"], true, "{init}");
        assert_eq!(init["configuration"]["isInitialized"], true);
        let period = result(&run("SetAutobackupPeriod", json!({"period": 1440})).await);
        assert_eq!(
            period["configuration"]["autobackupPeriod"], 1440,
            "{period}"
        );
        let quotas = result(
            &run(
                "setAutobackupQuotas",
                json!({"quotas": {"last": 3, "daily": 7, "weekly": 4, "monthly": 12, "yearly": -1}}),
            )
            .await,
        );
        assert_eq!(
            quotas["configuration"]["autobackupQuotas"]["daily"], 7,
            "{quotas}"
        );
        // The settings survive a restart of the daemon.
        testbed.restart_daemon(&client).await;
        let config = run("BackupConfiguration", json!({})).await;
        assert_eq!(config["backup"]["configuration"]["autobackupPeriod"], 1440);
        assert_eq!(
            config["backup"]["configuration"]["autobackupQuotas"]["last"],
            3
        );

        let started = result(&run("StartBackup", json!({"serviceId": "echo"})).await);
        assert_eq!(started["success"], true, "{started}");
        let job = wait_job(&client, started["job"]["uid"].as_str().unwrap()).await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        let snapshots = run("AllBackupSnapshots", json!({})).await;
        let list = snapshots["backup"]["allSnapshots"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(list.len(), 1, "{snapshots}");
        assert_eq!(list[0]["service"]["id"], "echo");
        assert_eq!(list[0]["reason"], "EXPLICIT");
        let reload = result(&run("ForceSnapshotsReload", json!({})).await);
        assert_eq!(reload["success"], true, "{reload}");
        let snapshot =
            run("AllBackupSnapshots", json!({})).await["backup"]["allSnapshots"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned();
        std::fs::write(folder.join("data.txt"), "changed").unwrap();
        let restore = result(&run("RestoreBackup", json!({"snapshotId": snapshot})).await);
        assert_eq!(restore["success"], true, "{restore}");
        let job = wait_job(&client, restore["job"]["uid"].as_str().unwrap()).await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        assert_eq!(
            std::fs::read_to_string(folder.join("data.txt")).unwrap(),
            "original"
        );
        let services = run("AllServices", json!({})).await;
        let echo = services["services"]["allServices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "echo")
            .unwrap()
            .clone();
        assert_eq!(echo["canBeBackedUp"], true);
        let forget = result(&run("ForgetSnapshot", json!({"snapshotId": snapshot})).await);
        assert_eq!(forget["success"], true, "{forget}");
        let snapshots = run("AllBackupSnapshots", json!({})).await;
        assert_eq!(snapshots["backup"]["allSnapshots"], json!([]));
        let removed = result(&run("RemoveRepository", json!({})).await);
        assert_eq!(removed["success"], true, "{removed}");
        assert_eq!(removed["configuration"]["provider"], "NONE");
        assert!(testbed.path("/var/lib/backup-repo/config").exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_room_for_a_second_copy_only_an_in_place_restore_runs() {
        let testbed = Testbed::up(Setup {
            modules: vec![(
                "big",
                module("big", &[], json!({"folders": ["/volumes/sdb/big"]})),
            )],
            userdata: json!({
                "domain": "example.org", "hostname": "testbed", "timezone": "Etc/UTC",
                "modules": {"big": {"enable": true}}
            }),
            volumes: vec!["sdb:64"],
            config: "",
        });
        let client = testbed.start_daemon().await;
        let folder = testbed.path("/volumes/sdb/big");
        std::fs::create_dir_all(&folder).unwrap();
        for n in 0..5 {
            super::random_file(&folder.join(format!("part-{n}")), 7 << 20, n);
        }
        let original = tree(std::slice::from_ref(&folder));
        mutation(
            &client,
            "mutation { backup { initializeRepository(repository: {provider: FILE, locationId: \"\", locationName: \"/var/lib/backup-repo\", login: \"\", password: \"\"}) { success message } } }",
            json!({}),
        )
        .await;
        let job = run_job(
            &client,
            "mutation { backup { startBackup(serviceId: \"big\") { success message job { uid } } } }",
            json!({}),
        )
        .await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        let answer = client
            .query("{ backup { allSnapshots { id } } }", json!({}))
            .await;
        let snapshot = answer["data"]["backup"]["allSnapshots"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        std::fs::write(folder.join("part-0"), "changed").unwrap();
        let changed = tree(std::slice::from_ref(&folder));

        // 35 MiB to stage beside 35 MiB on a 64 MB volume: refused before
        // anything is touched.
        let restore = "mutation($id: String!, $s: RestoreStrategy!) { backup { restoreBackup(snapshotId: $id, strategy: $s) { success message job { uid } } } }";
        let job = run_job(
            &client,
            restore,
            json!({"id": snapshot, "s": "DOWNLOAD_VERIFY_OVERWRITE"}),
        )
        .await;
        assert_eq!(job["status"], "ERROR", "{job}");
        assert!(
            job["error"]
                .as_str()
                .unwrap()
                .contains("Not enough free space"),
            "{job}"
        );
        assert_eq!(tree(std::slice::from_ref(&folder)), changed);

        let job = run_job(&client, restore, json!({"id": snapshot, "s": "INPLACE"})).await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        assert_eq!(tree(std::slice::from_ref(&folder)), original);
    }
}

/// The figure for the notes (not a test: `cargo test -- --ignored
/// backup_overhead`): a 1 GiB tree backed up by the daemon (mutation to
/// finished job, snapshot list refreshed) against bare `restic backup` of
/// the same tree, each into a fresh repository, runs interleaved.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn backup_overhead_of_a_1_gib_tree() {
    let setup = Setup::new("bench", None, &[]).await;
    fill(&setup, 1 << 30);
    let runs = 3;
    let (mut bare, mut daemon) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let repo = setup.data.path().join(format!("bare-{run}"));
        let password = setup.data.path().join("bare-password");
        std::fs::write(&password, "bench-password").unwrap();
        let cache = setup.data.path().join(format!("bare-cache-{run}"));
        let restic = |args: &[&str]| {
            let out = Command::new("restic")
                .args(args)
                .env("RESTIC_REPOSITORY", &repo)
                .env("RESTIC_PASSWORD_FILE", &password)
                .env("RESTIC_CACHE_DIR", &cache)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        restic(&["init"]);
        let started = Instant::now();
        let folder = setup.folder().to_string_lossy().into_owned();
        let owned = setup.owned().to_string_lossy().into_owned();
        restic(&[
            "backup",
            "--json",
            "--host",
            "selfprivacy",
            "--tag",
            "bench",
            "--",
            &folder,
            &owned,
        ]);
        bare.push(started.elapsed().as_secs_f64());

        let answer = setup
            .daemon
            .query(
                "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) { success } } }",
                json!({"r": {"provider": "FILE", "locationId": "", "locationName": setup.data.path().join(format!("daemon-{run}")),
                             "login": "", "password": ""}}),
            )
            .await;
        assert_eq!(
            answer["data"]["backup"]["initializeRepository"]["success"],
            true
        );
        let started = Instant::now();
        let job = setup.backup_and_wait("bench").await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        daemon.push(started.elapsed().as_secs_f64());
        eprintln!(
            "run {run}: bare {:.2} s, daemon {:.2} s",
            bare[run], daemon[run]
        );
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "1 GiB: bare restic median {:.2} s, daemon median {:.2} s, overhead {:+.1} %",
        median(&bare),
        median(&daemon),
        (median(&daemon) / median(&bare) - 1.0) * 100.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rest_repository_with_a_password_never_shows_it_on_a_command_line() {
    let server = tokio::task::spawn_blocking(crate::repo_servers::rest)
        .await
        .unwrap();
    let password = server.secret.clone().unwrap();
    let password = password.as_str();
    let setup = Setup::new("remote", None, &[]).await;
    fill(&setup, 64 << 20);
    let original = tree(&roots(&setup));
    let init = "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) {
        success code message configuration { provider locationId locationName encryptionKey isInitialized } } } }";
    let repository = |password: &str| {
        json!({"r": {"provider": "REST", "locationId": format!("http://127.0.0.1:{}", server.port),
                     "locationName": "repo", "login": "restic", "password": password}})
    };

    // A wrong password: refused, with the repository left unconfigured.
    let answer = setup.daemon.query(init, repository("wrong-password")).await;
    let result = &answer["data"]["backup"]["initializeRepository"];
    assert_eq!(result["success"], false, "{answer}");
    assert!(
        !result["message"]
            .as_str()
            .unwrap()
            .contains("wrong-password"),
        "{answer}"
    );
    let answer = setup
        .daemon
        .query(
            "{ backup { configuration { provider isInitialized } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        answer["data"]["backup"]["configuration"]["isInitialized"],
        false
    );

    let answer = setup.daemon.query(init, repository(password)).await;
    let result = &answer["data"]["backup"]["initializeRepository"];
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(result["configuration"]["provider"], "REST");
    let key = result["configuration"]["encryptionKey"]
        .as_str()
        .unwrap()
        .to_owned();

    // Every command line, polled while the backup runs.
    let started = setup.start_backup("remote").await;
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    let mut seen_restic = false;
    let mut progress_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let all = all_command_lines();
        assert!(
            !all.contains(password),
            "the REST password is on a command line"
        );
        assert!(
            !all.contains(&key),
            "the encryption key is on a command line"
        );
        seen_restic |= !restic_children(&setup.daemon).is_empty();
        let answer = setup
            .daemon
            .query(
                "query($id: String!) { jobs { getJob(jobId: $id) { status error progress } } }",
                json!({"id": uid}),
            )
            .await;
        let status = answer["data"]["jobs"]["getJob"]["status"].clone();
        if let Some(p) = answer["data"]["jobs"]["getJob"]["progress"].as_i64()
            && progress_seen.last() != Some(&p)
        {
            progress_seen.push(p);
        }
        if status == "FINISHED" || status == "ERROR" {
            assert_eq!(status, "FINISHED", "{answer}");
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_restic, "restic was seen running while polling");
    // restic's JSON status moved the job between 0 and 100 %, never back.
    assert!(
        progress_seen.iter().any(|p| (1..100).contains(p)),
        "{progress_seen:?}"
    );
    assert!(progress_seen.is_sorted(), "{progress_seen:?}");

    let snapshot = setup.snapshots().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    change(&setup);
    let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_repository_backs_up_and_restores_with_its_keys_kept_off_command_lines() {
    let server = tokio::task::spawn_blocking(crate::repo_servers::s3)
        .await
        .unwrap();
    let setup = Setup::new("objects", None, &[]).await;
    fill(&setup, 32 << 20);
    let original = tree(&roots(&setup));
    let secret = server.secret.clone().unwrap();
    let secret = secret.as_str();
    let answer = setup
        .daemon
        .query(
            "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) {
                success message configuration { provider locationId locationName } } } }",
            json!({"r": {"provider": "S3", "locationId": format!("http://127.0.0.1:{}", server.port),
                         "locationName": "sp-backups/server", "login": "selfprivacy", "password": secret}}),
        )
        .await;
    let result = &answer["data"]["backup"]["initializeRepository"];
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(result["configuration"]["provider"], "S3");
    let started = setup.start_backup("objects").await;
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    let job = loop {
        assert!(
            !all_command_lines().contains(secret),
            "the S3 secret is on a command line"
        );
        let answer = setup
            .daemon
            .query(
                "query($id: String!) { jobs { getJob(jobId: $id) { status error } } }",
                json!({"id": uid}),
            )
            .await;
        let job = answer["data"]["jobs"]["getJob"].clone();
        if job["status"] == "FINISHED" || job["status"] == "ERROR" {
            break job;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job["status"], "FINISHED", "{job}");
    let snapshot = setup.snapshots().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    change(&setup);
    let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sftp_repository_is_reached_with_the_configured_key_and_known_hosts() {
    let server = tokio::task::spawn_blocking(crate::repo_servers::sftp)
        .await
        .unwrap();
    let keys = server.dir.path();
    let setup = Setup::with_config(
        "remote",
        None,
        &[],
        &format!(
            "backup_sftp_identity_file = {:?}\nbackup_sftp_known_hosts_file = {:?}\n",
            keys.join("client_key").to_string_lossy(),
            keys.join("known_hosts").to_string_lossy()
        ),
    )
    .await;
    fill(&setup, 16 << 20);
    let original = tree(&roots(&setup));
    let answer = setup
        .daemon
        .query(
            "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) {
                success message configuration { provider locationId locationName encryptionKey isInitialized } } } }",
            json!({"r": {"provider": "SFTP", "locationId": format!("127.0.0.1:{}", server.port),
                         "locationName": "/repo", "login": "root", "password": ""}}),
        )
        .await;
    let result = &answer["data"]["backup"]["initializeRepository"];
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(result["configuration"]["provider"], "SFTP");
    let key = result["configuration"]["encryptionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    // restic wrote the repository inside the server's chroot.
    assert!(keys.join("chroot/repo/config").exists());

    let started = setup.start_backup("remote").await;
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen_ssh = false;
    let job = loop {
        let all = all_command_lines();
        assert!(
            !all.contains(&key),
            "the encryption key is on a command line"
        );
        seen_ssh |= all.contains(&format!(
            "UserKnownHostsFile={}",
            keys.join("known_hosts").display()
        ));
        let answer = setup
            .daemon
            .query(
                "query($id: String!) { jobs { getJob(jobId: $id) { status error } } }",
                json!({"id": uid}),
            )
            .await;
        let job = answer["data"]["jobs"]["getJob"].clone();
        if job["status"] == "FINISHED" || job["status"] == "ERROR" {
            break job;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert!(seen_ssh, "ssh ran with the configured known_hosts");
    let snapshots = setup.snapshots().await;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let snapshot = snapshots[0]["id"].as_str().unwrap().to_owned();
    change(&setup);
    assert_ne!(tree(&roots(&setup)), original);
    let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    let job = setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
    drop(setup);
    drop(server);
}

/// Starts a backup of `service` and waits for its job, checking on the way
/// that no command line shows `secret` and calling `watch` with every
/// process's `(cmdline, environ)` (NUL-separated): the job.
async fn backup_watching(
    setup: &Setup,
    service: &str,
    secret: &str,
    mut watch: impl FnMut(&str, &str),
) -> Value {
    let started = setup.start_backup(service).await;
    let uid = started["job"]["uid"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(!cmdline.contains(secret), "a secret on a command line");
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            watch(&cmdline, &String::from_utf8_lossy(&environ));
        }
        let answer = setup
            .daemon
            .query(
                "query($id: String!) { jobs { getJob(jobId: $id) { status error } } }",
                json!({"id": uid}),
            )
            .await;
        let job = answer["data"]["jobs"]["getJob"].clone();
        if job["status"] == "FINISHED" || job["status"] == "ERROR" {
            return job;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Restores `snapshot` with DOWNLOAD_VERIFY_OVERWRITE: the job.
async fn restore_and_wait(setup: &Setup, snapshot: &str) -> Value {
    let started = setup.restore(snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
    assert_eq!(started["success"], true, "{started}");
    setup
        .wait_job(
            started["job"]["uid"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await
}

/// BACKBLAZE runs restic's rclone backend with the B2 account and key in
/// rclone's environment. B2's cloud cannot be reached here: the daemon's
/// test scaffolding (`test_backblaze_stand_in`, test-hooks builds only)
/// points the rclone remote at a local folder; restic, rclone and the
/// credentials' path are the real ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_backblaze_repository_goes_through_rclone_with_the_key_in_its_environment() {
    let cloud = tempfile::tempdir().unwrap();
    let setup = Setup::with_config(
        "bucketed",
        None,
        &[],
        &format!(
            "test_backblaze_stand_in = {:?}\n",
            cloud.path().to_string_lossy()
        ),
    )
    .await;
    fill(&setup, 8 << 20);
    let original = tree(&roots(&setup));
    let key = format!("b2-application-key-{}", rand::random::<u64>());
    let answer = setup
        .daemon
        .query(
            "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) {
                success message configuration { provider locationName isInitialized } } } }",
            json!({"r": {"provider": "BACKBLAZE", "locationId": "", "locationName": "sp-bucket/server",
                         "login": "b2-key-id", "password": key}}),
        )
        .await;
    let result = &answer["data"]["backup"]["initializeRepository"];
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(result["configuration"]["provider"], "BACKBLAZE");
    assert!(
        cloud.path().join("sp-bucket/server/config").exists(),
        "restic init did not write through rclone's remote"
    );

    let stand_in = format!("RCLONE_CONFIG_SPB2_REMOTE={}", cloud.path().display());
    let mut rclone_environment = None;
    let job = backup_watching(&setup, "bucketed", &key, |cmdline, environ| {
        if cmdline.starts_with("rclone\0serve\0restic\0--stdio") && environ.contains(&stand_in) {
            rclone_environment = Some(environ.to_owned());
        }
    })
    .await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let environ = rclone_environment.expect("restic's rclone was seen running");
    assert!(environ.contains(&format!("RCLONE_CONFIG_SPB2_KEY={key}\0")));
    assert!(environ.contains("RCLONE_CONFIG_SPB2_ACCOUNT=b2-key-id\0"));

    let snapshot = setup.snapshots().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    change(&setup);
    let job = restore_and_wait(&setup, &snapshot).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
}

/// The MEMORY repository's folder in /dev/shm, removed on drop.
struct ShmRepository(PathBuf);

impl Drop for ShmRepository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // The daemon's parent folder, if no other test's repository is left.
        let _ = std::fs::remove_dir(self.0.parent().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_repository_backs_up_and_restores() {
    let name = format!("tests-{}", rand::random::<u64>());
    let repository = ShmRepository(PathBuf::from("/dev/shm/selfprivacy-api-backups").join(&name));
    let setup = Setup::new("volatile", None, &[]).await;
    fill(&setup, 4 << 20);
    let original = tree(&roots(&setup));
    let answer = setup
        .daemon
        .query(
            "mutation($r: InitializeRepositoryInput!) { backup { initializeRepository(repository: $r) {
                success message configuration { provider isInitialized } } } }",
            json!({"r": {"provider": "MEMORY", "locationId": "", "locationName": name,
                         "login": "", "password": ""}}),
        )
        .await;
    let result = &answer["data"]["backup"]["initializeRepository"];
    assert_eq!(result["success"], true, "{answer}");
    assert_eq!(result["configuration"]["provider"], "MEMORY");
    assert!(repository.0.join("config").exists());
    let job = setup.backup_and_wait("volatile").await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let snapshot = setup.snapshots().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    change(&setup);
    let job = restore_and_wait(&setup, &snapshot).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);
}

/// An S3 repository set in the daemon's configuration file (its secret in a
/// 0600 file) is used from the start and reported with its provider.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_repository_from_the_configuration_file_is_used_at_start() {
    let server = tokio::task::spawn_blocking(crate::repo_servers::s3)
        .await
        .unwrap();
    let secret = server.secret.clone().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let secret_file = keys.path().join("s3-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let location_id = format!("http://127.0.0.1:{}", server.port);
    let setup = Setup::with_config(
        "configured",
        None,
        &[],
        &format!(
            "[backup_repository]\nprovider = \"S3\"\nlocation_id = {location_id:?}\n\
             location_name = \"sp-configured/server\"\nlogin = \"selfprivacy-tests\"\n\
             secret_file = {:?}\n",
            secret_file.to_string_lossy()
        ),
    )
    .await;
    fill(&setup, 4 << 20);
    let original = tree(&roots(&setup));
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let configuration = loop {
        let answer = setup
            .daemon
            .query(
                "{ backup { configuration { provider isInitialized locationId locationName encryptionKey } } }",
                json!({}),
            )
            .await;
        assert_no_errors(&answer);
        let configuration = answer["data"]["backup"]["configuration"].clone();
        if configuration["isInitialized"] == true {
            break configuration;
        }
        assert!(Instant::now() < deadline, "not set up: {configuration}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first_apply = started.elapsed();
    assert_eq!(configuration["provider"], "S3");
    assert_eq!(configuration["locationId"], location_id.as_str());
    assert_eq!(configuration["locationName"], "sp-configured/server");
    assert!(configuration["encryptionKey"].as_str().unwrap().len() >= 42);

    let job = backup_watching(&setup, "configured", &secret, |_, _| {}).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    let snapshot = setup.snapshots().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    change(&setup);
    let job = restore_and_wait(&setup, &snapshot).await;
    assert_eq!(job["status"], "FINISHED", "{job}");
    assert_eq!(tree(&roots(&setup)), original);

    // Applied once: removed from the app, it stays removed after a restart.
    let answer = setup
        .daemon
        .query(
            "mutation { backup { removeRepository { success } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        answer["data"]["backup"]["removeRepository"]["success"], true,
        "{answer}"
    );
    let mut setup = setup;
    setup.daemon.kill();
    setup.daemon.launch().await;
    // Were the start to apply it again, it would within a few times what
    // the first apply took: watch that long.
    let watch = (first_apply * 4).max(Duration::from_secs(3));
    let until = Instant::now() + watch;
    while Instant::now() < until {
        let answer = setup
            .daemon
            .query(
                "{ backup { configuration { provider isInitialized } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            answer["data"]["backup"]["configuration"]["isInitialized"], false,
            "the configuration file's repository came back: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A daemon killed in the middle of a DOWNLOAD_VERIFY_OVERWRITE swap (the
/// test hook stops it after the first rename of a phase) puts the folder
/// right at its next start: still moving the old data aside, the old data
/// is moved back; already moving the verified restored data in, the swap
/// is finished. Nothing is left half swapped, nothing of the swap remains.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_interrupted_by_a_killed_daemon_is_finished_or_undone_at_start() {
    for phase in ["aside", "in"] {
        let mut setup = Setup::with_config(
            "swapped",
            None,
            &[],
            &format!("test_pause_restore_swap = {phase:?}\n"),
        )
        .await;
        setup.initialize().await;
        fill(&setup, 1 << 20);
        let original = tree(&[setup.folder()]);
        let job = setup.backup_and_wait("swapped").await;
        assert_eq!(job["status"], "FINISHED", "{job}");
        let snapshot = setup.snapshots().await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        change(&setup);
        let changed = tree(&[setup.folder()]);
        let changed_owned = tree(&[setup.owned()]);
        let started = setup.restore(&snapshot, "DOWNLOAD_VERIFY_OVERWRITE").await;
        let uid = started["job"]["uid"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let answer = setup
                .daemon
                .query(
                    "query($id: String!) { jobs { getJob(jobId: $id) { status statusText } } }",
                    json!({"id": uid}),
                )
                .await;
            let job = &answer["data"]["jobs"]["getJob"];
            // Not begun yet (CREATED) or running; never ended.
            assert!(
                job["status"] == "RUNNING" || job["status"] == "CREATED",
                "{phase}: {job}"
            );
            if job["statusText"]
                .as_str()
                .is_some_and(|t| t.contains("TEST HOOK"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{phase}: never paused: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        setup.daemon.kill();
        let old = setup.folder().join(".sp-restore-old");
        assert!(old.is_dir(), "{phase}: the swap had begun");
        let half = tree(&[setup.folder()]);
        assert!(half != original && half != changed, "{phase}: half swapped");

        setup.daemon.launch().await;
        let expected = if phase == "in" { &original } else { &changed };
        assert_eq!(&tree(&[setup.folder()]), expected, "{phase}");
        // The second folder's swap never began.
        assert_eq!(tree(&[setup.owned()]), changed_owned, "{phase}");
        assert!(!old.exists(), "{phase}");
        assert!(
            !setup.folder().join(".sp-restore-staging").exists(),
            "{phase}"
        );
        let answer = setup
            .daemon
            .query(
                "query($id: String!) { jobs { getJob(jobId: $id) { status } } }",
                json!({"id": uid}),
            )
            .await;
        assert_ne!(answer["data"]["jobs"]["getJob"]["status"], "RUNNING");
    }
}
