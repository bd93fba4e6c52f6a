//! Configuration: defaults for NixOS, then an optional TOML file, then
//! environment variables and command-line flags (see `cli.rs`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/selfprivacy-api/config.toml";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the API listens (nginx proxies to it in production).
    pub listen: SocketAddr,
    /// The daemon's own state: the SQLite file with token hashes and jobs.
    pub state_dir: PathBuf,
    /// The server's declared configuration, shared with NixOS.
    pub userdata_file: PathBuf,
    /// The service catalogue generated from the installed sp-modules.
    pub sp_modules_dir: PathBuf,
    /// The NixOS configuration flake.
    pub nixos_config_dir: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// D-Bus address of the system bus (default: the standard system bus).
    pub dbus_address: Option<String>,
    /// How long a start, stop or restart of a unit may take.
    pub unit_timeout_secs: u64,
    /// How long a rebuild, upgrade or rollback may take.
    pub rebuild_timeout_secs: u64,
    /// How long one GraphQL request over HTTP may take before it is answered
    /// with an error (longer than a unit's start or stop).
    pub request_timeout_secs: u64,
    /// How long a rebuild started by a configuration change waits for more
    /// changes to join it (the app sends a batch one mutation at a time).
    pub rebuild_debounce_ms: u64,
    /// Where a module is installed from: a flake URL with `{id}`.
    pub module_url_template: String,
    /// The server's public addresses for DNS records (default: found on
    /// the network interfaces).
    pub public_ipv4: Option<std::net::Ipv4Addr>,
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// The units that run `nixos-rebuild` (shipped by the NixOS module).
    pub rebuild_unit: String,
    pub upgrade_unit: String,
    pub rollback_unit: String,
    /// The NixOS system profile link: a rebuild that changed it has
    /// activated its new generation (even if it then reported errors).
    pub system_profile: PathBuf,
    /// Serve GraphiQL on `GET /graphql`. Off by default: its page loads
    /// scripts from a public CDN (unpinned, without integrity hashes) on
    /// the origin where the owner types a token.
    pub graphiql: bool,
    /// Open websockets at most, in all; one more is refused (503) before
    /// it is upgraded.
    pub max_websockets: usize,
    /// Open websockets at most from one client (its address, or nginx's
    /// X-Real-IP); one more is refused (429). A phone keeps one or two.
    pub max_websockets_per_client: usize,
    /// The control socket `backup run-due` talks to (root only, 0600);
    /// default `control.sock` in the state directory.
    pub control_socket: Option<PathBuf>,
    /// The mail server's DKIM public key, in the zone-file form opendkim
    /// and rspamd write (`{domain}` is replaced by the server's domain).
    pub dkim_key_file: String,
    /// Where secrets the NixOS configuration needs (the DNS provider's
    /// token) are kept: JSON, mode 0600, never in userdata.
    pub secrets_file: PathBuf,
    /// The running NixOS's version (`nixos-version` of the current system),
    /// else the `PRETTY_NAME` of the os-release file.
    pub nixos_version_file: PathBuf,
    pub os_release_file: PathBuf,
    /// The tz database timezones are checked against (default: the first
    /// of /etc/zoneinfo, NixOS's, and /usr/share/zoneinfo that exists).
    pub zoneinfo_dir: Option<PathBuf>,
    /// The commands `pullRepositoryChanges` and `nixCollectGarbage` run.
    pub git_command: PathBuf,
    pub nix_collect_garbage_command: PathBuf,
    /// How long a `git pull` of the configuration may take.
    pub git_pull_timeout_secs: u64,
    /// How long a garbage collection may take.
    pub garbage_collection_timeout_secs: u64,
    /// Where accounts live: `json` (userdata.json, servers without an
    /// identity provider) or `kanidm`.
    pub users_backend: UsersBackend,
    /// Kanidm's REST API (a loopback URL skips the certificate check).
    pub kanidm_url: String,
    /// A file holding the API token of a Kanidm service account allowed to
    /// manage people and groups (read at each request).
    pub kanidm_token_file: PathBuf,
    /// The system's accounts: new users must not clash with them.
    pub passwd_file: PathBuf,
    /// The unix socket where the mail server checks email passwords (off
    /// when unset); only `mail_auth_group` may connect to it.
    pub mail_auth_socket: Option<PathBuf>,
    pub mail_auth_group: String,
    /// Seconds between monitoring samples (the resolution of the last week).
    pub monitoring_sample_secs: u64,
    /// Seconds between writes of monitoring samples to the database.
    pub monitoring_flush_secs: u64,
    /// TEST SCAFFOLDING: a service move stops dead after this step
    /// (`stopping`, `copying`, ...), for tests that kill the daemon there.
    /// Only in builds with the `test-hooks` feature: a server's binary
    /// refuses the key as unknown.
    #[cfg(feature = "test-hooks")]
    pub test_pause_move_at_step: Option<String>,
    /// The restic program backups run.
    pub restic_binary: PathBuf,
    /// Where `pg_dump`, `pg_restore` and `psql` are (default: on PATH).
    pub postgres_bin_dir: Option<PathBuf>,
    /// PostgreSQL's socket directory, for database dumps.
    pub postgres_host: String,
    /// The OS user and database role dumps and restores run as.
    pub postgres_user: String,
    /// Files backed up with the server's settings besides userdata (the
    /// secrets the server needs).
    pub backup_server_files: Vec<PathBuf>,
    /// The ssh key SFTP backup repositories are reached with, and the
    /// known_hosts file their host keys are checked against (default:
    /// root's ssh settings).
    pub backup_sftp_identity_file: Option<PathBuf>,
    pub backup_sftp_known_hosts_file: Option<PathBuf>,
    /// TEST SCAFFOLDING: BACKBLAZE repositories go to this local folder
    /// (an rclone alias remote) instead of B2's cloud, which cannot be
    /// reached here. Only in builds with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub test_backblaze_stand_in: Option<PathBuf>,
    /// A backup repository used at start (`[backup_repository]`: S3, SFTP,
    /// REST... with its secrets in files), in place of the app's.
    pub backup_repository: Option<crate::domain::backups::ConfiguredRepository>,
    /// TEST SCAFFOLDING: a DOWNLOAD_VERIFY_OVERWRITE restore stops dead in
    /// its swap (`aside` or `in`), for tests that kill the daemon there.
    #[cfg(feature = "test-hooks")]
    pub test_pause_restore_swap: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UsersBackend {
    #[default]
    Json,
    Kanidm,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5050)),
            state_dir: PathBuf::from("/var/lib/selfprivacy-api"),
            userdata_file: PathBuf::from("/etc/nixos/userdata.json"),
            sp_modules_dir: PathBuf::from("/etc/sp-modules"),
            nixos_config_dir: PathBuf::from("/etc/nixos"),
            max_body_bytes: 256 * 1024,
            dbus_address: None,
            unit_timeout_secs: 120,
            request_timeout_secs: 180,
            rebuild_timeout_secs: 3600,
            rebuild_debounce_ms: 1500,
            module_url_template: "git+https://git.selfprivacy.org/SelfPrivacy/selfprivacy-nixos-config.git?ref=flakes&dir=sp-modules/{id}".into(),
            public_ipv4: None,
            public_ipv6: None,
            rebuild_unit: "sp-nixos-rebuild.service".into(),
            upgrade_unit: "sp-nixos-upgrade.service".into(),
            rollback_unit: "sp-nixos-rollback.service".into(),
            system_profile: PathBuf::from("/nix/var/nix/profiles/system"),
            graphiql: false,
            max_websockets: 1024,
            max_websockets_per_client: 32,
            control_socket: None,
            dkim_key_file: "/var/dkim/{domain}.selector.txt".into(),
            secrets_file: PathBuf::from("/etc/selfprivacy/secrets.json"),
            nixos_version_file: PathBuf::from("/run/current-system/nixos-version"),
            os_release_file: PathBuf::from("/etc/os-release"),
            zoneinfo_dir: None,
            git_command: PathBuf::from("git"),
            nix_collect_garbage_command: PathBuf::from("nix-collect-garbage"),
            git_pull_timeout_secs: 120,
            garbage_collection_timeout_secs: 3600,
            users_backend: UsersBackend::Json,
            kanidm_url: "https://127.0.0.1:3013".into(),
            kanidm_token_file: PathBuf::from("/run/keys/selfprivacy-api/kanidm-admin-token"),
            passwd_file: PathBuf::from("/etc/passwd"),
            mail_auth_socket: None,
            mail_auth_group: "dovecot2".into(),
            monitoring_sample_secs: 10,
            monitoring_flush_secs: 60,
            #[cfg(feature = "test-hooks")]
            test_pause_move_at_step: None,
            restic_binary: PathBuf::from("restic"),
            postgres_bin_dir: None,
            postgres_host: "/run/postgresql".into(),
            postgres_user: "postgres".into(),
            backup_server_files: Vec::new(),
            backup_sftp_identity_file: None,
            backup_sftp_known_hosts_file: None,
            #[cfg(feature = "test-hooks")]
            test_backblaze_stand_in: None,
            backup_repository: None,
            #[cfg(feature = "test-hooks")]
            test_pause_restore_swap: None,
        }
    }
}

impl Config {
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.state_dir.join("control.sock"))
    }

    /// Loads `file`, or the default file if it exists, or the defaults.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let (path, required) = match file {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("configuration file {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot read configuration file {}: {e}",
                path.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let config: Config =
            toml::from_str("listen = \"127.0.0.1:6000\"\nstate_dir = \"/tmp/x\"").unwrap();
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.userdata_file, Config::default().userdata_file);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}

#[cfg(test)]
mod users_settings_tests {
    use super::*;

    #[test]
    fn users_backend_is_json_or_kanidm() {
        assert_eq!(Config::default().users_backend, UsersBackend::Json);
        let config: Config = toml::from_str(
            "users_backend = \"kanidm\"\nkanidm_token_file = \"/run/t\"\nmail_auth_socket = \"/run/m.sock\"",
        )
        .unwrap();
        assert_eq!(config.users_backend, UsersBackend::Kanidm);
        assert_eq!(config.mail_auth_socket, Some(PathBuf::from("/run/m.sock")));
        assert!(toml::from_str::<Config>("users_backend = \"ldap\"").is_err());
    }
}
