//! Services: the catalogue of sp-modules joined with the server's state
//! (userdata: enabled, settings; systemd: unit states).

pub mod catalogue;
pub mod config;
pub mod definition;
pub mod flake;
pub mod resources;
pub mod status;
pub mod usage;

use super::error::{Failure, FailureKind, Outcome};
use super::i18n::Text;
use super::system::changes::{FileEdit, UserdataChange};
use super::system::rebuild::{Accepted, ConfigChange, Rebuilds};
use crate::os::disks::{self, Filesystem};
use crate::os::systemd::{JobOutcome, SystemdLink, UnitAction};
use catalogue::Catalogue;
use config::Setting;
use definition::Definition;
use serde_json::Value;
use status::ServiceStatus;
use std::any::Any;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A service as the app sees it at one moment.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub definition: Arc<Definition>,
    pub enabled: bool,
    pub status: ServiceStatus,
    /// `userdata.modules.<id>`: enable, location and option values.
    pub settings: serde_json::Map<String, Value>,
    /// `userdata.domain`.
    pub domain: Option<String>,
    /// `userdata.useBinds`: data folders are bound from their volume.
    pub uses_binds: bool,
    /// Whether the module is an input of flake.nix.
    pub installed: Outcome<bool>,
    /// The DNS records it needs.
    pub dns_records: Outcome<Vec<DnsRecord>>,
    /// Its data's size, as last measured, and the volume it is on.
    pub storage: StorageUse,
    /// What a presentation layer derived from this very view.
    pub memo: Memo,
}

/// Something derived from one view, kept with it. A view never changes (a
/// changed input makes a new one), so what was derived from it stays true
/// for as long as the view is the current one. A clone starts empty.
#[derive(Default)]
pub struct Memo(Mutex<Option<(u64, Arc<dyn Any + Send + Sync>)>>);

impl Memo {
    /// What was kept under `key`, if that is what is kept.
    pub fn get<T: Any + Send + Sync>(&self, key: u64) -> Option<Arc<T>> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (known, value) = kept.as_ref()?;
        if *known != key {
            return None;
        }
        value.clone().downcast().ok()
    }

    /// Keeps `value` under `key` (in place of what was kept).
    pub fn set<T: Any + Send + Sync>(&self, key: u64, value: Arc<T>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, value));
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl ServiceView {
    /// A service known from its definition alone: disabled, OFF, with no
    /// settings, not installed, and nothing measured.
    pub fn bare(definition: Arc<Definition>) -> Self {
        ServiceView {
            definition,
            enabled: false,
            status: ServiceStatus::Off,
            settings: serde_json::Map::new(),
            domain: None,
            uses_binds: false,
            installed: Ok(false),
            dns_records: Ok(Vec::new()),
            storage: StorageUse {
                bytes: 0,
                measured: false,
                volume: None,
            },
            memo: Memo::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.definition.meta.id
    }

    /// An option's value: from userdata, else the definition's default.
    pub fn option_value(&self, name: &str) -> Option<Value> {
        self.settings
            .get(name)
            .cloned()
            .or_else(|| self.definition.options.get(name).map(|o| o.default.clone()))
            .filter(|v| !v.is_null())
    }

    /// `https://<subdomain>.<domain>` when the module shows a URL.
    pub fn url(&self) -> Option<String> {
        if !self.definition.meta.show_url {
            return None;
        }
        let option = self.definition.primary_subdomain_option()?;
        let subdomain = self.option_value(option)?;
        let subdomain = subdomain.as_str().filter(|s| !s.is_empty())?;
        let domain = self.domain.as_deref().filter(|d| !d.is_empty())?;
        Some(format!("https://{subdomain}.{domain}"))
    }
}

/// The views last built, and the inputs they were built from.
struct SharedViews {
    definitions: Arc<Vec<Arc<Definition>>>,
    userdata: Arc<Value>,
    statuses: Vec<ServiceStatus>,
    installed: Arc<Vec<String>>,
    usage_generation: u64,
    built_at: Instant,
    views: Arc<Vec<Arc<ServiceView>>>,
}

/// The server's public IPv4 and IPv6 addresses, as far as known.
type Addresses = (Option<Ipv4Addr>, Option<Ipv6Addr>);

/// Device, inode, modification time and size: a changed file differs.
type FileIdentity = (u64, u64, i64, u64);

/// flake.nix's identity (None: no such file) and the modules it installs.
type InstalledModules = (Option<FileIdentity>, Arc<Vec<String>>);

/// Where services get installed from and how the server is reached.
pub struct ServicesSetup {
    /// `/etc/nixos/flake.nix`.
    pub flake: PathBuf,
    /// The flake URL of a module, with `{id}` for its id.
    pub module_url_template: String,
    /// The server's addresses for DNS records (found from the interfaces
    /// when not set).
    pub public_ipv4: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
}

pub struct Services {
    catalogue: Catalogue,
    systemd: Arc<SystemdLink>,
    /// userdata is read as declared through it, and written through it.
    rebuilds: Arc<Rebuilds>,
    unit_timeout: Duration,
    setup: ServicesSetup,
    /// The installed modules, by the flake file's identity.
    installed: Mutex<Option<InstalledModules>>,
    usage: Arc<usage::UsageCache>,
    /// One build at a time: requests arriving meanwhile take its result.
    views: tokio::sync::Mutex<Option<SharedViews>>,
    /// Facts that change rarely, read at most every few seconds rather
    /// than once per service per query.
    addresses: Mutex<Option<(Instant, Addresses)>>,
    volumes: Mutex<HashMap<PathBuf, (Instant, Option<Volume>)>>,
}

/// How long the server's addresses and volumes are reused.
const FACTS_TTL: Duration = Duration::from_secs(10);

/// A DNS record a service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub record_type: &'static str,
    pub name: String,
    pub content: String,
    pub ttl: i32,
    pub display_name: String,
}

/// The disk a service's data takes, and where.
#[derive(Debug, Clone)]
pub struct StorageUse {
    /// The last measurement; 0 until the first one (in the background)
    /// ends, see `measured`.
    pub bytes: u64,
    /// Whether `bytes` comes from a measurement yet.
    pub measured: bool,
    pub volume: Option<Volume>,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub filesystem: Filesystem,
    pub is_root: bool,
}

pub(crate) fn service_not_found() -> Failure {
    Failure::not_found("Service not found", "Сервис не найден")
}

impl Services {
    pub fn new(
        catalogue: Catalogue,
        systemd: Arc<SystemdLink>,
        rebuilds: Arc<Rebuilds>,
        unit_timeout: Duration,
        setup: ServicesSetup,
    ) -> Self {
        Services {
            catalogue,
            systemd,
            rebuilds,
            unit_timeout,
            setup,
            installed: Mutex::new(None),
            usage: Arc::default(),
            views: tokio::sync::Mutex::new(None),
            addresses: Mutex::new(None),
            volumes: Mutex::default(),
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Every service in the catalogue, with its state now.
    pub async fn list(&self) -> Outcome<Vec<ServiceView>> {
        let views = self.list_shared().await?;
        Ok(views.iter().map(|view| ServiceView::clone(view)).collect())
    }

    /// [`list`](Self::list), shared: the views are built again only when
    /// one of their inputs changed (the catalogue, userdata, a status,
    /// flake.nix, a usage measurement) or their volumes and addresses are
    /// due a new look (every few seconds), not on every query.
    pub async fn list_shared(&self) -> Outcome<Arc<Vec<Arc<ServiceView>>>> {
        let definitions = self.catalogue.definitions();
        let userdata = self.rebuilds.declared_userdata_shared()?;
        let statuses = self.statuses(&definitions).await;
        let installed = self.installed_modules();
        let usage_generation = self.usage.generation();
        let mut cache = self.views.lock().await;
        if let Some(known) = cache.as_ref()
            && Arc::ptr_eq(&known.definitions, &definitions)
            && Arc::ptr_eq(&known.userdata, &userdata)
            && known.statuses == statuses
            && installed
                .as_ref()
                .is_ok_and(|m| Arc::ptr_eq(m, &known.installed))
            && known.usage_generation == usage_generation
            && known.built_at.elapsed() < FACTS_TTL
        {
            return Ok(known.views.clone());
        }
        let built_at = Instant::now();
        let mut views = Vec::with_capacity(definitions.len());
        for (definition, status) in definitions.iter().zip(&statuses) {
            views.push(Arc::new(
                self.view(definition, &userdata, *status, &installed).await,
            ));
        }
        let views = Arc::new(views);
        *cache = installed.ok().map(|installed| SharedViews {
            definitions,
            userdata,
            statuses,
            installed,
            usage_generation,
            built_at,
            views: views.clone(),
        });
        Ok(views)
    }

    pub async fn get(&self, id: &str) -> Outcome<ServiceView> {
        let definition = self.catalogue.get(id).ok_or_else(service_not_found)?;
        let userdata = self.rebuilds.declared_userdata_shared()?;
        let status = self.statuses(std::slice::from_ref(&definition)).await[0];
        let installed = self.installed_modules();
        Ok(self.view(&definition, &userdata, status, &installed).await)
    }

    /// One service: its definition joined with userdata, its status and
    /// what is known of the server.
    async fn view(
        &self,
        definition: &Arc<Definition>,
        userdata: &Value,
        status: ServiceStatus,
        installed: &Outcome<Arc<Vec<String>>>,
    ) -> ServiceView {
        let settings = userdata["modules"][&definition.meta.id]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let enabled = settings
            .get("enable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut view = ServiceView {
            enabled,
            status,
            settings,
            domain: userdata["domain"].as_str().map(str::to_owned),
            uses_binds: userdata["useBinds"].as_bool().unwrap_or(false),
            installed: installed
                .as_ref()
                .map(|m| m.iter().any(|m| *m == definition.meta.id))
                .map_err(Clone::clone),
            ..ServiceView::bare(definition.clone())
        };
        view.dns_records = self.dns_records(&view);
        view.storage = self.measure_storage(&view).await;
        view
    }

    /// Each service's status, from its units' states. While systemd is
    /// unreachable: from what was last known, at once.
    async fn statuses(&self, definitions: &[Arc<Definition>]) -> Vec<ServiceStatus> {
        let units: Vec<String> = definitions
            .iter()
            .flat_map(|d| d.meta.systemd_services.iter().cloned())
            .collect();
        let states = self.systemd.unit_states(&units).await;
        definitions
            .iter()
            .map(|definition| {
                ServiceStatus::worst(
                    definition
                        .meta
                        .systemd_services
                        .iter()
                        .map(|unit| ServiceStatus::of_unit(states.get(unit))),
                )
            })
            .collect()
    }

    /// Starts, stops or restarts every unit of a service, waiting for
    /// systemd to finish, and reports what really happened.
    pub async fn control(&self, id: &str, action: UnitAction) -> Outcome<ServiceView> {
        let service = self.get(id).await?;
        if !service.enabled && action != UnitAction::Stop {
            return Err(Failure::conflict(
                format!(
                    "{} is disabled: enable it first",
                    service.definition.meta.name
                ),
                format!(
                    "{} выключен: сначала включите его",
                    service.definition.meta.name
                ),
            ));
        }
        let systemd = self
            .systemd
            .get()
            .await
            .map_err(|e| Failure::internal("connecting to systemd", e))?;
        for unit in &service.definition.meta.systemd_services {
            let outcome = systemd
                .run_job(action, unit, self.unit_timeout)
                .await
                .map_err(|e| unit_failure(action, unit, &e.to_string()))?;
            match outcome {
                JobOutcome::Done => {}
                JobOutcome::Failed(result) => return Err(unit_failure(action, unit, &result)),
                JobOutcome::TimedOut => {
                    let seconds = self.unit_timeout.as_secs();
                    return Err(Failure::new(
                        FailureKind::Internal,
                        Text::new(
                            format!(
                                "{unit} did not finish within {seconds} s; it may still be changing"
                            ),
                            format!(
                                "{unit} не завершил работу за {seconds} с; состояние ещё может меняться"
                            ),
                        ),
                    ));
                }
            }
        }
        self.get(id).await
    }
}

impl Services {
    /// The settings the owner may change, with their values.
    pub fn settings(&self, service: &ServiceView) -> Vec<Setting> {
        config::settings(&service.definition, &service.settings)
    }

    /// The modules that are inputs of /etc/nixos/flake.nix. The file is
    /// read again only when it changes.
    fn installed_modules(&self) -> Outcome<Arc<Vec<String>>> {
        let path = &self.setup.flake;
        // None: there is no flake.nix (nothing installed), kept as such so
        // that the same answer is the same list.
        let identity = match std::fs::metadata(path) {
            Ok(meta) => Some((
                meta.dev(),
                meta.ino(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                meta.len(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Failure::internal("reading flake.nix", e)),
        };
        let mut cache = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, modules)) = cache.as_ref()
            && *known == identity
        {
            return Ok(modules.clone());
        }
        if identity.is_none() {
            let none = Arc::<Vec<String>>::default();
            *cache = Some((None, none.clone()));
            return Ok(none);
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| Failure::internal("reading flake.nix", e))?;
        let modules = Arc::new(flake::installed_modules(&text).map_err(|e| {
            Failure::new(
                FailureKind::Internal,
                Text::new(
                    format!("Cannot read the inputs of {}: {e:?}", path.display()),
                    format!("Не удалось прочитать inputs в {}: {e:?}", path.display()),
                ),
            )
        })?);
        *cache = Some((identity, modules.clone()));
        Ok(modules)
    }

    /// One A (and AAAA) record per subdomain the service uses.
    pub fn dns_records(&self, service: &ServiceView) -> Outcome<Vec<DnsRecord>> {
        let (found_v4, found_v6) = self.public_addresses();
        let ipv4 = self.setup.public_ipv4.or(found_v4).ok_or_else(|| {
            Failure::new(
                FailureKind::Internal,
                Text::new(
                    "The server's public IPv4 address is unknown",
                    "Публичный IPv4-адрес сервера неизвестен",
                ),
            )
        })?;
        let ipv6 = self.setup.public_ipv6.or(found_v6);
        let mut records = Vec::new();
        for option in service.definition.subdomain_options() {
            let Some(subdomain) = service.option_value(option) else {
                continue;
            };
            let Some(subdomain) = subdomain.as_str().filter(|s| !s.is_empty()) else {
                continue;
            };
            let record = |record_type, content: String| DnsRecord {
                record_type,
                name: subdomain.to_owned(),
                content,
                ttl: 3600,
                display_name: service.definition.meta.name.clone(),
            };
            records.push(record("A", ipv4.to_string()));
            if let Some(ipv6) = ipv6 {
                records.push(record("AAAA", ipv6.to_string()));
            }
        }
        Ok(records)
    }

    fn public_addresses(&self) -> Addresses {
        let mut cached = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addresses)) = *cached
            && at.elapsed() < FACTS_TTL
        {
            return addresses;
        }
        let addresses = crate::os::network::public_addresses();
        *cached = Some((Instant::now(), addresses));
        addresses
    }

    /// The filesystem holding `folder`, and whether it is the root one.
    async fn volume_of(&self, folder: PathBuf) -> Option<Volume> {
        if let Some((at, volume)) = self
            .volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&folder)
            && at.elapsed() < FACTS_TTL
        {
            return volume.clone();
        }
        let probe = folder.clone();
        let volume = tokio::task::spawn_blocking(move || {
            let filesystem = disks::filesystem_of(&probe)?;
            let root = disks::filesystem_of(std::path::Path::new("/"));
            let is_root = root.is_some_and(|r| r.name == filesystem.name);
            Some(Volume {
                filesystem,
                is_root,
            })
        })
        .await
        .ok()
        .flatten();
        self.volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(folder, (Instant::now(), volume.clone()));
        volume
    }

    /// The size of the service's folders (as last measured; never walked
    /// while the caller waits) and the filesystem they are on.
    pub async fn storage_use(&self, service: &ServiceView) -> StorageUse {
        service.storage.clone()
    }

    async fn measure_storage(&self, service: &ServiceView) -> StorageUse {
        let folders: Vec<PathBuf> = service
            .definition
            .meta
            .all_folders()
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let measured = self.usage.bytes(service.id(), &folders);
        // A movable service's data lives on its `location` volume (bind
        // mounted into place): report that volume by the name userdata uses.
        let location = service
            .option_value("location")
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|_| service.definition.meta.is_movable && service.uses_binds);
        let volume = match location {
            Some(name) => self
                .volume_of(PathBuf::from("/volumes").join(&name))
                .await
                .map(|mut volume| {
                    volume.filesystem.name = name;
                    volume
                }),
            None => {
                let probe = folders
                    .first()
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from("/"));
                self.volume_of(probe).await
            }
        };
        StorageUse {
            bytes: measured.unwrap_or(0),
            measured: measured.is_some(),
            volume,
        }
    }

    /// Changes a service's settings and has a rebuild apply them. Every
    /// value is checked first; one bad value and nothing is written.
    pub async fn configure(
        &self,
        id: &str,
        changes: serde_json::Map<String, Value>,
    ) -> Outcome<(ServiceView, Accepted)> {
        let definition = self.catalogue.get(id).ok_or_else(service_not_found)?;
        let change = ConfigChange::from(UserdataChange::ConfigureService {
            service: definition.meta.id.clone(),
            settings: changes,
        });
        let accepted = self.rebuilds.change(change)?;
        Ok((self.get(id).await?, accepted))
    }

    /// Switches a service on: installs its module if it is not an input of
    /// the flake yet, sets `enable` (and a location, if it needs one), and
    /// has a rebuild apply it.
    pub async fn enable(&self, id: &str) -> Outcome<(ServiceView, Accepted)> {
        let definition = self.catalogue.get(id).ok_or_else(service_not_found)?;
        let before_write = if self.installed_modules()?.iter().any(|m| m == id) {
            None
        } else {
            Some(FileEdit::AddModuleInput {
                module: id.to_owned(),
                url: self.setup.module_url_template.replace("{id}", id),
            })
        };
        // A module with data to place gets the system volume unless it
        // already has a location.
        let default_location = if definition.options.contains_key("location") {
            disks::filesystem_of(std::path::Path::new("/")).map(|f| f.name)
        } else {
            None
        };
        let change = ConfigChange {
            userdata: UserdataChange::EnableService {
                service: definition.meta.id.clone(),
                default_location,
            },
            before_write,
        };
        let accepted = self.rebuilds.change(change)?;
        Ok((self.get(id).await?, accepted))
    }

    /// Switches a service off (refused for required services).
    pub async fn disable(&self, id: &str) -> Outcome<(ServiceView, Accepted)> {
        let definition = self.catalogue.get(id).ok_or_else(service_not_found)?;
        if definition.meta.is_required {
            return Err(Failure::bad_input(
                format!(
                    "{} is required by the server and cannot be disabled",
                    definition.meta.name
                ),
                format!(
                    "{} нужен серверу, его нельзя выключить",
                    definition.meta.name
                ),
            ));
        }
        let change = ConfigChange::from(UserdataChange::DisableService {
            service: definition.meta.id.clone(),
        });
        let accepted = self.rebuilds.change(change)?;
        Ok((self.get(id).await?, accepted))
    }
}

/// Adds the module's `sp-module-<id>` input to flake.nix, keeping the rest
/// of the file as it is (nothing is written if it is there already). A
/// failed rebuild puts the old file back.
pub(crate) fn install_module(flake_path: &std::path::Path, id: &str, url: &str) -> Outcome<()> {
    let text = std::fs::read_to_string(flake_path)
        .map_err(|e| Failure::internal("reading flake.nix", e))?;
    let edited = flake::add_module_input(&text, id, url).map_err(|e| {
        Failure::new(
            FailureKind::Internal,
            Text::new(
                format!("Cannot add the module to {}: {e:?}", flake_path.display()),
                format!(
                    "Не удалось добавить модуль в {}: {e:?}",
                    flake_path.display()
                ),
            ),
        )
    })?;
    if edited != text {
        crate::os::files::write_atomically(flake_path, edited.as_bytes(), 0o644)
            .map_err(|e| Failure::internal("writing flake.nix", e))?;
        tracing::info!(module = id, url, "installed module as a flake input");
    }
    Ok(())
}

fn unit_failure(action: UnitAction, unit: &str, result: &str) -> Failure {
    let (en, ru) = match action {
        UnitAction::Start => ("start", "запустить"),
        UnitAction::Stop => ("stop", "остановить"),
        UnitAction::Restart => ("restart", "перезапустить"),
    };
    Failure::new(
        FailureKind::Internal,
        Text::new(
            format!("Could not {en} {unit}: {result}"),
            format!("Не удалось {ru} {unit}: {result}"),
        ),
    )
}
