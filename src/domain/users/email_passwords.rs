//! Email passwords: passwords a user gives mail clients instead of their
//! account password. Only argon2 hashes are kept; the mail server checks a
//! login through [`crate::os::mail_auth_socket`], never over the network.

use crate::domain::clock::Clock;
use crate::domain::error::{Failure, Outcome};
use crate::os::mail_auth_socket::Verdict;
use crate::state::{Store, StoredEmailPassword};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed checks allowed per username within [`FAILURE_WINDOW`]; more are
/// refused without checking until the oldest ages out.
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct EmailPasswordMeta {
    pub uuid: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used: Option<DateTime<Utc>>,
}

impl From<StoredEmailPassword> for EmailPasswordMeta {
    fn from(s: StoredEmailPassword) -> Self {
        EmailPasswordMeta {
            uuid: s.uuid,
            display_name: s.display_name,
            created_at: s.created_at,
            expires_at: s.expires_at,
            last_used: s.last_used,
        }
    }
}

pub struct EmailPasswords {
    store: Arc<Store>,
    clock: Arc<Clock>,
    /// Recent failed checks per username.
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

fn storage_failure(e: impl std::fmt::Display) -> Failure {
    Failure::internal("reading or writing email passwords", e)
}

impl EmailPasswords {
    pub fn new(store: Arc<Store>, clock: Arc<Clock>) -> EmailPasswords {
        EmailPasswords {
            store,
            clock,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn metadata(&self, username: &str) -> Outcome<Vec<EmailPasswordMeta>> {
        Ok(self
            .store
            .email_passwords_of(username)
            .map_err(storage_failure)?
            .into_iter()
            .map(EmailPasswordMeta::from)
            .collect())
    }

    /// A new random password for `username`'s mail clients: returned once,
    /// only its hash is kept.
    pub fn create(
        &self,
        username: &str,
        display_name: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Outcome<(EmailPasswordMeta, String)> {
        super::validation::check_username(username)?;
        let password = random_text(18);
        let hash = hash(&password)?;
        let entry = StoredEmailPassword {
            uuid: crate::domain::jobs::new_uid(),
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            hash,
            created_at: self.clock.now(),
            expires_at,
            last_used: None,
        };
        self.store
            .insert_email_password(&entry)
            .map_err(storage_failure)?;
        Ok((entry.into(), password))
    }

    pub fn delete(&self, username: &str, uuid: &str) -> Outcome<()> {
        if self
            .store
            .delete_email_password(username, uuid)
            .map_err(storage_failure)?
        {
            Ok(())
        } else {
            Err(Failure::not_found(
                "No such email password",
                "Такого пароля для почты нет",
            ))
        }
    }

    /// Removes every email password of a deleted user.
    pub fn forget_user(&self, username: &str) -> Outcome<()> {
        self.store
            .delete_email_passwords_of(username)
            .map_err(storage_failure)
    }

    /// The mail server's question: may `username` log in with `password`?
    /// Blocking (argon2 is slow on purpose).
    pub fn check(&self, username: &str, password: &str) -> Verdict {
        let now = Instant::now();
        {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let recent = failures.entry(username.to_owned()).or_default();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
            {
                recent.pop_front();
            }
            if recent.len() >= MAX_FAILURES {
                return Verdict::RateLimited;
            }
        }
        let entries = match self.store.email_passwords_of(username) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!("email password check: {e}");
                return Verdict::Denied;
            }
        };
        let at = self.clock.now();
        let matched = entries.iter().find(|entry| {
            entry.expires_at.is_none_or(|expiry| expiry > at)
                && PasswordHash::new(&entry.hash).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
        });
        match matched {
            Some(entry) => {
                if let Err(e) = self.store.touch_email_password(&entry.uuid, at) {
                    tracing::warn!("recording an email password's use: {e}");
                }
                Verdict::Accepted
            }
            None => {
                let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                let recent = failures.entry(username.to_owned()).or_default();
                recent.push_back(now);
                // Forget usernames with no recent failures, so the map
                // cannot grow without bound.
                failures.retain(|_, times| {
                    times
                        .back()
                        .is_some_and(|t| now.duration_since(*t) <= FAILURE_WINDOW)
                });
                Verdict::Denied
            }
        }
    }
}

fn hash(password: &str) -> Outcome<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Failure::internal("hashing an email password", e))
}

fn random_text(bytes: usize) -> String {
    use base64::Engine;
    let mut raw = vec![0u8; bytes];
    rand::fill(raw.as_mut_slice());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> EmailPasswords {
        EmailPasswords::new(
            Arc::new(Store::open_in_memory().unwrap()),
            Arc::new(Clock::default()),
        )
    }

    #[test]
    fn a_created_password_checks_and_only_its_hash_is_kept() {
        let passwords = service();
        let (meta, password) = passwords.create("bob", "phone", None).unwrap();
        assert_eq!(meta.uuid.len(), 36);
        let stored = passwords.store.email_passwords_of("bob").unwrap();
        assert!(stored[0].hash.starts_with("$argon2id$"));
        assert!(!stored[0].hash.contains(&password));
        assert_eq!(passwords.check("bob", &password), Verdict::Accepted);
        assert!(passwords.metadata("bob").unwrap()[0].last_used.is_some());
        assert_eq!(passwords.check("carol", &password), Verdict::Denied);
        passwords.delete("bob", &meta.uuid).unwrap();
        assert_eq!(passwords.check("bob", &password), Verdict::Denied);
        assert!(passwords.delete("bob", &meta.uuid).is_err());
    }

    #[test]
    fn expired_passwords_fail() {
        let passwords = service();
        let past = Utc::now() - chrono::Duration::minutes(1);
        let (_, password) = passwords.create("bob", "old", Some(past)).unwrap();
        assert_eq!(passwords.check("bob", &password), Verdict::Denied);
    }

    #[test]
    fn repeated_failures_are_refused_without_checking() {
        let passwords = service();
        let (_, password) = passwords.create("bob", "phone", None).unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(passwords.check("bob", "wrong"), Verdict::Denied);
        }
        assert_eq!(passwords.check("bob", &password), Verdict::RateLimited);
        // Other users are not affected.
        assert_eq!(passwords.check("carol", "x"), Verdict::Denied);
    }
}
