//! The daemon's own state in one SQLite file: tokens, keys, jobs.
//! Schema changes are migrations numbered by `PRAGMA user_version`.

mod jobs;
mod tokens;

pub use jobs::JobRecord;
pub use tokens::{Hash, KeyKind, KeySpend, StoredKey, StoredToken};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Each entry moves the schema from version N to N+1.
const MIGRATIONS: &[&str] = &[
    // 1: tokens, keys and jobs.
    "CREATE TABLE device_tokens (
        name TEXT PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
     );
     CREATE TABLE api_keys (
        kind TEXT PRIMARY KEY CHECK (kind IN ('recovery', 'new_device')),
        key_hash BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        uses_left INTEGER
     );
     CREATE TABLE jobs (
        uid TEXT PRIMARY KEY,
        type_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        status TEXT NOT NULL,
        status_text TEXT,
        progress INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        finished_at INTEGER,
        error TEXT,
        result TEXT
     );",
];

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) `state.db` in `dir`, a directory only root
    /// may read: it holds token hashes.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join("state.db");
        // Create the file 0600 before SQLite does, so it is never world-readable.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let conn = Connection::open(&path)?;
        Self::prepare(conn)
    }

    /// A private in-memory database, for unit tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(mut conn: Connection) -> Result<Store, StoreError> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "schema version {version} is newer than this daemon knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Changes whenever another process commits to the database (the
    /// `token` command while the daemon runs), so caches know to reload.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
