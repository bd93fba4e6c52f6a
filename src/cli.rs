//! Command line: `serve`, `token`, `export-schema`, `check-config`.

use crate::app::App;
use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::tokens::TokenService;
use crate::state::Store;
use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "selfprivacy-api",
    version,
    about = "The SelfPrivacy server API daemon"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

/// Overrides of the configuration file, each also taken from the
/// environment.
#[derive(Args, Debug, Default)]
pub struct Settings {
    /// TOML configuration file (default: /etc/selfprivacy-api/config.toml if present)
    #[arg(long, global = true, env = "SELFPRIVACY_API_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on
    #[arg(long, global = true, env = "SELFPRIVACY_API_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The daemon's state directory (SQLite database)
    #[arg(long, global = true, env = "SELFPRIVACY_API_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The server's userdata.json
    #[arg(long, global = true, env = "SELFPRIVACY_API_USERDATA_FILE")]
    pub userdata_file: Option<PathBuf>,
    /// Directory of sp-module definitions
    #[arg(long, global = true, env = "SELFPRIVACY_API_SP_MODULES_DIR")]
    pub sp_modules_dir: Option<PathBuf>,
    /// The NixOS configuration flake directory
    #[arg(long, global = true, env = "SELFPRIVACY_API_NIXOS_CONFIG_DIR")]
    pub nixos_config_dir: Option<PathBuf>,
    /// D-Bus address of the system bus to manage (default: the system bus)
    #[arg(long, global = true, env = "SELFPRIVACY_API_DBUS_ADDRESS")]
    pub dbus_address: Option<String>,
}

impl Settings {
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(address) = &self.dbus_address {
            config.dbus_address = Some(address.clone());
        }
        let paths = [
            (&self.state_dir, &mut config.state_dir),
            (&self.userdata_file, &mut config.userdata_file),
            (&self.sp_modules_dir, &mut config.sp_modules_dir),
            (&self.nixos_config_dir, &mut config.nixos_config_dir),
        ];
        for (flag, setting) in paths {
            if let Some(value) = flag {
                *setting = value.clone();
            }
        }
        Ok(config)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the GraphQL API
    Serve {
        /// TEST SCAFFOLDING: listen on this unix socket for test hooks
        /// (moving the daemon's clock). Only in builds with the
        /// `test-hooks` feature, which a server's binary never has.
        #[cfg(feature = "test-hooks")]
        #[arg(long, hide = true)]
        test_hooks_socket: Option<PathBuf>,
    },
    /// Manage device tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage email passwords (passwords for a user's mail clients)
    #[command(subcommand)]
    EmailPassword(EmailPasswordCommand),
    /// Print the GraphQL schema (SDL) this daemon serves
    ExportSchema,
    /// Backups
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Check a configuration file as `serve` would read it (the NixOS
    /// module runs this at build time); exit status 1 with the reason if
    /// it is refused
    CheckConfig {
        /// The TOML configuration file
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a new device and print it (only the token)
    New {
        #[arg(long)]
        device: String,
    },
    /// Store a token read from standard input for a device
    Import {
        #[arg(long)]
        device: String,
    },
    /// List the devices that have tokens
    List,
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Run the automatic backups that are due (the autobackup timer runs
    /// this): asks the running daemon over its control socket, waits for
    /// the outcome and prints it; exit status 1 if any failed
    RunDue {
        /// The daemon's control socket (default: `control_socket` in the
        /// settings, or control.sock in the state directory)
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EmailPasswordCommand {
    /// Create an email password for a user and print it (only the
    /// password; it is not shown again)
    New {
        #[arg(long)]
        user: String,
        /// What the password is for (e.g. the mail client's device)
        #[arg(long)]
        name: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("selfprivacy-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ExportSchema => {
            print!("{}", crate::api::export_sdl());
            Ok(())
        }
        Command::CheckConfig { file } => {
            Config::load(Some(&file))?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Serve {
            #[cfg(feature = "test-hooks")]
            test_hooks_socket,
        } => {
            #[cfg(not(feature = "test-hooks"))]
            let test_hooks_socket = None;
            let config = cli.settings.resolve()?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let app = App::open(config)?;
                let _control = crate::os::control_socket::ControlSocket::start(
                    &app.config.control_socket_path(),
                    run_due_handler(app.clone()),
                )?;
                app.storage.recover_interrupted(&app.service_locks);
                app.storage
                    .recover_interrupted_migration(&app.service_locks);
                crate::api::http::serve(app, test_hooks_socket).await
            })
        }
        Command::Backup(BackupCommand::RunDue { socket }) => {
            let socket = match socket {
                Some(socket) => socket,
                None => cli.settings.resolve()?.control_socket_path(),
            };
            let answer = crate::os::control_socket::request(
                &socket,
                &crate::os::control_socket::Request::RunDue,
            )?;
            if !answer.ok {
                anyhow::bail!(
                    "the daemon could not run the backups: {}",
                    answer.error.unwrap_or_default()
                );
            }
            let report: crate::domain::autobackup::RunDueReport =
                serde_json::from_value(answer.report.unwrap_or_default())
                    .map_err(|e| anyhow::anyhow!("the daemon's report: {e}"))?;
            print!("{}", report.render());
            if report.failed() {
                anyhow::bail!("some automatic backups failed");
            }
            Ok(())
        }
        Command::EmailPassword(EmailPasswordCommand::New { user, name }) => {
            let config = cli.settings.resolve()?;
            let store = Arc::new(Store::open(&config.state_dir)?);
            let passwords = crate::domain::users::email_passwords::EmailPasswords::new(
                store,
                Arc::new(Clock::default()),
            );
            let (_, password) = passwords.create(&user, &name, None)?;
            println!("{password}");
            Ok(())
        }
        Command::Token(command) => {
            let config = cli.settings.resolve()?;
            // Only the token tables: opening the job registry here would
            // mark a running daemon's jobs as interrupted.
            let store = Arc::new(Store::open(&config.state_dir)?);
            let tokens = TokenService::load(store, Arc::new(Clock::default()))?;
            match command {
                TokenCommand::New { device } => {
                    println!("{}", tokens.create_token(&device)?.secret);
                }
                TokenCommand::Import { device } => {
                    let mut token = String::new();
                    std::io::stdin().read_to_string(&mut token)?;
                    let issued = tokens.import_token(&device, &token)?;
                    eprintln!("token stored for device {}", issued.device);
                }
                TokenCommand::List => {
                    for device in tokens.devices() {
                        println!("{}\t{}", device.name, device.created_at.to_rfc3339());
                    }
                }
            }
            Ok(())
        }
    }
}

/// What the control socket runs for `backup run-due`: the due automatic
/// backups, through the daemon's own backups (so their jobs show in the app).
fn run_due_handler(app: Arc<App>) -> crate::os::control_socket::RunDueFn {
    let runner = Arc::new(crate::domain::backups::automatic::AutomaticBackups {
        backups: app.backups.clone(),
        userdata: Arc::new(crate::os::userdata::UserdataFile::new(
            app.config.userdata_file.clone(),
        )),
    });
    crate::domain::autobackup::control_handler(runner, app.clock.clone())
}
