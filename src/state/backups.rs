//! The cached list of the backup repository's snapshots, so listing them
//! never waits for the repository (which may be remote and slow).

use super::{Store, StoreError, from_micros, to_micros};
use chrono::{DateTime, Utc};
use rusqlite::params;

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    pub id: String,
    pub service: String,
    /// EXPLICIT, AUTO or PRE_RESTORE.
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Every cached snapshot, oldest first.
    pub fn backup_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, service, reason, created_at FROM backup_snapshots
             ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SnapshotRecord {
                id: r.get(0)?,
                service: r.get(1)?,
                reason: r.get(2)?,
                created_at: from_micros(r.get(3)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds one snapshot (just taken) to the cache.
    pub fn insert_backup_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO backup_snapshots (id, service, reason, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![s.id, s.service, s.reason, to_micros(s.created_at)],
        )?;
        Ok(())
    }

    /// Replaces the cache with `snapshots`, in one transaction.
    pub fn replace_backup_snapshots(&self, snapshots: &[SnapshotRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM backup_snapshots", [])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO backup_snapshots (id, service, reason, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for s in snapshots {
                insert.execute(params![s.id, s.service, s.reason, to_micros(s.created_at)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_the_cache_keeps_only_the_new_list() {
        let store = Store::open_in_memory().unwrap();
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        let snap = |id: &str, t| SnapshotRecord {
            id: id.into(),
            service: "notes".into(),
            reason: "AUTO".into(),
            created_at: at(t),
        };
        store
            .replace_backup_snapshots(&[snap("b", 20), snap("a", 10)])
            .unwrap();
        let ids: Vec<_> = store
            .backup_snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        store.replace_backup_snapshots(&[snap("c", 5)]).unwrap();
        assert_eq!(store.backup_snapshots().unwrap(), [snap("c", 5)]);
        store.insert_backup_snapshot(&snap("d", 1)).unwrap();
        assert_eq!(
            store.backup_snapshots().unwrap(),
            [snap("d", 1), snap("c", 5)]
        );
    }
}
