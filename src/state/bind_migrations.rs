//! A migration to binds in progress: its whole plan (JSON, as the domain
//! wrote it) and its step, written durably before the step's work starts.

use super::{Store, StoreError, from_micros, to_micros};
use chrono::{DateTime, Utc};
use rusqlite::params;

#[derive(Debug, Clone, PartialEq)]
pub struct BindMigrationRecord {
    pub job_uid: String,
    pub plan: String,
    pub step: String,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Records the migration at its (new) step.
    pub fn save_bind_migration(&self, record: &BindMigrationRecord) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO bind_migrations (job_uid, plan, step, updated_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    record.job_uid,
                    record.plan,
                    record.step,
                    to_micros(record.updated_at)
                ],
            )
        })?;
        Ok(())
    }

    /// The migrations that have not ended.
    pub fn bind_migrations(&self) -> Result<Vec<BindMigrationRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT job_uid, plan, step, updated_at FROM bind_migrations
             ORDER BY updated_at, job_uid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(BindMigrationRecord {
                job_uid: r.get(0)?,
                plan: r.get(1)?,
                step: r.get(2)?,
                updated_at: from_micros(r.get(3)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a migration that has ended (either way).
    pub fn end_bind_migration(&self, job_uid: &str) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "DELETE FROM bind_migrations WHERE job_uid = ?1",
                params![job_uid],
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_is_kept_at_its_latest_step_until_it_ends() {
        let store = Store::open_in_memory().unwrap();
        let mut record = BindMigrationRecord {
            job_uid: "j1".into(),
            plan: r#"{"services":[]}"#.into(),
            step: "copying".into(),
            updated_at: Utc::now(),
        };
        store.save_bind_migration(&record).unwrap();
        record.step = "switching".into();
        store.save_bind_migration(&record).unwrap();
        let stored = store.bind_migrations().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].step, "switching");
        assert_eq!(stored[0].plan, record.plan);
        store.end_bind_migration("j1").unwrap();
        assert!(store.bind_migrations().unwrap().is_empty());
    }
}
