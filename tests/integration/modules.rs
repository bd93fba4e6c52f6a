//! The NixOS module and the example sp-modules against the real programs
//! they configure: the settings file the module generates (evaluated with
//! nixpkgs' real `lib`, tests/fixtures/nixos) through the daemon's
//! `check-config`; a hyphenated module's slice in a real systemd; pgapp's
//! database roles in a real PostgreSQL; the notes server in the testbed.

use crate::support::{BIN, Client, assert_no_errors, free_port};
use crate::testbed::{Setup, Testbed, module};
use selfprivacy_api::domain::services::resources::ResourceSampler;
use selfprivacy_api::os::systemd::SystemdLink;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `selfprivacy-api check-config FILE`: (success, stdout + stderr).
fn check_config(file: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `attribute` of the system of nixos-module/default.nix alone, evaluated
/// with nixpkgs' real `lib` (tests/fixtures/nixos/eval.nix), as JSON.
fn nixos_module_system(attribute: &str) -> String {
    nixos_system(&[], attribute)
}

/// `attribute` of the system of nixos-module/default.nix with the example
/// modules `examples` (sp-modules/<id>) enabled, as JSON.
fn nixos_system(examples: &[&str], attribute: &str) -> String {
    let dirs: Vec<String> = examples
        .iter()
        .map(|id| format!("\"{}\"", repo().join("sp-modules").join(id).display()))
        .collect();
    let lib = std::env::var("SP_NIXPKGS_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared/vendor/nixpkgs-lib/lib"));
    let expr = format!(
        "(import {}/tests/fixtures/nixos/eval.nix {{ nixpkgsLib = {}; moduleDirs = [ {} ]; }}).{attribute}",
        repo().display(),
        lib.canonicalize()
            .expect("the vendored nixpkgs lib")
            .display(),
        dirs.join(" ")
    );
    let out = Command::new("nix")
        .args([
            "eval",
            "--extra-experimental-features",
            "nix-command flakes",
            "--offline",
            "--impure",
            "--json",
            "--expr",
            &expr,
        ])
        .env("NIX_CONFIG", "build-users-group =")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The TOML file nixos-module/default.nix makes from its default settings.
fn settings_file_of_the_nixos_module() -> PathBuf {
    let script: String = serde_json::from_str(&nixos_module_system("configBuildScript")).unwrap();
    let file = script
        .split_whitespace()
        .skip_while(|word| *word != "check-config")
        .nth(1)
        .unwrap_or_else(|| panic!("no check-config in the build script: {script}"));
    PathBuf::from(file)
}

#[test]
fn check_config_accepts_the_module_settings_and_refuses_mistakes() {
    let generated = settings_file_of_the_nixos_module();
    let (ok, out) = check_config(&generated);
    assert!(ok, "{out}");
    assert!(out.contains(": ok"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "lisen = \"127.0.0.1:5050\"\n").unwrap();
    let (ok, out) = check_config(&typo);
    assert!(!ok);
    assert!(out.contains("unknown field `lisen`"), "{out}");

    let wrong_type = dir.path().join("wrong.toml");
    std::fs::write(&wrong_type, "listen = 5050\n").unwrap();
    let (ok, out) = check_config(&wrong_type);
    assert!(!ok);
    assert!(
        out.contains("wrong.toml"),
        "the message names the file: {out}"
    );

    let (ok, out) = check_config(&dir.path().join("absent.toml"));
    assert!(!ok);
    assert!(out.contains("cannot read"), "{out}");
}

/// `my-app` runs in `my_app.slice` (SelfPrivacy's naming); `my-app.slice`
/// would be another slice, nested in `my.slice`, and empty.
#[tokio::test]
async fn a_hyphenated_module_reports_cpu_and_memory_from_its_documented_slice() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: json!({}),
        volumes: vec![],
        config: "",
    });
    testbed.start_busy_worker("my-app-worker", "my_app.slice");
    let sampler = ResourceSampler::new(
        Arc::new(SystemdLink::new(Some(
            testbed.env["TESTBED_DBUS_ADDRESS"].clone(),
        ))),
        testbed.root().join("sys/fs/cgroup"),
        PathBuf::from("/proc"),
    );
    let services = vec!["my-app".to_owned()];
    // Until the worker holds its memory and two samples give a CPU rate.
    let deadline = Instant::now() + Duration::from_secs(30);
    let usage = loop {
        sampler.sample(&services).await;
        let latest = sampler.latest("my-app");
        if let Some(usage) = &latest
            && usage.memory_bytes >= 64 * 1024 * 1024
            && usage.cpu_percent.is_some_and(|p| p > 0.0)
        {
            break usage.clone();
        }
        assert!(
            Instant::now() < deadline,
            "my-app's slice never showed the worker: {latest:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(usage.memory_bytes < 512 * 1024 * 1024, "{usage:?}");
    assert!(usage.cpu_nanoseconds.unwrap() > 0, "{usage:?}");
}

/// A throwaway PostgreSQL cluster of this test's own: initdb in a
/// temporary directory, run as the `postgres` user, listening only on a
/// unix socket in that directory. Stopped by its data directory on drop,
/// even when the test fails.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    started: bool,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql (scripts/install-deps)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("sp-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut pg = Postgres {
            dir,
            bin,
            started: false,
        };
        let owned = Command::new("chown")
            .args(["postgres:postgres"])
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
        pg.started = true; // from here on, drop stops it
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

    /// Runs SQL (the script `sql`, from standard input) as role `user` in
    /// database `db`: its output, or the error PostgreSQL gave.
    fn psql(&self, user: &str, db: &str, sql: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-U", user, "-d", db, "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.started {
            // By its own data directory; the server is gone when it returns.
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

/// pgapp's ./setup.sql in a real PostgreSQL: PostgREST's anonymous role
/// (pgapp_anon, which PostgREST, logged in as pgapp, switches to) reads
/// `api` and cannot write anything.
#[test]
fn pgapp_anonymous_role_can_read_the_api_schema_and_not_write() {
    let pg = Postgres::start();
    // What NixOS does for the module (ensureUsers with ensureDBOwnership,
    // ensureDatabases) before pgapp-db-setup.service runs.
    pg.psql(
        "postgres",
        "postgres",
        "CREATE ROLE pgapp LOGIN; CREATE DATABASE pgapp OWNER pgapp;",
    )
    .unwrap();
    let setup = std::fs::read_to_string(repo().join("sp-modules/pgapp/setup.sql")).unwrap();
    for _ in 0..2 {
        // It runs at every start: idempotent.
        pg.psql("postgres", "pgapp", &setup).unwrap();
    }
    // The application's tables, made by the owner after the setup.
    pg.psql(
        "pgapp",
        "pgapp",
        "CREATE TABLE api.notes (id int PRIMARY KEY, body text);
         INSERT INTO api.notes VALUES (1, 'hello');",
    )
    .unwrap();

    let anonymous = |sql: &str| pg.psql("pgapp", "pgapp", &format!("SET ROLE pgapp_anon;\n{sql}"));
    assert_eq!(anonymous("SELECT body FROM api.notes;").unwrap(), "hello");
    for write in [
        "INSERT INTO api.notes VALUES (2, 'spam');",
        "UPDATE api.notes SET body = 'defaced';",
        "DELETE FROM api.notes;",
        "TRUNCATE api.notes;",
        "CREATE TABLE api.mine (i int);",
        "CREATE TABLE public.mine (i int);",
        "CREATE TEMPORARY TABLE mine (i int);",
        "ALTER TABLE api.notes ADD COLUMN x int;",
        "DROP TABLE api.notes;",
    ] {
        let refused = anonymous(write).expect_err(write);
        assert!(
            refused.contains("permission denied") || refused.contains("must be owner"),
            "{write}: {refused}"
        );
    }
    assert_eq!(
        pg.psql(
            "pgapp",
            "pgapp",
            "SELECT count(*) || ' ' || min(body) FROM api.notes;"
        )
        .unwrap(),
        "1 hello",
        "nothing was written"
    );
    let login = pg.psql("pgapp_anon", "pgapp", "SELECT 1;").unwrap_err();
    assert!(login.contains("not permitted to log in"), "{login}");
}

/// The notes example's server (sp-modules/notes/notes-server.py) as a unit
/// in the testbed: nothing without the password, and no body over the cap.
#[tokio::test]
async fn notes_refuses_requests_without_the_password_and_large_uploads() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: json!({}),
        volumes: vec![],
        config: "",
    });
    let server = std::fs::read(repo().join("sp-modules/notes/notes-server.py")).unwrap();
    std::fs::create_dir_all(testbed.path("/run/notes-test")).unwrap();
    std::fs::create_dir_all(testbed.path("/var/lib/notes")).unwrap();
    std::fs::write(testbed.path("/run/notes-test/notes-server.py"), server).unwrap();
    // The module's ExecStartPre (its coreutils are the testbed's): makes
    // the password once, readable by the service's user only.
    let make_password: String = serde_json::from_str(&nixos_system(
        &["notes"],
        "services.notes.serviceConfig.ExecStartPre.text",
    ))
    .unwrap();
    let make_password = make_password.replace(
        "/nix/store/00000000000000000000000000000000-coreutils/bin/",
        "/usr/bin/",
    );
    testbed.run(&["sh", "-c", &make_password]);
    let password_file = testbed.path("/var/lib/notes/.password");
    let password = std::fs::read_to_string(&password_file).unwrap();
    assert!(password.trim().len() >= 20, "{password:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    testbed.run(&["sh", "-c", &make_password]);
    assert_eq!(
        std::fs::read_to_string(&password_file).unwrap(),
        password,
        "kept across restarts"
    );
    let password = password.trim().to_owned();
    let port = free_port();
    testbed.run(&[
        "systemd-run",
        "--unit=notes",
        "--slice=notes.slice",
        "-E",
        "NOTES_DIR=/var/lib/notes",
        "-E",
        &format!("NOTES_PORT={port}"),
        "-E",
        "NOTES_MAX_UPLOAD_MB=1",
        "python3",
        "/run/notes-test/notes-server.py",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "notes never listened: {}",
            testbed.unit_state("notes.service")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::new();
    let form = "name=hello&text=world";
    let post = |password: Option<&str>| {
        let request = http
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form);
        match password {
            Some(p) => request.basic_auth("owner", Some(p)),
            None => request,
        }
    };

    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    for refused in [
        post(None).send().await.unwrap(),
        post(Some("right horse")).send().await.unwrap(),
        http.get(format!("{url}hello"))
            .basic_auth("owner", Some(""))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(refused.status(), 401);
    }
    assert!(
        !testbed.path("/var/lib/notes/hello").exists(),
        "nothing is written without the password"
    );

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let saved = client
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .basic_auth("owner", Some(&password))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303);
    let listed = client
        .get(&url)
        .basic_auth("owner", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert!(listed.text().await.unwrap().contains("hello"));

    // Over the cap (1 MiB): refused from the header, before the body.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("owner:{password}"),
    );
    write!(
        raw,
        "POST / HTTP/1.1\r\nHost: notes\r\nAuthorization: Basic {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    )
    .unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.0 413") || answer.starts_with("HTTP/1.1 413"),
        "{answer}"
    );
}

/// The daemon's unit as the NixOS module defines it (system call filter,
/// capability bounding set, namespaces, ...: every serviceConfig key but
/// ExecStart and the restart policy), run in a testbed: it starts and
/// answers over systemd's D-Bus; under the same properties a bind mount
/// (which moving service data needs) works and a new namespace is refused.
#[tokio::test]
async fn the_daemon_serves_under_the_nixos_module_hardening() {
    let service_config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &nixos_module_system("services.selfprivacy-api.serviceConfig"),
    )
    .unwrap();
    assert!(service_config.contains_key("SystemCallFilter"));
    let mut properties = Vec::new();
    for (key, value) in &service_config {
        if ["ExecStart", "Restart", "RestartSec"].contains(&key.as_str()) {
            continue;
        }
        let values = match value {
            serde_json::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for value in values {
            let text = match value {
                serde_json::Value::Bool(b) => (if b { "yes" } else { "no" }).to_owned(),
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            properties.push(format!("--property={key}={text}"));
        }
    }

    let testbed = Testbed::up(Setup {
        modules: vec![("echo", module("echo", &["echo.service"], json!({})))],
        userdata: json!({"domain": "example.org", "modules": {}}),
        volumes: vec![],
        config: "",
    });
    let daemon = "/opt/selfprivacy-api/selfprivacy-api";
    let state = "/var/lib/selfprivacy-api";
    let token = testbed.run(&[
        daemon,
        "token",
        "new",
        "--device",
        "tests",
        "--state-dir",
        state,
    ]);
    let client = Client::new(free_port(), &token);
    let listen = client.base.rsplit('/').next().unwrap().to_owned();
    let mut run: Vec<&str> = vec!["systemd-run", "--unit=selfprivacy-api"];
    run.extend(properties.iter().map(String::as_str));
    run.extend([daemon, "serve", "--listen", &listen, "--state-dir", state]);
    testbed.run(&run);
    testbed
        .assert_daemon_answers(&client, "the daemon did not answer under the hardening")
        .await;
    let applied = testbed.run(&[
        "systemctl",
        "show",
        "-p",
        "Slice,CapabilityBoundingSet,RestrictNamespaces,SystemCallFilter",
        "selfprivacy-api",
    ]);
    assert!(applied.contains("Slice=selfprivacy_api.slice"), "{applied}");
    assert!(
        !applied.contains("cap_sys_module") && applied.contains("cap_sys_admin"),
        "{applied}"
    );
    let services = client
        .query("{ services { allServices { id status } } }", json!({}))
        .await;
    assert_no_errors(&services);
    assert_eq!(services["data"]["services"]["allServices"][0]["id"], "echo");

    std::fs::create_dir_all(testbed.path("/run/hardening/from")).unwrap();
    std::fs::create_dir_all(testbed.path("/run/hardening/to")).unwrap();
    let under = |command: &[&str]| {
        // The restrictions, not the daemon's own unit type or directories.
        let restrictions = properties.iter().map(String::as_str).filter(|p| {
            ![
                "Type=",
                "NotifyAccess=",
                "RuntimeDirectory",
                "StateDirectory",
            ]
            .iter()
            .any(|k| p.starts_with(&format!("--property={k}")))
        });
        let mut args: Vec<&str> = vec!["systemd-run", "--wait", "--pipe", "--quiet"];
        args.extend(restrictions);
        args.extend(command);
        let out = testbed.exec(&args);
        eprintln!("{command:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.status.success()
    };
    assert!(under(&[
        "mount",
        "--bind",
        "/run/hardening/from",
        "/run/hardening/to"
    ]));
    // confineFilesystem is on by default: a mount made under the
    // restrictions stays in the unit's own namespace (the daemon makes
    // none; volumes and bind mounts are the rebuild unit's).
    assert!(
        !testbed
            .exec(&["mountpoint", "-q", "/run/hardening/to"])
            .status
            .success()
    );
    assert!(
        !under(&["unshare", "--mount", "true"]),
        "RestrictNamespaces applies"
    );
}
