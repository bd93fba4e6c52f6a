//! A throwaway real-systemd server (scripts/testbed) with the daemon running
//! inside it as a systemd unit, as on a NixOS server. Torn down on drop,
//! loop devices included, even when the test fails; a teardown that keeps
//! failing fails the test.

use crate::support::{BIN, Client, free_port};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);
const DAEMON_DIR: &str = "/opt/selfprivacy-api";
/// `testbed down` is tried this many times, 2 s apart, within the deadline.
const DOWN_ATTEMPTS: u32 = 5;
const DOWN_DEADLINE: Duration = Duration::from_secs(90);
/// `testbed up` bounds its boot (30 s) and its teardown on failure itself;
/// this is the bound on the whole command.
const UP_DEADLINE: Duration = Duration::from_secs(120);
/// A command run inside (`exec`): systemctl, journalctl, the daemon's CLI.
const EXEC_DEADLINE: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed/testbed")
}

/// `scripts/testbed/testbed ARGS...` under coreutils' `timeout`: SIGTERM
/// at `limit`, SIGKILL 5 s later (`exec` runs the command itself in the
/// container's namespaces, so the signal reaches it).
fn testbed_command(limit: Duration) -> Command {
    let mut command = Command::new("timeout");
    command
        .arg("--kill-after=5")
        .arg(format!("{}", limit.as_secs().max(1)))
        .arg(script());
    command
}

/// Runs `command` (made by `testbed_command(limit)`); an error says so if
/// it was stopped by its time limit.
fn output_within(mut command: Command, limit: Duration) -> Result<Output, String> {
    let started = Instant::now();
    let output = command.output().unwrap();
    // 124: `timeout` sent SIGTERM; 137: it had to send SIGKILL.
    if matches!(output.status.code(), Some(124 | 137)) && started.elapsed() >= limit {
        return Err(format!(
            "{command:?} did not finish within {limit:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output)
}

/// A name no other testbed has: `$SP_TESTBED_PREFIX` (scripts/test sets it
/// to find what its run left behind), then this process and a counter.
fn unique_name() -> String {
    let prefix = std::env::var("SP_TESTBED_PREFIX").unwrap_or_default();
    format!(
        "{prefix}it{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Testbed {
    pub name: String,
    pub env: HashMap<String, String>,
    /// The daemon's config.toml, written before it starts.
    config: String,
    _inputs: tempfile::TempDir,
}

/// What a testbed starts with.
pub struct Setup<'a> {
    /// (id, definition JSON) for /etc/sp-modules.
    pub modules: Vec<(&'a str, String)>,
    pub userdata: Value,
    pub volumes: Vec<&'a str>,
    /// The daemon's /etc/selfprivacy-api/config.toml.
    pub config: &'a str,
}

impl Testbed {
    pub fn up(setup: Setup<'_>) -> Testbed {
        let name = unique_name();
        let inputs = tempfile::tempdir().unwrap();
        let modules = inputs.path().join("sp-modules");
        std::fs::create_dir(&modules).unwrap();
        for (id, definition) in &setup.modules {
            std::fs::write(modules.join(id), definition).unwrap();
        }
        let userdata = inputs.path().join("userdata.json");
        std::fs::write(
            &userdata,
            serde_json::to_string_pretty(&setup.userdata).unwrap(),
        )
        .unwrap();
        let bin_dir = Path::new(BIN).parent().unwrap();
        let mut command = testbed_command(UP_DEADLINE);
        command
            .args(["up", "--name", &name, "--modules-dir"])
            .arg(&modules)
            .arg("--userdata")
            .arg(&userdata)
            .arg("--bind-ro")
            .arg(format!("{}:{DAEMON_DIR}", bin_dir.display()));
        for volume in &setup.volumes {
            command.args(["--volume", volume]);
        }
        let output = output_within(command, UP_DEADLINE);
        let testbed = Testbed {
            name,
            env: output
                .as_ref()
                .map(|output| parse_env(&output.stdout))
                .unwrap_or_default(),
            config: setup.config.to_owned(),
            _inputs: inputs,
        };
        // Dropping `testbed` downs what a stopped `up` left behind.
        let output = output.unwrap_or_else(|stopped| panic!("{stopped}"));
        assert!(
            output.status.success(),
            "testbed up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        testbed
    }

    /// The container's root, seen from the host.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(&self.env["TESTBED_ROOT"])
    }

    /// A file inside the container.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// Runs a command inside the container; panics if it takes longer
    /// than `EXEC_DEADLINE`.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_within(args, EXEC_DEADLINE)
            .unwrap_or_else(|stopped| panic!("{stopped}"))
    }

    /// Runs a command inside, stopped (SIGTERM, then SIGKILL) at `limit`.
    pub fn exec_within(&self, args: &[&str], limit: Duration) -> Result<Output, String> {
        let mut command = testbed_command(limit);
        command
            .args(["exec", "--name", &self.name, "--"])
            .args(args);
        output_within(command, limit)
    }

    /// Runs a command inside and returns its trimmed stdout; panics if it fails.
    /// A unit in `slice` that holds 64 MiB and burns a core for up to ten
    /// minutes: something for the resource sampler to measure.
    pub fn start_busy_worker(&self, unit: &str, slice: &str) {
        self.run(&[
            "systemd-run",
            &format!("--unit={unit}"),
            &format!("--slice={slice}"),
            "python3",
            "-c",
            "import time\nx = bytearray(64 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1\nend = time.time() + 600\nwhile time.time() < end: pass",
        ]);
    }

    /// Waits for the daemon in the testbed to answer; fails with its journal.
    pub async fn assert_daemon_answers(&self, client: &Client, what: &str) {
        assert!(
            client.wait_ready(Duration::from_secs(20)).await,
            "{what}; journal:\n{}",
            self.run(&[
                "journalctl",
                "-u",
                "selfprivacy-api",
                "--no-pager",
                "-n",
                "30"
            ])
        );
    }

    pub fn run(&self, args: &[&str]) -> String {
        let output = self.exec(args);
        assert!(
            output.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// `systemctl is-active UNIT` inside.
    pub fn unit_state(&self, unit: &str) -> String {
        String::from_utf8_lossy(&self.exec(&["systemctl", "is-active", unit]).stdout)
            .trim()
            .to_owned()
    }

    /// Starts the daemon inside as a `Type=notify` unit and returns a
    /// client with a fresh token.
    pub async fn start_daemon(&self) -> Client {
        std::fs::create_dir_all(self.path("/etc/selfprivacy-api")).unwrap();
        std::fs::write(self.path("/etc/selfprivacy-api/config.toml"), &self.config).unwrap();
        let token = self.run(&[
            &format!("{DAEMON_DIR}/selfprivacy-api"),
            "token",
            "new",
            "--device",
            "tests",
            "--state-dir",
            "/var/lib/selfprivacy-api",
        ]);
        let client = Client::new(free_port(), &token);
        self.launch_daemon(&client).await;
        client
    }

    /// Kills the daemon (SIGKILL, no goodbye) and starts it again on the
    /// same port with the same state.
    pub async fn restart_daemon(&self, client: &Client) {
        self.run(&["systemctl", "kill", "--signal=KILL", "selfprivacy-api"]);
        // Stopped, not merely no longer "active": a unit still
        // "deactivating" cannot be started again under its name.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.unit_state("selfprivacy-api");
            if state == "failed" || state == "inactive" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop within 20 s of SIGKILL: {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.exec(&["systemctl", "reset-failed", "selfprivacy-api"]);
        self.launch_daemon(client).await;
    }

    async fn launch_daemon(&self, client: &Client) {
        let port = client.base.rsplit(':').next().unwrap();
        self.run(&[
            "systemd-run",
            "--unit=selfprivacy-api",
            "--property=Type=notify",
            "--setenv=RUST_LOG=info",
            &format!("{DAEMON_DIR}/selfprivacy-api"),
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
            "/var/lib/selfprivacy-api",
        ]);
        self.assert_daemon_answers(client, "the daemon did not answer")
            .await;
    }
}

impl Drop for Testbed {
    /// `testbed down`, retried as `scripts/sandbox down` retries it: under
    /// load the kernel may release a volume's loop device later than `down`
    /// waits for, and `down` then fails keeping its records, so it can
    /// simply run again. A testbed left up fails the test that made it.
    fn drop(&mut self) {
        let deadline = Instant::now() + DOWN_DEADLINE;
        let mut failures = Vec::new();
        for attempt in 1..=DOWN_ATTEMPTS {
            // Each attempt within what is left of the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let mut command = testbed_command(left);
            match command.args(["down", "--name", &self.name]).output() {
                Ok(output) if output.status.success() => return,
                Ok(output) => failures.push(format!(
                    "attempt {attempt}: {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
                Err(error) => failures.push(format!("attempt {attempt}: {error}")),
            }
            if attempt == DOWN_ATTEMPTS || Instant::now() + Duration::from_secs(2) > deadline {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let message = format!(
            "TESTBED {} NOT TORN DOWN (run: scripts/testbed/testbed down --name {}):\n{}",
            self.name,
            self.name,
            failures.join("\n")
        );
        eprintln!("{message}");
        if !std::thread::panicking() {
            panic!("{message}");
        }
    }
}

fn parse_env(stdout: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A module definition in the generated format, for tests (hand-written
/// test fixtures; the example modules' definitions come from `nix eval`).
pub fn module(id: &str, units: &[&str], extra_meta: Value) -> String {
    let mut meta = serde_json::json!({
        "spModuleSchemaVersion": 1,
        "id": id,
        "name": format!("{id} (test)"),
        "description": format!("Test module {id}"),
        "svgIcon": "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        "systemdServices": units,
        "homepage": "https://example.org",
        "license": [{"deprecated": false, "free": true, "fullName": "MIT License",
                     "redistributable": true, "shortName": "mit", "spdxId": "MIT",
                     "url": "https://spdx.org/licenses/MIT.html"}],
        "supportLevel": "normal"
    });
    if let Value::Object(extra) = extra_meta {
        meta.as_object_mut().unwrap().extend(extra);
    }
    serde_json::json!({
        "meta": meta,
        "options": {
            "enable": {"name": "enable", "default": false, "description": "Enable", "meta": {"type": "enable"}},
            "subdomain": {"name": "subdomain", "default": id, "description": "Subdomain",
                "meta": {"type": "string", "widget": "subdomain", "weight": 0,
                         "regex": "[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]"}}
        }
    })
    .to_string()
}

/// The processes running `testbed down --name NAME` now.
fn downs_running(name: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.windows(3)
                .any(|w| w == [&b"down"[..], b"--name", name.as_bytes()])
        })
        .count()
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// A host process whose working directory is inside a testbed's volume
/// mount, so unmounting it fails; killed (by its own PID) on drop.
struct MountHolder(std::process::Child);

impl Drop for MountHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn teardown_is_retried_when_the_first_down_fails() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: serde_json::json!({}),
        volumes: vec!["sdb:16"],
        config: "",
    });
    let name = testbed.name.clone();
    let state_dir = PathBuf::from(&testbed.env["TESTBED_STATE_DIR"]);
    let holder = MountHolder(
        Command::new("sleep")
            .arg("600")
            .current_dir(state_dir.join("mnt/sdb"))
            .spawn()
            .unwrap(),
    );
    // Releases the mount only once a first `down` has run and ended
    // while the testbed's state was still there, i.e. failed.
    let watcher = {
        let (name, state_dir) = (name.clone(), state_dir.clone());
        std::thread::spawn(move || {
            let started = wait_for(Duration::from_secs(60), || downs_running(&name) > 0);
            let ended = started && wait_for(Duration::from_secs(60), || downs_running(&name) == 0);
            let failed_first = ended && state_dir.exists();
            drop(holder);
            failed_first
        })
    };
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(testbed)));
    let failed_first = watcher.join().unwrap();
    let left = state_dir.exists();
    if left {
        let _ = Command::new(script())
            .args(["down", "--name", &name])
            .output();
    }
    assert!(
        failed_first,
        "the first `testbed down` did not fail as set up"
    );
    assert!(dropped.is_ok(), "the retried teardown reported a failure");
    assert!(
        !left,
        "the testbed was left behind after its first down failed"
    );
}

#[test]
fn a_teardown_that_keeps_failing_fails_the_test() {
    // A name `testbed down` refuses at once, every time.
    let testbed = Testbed {
        name: "not a valid name".to_owned(),
        env: HashMap::new(),
        config: String::new(),
        _inputs: tempfile::tempdir().unwrap(),
    };
    let started = Instant::now();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(testbed)));
    let message = dropped
        .expect_err("dropping a testbed that cannot be torn down did not panic")
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(
        message.contains("NOT TORN DOWN") && message.contains("attempt 5:"),
        "{message}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "not retried 2 s apart"
    );
}

#[test]
fn a_command_inside_that_outlives_its_deadline_is_stopped() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: serde_json::json!({}),
        volumes: vec![],
        config: "",
    });
    let started = Instant::now();
    let stopped = testbed
        .exec_within(&["sleep", "611"], Duration::from_secs(2))
        .expect_err("a 611 s sleep ended within 2 s");
    assert!(stopped.contains("did not finish within 2s"), "{stopped}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped only after {:?}",
        started.elapsed()
    );
    // The command itself was stopped, not only the host side of `exec`.
    let left = testbed.exec(&["pgrep", "-f", "sleep 611"]);
    assert!(
        !left.status.success(),
        "still running inside: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
