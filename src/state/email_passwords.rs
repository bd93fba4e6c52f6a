//! Email passwords: per-user passwords for mail clients, kept as argon2
//! hashes (PHC strings) with their metadata.

use super::{Store, StoreError, from_micros, to_micros};
use chrono::{DateTime, Utc};
use rusqlite::params;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmailPassword {
    pub uuid: String,
    pub username: String,
    pub display_name: String,
    /// Argon2 PHC string; never the password.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used: Option<DateTime<Utc>>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEmailPassword> {
    Ok(StoredEmailPassword {
        uuid: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        hash: r.get(3)?,
        created_at: from_micros(r.get(4)?),
        expires_at: r.get::<_, Option<i64>>(5)?.map(from_micros),
        last_used: r.get::<_, Option<i64>>(6)?.map(from_micros),
    })
}

const COLUMNS: &str =
    "uuid, username, display_name, password_hash, created_at, expires_at, last_used";

impl Store {
    pub fn email_passwords_of(
        &self,
        username: &str,
    ) -> Result<Vec<StoredEmailPassword>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM email_passwords WHERE username = ?1 ORDER BY created_at, uuid"
        ))?;
        let rows = stmt.query_map([username], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_email_password(&self, entry: &StoredEmailPassword) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                &format!(
                    "INSERT INTO email_passwords ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    entry.uuid,
                    entry.username,
                    entry.display_name,
                    entry.hash,
                    to_micros(entry.created_at),
                    entry.expires_at.map(to_micros),
                    entry.last_used.map(to_micros),
                ],
            )
        })?;
        Ok(())
    }

    /// Whether there was such a password to delete.
    pub fn delete_email_password(&self, username: &str, uuid: &str) -> Result<bool, StoreError> {
        let deleted = self.durably(|conn| {
            conn.execute(
                "DELETE FROM email_passwords WHERE username = ?1 AND uuid = ?2",
                params![username, uuid],
            )
        })?;
        Ok(deleted > 0)
    }

    pub fn delete_email_passwords_of(&self, username: &str) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "DELETE FROM email_passwords WHERE username = ?1",
                [username],
            )
        })?;
        Ok(())
    }

    pub fn touch_email_password(&self, uuid: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE email_passwords SET last_used = ?2 WHERE uuid = ?1",
            params![uuid, to_micros(at)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_listed_and_deleted_per_user() {
        let store = Store::open_in_memory().unwrap();
        let at = from_micros(to_micros(Utc::now()));
        let entry = StoredEmailPassword {
            uuid: "u1".into(),
            username: "bob".into(),
            display_name: "phone".into(),
            hash: "$argon2id$...".into(),
            created_at: at,
            expires_at: None,
            last_used: None,
        };
        store.insert_email_password(&entry).unwrap();
        assert_eq!(store.email_passwords_of("bob").unwrap(), vec![entry]);
        assert!(store.email_passwords_of("carol").unwrap().is_empty());
        store.touch_email_password("u1", at).unwrap();
        assert_eq!(
            store.email_passwords_of("bob").unwrap()[0].last_used,
            Some(at)
        );
        assert!(!store.delete_email_password("carol", "u1").unwrap());
        assert!(store.delete_email_password("bob", "u1").unwrap());
        assert!(store.email_passwords_of("bob").unwrap().is_empty());
    }
}
