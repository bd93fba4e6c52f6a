//! systemd over D-Bus: one connection, hand-written proxies, and a cache of
//! unit states kept fresh by signals, so reading a status costs no round
//! trip.
//!
//! The daemon never hangs on the bus: every method call has a timeout, and
//! signals are read by two tasks that never call D-Bus themselves and never
//! stop reading. zbus stops reading the socket while any signal stream's
//! queue is full, so a stream left unread across another call (waiting for
//! its reply) could block that reply forever.

use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a D-Bus method call may wait for its answer (D-Bus's usual
/// default). systemd answers at once; a job's end is waited for separately.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(25);
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream, proxy};

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn system_state(&self) -> zbus::Result<String>;
    #[zbus(property, name = "NFailedUnits")]
    fn n_failed_units(&self) -> zbus::Result<u32>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unit_new(&self, id: String, unit: OwnedObjectPath) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unit_removed(&self, id: String, unit: OwnedObjectPath) -> zbus::Result<()>;
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.DBus.Properties",
    default_service = "org.freedesktop.systemd1"
)]
trait Properties {
    fn get_all(&self, interface: &str) -> zbus::Result<HashMap<String, OwnedValue>>;
}

const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit";

/// A unit as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitState {
    /// `loaded`, `not-found`, `masked`, `error`...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`.
    pub active_state: String,
    pub sub_state: String,
}

/// What a finished systemd job reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// `done`
    Done,
    /// `failed`, `dependency`, `canceled`, `timeout`, `skipped`...
    Failed(String),
    /// The job did not finish in time; it may still be running.
    TimedOut,
}

/// A followed unit: its state once read. Every signal about it schedules
/// a fresh read, so the last read always comes after the last change.
#[derive(Debug, Default)]
struct Tracked {
    state: Option<UnitState>,
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("D-Bus: {0}")]
    Fdo(#[from] zbus::fdo::Error),
    #[error("systemd is unreachable (reconnecting in the background): {0}")]
    Unreachable(String),
}

struct Cache {
    /// Followed units by name.
    units: HashMap<String, Tracked>,
}

/// Ends of systemd jobs (`JobRemoved`), handed out by the task that reads
/// the manager's signals to whoever waits for them.
#[derive(Default)]
struct JobEnds {
    waiters: HashMap<OwnedObjectPath, oneshot::Sender<String>>,
    /// Calls that create a job and have not registered a waiter yet.
    calls_in_flight: usize,
    /// Ends nobody waited for, kept while a call is in flight: its job
    /// can end before the call's answer is read.
    unclaimed: VecDeque<(OwnedObjectPath, String)>,
    /// The signal stream ended: nothing more will arrive.
    closed: bool,
}

impl JobEnds {
    fn ended(&mut self, job: OwnedObjectPath, result: String) {
        match self.waiters.remove(&job) {
            Some(waiter) => {
                let _ = waiter.send(result);
            }
            None if self.calls_in_flight > 0 => self.unclaimed.push_back((job, result)),
            None => {}
        }
    }

    /// The end of `job`: at once if it already came, else when it comes
    /// (an error if the signals stop).
    fn wait(&mut self, job: &OwnedObjectPath) -> oneshot::Receiver<String> {
        let (sender, receiver) = oneshot::channel();
        if let Some(index) = self.unclaimed.iter().position(|(j, _)| j == job) {
            let (_, result) = self.unclaimed.remove(index).expect("index is in range");
            let _ = sender.send(result);
        } else if !self.closed {
            self.waiters.insert(job.clone(), sender);
        }
        receiver
    }

    fn close(&mut self) {
        self.closed = true;
        self.waiters.clear();
    }
}

/// A call that creates a job, from before it is sent until its waiter is
/// registered (or it fails or is cancelled).
struct JobCall(Arc<Mutex<JobEnds>>);

impl JobCall {
    fn begin(ends: &Arc<Mutex<JobEnds>>) -> JobCall {
        ends.lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls_in_flight += 1;
        JobCall(ends.clone())
    }
}

impl Drop for JobCall {
    fn drop(&mut self) {
        let mut ends = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ends.calls_in_flight -= 1;
        if ends.calls_in_flight == 0 {
            ends.unclaimed.clear();
        }
    }
}

/// The systemd adapter. Cloning shares the connection and the cache.
#[derive(Clone)]
pub struct Systemd {
    connection: Connection,
    cache: Arc<RwLock<Cache>>,
    /// Units to read again. Signal handlers never call D-Bus themselves:
    /// a handler waiting for a reply while its own signals pile up would
    /// stall the connection.
    stale: tokio::sync::mpsc::UnboundedSender<Stale>,
    job_ends: Arc<Mutex<JobEnds>>,
    /// Set when a signal stream ends: the connection is gone (the bus
    /// restarted, or systemd went away), and [`SystemdLink`] makes another.
    lost: Arc<tokio::sync::watch::Sender<bool>>,
}

enum Stale {
    Unit(String),
    All,
}

impl Systemd {
    /// Connects to the bus at `address`, or the system bus, and starts
    /// following unit changes. Method calls that get no answer within
    /// `call_timeout` fail.
    pub async fn connect(
        address: Option<&str>,
        call_timeout: Duration,
    ) -> Result<Systemd, SystemdError> {
        Self::connect_following(address, call_timeout, Vec::new()).await
    }

    /// Connects as [`Systemd::connect`], following `units` from the start
    /// with their last known states, each read again at once: what a new
    /// connection after a lost one needs.
    async fn connect_following(
        address: Option<&str>,
        call_timeout: Duration,
        units: Vec<(String, Option<UnitState>)>,
    ) -> Result<Systemd, SystemdError> {
        let builder = match address {
            Some(address) => zbus::connection::Builder::address(address)?,
            None => zbus::connection::Builder::system()?,
        };
        // Connecting has no answer to time out: bound it as a whole.
        let connection =
            tokio::time::timeout(call_timeout, builder.method_timeout(call_timeout).build())
                .await
                .map_err(|_| {
                    zbus::Error::InputOutput(Arc::new(std::io::ErrorKind::TimedOut.into()))
                })??;
        let (stale, stale_units) = tokio::sync::mpsc::unbounded_channel();
        let followed = !units.is_empty();
        let systemd = Systemd {
            connection,
            cache: Arc::new(RwLock::new(Cache {
                units: units
                    .into_iter()
                    .map(|(name, state)| (name, Tracked { state }))
                    .collect(),
            })),
            stale,
            job_ends: Arc::default(),
            lost: Arc::new(tokio::sync::watch::channel(false).0),
        };
        systemd.manager().await?.subscribe().await?;
        systemd.spawn_refresher(stale_units);
        systemd.follow_changes().await?;
        if followed {
            systemd.mark_stale(Stale::All);
        }
        Ok(systemd)
    }

    /// Reads stale units again, one batch at a time, duplicates merged.
    fn spawn_refresher(&self, mut stale_units: tokio::sync::mpsc::UnboundedReceiver<Stale>) {
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(first) = stale_units.recv().await {
                let mut all = false;
                let mut names = std::collections::BTreeSet::new();
                let mut note = |item: Stale| match item {
                    Stale::All => all = true,
                    Stale::Unit(name) => {
                        names.insert(name);
                    }
                };
                note(first);
                while let Ok(item) = stale_units.try_recv() {
                    note(item);
                }
                if all {
                    names.extend(this.tracked());
                }
                for name in names {
                    this.refresh(&name).await;
                }
            }
        });
    }

    fn mark_stale(&self, item: Stale) {
        let _ = self.stale.send(item);
    }

    async fn manager(&self) -> Result<ManagerProxy<'static>, SystemdError> {
        Ok(ManagerProxy::new(&self.connection).await?)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The states of these units: from the cache, asking systemd only for
    /// units not read yet (they are then followed by signals). A unit whose
    /// state cannot be read is left out (and asked for again next time).
    pub async fn unit_states(&self, names: &[String]) -> HashMap<String, UnitState> {
        let missing: Vec<String> = {
            let cache = self.read_cache();
            names
                .iter()
                .filter(|n| {
                    cache
                        .units
                        .get(n.as_str())
                        .is_none_or(|t| t.state.is_none())
                })
                .cloned()
                .collect()
        };
        for name in missing {
            self.refresh(&name).await;
        }
        let cache = self.read_cache();
        names
            .iter()
            .filter_map(|n| {
                let state = cache.units.get(n)?.state.clone()?;
                Some((n.clone(), state))
            })
            .collect()
    }

    /// Reads a unit's state from systemd into the cache. The unit is
    /// followed (its signals noted) from before the read.
    async fn refresh(&self, name: &str) {
        tracing::debug!(unit = name, "reading unit state");
        self.write_cache().units.entry(name.to_owned()).or_default();
        match self.fetch(name).await {
            Ok(state) => {
                self.write_cache()
                    .units
                    .entry(name.to_owned())
                    .or_default()
                    .state = Some(state);
            }
            Err(e) => tracing::warn!(unit = name, "reading unit state: {e}"),
        }
    }

    async fn fetch(&self, name: &str) -> Result<UnitState, SystemdError> {
        let path = self.manager().await?.load_unit(name).await?;
        let properties = PropertiesProxy::builder(&self.connection)
            .path(path)?
            .build()
            .await?
            .get_all(UNIT_INTERFACE)
            .await?;
        let text = |key: &str| {
            properties
                .get(key)
                .and_then(|v| String::try_from(v.clone()).ok())
                .unwrap_or_default()
        };
        Ok(UnitState {
            load_state: text("LoadState"),
            active_state: text("ActiveState"),
            sub_state: text("SubState"),
        })
    }

    /// Returns once the connection is gone.
    async fn wait_lost(&self) {
        let mut lost = self.lost.subscribe();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// The followed units with their last known states.
    fn snapshot(&self) -> Vec<(String, Option<UnitState>)> {
        self.read_cache()
            .units
            .iter()
            .map(|(name, tracked)| (name.clone(), tracked.state.clone()))
            .collect()
    }

    /// States from the cache only, no D-Bus call: what is known.
    fn cached_states(&self, names: &[String]) -> HashMap<String, UnitState> {
        let cache = self.read_cache();
        names
            .iter()
            .filter_map(|n| Some((n.clone(), cache.units.get(n)?.state.clone()?)))
            .collect()
    }

    /// Units the cache follows.
    fn tracked(&self) -> Vec<String> {
        self.read_cache().units.keys().cloned().collect()
    }

    fn is_tracked(&self, name: &str) -> bool {
        self.read_cache().units.contains_key(name)
    }

    /// Keeps the cache fresh: property changes of unit objects, units that
    /// appear or are garbage-collected, and daemon reloads (which may change
    /// what a unit is, so every followed unit is read again).
    async fn follow_changes(&self) -> Result<(), SystemdError> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")?
            .member("PropertiesChanged")?
            .path_namespace(UNIT_PATH_PREFIX)?
            .build();
        let mut changes = MessageStream::for_match_rule(rule, &self.connection, None).await?;
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(message) = changes.next().await {
                let Ok(message) = message else {
                    continue; // one unreadable message; the stream goes on
                };
                let Some(path) = message.header().path().map(|p| p.to_string()) else {
                    continue;
                };
                let Some(name) = unit_name_from_path(&path) else {
                    continue;
                };
                if !this.is_tracked(&name) {
                    continue;
                }
                // Read the unit again rather than patch the cache from the
                // signal: a unit being reloaded or unloaded sends changes
                // that describe its old self.
                let is_unit_interface = message
                    .body()
                    .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
                    .is_ok_and(|(interface, _, _)| interface == UNIT_INTERFACE);
                if !is_unit_interface {
                    continue;
                }
                this.mark_stale(Stale::Unit(name));
            }
            tracing::warn!("systemd property change stream ended");
            this.lost.send_replace(true);
        });

        let manager = self.manager().await?;
        let mut removed_units = manager.receive_unit_removed().await?;
        let mut reloads = manager.receive_reloading().await?;
        let mut jobs = manager.receive_job_removed().await?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(signal) = removed_units.next() => {
                        // Garbage collection: the unit is inactive, and still
                        // exists (or not) as before. Not read again: reading
                        // loads the unit, which would be collected again...
                        if let Ok(args) = signal.args()
                            && let Some(state) = this
                                .write_cache()
                                .units
                                .get_mut(&args.id)
                                .and_then(|t| t.state.as_mut())
                        {
                            state.active_state = "inactive".into();
                            state.sub_state = "dead".into();
                        }
                    }
                    Some(signal) = reloads.next() => {
                        if let Ok(args) = signal.args() && !args.active {
                            this.mark_stale(Stale::All);
                        }
                    }
                    Some(signal) = jobs.next() => {
                        if let Ok(args) = signal.args() {
                            this.job_ends().ended(args.job.clone(), args.result.clone());
                            if this.is_tracked(&args.unit) {
                                this.mark_stale(Stale::Unit(args.unit.clone()));
                            }
                        }
                    }
                    else => break,
                }
            }
            this.job_ends().close();
            tracing::warn!("systemd manager signal stream ended");
            this.lost.send_replace(true);
        });
        Ok(())
    }

    fn job_ends(&self) -> std::sync::MutexGuard<'_, JobEnds> {
        self.job_ends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts, stops or restarts a unit and waits for systemd's job to end
    /// (its `JobRemoved` signal, read by the manager signal task: no stream
    /// of this call's own sits unread meanwhile).
    pub async fn run_job(
        &self,
        action: UnitAction,
        unit: &str,
        timeout: Duration,
    ) -> Result<JobOutcome, SystemdError> {
        let manager = self.manager().await?;
        let call = JobCall::begin(&self.job_ends);
        let job = match action {
            UnitAction::Start => manager.start_unit(unit, "replace").await?,
            UnitAction::Stop => manager.stop_unit(unit, "replace").await?,
            UnitAction::Restart => manager.restart_unit(unit, "replace").await?,
        };
        let ended = self.job_ends().wait(&job);
        drop(call);
        let outcome = match tokio::time::timeout(timeout, ended).await {
            Ok(Ok(result)) if result == "done" => JobOutcome::Done,
            Ok(Ok(result)) => JobOutcome::Failed(result),
            Ok(Err(_)) => JobOutcome::Failed("lost connection to systemd".into()),
            Err(_) => {
                self.job_ends().waiters.remove(&job);
                JobOutcome::TimedOut
            }
        };
        self.refresh(unit).await;
        Ok(outcome)
    }

    /// Reboots the server: systemd starts `reboot.target` (what
    /// `systemctl reboot` does), answering before shutdown begins. logind's
    /// Reboot was tried first once; its reply is lost when the bus goes
    /// down with the system, so success could not be told from failure.
    pub async fn reboot(&self) -> Result<(), SystemdError> {
        self.manager()
            .await?
            .start_unit("reboot.target", "replace-irreversibly")
            .await?;
        Ok(())
    }

    /// The manager's `SystemState` (`running`, `degraded`, `starting`...)
    /// and how many units have failed.
    pub async fn system_state(&self) -> Result<(String, u32), SystemdError> {
        let manager = ManagerProxy::builder(&self.connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        Ok((
            manager.system_state().await?,
            manager.n_failed_units().await?,
        ))
    }

    /// A unit's properties of one interface (`Slice`, `Service`...).
    pub async fn unit_properties(
        &self,
        unit: &str,
        interface: &str,
    ) -> Result<HashMap<String, OwnedValue>, SystemdError> {
        let path = self.manager().await?.load_unit(unit).await?;
        Ok(PropertiesProxy::builder(&self.connection)
            .path(path)?
            .build()
            .await?
            .get_all(interface)
            .await?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitAction {
    Start,
    Stop,
    Restart,
}

/// systemd's object path for a unit: bytes outside `[A-Za-z0-9]` (and a
/// leading digit) become `_xx`.
pub fn unit_path(name: &str) -> String {
    let mut path = String::from(UNIT_PATH_PREFIX);
    path.push('/');
    for (i, byte) in name.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (byte.is_ascii_digit() && i > 0) {
            path.push(byte as char);
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

/// The unit name encoded in a unit object path.
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let encoded = path.strip_prefix(UNIT_PATH_PREFIX)?.strip_prefix('/')?;
    let bytes = encoded.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            name.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            name.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(name).ok()
}

/// The systemd connection: made on first use, watched, and made again with
/// backoff whenever it is lost (the bus restarted), following the same
/// units. Requests never wait for a connection attempt after the first:
/// while systemd is unreachable they get an error at once, and unit states
/// come from what was last known.
pub struct SystemdLink {
    address: Option<String>,
    call_timeout: Duration,
    /// The live connection, or the last one (lost) until another is made.
    current: Arc<RwLock<Option<Current>>>,
    /// Started by the first use, which waits for the first attempt.
    supervisor: tokio::sync::OnceCell<()>,
}

#[derive(Clone)]
struct Current {
    systemd: Systemd,
    connected: bool,
}

/// Waits between attempts to reconnect: doubling up to the last.
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(30));

impl SystemdLink {
    pub fn new(address: Option<String>) -> Self {
        SystemdLink {
            address,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            current: Arc::default(),
            supervisor: tokio::sync::OnceCell::new(),
        }
    }

    /// How long a method call may wait for its answer.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The live connection, or an error at once if there is none now.
    pub async fn get(&self) -> Result<Systemd, SystemdError> {
        self.supervisor.get_or_init(|| self.start()).await;
        match self.read_current() {
            Some(Current {
                systemd,
                connected: true,
            }) => Ok(systemd),
            _ => Err(SystemdError::Unreachable(
                "no connection to the system bus".into(),
            )),
        }
    }

    /// Unit states: live while connected; while not, the last known ones
    /// (a unit never read is left out), without waiting.
    pub async fn unit_states(&self, names: &[String]) -> HashMap<String, UnitState> {
        if let Ok(systemd) = self.get().await {
            return systemd.unit_states(names).await;
        }
        self.read_current()
            .map(|current| current.systemd.cached_states(names))
            .unwrap_or_default()
    }

    fn read_current(&self) -> Option<Current> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first attempt, then a task that watches the connection and
    /// reconnects whenever it is lost or was never made.
    async fn start(&self) {
        let address = self.address.clone();
        let timeout = self.call_timeout;
        let current = self.current.clone();
        let first = Systemd::connect(address.as_deref(), timeout).await;
        let mut failing = match first {
            Ok(systemd) => {
                store(&current, systemd);
                false
            }
            Err(e) => {
                tracing::warn!("cannot connect to systemd: {e}; retrying in the background");
                true
            }
        };
        tokio::spawn(async move {
            let mut backoff = RECONNECT_BACKOFF.0;
            loop {
                let live = current
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .filter(|c| c.connected);
                if let Some(live) = live {
                    live.systemd.wait_lost().await;
                    tracing::warn!("lost the connection to systemd; reconnecting");
                    if let Some(c) = current.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        c.connected = false;
                    }
                    backoff = RECONNECT_BACKOFF.0;
                }
                tokio::time::sleep(backoff).await;
                let units = current
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|c| c.systemd.snapshot())
                    .unwrap_or_default();
                match Systemd::connect_following(address.as_deref(), timeout, units).await {
                    Ok(systemd) => {
                        if failing {
                            tracing::info!("connected to systemd again");
                        }
                        failing = false;
                        store(&current, systemd);
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!("cannot connect to systemd: {e}; retrying");
                        }
                        failing = true;
                        backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                    }
                }
            }
        });
    }
}

fn store(current: &RwLock<Option<Current>>, systemd: Systemd) {
    *current.write().unwrap_or_else(|e| e.into_inner()) = Some(Current {
        systemd,
        connected: true,
    });
}

/// What a slice's cgroup reports. systemd gives `u64::MAX` for a value
/// its cgroup controller does not track; those are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceUsage {
    pub cpu_nanoseconds: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// The slice's cgroup path, e.g. `/echo.slice`.
    pub control_group: String,
}

impl Systemd {
    pub async fn slice_usage(&self, slice: &str) -> Result<SliceUsage, SystemdError> {
        let properties = self
            .unit_properties(slice, "org.freedesktop.systemd1.Slice")
            .await?;
        let number = |key: &str| {
            properties
                .get(key)
                .and_then(|v| u64::try_from(v.clone()).ok())
                .filter(|n| *n != u64::MAX)
        };
        Ok(SliceUsage {
            cpu_nanoseconds: number("CPUUsageNSec"),
            memory_bytes: number("MemoryCurrent"),
            control_group: properties
                .get("ControlGroup")
                .and_then(|v| String::try_from(v.clone()).ok())
                .unwrap_or_default(),
        })
    }

    /// The id of a unit's latest run, which tags its journal lines.
    pub async fn invocation_id(&self, unit: &str) -> Option<String> {
        let properties = self.unit_properties(unit, UNIT_INTERFACE).await.ok()?;
        let bytes = Vec::<u8>::try_from(properties.get("InvocationID")?.clone()).ok()?;
        if bytes.is_empty() {
            return None;
        }
        Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_round_trip() {
        assert_eq!(
            unit_path("sp-nixos-rebuild.service"),
            "/org/freedesktop/systemd1/unit/sp_2dnixos_2drebuild_2eservice"
        );
        assert_eq!(
            unit_path("1x.slice"),
            "/org/freedesktop/systemd1/unit/_31x_2eslice"
        );
        for name in ["a-b.service", "1x.slice", "foo@bar_baz.service"] {
            assert_eq!(unit_name_from_path(&unit_path(name)).as_deref(), Some(name));
        }
        assert_eq!(unit_name_from_path("/org/freedesktop/systemd1/job/1"), None);
    }
}
