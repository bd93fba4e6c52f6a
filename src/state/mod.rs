//! The daemon's own state in one SQLite file: tokens, keys, jobs.
//! Schema changes are migrations numbered by `PRAGMA user_version`.

mod backups;
mod bind_migrations;
mod email_passwords;
mod jobs;
mod monitoring;
mod moves;
mod queued_changes;
mod tokens;

pub use backups::SnapshotRecord;
pub use bind_migrations::BindMigrationRecord;
pub use email_passwords::StoredEmailPassword;
pub use jobs::JobRecord;
pub use monitoring::{SamplePoint, StoredSample};
pub use moves::MoveRecord;
pub use queued_changes::QueuedChangeRecord;
pub use tokens::{Hash, KeyKind, KeySpend, StoredKey, StoredToken};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("state directory {dir}: {reason}")]
    NotOwnDir { dir: PathBuf, reason: String },
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
    // 2: users (email passwords).
    "CREATE TABLE email_passwords (
        uuid TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        last_used INTEGER
     );
     CREATE INDEX email_passwords_by_user ON email_passwords (username);",
    // 3: monitoring history.
    "CREATE TABLE monitoring_series (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
     );
     CREATE TABLE monitoring_samples (
        series INTEGER NOT NULL REFERENCES monitoring_series(id),
        at INTEGER NOT NULL,
        resolution INTEGER NOT NULL,
        value REAL NOT NULL,
        max REAL,
        PRIMARY KEY (series, at, resolution)
     ) WITHOUT ROWID;",
    // 4: storage: service moves in progress, step by step.
    "CREATE TABLE service_moves (
        job_uid TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        from_volume TEXT NOT NULL,
        to_volume TEXT NOT NULL,
        folders TEXT NOT NULL,
        step TEXT NOT NULL,
        updated_at INTEGER NOT NULL
     );",
    // 5: backups (the cached snapshot list).
    "CREATE TABLE backup_snapshots (
        id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );",
    // 6: changes queued behind a running rebuild, in order (`seq`).
    "CREATE TABLE queued_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_uid TEXT NOT NULL,
        change TEXT NOT NULL
     );",
    // 7: storage: a migration to binds in progress, step by step.
    "CREATE TABLE bind_migrations (
        job_uid TEXT PRIMARY KEY,
        plan TEXT NOT NULL,
        step TEXT NOT NULL,
        updated_at INTEGER NOT NULL
     );",
];

pub struct Store {
    conn: Mutex<Connection>,
}

/// The database file inside the state directory.
const DB_FILE: &str = "state.db";

impl Store {
    /// Opens (creating if needed) `state.db` in `dir`. A directory it
    /// creates is made 0700 (it holds token hashes); an existing one keeps
    /// its mode, and is refused unless it is the daemon's own (see
    /// [`check_own_dir`]): a mistyped `--state-dir /var/lib` must neither
    /// be locked down nor filled.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        prepare_dir(dir)?;
        let path = dir.join(DB_FILE);
        // Create the file 0600 before SQLite does, so it is never
        // world-readable (SQLite gives its -wal and -shm files the same mode).
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
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
        // Asked on every authenticated request: the statement is prepared
        // once, not parsed each time.
        let conn = self.conn();
        let mut statement = conn.prepare_cached("PRAGMA data_version")?;
        Ok(statement.query_row([], |r| r.get(0))?)
    }

    /// Runs a token, key, move or queued-change write with `synchronous =
    /// FULL`. In WAL mode NORMAL may lose the last commits on power loss,
    /// and a revoked token, a spent key or a change the owner was told is
    /// queued must stay so. The connection's lock is held throughout,
    /// so job updates (frequent, and only progress reports) keep NORMAL.
    fn durably<T>(
        &self,
        write: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        conn.pragma_update(None, "synchronous", "FULL")?;
        #[cfg(test)]
        tests::record_synchronous(&conn);
        let result = write(&mut conn);
        // Failing to go back to NORMAL only makes later job writes slower;
        // the write itself stands.
        if let Err(e) = conn.pragma_update(None, "synchronous", "NORMAL") {
            tracing::warn!("restoring synchronous = NORMAL: {e}");
        }
        Ok(result?)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates `dir` 0700 if it does not exist; otherwise checks it is the
/// daemon's own and leaves its mode alone.
fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // The umask can only have narrowed 0700; nothing to widen.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_own_dir(dir),
        Err(e) => Err(e.into()),
    }
}

/// An existing directory is the daemon's own when it belongs to the
/// daemon's user, no one else may write to it, and it is empty or already
/// holds the database: anything else is a mistyped path or someone else's.
fn check_own_dir(dir: &Path) -> Result<(), StoreError> {
    let refuse = |reason: String| StoreError::NotOwnDir {
        dir: dir.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(refuse(format!(
            "owned by uid {}, not by this daemon's uid {uid}",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "mode {mode:04o} lets other users write to it (chmod go-w, or use another directory)"
        )));
    }
    let holds_db = dir.join(DB_FILE).exists();
    if !holds_db && std::fs::read_dir(dir)?.next().is_some() {
        return Err(refuse(format!(
            "it holds other files and no {DB_FILE}: give the daemon a directory of its own"
        )));
    }
    Ok(())
}

fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// `PRAGMA synchronous` as each durable write on this thread began.
        static SYNCHRONOUS_SEEN: RefCell<Vec<i64>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record_synchronous(conn: &Connection) {
        let level: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        SYNCHRONOUS_SEEN.with(|seen| seen.borrow_mut().push(level));
    }

    fn seen() -> Vec<i64> {
        SYNCHRONOUS_SEEN.with(|seen| std::mem::take(&mut *seen.borrow_mut()))
    }

    fn synchronous(store: &Store) -> i64 {
        store
            .conn()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }

    const NORMAL: i64 = 1;
    const FULL: i64 = 2;

    #[test]
    fn token_and_key_writes_are_committed_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(synchronous(&store), NORMAL);
        seen();
        let now = Utc::now();
        let token = StoredToken {
            name: "phone".into(),
            hash: [1; 32],
            created_at: now,
        };
        let key = StoredKey {
            hash: [2; 32],
            created_at: now,
            expires_at: None,
            uses_left: Some(2),
        };
        store.insert_token(&token).unwrap();
        assert!(store.replace_token("phone", &[3; 32]).unwrap());
        assert!(store.delete_token("phone").unwrap());
        store.put_key(KeyKind::Recovery, &key).unwrap();
        let other = StoredToken {
            name: "tablet".into(),
            hash: [4; 32],
            created_at: now,
        };
        assert!(
            store
                .spend_key_for_token(
                    KeyKind::Recovery,
                    &key,
                    KeySpend::SetUsesLeft(Some(1)),
                    &other
                )
                .unwrap()
        );
        assert!(store.delete_key(KeyKind::Recovery).unwrap());
        assert_eq!(seen(), [FULL; 6], "one FULL write per token or key change");

        // Job updates go back to NORMAL.
        assert_eq!(synchronous(&store), NORMAL);
        let job = JobRecord {
            uid: "j".into(),
            type_id: "t".into(),
            name: "n".into(),
            description: "d".into(),
            status: "RUNNING".into(),
            status_text: None,
            progress: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            error: None,
            result: None,
        };
        store.upsert_job(&job).unwrap();
        assert!(seen().is_empty());
        assert_eq!(synchronous(&store), NORMAL);
    }

    #[test]
    fn a_failed_durable_write_still_restores_normal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let token = StoredToken {
            name: "phone".into(),
            hash: [1; 32],
            created_at: Utc::now(),
        };
        store.insert_token(&token).unwrap();
        assert!(store.insert_token(&token).is_err(), "duplicate name");
        assert_eq!(synchronous(&store), NORMAL);
    }
}
