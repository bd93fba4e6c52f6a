//! Device tokens, the recovery key and the new-device key.
//!
//! Tokens are 256 random bits, shown once, stored only as SHA-256 hashes
//! (a hash of a full-entropy secret needs no slow KDF) and compared in
//! constant time. Keys are BIP39 mnemonics whose entropy is hashed the same
//! way. Every failed key use answers the same 404, whatever was wrong.

use super::clock::Clock;
use super::error::{Failure, Outcome};
use crate::state::{Hash, KeyKind, KeySpend, Store, StoredKey, StoredToken};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;

/// A new-device key is valid this long.
pub const NEW_DEVICE_KEY_TTL: Duration = Duration::minutes(10);
const RECOVERY_KEY_BYTES: usize = 24; // 18 words
const NEW_DEVICE_KEY_BYTES: usize = 16; // 12 words
const TOKEN_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Who made a request: the device whose token it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryKeyStatus {
    pub exists: bool,
    pub valid: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub uses_left: Option<i64>,
}

/// A token or key handed out once; the daemon keeps only its hash.
#[derive(Debug, Clone)]
pub struct Issued {
    pub secret: String,
    pub device: String,
}

pub struct TokenService {
    store: Arc<Store>,
    clock: Arc<Clock>,
    /// All token hashes, so checking a request needs no table read.
    tokens: RwLock<Vec<StoredToken>>,
    /// The database's `data_version` when `tokens` was loaded.
    loaded_version: AtomicI64,
}

impl TokenService {
    pub fn load(store: Arc<Store>, clock: Arc<Clock>) -> Outcome<TokenService> {
        let service = TokenService {
            store,
            clock,
            tokens: RwLock::new(Vec::new()),
            loaded_version: AtomicI64::new(-1),
        };
        service.reload()?;
        Ok(service)
    }

    /// Reads the tokens again. The write lock is held across the read so
    /// that two reloads cannot finish in the wrong order and bring back a
    /// token that was just deleted.
    fn reload(&self) -> Outcome<()> {
        let mut cached = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let version = self
            .store
            .data_version()
            .map_err(|e| Failure::internal("reading the database version", e))?;
        *cached = self
            .store
            .tokens()
            .map_err(|e| Failure::internal("loading device tokens", e))?;
        self.loaded_version.store(version, Ordering::Relaxed);
        Ok(())
    }

    /// Picks up tokens another process (the `token` command) changed.
    fn refresh_if_changed(&self) {
        match self.store.data_version() {
            Ok(version) if version == self.loaded_version.load(Ordering::Relaxed) => {}
            Ok(_) => {
                if let Err(failure) = self.reload() {
                    tracing::error!("reloading device tokens: {failure}");
                }
            }
            Err(e) => tracing::error!("reading the database version: {e}"),
        }
    }

    /// The device a token belongs to. Tokens leave only through this
    /// process, which reloads at once; from outside, the `token` command
    /// only adds them. So a token found in memory needs no database round
    /// trip (three system calls, a tenth of a version ping's cost), and one
    /// not found is looked for again once another process's changes are
    /// loaded.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let candidate = hash(token.as_bytes());
        if let Some(caller) = self.find(&candidate) {
            return Some(caller);
        }
        self.refresh_if_changed();
        self.find(&candidate)
    }

    /// Every stored hash is compared, in constant time, so timing tells
    /// nothing about near misses.
    fn find(&self, candidate: &Hash) -> Option<Caller> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for stored in tokens.iter() {
            if bool::from(stored.hash.ct_eq(candidate)) {
                found = Some(stored.name.clone());
            }
        }
        found.map(|device| Caller { device })
    }

    pub fn devices(&self) -> Vec<Device> {
        self.refresh_if_changed();
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|t| Device {
                name: t.name.clone(),
                created_at: t.created_at,
            })
            .collect()
    }

    /// A new token for a new device (the installer's first token, `token new`).
    pub fn create_token(&self, device_name: &str) -> Outcome<Issued> {
        check_device_name(device_name)?;
        let secret = random_token();
        let device = self.unique_device_name(device_name);
        self.store
            .insert_token(&self.stored_token(&device, &secret))
            .map_err(|e| Failure::internal("saving a device token", e))?;
        self.reload()?;
        Ok(Issued { secret, device })
    }

    /// Stores a token that provisioning tools or a migration bring along.
    pub fn import_token(&self, device_name: &str, token: &str) -> Outcome<Issued> {
        let token = token.trim();
        if token.len() < 32 || token.len() > 512 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Failure::bad_input(
                "A token must be 32 to 512 visible ASCII characters",
                "Токен должен состоять из 32–512 видимых символов ASCII",
            ));
        }
        check_device_name(device_name)?;
        let device = sanitize_device_name(device_name);
        if self.devices().iter().any(|d| d.name == device) {
            return Err(Failure::conflict(
                format!("A device named {device} already has a token"),
                format!("У устройства {device} уже есть токен"),
            ));
        }
        if self.authenticate(token).is_some() {
            return Err(Failure::conflict(
                "This token is already in use",
                "Этот токен уже используется",
            ));
        }
        self.store
            .insert_token(&self.stored_token(&device, token))
            .map_err(|e| Failure::internal("saving a device token", e))?;
        self.reload()?;
        Ok(Issued {
            secret: token.to_owned(),
            device,
        })
    }

    pub fn delete_device(&self, caller: &Caller, device: &str) -> Outcome<()> {
        if caller.device == device {
            return Err(Failure::bad_input(
                "Cannot delete the token of the device making this request",
                "Нельзя удалить токен устройства, с которого отправлен запрос",
            ));
        }
        let deleted = self
            .store
            .delete_token(device)
            .map_err(|e| Failure::internal("deleting a device token", e))?;
        self.reload()?;
        if deleted {
            Ok(())
        } else {
            Err(Failure::not_found("Token not found", "Токен не найден"))
        }
    }

    /// Replaces the caller's token; the old one stops working at once. The
    /// device keeps its name and creation date (the app shows that date).
    pub fn refresh(&self, caller: &Caller) -> Outcome<Issued> {
        let secret = random_token();
        let replaced = self
            .store
            .replace_token(&caller.device, &hash(secret.as_bytes()))
            .map_err(|e| Failure::internal("refreshing a device token", e))?;
        self.reload()?;
        if !replaced {
            return Err(Failure::not_found("Token not found", "Токен не найден"));
        }
        Ok(Issued {
            secret,
            device: caller.device.clone(),
        })
    }

    pub fn recovery_key_status(&self) -> Outcome<RecoveryKeyStatus> {
        let key = self
            .store
            .key(KeyKind::Recovery)
            .map_err(|e| Failure::internal("reading the recovery key", e))?;
        Ok(match key {
            None => RecoveryKeyStatus {
                exists: false,
                valid: false,
                created_at: None,
                expires_at: None,
                uses_left: None,
            },
            Some(key) => RecoveryKeyStatus {
                exists: true,
                valid: self.is_usable(&key),
                created_at: Some(key.created_at),
                expires_at: key.expires_at,
                uses_left: key.uses_left,
            },
        })
    }

    /// Makes a new recovery key (replacing any old one) and returns its words.
    pub fn new_recovery_key(
        &self,
        expires_at: Option<DateTime<Utc>>,
        uses: Option<i64>,
    ) -> Outcome<String> {
        let now = self.clock.now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(Failure::bad_input(
                "Expiration date must be in the future",
                "Срок действия должен быть в будущем",
            ));
        }
        if uses.is_some_and(|n| n <= 0) {
            return Err(Failure::bad_input(
                "Number of uses must be greater than 0",
                "Число использований должно быть больше нуля",
            ));
        }
        self.new_key(KeyKind::Recovery, RECOVERY_KEY_BYTES, expires_at, uses)
    }

    /// Trades the recovery key's words for a token for a new device.
    pub fn use_recovery_key(&self, words: &str, device_name: &str) -> Outcome<Issued> {
        check_device_name(device_name)?;
        let key = self.matching_key(KeyKind::Recovery, words)?;
        let spend = KeySpend::SetUsesLeft(key.uses_left.map(|n| n - 1));
        self.spend_key(KeyKind::Recovery, &key, spend, device_name)
    }

    pub fn new_device_key(&self) -> Outcome<String> {
        let expires = self.clock.now() + NEW_DEVICE_KEY_TTL;
        self.new_key(
            KeyKind::NewDevice,
            NEW_DEVICE_KEY_BYTES,
            Some(expires),
            Some(1),
        )
    }

    /// Deletes the pending new-device key. Idempotent, as in the Python
    /// API: with no key pending there is nothing to undo, and that succeeds.
    pub fn invalidate_new_device_key(&self) -> Outcome<()> {
        self.store
            .delete_key(KeyKind::NewDevice)
            .map_err(|e| Failure::internal("deleting the new device key", e))?;
        Ok(())
    }

    pub fn use_new_device_key(&self, words: &str, device_name: &str) -> Outcome<Issued> {
        check_device_name(device_name)?;
        let key = self.matching_key(KeyKind::NewDevice, words)?;
        self.spend_key(KeyKind::NewDevice, &key, KeySpend::Delete, device_name)
    }

    fn new_key(
        &self,
        kind: KeyKind,
        bytes: usize,
        expires_at: Option<DateTime<Utc>>,
        uses_left: Option<i64>,
    ) -> Outcome<String> {
        let mut entropy = vec![0u8; bytes];
        rand::fill(entropy.as_mut_slice());
        let mnemonic = bip39::Mnemonic::from_entropy(&entropy)
            .map_err(|e| Failure::internal("making a mnemonic key", e))?;
        let key = StoredKey {
            hash: hash(&entropy),
            created_at: self.clock.now(),
            expires_at,
            uses_left,
        };
        self.store
            .put_key(kind, &key)
            .map_err(|e| Failure::internal("saving a key", e))?;
        Ok(mnemonic.to_string())
    }

    fn is_usable(&self, key: &StoredKey) -> bool {
        let now = self.clock.now();
        key.expires_at.is_none_or(|at| at > now) && key.uses_left.is_none_or(|n| n > 0)
    }

    /// The stored key, if `words` are its mnemonic and it may still be used.
    fn matching_key(&self, kind: KeyKind, words: &str) -> Outcome<StoredKey> {
        let not_found = || key_not_found(kind);
        let key = self
            .store
            .key(kind)
            .map_err(|e| Failure::internal("reading a key", e))?
            .ok_or_else(not_found)?;
        let normalized = words
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ");
        let entropy = bip39::Mnemonic::parse_normalized(&normalized)
            .map_err(|_| not_found())?
            .to_entropy();
        let matches = bool::from(key.hash.ct_eq(&hash(&entropy)));
        if matches && self.is_usable(&key) {
            Ok(key)
        } else {
            Err(not_found())
        }
    }

    /// Spends `key` only if it is still exactly as checked (same key, same
    /// uses left): of two requests racing for the last use, one loses.
    fn spend_key(
        &self,
        kind: KeyKind,
        key: &StoredKey,
        spend: KeySpend,
        device_name: &str,
    ) -> Outcome<Issued> {
        let secret = random_token();
        let device = self.unique_device_name(device_name);
        let spent = self
            .store
            .spend_key_for_token(kind, key, spend, &self.stored_token(&device, &secret))
            .map_err(|e| Failure::internal("issuing a device token", e))?;
        if !spent {
            return Err(key_not_found(kind));
        }
        self.reload()?;
        Ok(Issued { secret, device })
    }

    fn stored_token(&self, device: &str, secret: &str) -> StoredToken {
        StoredToken {
            name: device.to_owned(),
            hash: hash(secret.as_bytes()),
            created_at: self.clock.now(),
        }
    }

    /// Device names as the Python API stores them, made unique by appending
    /// random digits.
    fn unique_device_name(&self, requested: &str) -> String {
        let mut name = sanitize_device_name(requested);
        let devices = self.devices();
        while devices.iter().any(|d| d.name == name) {
            name.push(char::from(b'0' + rand::random_range(0..10u8)));
        }
        name
    }
}

/// The one answer to every failed key use, whatever was wrong.
fn key_not_found(kind: KeyKind) -> Failure {
    match kind {
        KeyKind::Recovery => {
            Failure::not_found("Recovery key not found", "Ключ восстановления не найден")
        }
        KeyKind::NewDevice => Failure::not_found(
            "New device key not found",
            "Ключ для нового устройства не найден",
        ),
    }
}

/// Longest device name taken: a phone's model name fits many times over,
/// and the devices list every client reads stays small.
pub const MAX_DEVICE_NAME_CHARS: usize = 128;

/// Refused before any key is checked or spent.
fn check_device_name(name: &str) -> Outcome<()> {
    if name.chars().count() > MAX_DEVICE_NAME_CHARS {
        return Err(Failure::bad_input(
            format!("A device name must be at most {MAX_DEVICE_NAME_CHARS} characters"),
            format!("Имя устройства должно быть не длиннее {MAX_DEVICE_NAME_CHARS} символов"),
        ));
    }
    Ok(())
}

/// Letters and digits stay, everything else becomes `_`; nothing at all
/// becomes "Unknown device" (the Python API's rules, which the app shows).
pub fn sanitize_device_name(name: &str) -> String {
    if name.is_empty() {
        return "Unknown device".to_owned();
    }
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Slows down clients that keep presenting wrong tokens or keys. Beyond a
/// few free failures, each attempt from that client (right or wrong) first
/// waits for its own slot, spaced ever wider apart, and takes it before the
/// attempt is checked, so parallel guessing gains nothing. A client whose
/// next slot is further away than [`AuthThrottle::MAX_QUEUE`] is refused at
/// once: the queue of waiting answers stays bounded.
pub struct AuthThrottle {
    clients: Mutex<HashMap<String, ClientFailures>>,
}

struct ClientFailures {
    count: u32,
    last_failure: std::time::Instant,
    /// When the latest admitted attempt was (or will be) checked.
    last_slot: std::time::Instant,
    /// Attempts refused outright, for the log.
    refused: u64,
}

/// The client has failed so often that its attempts are not even checked
/// for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyAttempts;

impl TooManyAttempts {
    pub fn failure() -> Failure {
        Failure::new(
            crate::domain::error::FailureKind::TooManyAttempts,
            crate::domain::i18n::Text::new(
                "Too many failed attempts: try again in a few minutes",
                "Слишком много неудачных попыток: повторите через несколько минут",
            ),
        )
    }
}

/// What a client presented, named in the throttle's log (never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    DeviceToken,
    RecoveryKey,
    NewDeviceKey,
}

impl Credential {
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::DeviceToken => "device token",
            Credential::RecoveryKey => "recovery key",
            Credential::NewDeviceKey => "new device key",
        }
    }
}

impl AuthThrottle {
    const FREE_FAILURES: u32 = 5;
    const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);
    const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(8);
    /// How far ahead a client's attempts may be queued.
    pub const MAX_QUEUE: std::time::Duration = std::time::Duration::from_secs(8);
    const MAX_CLIENTS: usize = 10_000;

    pub fn new() -> Self {
        AuthThrottle {
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn delay_after(count: u32) -> std::time::Duration {
        let excess = count.saturating_sub(Self::FREE_FAILURES).min(16);
        if excess == 0 {
            return std::time::Duration::ZERO;
        }
        (std::time::Duration::from_millis(250) * 2u32.pow(excess)).min(Self::MAX_DELAY)
    }

    /// Takes this client's next slot: how long to wait before checking its
    /// attempt, or a refusal when its queue is full.
    pub fn reserve(
        &self,
        client: &str,
        credential: Credential,
    ) -> Result<std::time::Duration, TooManyAttempts> {
        self.reserve_at(client, credential, std::time::Instant::now())
    }

    fn reserve_at(
        &self,
        client: &str,
        credential: Credential,
        now: std::time::Instant,
    ) -> Result<std::time::Duration, TooManyAttempts> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = clients.get_mut(client) else {
            return Ok(std::time::Duration::ZERO);
        };
        if now.duration_since(entry.last_failure) > Self::FORGET_AFTER {
            clients.remove(client);
            return Ok(std::time::Duration::ZERO);
        }
        let slot = (entry.last_slot + Self::delay_after(entry.count)).max(now);
        if slot - now > Self::MAX_QUEUE {
            entry.refused += 1;
            if entry.refused.is_power_of_two() {
                tracing::warn!(
                    client,
                    credential = credential.as_str(),
                    refused = entry.refused,
                    "too many authentication attempts queued: refusing without checking"
                );
            }
            return Err(TooManyAttempts);
        }
        entry.last_slot = slot;
        Ok(slot - now)
    }

    pub fn record_failure(&self, client: &str, credential: Credential) {
        self.record_failure_at(client, credential, std::time::Instant::now())
    }

    fn record_failure_at(&self, client: &str, credential: Credential, now: std::time::Instant) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= Self::MAX_CLIENTS && !clients.contains_key(client) {
            clients.retain(|_, f| now.duration_since(f.last_failure) <= Self::FORGET_AFTER);
            // Still full of fresh entries: the oldest makes room.
            if clients.len() >= Self::MAX_CLIENTS
                && let Some(oldest) = clients
                    .iter()
                    .min_by_key(|(_, f)| f.last_failure)
                    .map(|(k, _)| k.clone())
            {
                clients.remove(&oldest);
            }
        }
        let entry = clients.entry(client.to_owned()).or_insert(ClientFailures {
            count: 0,
            last_failure: now,
            last_slot: now,
            refused: 0,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last_failure = now;
        if entry.count > Self::FREE_FAILURES {
            tracing::warn!(
                client,
                credential = credential.as_str(),
                failures = entry.count,
                "repeated authentication failures: slowing this client down"
            );
        }
    }

    /// Waits for this client's turn to make an attempt (at once for a
    /// client in good standing).
    pub async fn wait_turn(
        &self,
        client: &str,
        credential: Credential,
    ) -> Result<(), TooManyAttempts> {
        let wait = self.reserve(client, credential)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// An attempt, checked in the client's turn; its failure is counted and
    /// its success clears the client's record.
    pub async fn attempt<T, E>(
        &self,
        client: &str,
        credential: Credential,
        check: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, TooManyAttempts> {
        self.wait_turn(client, credential).await?;
        let outcome = check();
        match &outcome {
            Ok(_) => self.forgive(client),
            Err(_) => self.record_failure(client, credential),
        }
        Ok(outcome)
    }

    /// A client that got in is forgiven its earlier mistakes.
    pub fn forgive(&self, client: &str) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.is_empty() {
            clients.remove(client);
        }
    }
}

impl Default for AuthThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> (TokenService, Arc<Clock>) {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let clock = Arc::new(Clock::default());
        (TokenService::load(store, clock.clone()).unwrap(), clock)
    }

    #[test]
    fn device_names_follow_the_python_rules() {
        assert_eq!(sanitize_device_name("My Phone!"), "My_Phone_");
        assert_eq!(sanitize_device_name(""), "Unknown device");
        assert_eq!(sanitize_device_name("Пиксель7"), "_______7");
        let (tokens, _) = service();
        let a = tokens.create_token("phone").unwrap();
        let b = tokens.create_token("phone").unwrap();
        assert_eq!(a.device, "phone");
        assert!(b.device.starts_with("phone") && b.device.len() == 6);
    }

    #[test]
    fn an_overlong_device_name_is_refused_and_the_key_kept() {
        let (tokens, _) = service();
        let long = "a".repeat(MAX_DEVICE_NAME_CHARS + 1);
        assert!(tokens.create_token(&long).is_err());
        let key = tokens.new_device_key().unwrap();
        let refused = tokens.use_new_device_key(&key, &long).unwrap_err();
        assert!(refused.to_string().contains("at most 128"), "{refused}");
        let name = "é".repeat(MAX_DEVICE_NAME_CHARS);
        let issued = tokens.use_new_device_key(&key, &name).unwrap();
        assert_eq!(issued.device, "_".repeat(MAX_DEVICE_NAME_CHARS));
    }

    #[test]
    fn tokens_are_long_random_and_checked() {
        let (tokens, _) = service();
        let issued = tokens.create_token("laptop").unwrap();
        assert!(issued.secret.len() >= 43);
        assert_eq!(
            tokens.authenticate(&issued.secret),
            Some(Caller {
                device: "laptop".into()
            })
        );
        assert_eq!(tokens.authenticate("nope"), None);
        let refreshed = tokens
            .refresh(&Caller {
                device: "laptop".into(),
            })
            .unwrap();
        assert_eq!(tokens.authenticate(&issued.secret), None);
        assert!(tokens.authenticate(&refreshed.secret).is_some());
    }

    #[test]
    fn recovery_key_counts_uses_and_expires() {
        let (tokens, clock) = service();
        let words = tokens
            .new_recovery_key(Some(clock.now() + Duration::hours(1)), Some(2))
            .unwrap();
        assert_eq!(words.split(' ').count(), 18);
        tokens.use_recovery_key(&words.to_uppercase(), "a").unwrap();
        let status = tokens.recovery_key_status().unwrap();
        assert_eq!(
            (status.exists, status.valid, status.uses_left),
            (true, true, Some(1))
        );
        tokens.use_recovery_key(&words, "b").unwrap();
        let status = tokens.recovery_key_status().unwrap();
        assert_eq!(
            (status.exists, status.valid, status.uses_left),
            (true, false, Some(0))
        );
        assert!(tokens.use_recovery_key(&words, "c").is_err());

        let words = tokens
            .new_recovery_key(Some(clock.now() + Duration::hours(1)), None)
            .unwrap();
        clock.advance(Duration::hours(2));
        let failure = tokens.use_recovery_key(&words, "d").unwrap_err();
        assert_eq!(failure.kind, crate::domain::error::FailureKind::NotFound);
        assert!(!tokens.recovery_key_status().unwrap().valid);
    }

    #[test]
    fn two_requests_racing_for_the_last_use_get_one_token() {
        let (tokens, _) = service();
        let words = tokens.new_recovery_key(None, Some(1)).unwrap();
        // Both requests checked the key before either spent it.
        let first = tokens.matching_key(KeyKind::Recovery, &words).unwrap();
        let second = tokens.matching_key(KeyKind::Recovery, &words).unwrap();
        tokens
            .spend_key(
                KeyKind::Recovery,
                &first,
                KeySpend::SetUsesLeft(Some(0)),
                "a",
            )
            .unwrap();
        let lost = tokens
            .spend_key(
                KeyKind::Recovery,
                &second,
                KeySpend::SetUsesLeft(Some(0)),
                "b",
            )
            .unwrap_err();
        assert_eq!(lost.kind, crate::domain::error::FailureKind::NotFound);
        assert_eq!(tokens.devices().len(), 1);
        let words = tokens.new_device_key().unwrap();
        let checked = tokens.matching_key(KeyKind::NewDevice, &words).unwrap();
        tokens.new_device_key().unwrap(); // replaced meanwhile
        assert!(
            tokens
                .spend_key(KeyKind::NewDevice, &checked, KeySpend::Delete, "c")
                .is_err()
        );
    }

    #[test]
    fn new_device_key_is_single_use_and_short_lived() {
        let (tokens, clock) = service();
        let words = tokens.new_device_key().unwrap();
        assert_eq!(words.split(' ').count(), 12);
        tokens.use_new_device_key(&words, "tablet").unwrap();
        assert!(tokens.use_new_device_key(&words, "tablet").is_err());
        let words = tokens.new_device_key().unwrap();
        clock.advance(Duration::minutes(11));
        assert!(tokens.use_new_device_key(&words, "tablet").is_err());
    }

    #[test]
    fn throttle_spaces_out_attempts_after_free_failures() {
        let throttle = AuthThrottle::new();
        for _ in 0..5 {
            throttle.record_failure("1.2.3.4", Credential::RecoveryKey);
        }
        assert!(
            throttle
                .reserve("1.2.3.4", Credential::DeviceToken)
                .unwrap()
                .is_zero()
        );
        throttle.record_failure("1.2.3.4", Credential::RecoveryKey);
        // Slots are taken before the attempts are checked: parallel
        // attempts queue up behind each other.
        let first = throttle
            .reserve("1.2.3.4", Credential::DeviceToken)
            .unwrap();
        let second = throttle
            .reserve("1.2.3.4", Credential::DeviceToken)
            .unwrap();
        assert!(!first.is_zero());
        assert!(second > first, "parallel attempts queue up");
        assert!(
            throttle
                .reserve("5.6.7.8", Credential::DeviceToken)
                .unwrap()
                .is_zero()
        );
    }

    #[test]
    fn past_the_queue_budget_attempts_are_refused_at_once() {
        let throttle = AuthThrottle::new();
        for _ in 0..12 {
            throttle.record_failure("1.2.3.4", Credential::RecoveryKey);
        }
        let mut queued = 0;
        let mut refused = 0;
        for _ in 0..1000 {
            match throttle.reserve("1.2.3.4", Credential::DeviceToken) {
                Ok(wait) => {
                    assert!(wait <= AuthThrottle::MAX_QUEUE);
                    queued += 1;
                }
                Err(TooManyAttempts) => refused += 1,
            }
        }
        assert!(queued <= 2, "{queued} queued");
        assert_eq!(refused, 1000 - queued);
        throttle.forgive("1.2.3.4");
        assert!(
            throttle
                .reserve("1.2.3.4", Credential::DeviceToken)
                .unwrap()
                .is_zero()
        );
    }

    mod throttle_generated {
        use super::super::*;
        use proptest::prelude::*;
        use std::time::{Duration as StdDuration, Instant};

        #[derive(Debug, Clone)]
        enum Event {
            /// A client presents a wrong token or key.
            Failure(usize),
            /// A client takes a slot (its attempt is checked then).
            Attempt(usize),
            /// A client gets in and is forgiven.
            Success(usize),
            Pause(StdDuration),
        }

        const OTHERS: usize = 4;

        fn events() -> impl Strategy<Value = Vec<Event>> {
            let event = prop_oneof![
                4 => (0..OTHERS).prop_map(Event::Failure),
                2 => (0..OTHERS).prop_map(Event::Attempt),
                1 => (0..OTHERS).prop_map(Event::Success),
                2 => (0u64..20_000).prop_map(|ms| Event::Pause(StdDuration::from_millis(ms))),
            ];
            prop::collection::vec(event, 0..200)
        }

        fn client(i: usize) -> String {
            format!("203.0.113.{i}")
        }

        /// Plays `events` from `start`; returns the time after them and
        /// checks on the way that no admitted attempt waits longer than
        /// the queue allows.
        fn play(throttle: &AuthThrottle, start: Instant, events: &[Event]) -> Instant {
            let mut now = start;
            for event in events {
                match event {
                    Event::Failure(i) => {
                        throttle.record_failure_at(&client(*i), Credential::DeviceToken, now)
                    }
                    Event::Attempt(i) => {
                        if let Ok(wait) =
                            throttle.reserve_at(&client(*i), Credential::DeviceToken, now)
                        {
                            assert!(wait <= AuthThrottle::MAX_QUEUE, "{wait:?}");
                        }
                    }
                    Event::Success(i) => throttle.forgive(&client(*i)),
                    Event::Pause(pause) => now += *pause,
                }
            }
            now
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever other clients did before, a client that has not
            /// failed itself is checked at once, and one that failed no
            /// more than the free failures too.
            #[test]
            fn a_valid_token_is_never_delayed_by_others(
                events in events(),
                own_failures in 0..=AuthThrottle::FREE_FAILURES,
            ) {
                let throttle = AuthThrottle::new();
                let mut now = play(&throttle, Instant::now(), &events);
                let owner = "198.51.100.7";
                prop_assert_eq!(throttle.reserve_at(owner, Credential::DeviceToken, now), Ok(StdDuration::ZERO));
                for _ in 0..own_failures {
                    throttle.record_failure_at(owner, Credential::DeviceToken, now);
                    now += StdDuration::from_millis(1);
                }
                prop_assert_eq!(throttle.reserve_at(owner, Credential::DeviceToken, now), Ok(StdDuration::ZERO));
                throttle.forgive(owner);
                prop_assert_eq!(throttle.reserve_at(owner, Credential::DeviceToken, now), Ok(StdDuration::ZERO));
            }

            /// A client that failed is checked at once again once it has
            /// been quiet for the forget period, however much it failed.
            #[test]
            fn failures_are_forgotten(events in events(), who in 0..OTHERS) {
                let throttle = AuthThrottle::new();
                let now = play(&throttle, Instant::now(), &events);
                let later = now + AuthThrottle::FORGET_AFTER + StdDuration::from_secs(1);
                prop_assert_eq!(throttle.reserve_at(&client(who), Credential::DeviceToken, later), Ok(StdDuration::ZERO));
            }

            /// A client past its free failures gets its attempts checked
            /// no closer together than its delay, however many it sends at
            /// once: brute force is held to a bounded rate.
            #[test]
            fn a_guesser_is_held_to_its_rate(
                failures in (AuthThrottle::FREE_FAILURES + 1)..40,
                attempts in prop::collection::vec(0u64..3_000, 1..60),
            ) {
                let throttle = AuthThrottle::new();
                let guesser = "192.0.2.1";
                let mut now = Instant::now();
                for _ in 0..failures {
                    throttle.record_failure_at(guesser, Credential::DeviceToken, now);
                }
                let spacing = AuthThrottle::delay_after(failures);
                let mut last_checked: Option<Instant> = None;
                for gap in attempts {
                    now += StdDuration::from_millis(gap);
                    if let Ok(wait) = throttle.reserve_at(guesser, Credential::DeviceToken, now) {
                        let checked = now + wait;
                        if let Some(last) = last_checked {
                            prop_assert!(checked - last >= spacing, "{:?} < {:?}", checked - last, spacing);
                        }
                        last_checked = Some(checked);
                    }
                }
            }
        }
    }
}
