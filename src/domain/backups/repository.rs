//! Where backups go: the provider, its location and credentials, the
//! repository password, and the automatic-backup settings. Kept in the
//! daemon's state directory, every file 0600 and written atomically.

pub use crate::domain::autobackup::quotas::Quotas;
use crate::domain::error::{Failure, Outcome};
use crate::os::files::write_atomically;
use crate::os::restic::Repository;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The app's providers, and the S3, SFTP and REST repositories an owner
/// running their own storage can use (the app shows unknown values with a
/// fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Provider {
    #[default]
    None,
    /// A repository in RAM (`/dev/shm`), for tests.
    Memory,
    /// A local or mounted path.
    File,
    /// Backblaze B2 through restic's rclone backend.
    Backblaze,
    /// An S3-compatible server.
    S3,
    /// SFTP, authenticated by root's SSH keys.
    Sftp,
    /// restic's REST protocol (`rest-server`, `rclone serve restic`).
    Rest,
}

/// What `settings.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    pub provider: Provider,
    pub location_id: Option<String>,
    pub location_name: Option<String>,
    /// The provider account (key id, user).
    pub login: String,
    /// The provider secret (application key, S3 secret, REST password).
    pub secret: String,
    /// Whether the repository was created or opened successfully.
    pub initialized: bool,
    /// Minutes between automatic backups; None: off.
    pub autobackup_period: Option<i32>,
    pub quotas: Quotas,
}

/// The settings the owner sends to set up a repository.
#[derive(Debug, Clone)]
pub struct RepositoryInput {
    pub provider: Provider,
    pub location_id: String,
    pub location_name: String,
    pub login: String,
    pub password: String,
    /// The encryption key of an existing repository (a new server opening
    /// the old server's backups); None makes a new one.
    pub encryption_key: Option<String>,
}

/// A repository set in the daemon's configuration file
/// (`[backup_repository]`), for owners who run their own storage (S3, SFTP,
/// REST, or a FILE path): used at start in place of what the app set. The
/// secrets are read from files (0600), never from the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredRepository {
    /// `S3`, `SFTP`, `REST`, `FILE` or `BACKBLAZE` (as the API names them).
    pub provider: Provider,
    /// The server: S3's or REST's URL, SFTP's `host[:port]`.
    #[serde(default)]
    pub location_id: String,
    /// The bucket and path, or the path on the server.
    pub location_name: String,
    /// The account: S3's key id, SFTP's or REST's user.
    #[serde(default)]
    pub login: String,
    /// A file holding the account's secret (S3's secret key, REST's
    /// password).
    pub secret_file: Option<PathBuf>,
    /// A file holding the repository's encryption key, to open an existing
    /// repository; without it the daemon keeps its own (or makes one).
    pub encryption_key_file: Option<PathBuf>,
}

/// A secret kept in `path`, without the line end.
pub fn read_secret_file(path: &Path) -> Outcome<String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| Failure::internal(&format!("reading {}", path.display()), e))
}

/// The files in the backups directory.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn settings(&self) -> PathBuf {
        self.dir.join("settings.json")
    }
    pub fn password(&self) -> PathBuf {
        self.dir.join("repository-password")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
    pub fn dumps(&self) -> PathBuf {
        self.dir.join("dumps")
    }
    /// Per service, the units a backup or restore stopped and has not yet
    /// started again (so a daemon killed meanwhile starts them at boot).
    pub fn stopped(&self) -> PathBuf {
        self.dir.join("stopped")
    }

    /// Restores' folder swaps in progress (see restore.rs).
    pub fn swaps(&self) -> PathBuf {
        self.dir.join("swaps")
    }

    /// The directory, created 0700.
    pub fn prepare(&self) -> Outcome<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [self.dir.clone(), self.cache(), self.dumps(), self.stopped()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Failure::internal("creating the backups directory", e))?;
        }
        Ok(())
    }

    pub fn load(&self) -> Outcome<Settings> {
        match std::fs::read(self.settings()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Failure::internal("reading the backup settings", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(Failure::internal("reading the backup settings", e)),
        }
    }

    pub fn save(&self, settings: &Settings) -> Outcome<()> {
        self.prepare()?;
        let bytes = serde_json::to_vec_pretty(settings)
            .map_err(|e| Failure::internal("writing the backup settings", e))?;
        write_atomically(&self.settings(), &bytes, 0o600)
            .map_err(|e| Failure::internal("writing the backup settings", e))
    }

    /// The repository password, if one was made or given.
    pub fn encryption_key(&self) -> Outcome<Option<String>> {
        match std::fs::read_to_string(self.password()) {
            Ok(key) => Ok(Some(key.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Failure::internal("reading the repository password", e)),
        }
    }

    /// A fingerprint of the configuration file's repository as last
    /// applied: applied once, so what the app sets later (another
    /// repository, or none) is not undone at the next start.
    fn configured_fingerprint(&self) -> PathBuf {
        self.dir.join("configured-repository.sha256")
    }

    pub fn applied_configuration(&self) -> Outcome<Option<String>> {
        match std::fs::read_to_string(self.configured_fingerprint()) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Failure::internal("reading the applied configuration", e)),
        }
    }

    pub fn save_applied_configuration(&self, fingerprint: &str) -> Outcome<()> {
        self.prepare()?;
        write_atomically(
            &self.configured_fingerprint(),
            fingerprint.as_bytes(),
            0o600,
        )
        .map_err(|e| Failure::internal("writing the applied configuration", e))
    }

    pub fn save_encryption_key(&self, key: &str) -> Outcome<()> {
        self.prepare()?;
        write_atomically(&self.password(), key.as_bytes(), 0o600)
            .map_err(|e| Failure::internal("writing the repository password", e))
    }
}

/// How the daemon's ssh reaches SFTP repositories: a key and the hosts it
/// trusts, from the daemon's configuration (paths only: restic gets them in
/// `-o sftp.command=...`, on its command line). Without either, restic runs
/// ssh as root would.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SftpAccess {
    pub identity_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`: the host ssh is given and
/// the port, if any.
fn host_and_port(location_id: &str) -> (&str, Option<&str>) {
    if let Some(rest) = location_id.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':').filter(|p| !p.is_empty()));
    }
    match location_id.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (location_id, None),
    }
}

/// What may go into the ssh command restic splits on whitespace: no
/// blanks, quotes or backslashes, and nothing ssh could read as an option.
fn plain_word(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('-')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'\\".contains(c))
}

/// restic's `sftp.command` for `login@location_id` with the configured key
/// and known hosts; None when neither is configured.
fn sftp_command(settings: &Settings, access: &SftpAccess) -> Outcome<Option<String>> {
    if access.identity_file.is_none() && access.known_hosts_file.is_none() {
        return Ok(None);
    }
    let id = settings.location_id.as_deref().unwrap_or_default();
    let (host, port) = host_and_port(id);
    let unusable = || {
        bad(
            "The SFTP host, port or user holds characters ssh cannot be given",
            "Хост, порт или пользователь SFTP содержит недопустимые символы",
        )
    };
    if !plain_word(host) || !plain_word(&settings.login) {
        return Err(unusable());
    }
    let mut command = vec!["ssh".to_owned(), "-F".into(), "/dev/null".into()];
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(unusable());
        }
        command.extend(["-p".into(), port.to_owned()]);
    }
    let path_word = |path: &Path| {
        let text = path.to_string_lossy();
        if path.is_absolute() && plain_word(&text) {
            Ok(text.into_owned())
        } else {
            Err(Failure::internal(
                "configuring SFTP",
                format!(
                    "{} must be an absolute path without blanks or quotes",
                    path.display()
                ),
            ))
        }
    };
    if let Some(identity) = &access.identity_file {
        command.extend(["-i".into(), path_word(identity)?]);
        command.extend(["-o".into(), "IdentitiesOnly=yes".into()]);
    }
    if let Some(known_hosts) = &access.known_hosts_file {
        command.extend([
            "-o".into(),
            format!("UserKnownHostsFile={}", path_word(known_hosts)?),
        ]);
    }
    command.extend([
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-s".into(),
        "--".into(),
        format!("{}@{host}", settings.login),
        "sftp".into(),
    ]);
    Ok(Some(command.join(" ")))
}

/// A new repository password: 32 random bytes, URL-safe base64.
pub fn new_encryption_key() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn bad(en: &str, ru: &str) -> Failure {
    Failure::bad_input(en, ru)
}

/// Percent-encodes a URL's user or password part.
fn userinfo(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Checks the owner's input for `provider`; the error says what is wrong.
pub fn check_input(input: &RepositoryInput) -> Outcome<()> {
    let name = input.location_name.trim();
    match input.provider {
        Provider::None => Err(bad(
            "Choose a backup provider",
            "Выберите хранилище резервных копий",
        )),
        Provider::Memory => Ok(()),
        Provider::File => {
            if !Path::new(name).is_absolute() || name.split('/').any(|c| c == "..") {
                return Err(bad(
                    "For a FILE repository, locationName must be an absolute path",
                    "Для хранилища FILE locationName должен быть абсолютным путём",
                ));
            }
            Ok(())
        }
        Provider::Backblaze | Provider::S3 => {
            if name.is_empty() || input.login.is_empty() || input.password.is_empty() {
                return Err(bad(
                    "The bucket (locationName), login and password are all needed",
                    "Нужны корзина (locationName), логин и пароль",
                ));
            }
            if input.provider == Provider::S3 && !input.location_id.starts_with("http") {
                return Err(bad(
                    "For S3, locationId is the server's URL (https://...)",
                    "Для S3 locationId — адрес сервера (https://...)",
                ));
            }
            Ok(())
        }
        Provider::Sftp => {
            if input.location_id.is_empty() || name.is_empty() || input.login.is_empty() {
                return Err(bad(
                    "For SFTP: locationId is host[:port], locationName the path, login the user",
                    "Для SFTP: locationId — хост[:порт], locationName — путь, login — пользователь",
                ));
            }
            Ok(())
        }
        Provider::Rest => {
            if !(input.location_id.starts_with("http://")
                || input.location_id.starts_with("https://"))
            {
                return Err(bad(
                    "For REST, locationId is the server's URL (https://host:port)",
                    "Для REST locationId — адрес сервера (https://хост:порт)",
                ));
            }
            Ok(())
        }
    }
}

/// rclone's remote for BACKBLAZE, configured by environment (with the
/// account and key: never on a command line, never in a file).
const BACKBLAZE_REMOTE_TYPE: &str = "RCLONE_CONFIG_SPB2_TYPE";

/// TEST SCAFFOLDING: turns a BACKBLAZE repository's rclone remote into an
/// alias of the local `folder` (B2's cloud cannot be reached from the
/// tests); everything else (restic's rclone backend, the credentials in
/// rclone's environment) stays as for B2.
pub fn backblaze_stand_in(repository: &mut Repository, folder: &Path) {
    let Some(kind) = repository
        .env
        .iter_mut()
        .find(|(name, _)| name == BACKBLAZE_REMOTE_TYPE)
    else {
        return;
    };
    kind.1 = "alias".into();
    repository.env.push((
        "RCLONE_CONFIG_SPB2_REMOTE".into(),
        folder.to_string_lossy().into_owned(),
    ));
}

/// How restic reaches the repository `settings` describe.
pub fn repository(settings: &Settings, files: &Files, sftp: &SftpAccess) -> Outcome<Repository> {
    let id = settings.location_id.clone().unwrap_or_default();
    let name = settings.location_name.clone().unwrap_or_default();
    let name = name.trim_matches('/');
    let mut env = Vec::new();
    let mut options = Vec::new();
    let location = match settings.provider {
        Provider::None => {
            return Err(Failure::conflict(
                "No backup repository is set up",
                "Хранилище резервных копий не настроено",
            ));
        }
        Provider::Memory => format!("/dev/shm/selfprivacy-api-backups/{name}"),
        Provider::File => format!("/{name}"),
        Provider::Backblaze => {
            env.push((BACKBLAZE_REMOTE_TYPE.into(), "b2".into()));
            env.push(("RCLONE_CONFIG_SPB2_ACCOUNT".into(), settings.login.clone()));
            env.push(("RCLONE_CONFIG_SPB2_KEY".into(), settings.secret.clone()));
            format!("rclone:spb2:{name}")
        }
        Provider::S3 => {
            env.push(("AWS_ACCESS_KEY_ID".into(), settings.login.clone()));
            env.push(("AWS_SECRET_ACCESS_KEY".into(), settings.secret.clone()));
            format!("s3:{}/{name}", id.trim_end_matches('/'))
        }
        Provider::Sftp => {
            if let Some(command) = sftp_command(settings, sftp)? {
                options.push(format!("sftp.command={command}"));
            }
            format!("sftp://{}@{id}//{name}", userinfo(&settings.login))
        }
        Provider::Rest => {
            let (scheme, rest) = id.split_once("://").unwrap_or(("https", &id));
            let rest = rest.trim_end_matches('/');
            if settings.login.is_empty() {
                format!("rest:{scheme}://{rest}/{name}")
            } else {
                format!(
                    "rest:{scheme}://{}:{}@{rest}/{name}",
                    userinfo(&settings.login),
                    userinfo(&settings.secret)
                )
            }
        }
    };
    Ok(Repository {
        location,
        password_file: files.password(),
        env,
        cache_dir: files.cache(),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(provider: Provider, id: &str, name: &str) -> RepositoryInput {
        RepositoryInput {
            provider,
            location_id: id.into(),
            location_name: name.into(),
            login: "user".into(),
            password: "p@ss:word".into(),
            encryption_key: None,
        }
    }

    #[test]
    fn file_repositories_need_an_absolute_path() {
        assert!(check_input(&input(Provider::File, "", "/srv/backups")).is_ok());
        assert!(check_input(&input(Provider::File, "", "backups")).is_err());
        assert!(check_input(&input(Provider::File, "", "/srv/../etc")).is_err());
        assert!(check_input(&input(Provider::None, "", "/x")).is_err());
    }

    #[test]
    fn credentials_go_to_the_environment_or_an_encoded_url_never_elsewhere() {
        let files = Files {
            dir: "/state/backups".into(),
        };
        let settings = Settings {
            provider: Provider::Rest,
            location_id: Some("http://127.0.0.1:8000/".into()),
            location_name: Some("repo".into()),
            login: "user".into(),
            secret: "p@ss:word".into(),
            ..Settings::default()
        };
        let repo = repository(&settings, &files, &SftpAccess::default()).unwrap();
        assert_eq!(
            repo.location,
            "rest:http://user:p%40ss%3Aword@127.0.0.1:8000/repo"
        );
        let s3 = Settings {
            provider: Provider::S3,
            location_id: Some("http://127.0.0.1:9000".into()),
            ..settings.clone()
        };
        let repo = repository(&s3, &files, &SftpAccess::default()).unwrap();
        assert_eq!(repo.location, "s3:http://127.0.0.1:9000/repo");
        assert!(
            repo.env
                .contains(&("AWS_SECRET_ACCESS_KEY".into(), "p@ss:word".into()))
        );
        assert_eq!(
            repo.password_file,
            PathBuf::from("/state/backups/repository-password")
        );
    }

    #[test]
    fn sftp_with_a_configured_key_runs_ssh_with_that_key_and_known_hosts_only() {
        let files = Files {
            dir: "/state/backups".into(),
        };
        let settings = Settings {
            provider: Provider::Sftp,
            location_id: Some("backup.example.org:2222".into()),
            location_name: Some("/srv/restic".into()),
            login: "sp".into(),
            ..Settings::default()
        };
        let access = SftpAccess {
            identity_file: Some("/etc/selfprivacy-api/sftp_key".into()),
            known_hosts_file: Some("/etc/selfprivacy-api/known_hosts".into()),
        };
        let repo = repository(&settings, &files, &access).unwrap();
        assert_eq!(
            repo.location,
            "sftp://sp@backup.example.org:2222//srv/restic"
        );
        assert_eq!(
            repo.options,
            [
                "sftp.command=ssh -F /dev/null -p 2222 -i /etc/selfprivacy-api/sftp_key \
              -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/selfprivacy-api/known_hosts \
              -o BatchMode=yes -o StrictHostKeyChecking=yes -s -- sp@backup.example.org sftp"
            ]
        );
        // Without keys configured, restic's own ssh command.
        let plain = repository(&settings, &files, &SftpAccess::default()).unwrap();
        assert!(plain.options.is_empty());
        // Nothing that would split into more words or pass for an option.
        for login in ["-oProxyCommand=x", "a b", "a\"b"] {
            let odd = Settings {
                login: login.into(),
                ..settings.clone()
            };
            assert!(repository(&odd, &files, &access).is_err(), "{login}");
        }
        let spaced = SftpAccess {
            identity_file: Some("/etc/my key".into()),
            known_hosts_file: None,
        };
        assert!(repository(&settings, &files, &spaced).is_err());
        assert_eq!(host_and_port("[::1]:22"), ("::1", Some("22")));
        assert_eq!(host_and_port("::1"), ("::1", None));
        assert_eq!(host_and_port("h"), ("h", None));
    }

    #[test]
    fn generated_keys_differ_and_are_long() {
        let (a, b) = (new_encryption_key(), new_encryption_key());
        assert_ne!(a, b);
        assert!(a.len() >= 42, "{a}");
    }
}
