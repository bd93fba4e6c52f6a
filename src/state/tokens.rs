use super::{Store, StoreError, from_micros, to_micros};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

pub type Hash = [u8; 32];

#[derive(Debug, Clone)]
pub struct StoredToken {
    pub name: String,
    pub hash: Hash,
    pub created_at: DateTime<Utc>,
}

/// The recovery key or the new-device key: only its hash is kept.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub hash: Hash,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub uses_left: Option<i64>,
}

/// What using a key does to it.
#[derive(Debug, Clone, Copy)]
pub enum KeySpend {
    Delete,
    SetUsesLeft(Option<i64>),
}

#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    Recovery,
    NewDevice,
}

impl KeyKind {
    fn as_str(self) -> &'static str {
        match self {
            KeyKind::Recovery => "recovery",
            KeyKind::NewDevice => "new_device",
        }
    }
}

fn hash_from_blob(blob: Vec<u8>) -> rusqlite::Result<Hash> {
    blob.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "token hash is not 32 bytes".into(),
        )
    })
}

impl Store {
    pub fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, token_hash, created_at FROM device_tokens ORDER BY created_at, name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredToken {
                name: r.get(0)?,
                hash: hash_from_blob(r.get(1)?)?,
                created_at: from_micros(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_token(&self, token: &StoredToken) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "INSERT INTO device_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3)",
                params![
                    token.name,
                    token.hash.as_slice(),
                    to_micros(token.created_at)
                ],
            )
        })?;
        Ok(())
    }

    /// Gives the device a new token, keeping its name and creation date;
    /// false if the device is gone.
    pub fn replace_token(&self, name: &str, hash: &Hash) -> Result<bool, StoreError> {
        let changed = self.durably(|conn| {
            conn.execute(
                "UPDATE device_tokens SET token_hash = ?2 WHERE name = ?1",
                params![name, hash.as_slice()],
            )
        })?;
        Ok(changed == 1)
    }

    pub fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let changed = self.durably(|conn| {
            conn.execute("DELETE FROM device_tokens WHERE name = ?1", params![name])
        })?;
        Ok(changed == 1)
    }

    pub fn key(&self, kind: KeyKind) -> Result<Option<StoredKey>, StoreError> {
        let conn = self.conn();
        let key = conn
            .query_row(
                "SELECT key_hash, created_at, expires_at, uses_left FROM api_keys WHERE kind = ?1",
                params![kind.as_str()],
                |r| {
                    Ok(StoredKey {
                        hash: hash_from_blob(r.get(0)?)?,
                        created_at: from_micros(r.get(1)?),
                        expires_at: r.get::<_, Option<i64>>(2)?.map(from_micros),
                        uses_left: r.get(3)?,
                    })
                },
            )
            .optional()?;
        Ok(key)
    }

    pub fn put_key(&self, kind: KeyKind, key: &StoredKey) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO api_keys (kind, key_hash, created_at, expires_at, uses_left)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    kind.as_str(),
                    key.hash.as_slice(),
                    to_micros(key.created_at),
                    key.expires_at.map(to_micros),
                    key.uses_left
                ],
            )
        })?;
        Ok(())
    }

    pub fn delete_key(&self, kind: KeyKind) -> Result<bool, StoreError> {
        let changed = self.durably(|conn| {
            conn.execute(
                "DELETE FROM api_keys WHERE kind = ?1",
                params![kind.as_str()],
            )
        })?;
        Ok(changed == 1)
    }

    /// Uses a key and creates the device token it grants in one transaction,
    /// so a key is never spent without a token, nor a token made twice.
    /// The key is spent only if it is still `expected` (compare and swap);
    /// false if it changed meanwhile.
    pub fn spend_key_for_token(
        &self,
        kind: KeyKind,
        expected: &StoredKey,
        spend: KeySpend,
        token: &StoredToken,
    ) -> Result<bool, StoreError> {
        self.durably(|conn| {
            let tx = conn.transaction()?;
            let changed = match spend {
                KeySpend::Delete => tx.execute(
                    "DELETE FROM api_keys WHERE kind = ?1 AND key_hash = ?2 AND uses_left IS ?3",
                    params![kind.as_str(), expected.hash.as_slice(), expected.uses_left],
                )?,
                KeySpend::SetUsesLeft(uses_left) => tx.execute(
                    "UPDATE api_keys SET uses_left = ?4
                     WHERE kind = ?1 AND key_hash = ?2 AND uses_left IS ?3",
                    params![
                        kind.as_str(),
                        expected.hash.as_slice(),
                        expected.uses_left,
                        uses_left
                    ],
                )?,
            };
            if changed != 1 {
                return Ok(false); // dropping the transaction rolls it back
            }
            tx.execute(
                "INSERT INTO device_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3)",
                params![
                    token.name,
                    token.hash.as_slice(),
                    to_micros(token.created_at)
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }
}
