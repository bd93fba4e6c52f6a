//! Remote restic repositories of every kind the daemon supports, served on
//! this machine by real servers: SFTP by Debian's OpenSSH server, restic's
//! REST protocol by `rclone serve restic`, S3 by moto's server (installed by
//! scripts/install-deps in its own venv). Each server runs in its own
//! process group on a free port with its files in a temporary directory, and
//! is stopped by that group's id on drop, always.
//!
//! Each gives the repository URL as an owner would type it and the
//! environment restic needs: credentials go by environment or file, never
//! argv. The tests at the end prove each with real `restic init`, `backup`,
//! `snapshots` and `restore`.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where install-deps puts moto (the same default and variable).
const MOTO_VENV: &str = "/opt/selfprivacy-api-tests/moto-venv";

pub struct RepoServer {
    pub kind: &'static str,
    /// The repository as an owner would give it, without credentials.
    pub url: String,
    /// What restic needs in its environment: RESTIC_REPOSITORY (carrying
    /// the credentials when the protocol puts them in the URL) and the
    /// provider's credentials.
    pub env: Vec<(String, String)>,
    /// restic options that carry no secret (`-o sftp.command=...`).
    pub options: Vec<String>,
    /// From the start of the server process until it accepted connections.
    pub started_in: Duration,
    pub port: u16,
    /// A secret the server checks, to look for in argv.
    pub secret: Option<String>,
    server: ServerProcess,
    pub dir: tempfile::TempDir,
}

impl RepoServer {
    pub fn pid(&self) -> u32 {
        self.server.child.id()
    }
}

/// A server in a process group of its own (its children with it).
struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Children of the group (sshd's sessions) got the signal too.
                self.signal_group("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}

/// Starts `command` (in its own process group) on a free port until it
/// accepts TCP connections; tries a few ports in case one is taken between
/// the choice and the bind.
fn start_on_free_port(
    what: &str,
    mut command: impl FnMut(u16) -> Command,
) -> (ServerProcess, u16, Duration) {
    for _attempt in 0..5 {
        let port = crate::support::free_port();
        let started = Instant::now();
        let child = command(port)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e} (run scripts/install-deps)"));
        let mut server = ServerProcess { child };
        let deadline = started + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                eprintln!("{what} exited at start ({status}); trying another port");
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (server, port, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if server.child.try_wait().ok().flatten().is_none() {
            panic!("{what} did not accept connections within 30 s");
        }
    }
    panic!("{what} could not start on a free port");
}

/// A directory the servers' files live in, under cargo's target/tmp (its
/// path is root's all the way up, which sshd's chroot requires).
fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn random_secret() -> String {
    (0..32)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36)]))
        .collect()
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ssh_keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "selfprivacy-api-tests",
                "-f",
            ])
            .arg(path),
    );
}

/// SFTP to Debian's OpenSSH server: its own host key, configuration and
/// authorized key; sftp only (ForceCommand internal-sftp), chrooted to a
/// directory holding the repository `/repo`. Logs in as root (the only user
/// here; the chroot is what confines it), with a key file.
pub fn sftp() -> RepoServer {
    let dir = server_dir();
    let base = dir.path();
    let chroot = base.join("chroot");
    std::fs::create_dir(&chroot).unwrap();
    std::fs::set_permissions(&chroot, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(chroot.join("repo")).unwrap();
    ssh_keygen(&base.join("host_key"));
    ssh_keygen(&base.join("client_key"));
    let client_public = std::fs::read_to_string(base.join("client_key.pub")).unwrap();
    std::fs::write(
        base.join("authorized_keys"),
        format!("restrict {client_public}"),
    )
    .unwrap();
    // sshd's privilege separation directory, made by its systemd unit on a
    // Debian system (here nothing runs that unit).
    std::fs::create_dir_all("/run/sshd").unwrap();

    let (server, port, started_in) = start_on_free_port("sshd", |port| {
        let config = base.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile none\n\
                 AuthorizedKeysFile {authorized}\n\
                 AuthenticationMethods publickey\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 AllowUsers root\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 AllowTcpForwarding no\n\
                 X11Forwarding no\n\
                 Subsystem sftp internal-sftp\n\
                 ForceCommand internal-sftp\n\
                 ChrootDirectory {chroot}\n\
                 LogLevel ERROR\n",
                host_key = base.join("host_key").display(),
                authorized = base.join("authorized_keys").display(),
                chroot = chroot.display(),
            ),
        )
        .unwrap();
        let mut command = Command::new("/usr/sbin/sshd");
        command.args(["-D", "-e", "-f"]).arg(&config);
        command
    });
    let host_public = std::fs::read_to_string(base.join("host_key.pub")).unwrap();
    std::fs::write(
        base.join("known_hosts"),
        format!("[127.0.0.1]:{port} {host_public}"),
    )
    .unwrap();
    let ssh = format!(
        "ssh -F /dev/null -p {port} -i {key} -o IdentitiesOnly=yes -o BatchMode=yes \
         -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known} root@127.0.0.1 -s sftp",
        key = base.join("client_key").display(),
        known = base.join("known_hosts").display(),
    );
    let url = "sftp:root@127.0.0.1:/repo".to_owned();
    RepoServer {
        kind: "sftp",
        env: vec![("RESTIC_REPOSITORY".into(), url.clone())],
        url,
        options: vec!["-o".into(), format!("sftp.command={ssh}")],
        started_in,
        port,
        secret: None,
        server,
        dir,
    }
}

/// restic's REST protocol, served by `rclone serve restic` with HTTP basic
/// authentication from an htpasswd file (the password hashed by openssl,
/// which reads it on stdin). restic gets the credentials in
/// RESTIC_REPOSITORY's URL.
pub fn rest() -> RepoServer {
    let dir = server_dir();
    let base = dir.path();
    let data = base.join("data");
    std::fs::create_dir(&data).unwrap();
    let password = random_secret();
    let mut openssl = Command::new("openssl")
        .args(["passwd", "-apr1", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = openssl.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let htpasswd = base.join("htpasswd");
    std::fs::write(&htpasswd, format!("restic:{}\n", hash.trim())).unwrap();
    std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rclone_config = base.join("rclone.conf");
    std::fs::write(&rclone_config, "").unwrap();

    let (server, port, started_in) = start_on_free_port("rclone serve restic", |port| {
        let mut command = Command::new("rclone");
        command
            .args(["serve", "restic", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--htpasswd")
            .arg(&htpasswd)
            .arg("--config")
            .arg(&rclone_config)
            .args(["--log-level", "ERROR"])
            .arg(&data);
        command
    });
    RepoServer {
        kind: "rest",
        url: format!("rest:http://127.0.0.1:{port}/"),
        env: vec![(
            "RESTIC_REPOSITORY".into(),
            format!("rest:http://restic:{password}@127.0.0.1:{port}/"),
        )],
        options: vec![],
        started_in,
        port,
        secret: Some(password),
        server,
        dir,
    }
}

/// S3 through moto's server mode (an S3-protocol server from PyPI, in the
/// venv scripts/install-deps makes), the bucket made by `restic init`.
/// restic gets the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
pub fn s3() -> RepoServer {
    let dir = server_dir();
    let venv = std::env::var_os("SP_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MOTO_VENV));
    let moto = venv.join("bin/moto_server");
    assert!(
        moto.exists(),
        "{} is missing: run scripts/install-deps",
        moto.display()
    );
    let (server, port, started_in) = start_on_free_port("moto_server", |port| {
        let mut command = Command::new(&moto);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stderr(Stdio::null());
        command
    });
    let secret = random_secret();
    let url = format!("s3:http://127.0.0.1:{port}/selfprivacy-backups");
    RepoServer {
        kind: "s3",
        env: vec![
            ("RESTIC_REPOSITORY".into(), url.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "selfprivacy-tests".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), secret.clone()),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
        ],
        url,
        options: vec![],
        started_in,
        port,
        secret: Some(secret),
        server,
        dir,
    }
}

/// The NUL-separated argv of a process, as text.
fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// `restic <args>` against `server` with only the environment it needs
/// (and the repository password in a 0600 file).
fn restic(server: &RepoServer, password_file: &Path, args: &[&str]) -> String {
    let mut command = Command::new("restic");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RESTIC_PASSWORD_FILE", password_file)
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .args(&server.options)
        .arg("--no-cache")
        .args(args);
    let args_text = format!("{:?}", command.get_args().collect::<Vec<_>>());
    if let Some(secret) = &server.secret {
        assert!(!args_text.contains(secret.as_str()), "a secret in argv");
    }
    run_ok(&mut command)
}

/// A tree with a few files (one binary, one in a subfolder), its contents.
fn sample_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let files = vec![
        (PathBuf::from("notes.txt"), b"hello restic\n".to_vec()),
        (
            PathBuf::from("sub/data.bin"),
            (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        (PathBuf::from("sub/deeper/empty"), vec![]),
    ];
    for (path, content) in &files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    files
}

/// init, backup (tagged), snapshots, restore into a fresh folder: the
/// restored files equal the originals.
fn prove(server: RepoServer) {
    eprintln!(
        "{} repository server ready in {} ms",
        server.kind,
        server.started_in.as_millis()
    );
    if let Some(secret) = &server.secret {
        assert!(
            !cmdline(server.pid()).contains(secret.as_str()),
            "the server's argv holds its secret"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let password_file = work.path().join("password");
    std::fs::write(&password_file, random_secret()).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let source = work.path().join("source");
    let files = sample_tree(&source);

    restic(&server, &password_file, &["init"]);
    let started = Instant::now();
    restic(
        &server,
        &password_file,
        &[
            "backup",
            "--tag",
            "echo",
            "--tag",
            "EXPLICIT",
            source.to_str().unwrap(),
        ],
    );
    eprintln!(
        "{}: backup took {} ms",
        server.kind,
        started.elapsed().as_millis()
    );
    let listed: serde_json::Value =
        serde_json::from_str(&restic(&server, &password_file, &["snapshots", "--json"])).unwrap();
    let snapshots = listed.as_array().unwrap();
    assert_eq!(snapshots.len(), 1, "{listed}");
    assert_eq!(
        snapshots[0]["tags"],
        serde_json::json!(["echo", "EXPLICIT"])
    );
    let id = snapshots[0]["id"].as_str().unwrap();

    let target = work.path().join("restored");
    restic(
        &server,
        &password_file,
        &["restore", id, "--target", target.to_str().unwrap()],
    );
    // restic restores the absolute path under the target.
    let restored_root = target.join(source.strip_prefix("/").unwrap());
    for (path, content) in files {
        assert_eq!(
            std::fs::read(restored_root.join(&path)).unwrap(),
            content,
            "{}: {} differs after restore",
            server.kind,
            path.display()
        );
    }

    // A wrong password is refused by the repository's encryption.
    std::fs::write(&password_file, "not the password").unwrap();
    let out = Command::new("restic")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RESTIC_PASSWORD_FILE", &password_file)
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .args(&server.options)
        .args(["--no-cache", "snapshots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));

    // Stopped by its own group on drop: the process is gone.
    let pid = server.pid();
    drop(server);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || cmdline(pid).is_empty(),
        "the server {pid} is still running"
    );
}

#[test]
fn an_sftp_repository_on_openssh_backs_up_and_restores() {
    let server = sftp();
    // The chroot holds the repository: what restic wrote is under it.
    let repo = server.dir.path().join("chroot/repo");
    let base = server.dir.path().to_path_buf();
    let work = tempfile::tempdir().unwrap();
    let password = work.path().join("password");
    std::fs::write(&password, "pw").unwrap();
    restic(&server, &password, &["init"]);
    assert!(repo.join("config").exists(), "restic init wrote elsewhere");
    // sftp only: a shell command is refused (ForceCommand).
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-p"])
        .arg(server.port.to_string())
        .arg("-i")
        .arg(base.join("client_key"))
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            base.join("known_hosts").display()
        ))
        .args(["root@127.0.0.1", "echo", "shell-access"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("shell-access"));
    drop(server);

    prove(sftp());
}

#[test]
fn a_rest_repository_on_rclone_backs_up_and_restores() {
    let server = rest();
    // Without the credentials the server refuses.
    let url = server.url.trim_start_matches("rest:").to_owned();
    let out = Command::new("restic")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RESTIC_PASSWORD", "x")
        .args(["--no-cache", "-r", &format!("rest:{url}"), "init"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    prove(server);
}

#[test]
fn an_s3_repository_on_moto_backs_up_and_restores() {
    prove(s3());
}
