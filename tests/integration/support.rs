//! Starting and talking to a daemon under test.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_selfprivacy-api");

/// Talks to a daemon over HTTP with the test device's token.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub base: String,
    pub token: String,
}

impl Client {
    pub fn new(port: u16, token: &str) -> Client {
        let base = format!("http://127.0.0.1:{port}");
        Client {
            url: format!("{base}/graphql"),
            base,
            token: token.to_owned(),
        }
    }

    /// A query with the test device's token.
    pub async fn query(&self, query: &str, variables: Value) -> Value {
        self.query_as(Some(&format!("Bearer {}", self.token)), query, variables)
            .await
    }

    /// A query with the given `Authorization` header value (or none).
    pub async fn query_as(
        &self,
        authorization: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Value {
        post(&self.url, authorization, &[], query, variables).await
    }

    /// Polls `/api/version` until it answers or `deadline` passes.
    pub async fn wait_ready(&self, deadline: Duration) -> bool {
        let client = http_client();
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if client
                .get(format!("{}/api/version", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// The D-Bus address of daemons started outside a testbed: nothing listens
/// there, so a test cannot reboot, rebuild or stop anything on the host.
pub const NO_BUS: &str = "unix:path=/nonexistent/selfprivacy-api-tests-have-no-bus";

/// A daemon on a free port with its own state directory; killed on drop.
pub struct Daemon {
    pub client: Client,
    pub state_dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// Where the daemon's stderr (its log) goes, if not to the test's.
    pub log: Option<PathBuf>,
}

impl std::ops::Deref for Daemon {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `selfprivacy-api <args> --state-dir DIR`, returning stdout.
pub fn cli(state_dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Daemon {
    pub async fn start() -> Daemon {
        Daemon::start_with_config("").await
    }

    /// A daemon whose configuration file holds `config` (TOML).
    pub async fn start_with_config(config: &str) -> Daemon {
        let state_dir = tempfile::tempdir().unwrap();
        let (ok, token, err) = cli(
            state_dir.path(),
            &["token", "new", "--device", "tests"],
            None,
        );
        assert!(ok, "token new failed: {err}");
        // After `token new`: the daemon takes only an empty directory or
        // one holding its database.
        std::fs::write(state_dir.path().join("config.toml"), config).unwrap();
        let mut daemon = Daemon {
            client: Client::new(0, token.trim()),
            state_dir,
            child: None,
            log: None,
        };
        daemon.launch().await;
        daemon
    }

    /// A daemon whose log goes to `daemon.log` in its state directory, for
    /// tests that read what it logged.
    pub async fn start_logged() -> Daemon {
        let mut daemon = Daemon::start().await;
        daemon.kill();
        daemon.log = Some(daemon.state_dir.path().join("daemon.log"));
        daemon.launch().await;
        daemon
    }

    /// What the daemon logged so far (`start_logged`).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.as_ref().expect("started with start_logged"))
            .unwrap_or_default()
    }

    pub fn hooks_socket(&self) -> PathBuf {
        self.state_dir.path().join("test-hooks.sock")
    }

    /// Starts (or restarts) the daemon process on a fresh port.
    pub async fn launch(&mut self) {
        for _attempt in 0..5 {
            if self.try_launch().await {
                return;
            }
        }
        panic!("the daemon did not start");
    }

    /// One attempt at [`launch`](Self::launch): whether the daemon became
    /// ready (it is killed if not).
    pub async fn try_launch(&mut self) -> bool {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .arg("--test-hooks-socket")
            .arg(self.hooks_socket())
            .arg("--config")
            .arg(self.state_dir.path().join("config.toml"))
            // A daemon outside a testbed must not reach the host: its
            // system bus does not exist and its NixOS files are its own.
            .env("SELFPRIVACY_API_DBUS_ADDRESS", NO_BUS)
            .env(
                "SELFPRIVACY_API_USERDATA_FILE",
                self.state_dir.path().join("userdata.json"),
            )
            .env(
                "SELFPRIVACY_API_SP_MODULES_DIR",
                self.state_dir.path().join("sp-modules"),
            )
            .env(
                "SELFPRIVACY_API_NIXOS_CONFIG_DIR",
                self.state_dir.path().join("nixos"),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(match &self.log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .unwrap(),
                ),
                None => Stdio::inherit(),
            })
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.client = Client::new(port, &self.client.token);
        if self.wait_ready_or_exit().await {
            return true;
        }
        self.kill();
        false
    }

    async fn wait_ready_or_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("daemon exited early: {status}");
                return false;
            }
            if self.client.wait_ready(Duration::from_millis(100)).await {
                return true;
            }
        }
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A test hook command (test scaffolding in the daemon).
    pub fn hook(&self, command: &str) {
        let mut stream = UnixStream::connect(self.hooks_socket()).unwrap();
        stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "hook {command}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn post(
    url: &str,
    authorization: Option<&str>,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> Value {
    // A test never waits forever on an answer.
    let mut request = http_client()
        .post(url)
        .timeout(Duration::from_secs(120))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("HTTP {status}: {body}"))
}

/// The `code` extension of the response's first error, if any.
pub fn error_code(response: &Value) -> Option<String> {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

pub fn assert_no_errors(response: &Value) {
    assert!(
        response.get("errors").is_none(),
        "unexpected errors: {response}"
    );
}

/// One HTTP client for every test: making one loads the TLS roots, which
/// in a debug build costs more than the request. No idle connections are
/// kept, so none outlives the test runtime that opened it.
pub fn http_client() -> reqwest::Client {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client")
    });
    CLIENT.clone()
}

/// Whether a process with `uid` and `gid` (no other groups) can connect.
pub fn can_connect_as(socket: &Path, uid: u32, gid: u32) -> bool {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            // The system's python: a per-user one may not be readable.
            "/usr/bin/python3",
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
        ])
        .arg(socket)
        .output()
        .unwrap();
    eprintln!(
        "connect as {uid}:{gid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

pub fn gid_of(group: &str) -> u32 {
    std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|line| {
            let fields: Vec<_> = line.split(':').collect();
            (fields[0] == group).then(|| fields[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no group {group}"))
}

/// A suite's counts (cases tried, faults injected, bytes lost): printed,
/// and appended to `$SP_TEST_REPORT` when set, which `scripts/test` prints
/// after the tests (libtest hides a passing test's output).
pub fn report(line: String) {
    eprintln!("{line}");
    if let Ok(path) = std::env::var("SP_TEST_REPORT") {
        use std::io::Write as _;
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}
