//! Service moves in progress: one row per move, its step written durably
//! before the step's work starts, so a daemon that dies midway knows at
//! its next start what was done and which way to recover.

use super::{Store, StoreError, from_micros, to_micros};
use chrono::{DateTime, Utc};
use rusqlite::params;

#[derive(Debug, Clone, PartialEq)]
pub struct MoveRecord {
    pub job_uid: String,
    pub service: String,
    pub from_volume: String,
    pub to_volume: String,
    /// The folders' names (one path component each), as moved.
    pub folders: Vec<String>,
    pub step: String,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Records the move at its (new) step.
    pub fn save_move(&self, record: &MoveRecord) -> Result<(), StoreError> {
        let folders = serde_json::to_string(&record.folders)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.durably(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO service_moves
                    (job_uid, service, from_volume, to_volume, folders, step, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    record.job_uid,
                    record.service,
                    record.from_volume,
                    record.to_volume,
                    folders,
                    record.step,
                    to_micros(record.updated_at),
                ],
            )
        })?;
        Ok(())
    }

    /// The moves that have not ended.
    pub fn moves(&self) -> Result<Vec<MoveRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT job_uid, service, from_volume, to_volume, folders, step, updated_at
             FROM service_moves ORDER BY updated_at, job_uid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (job_uid, service, from_volume, to_volume, folders, step, updated_at) = row?;
            let folders: Vec<String> = serde_json::from_str(&folders)
                .map_err(|e| StoreError::Corrupt(format!("move {job_uid}: folders: {e}")))?;
            out.push(MoveRecord {
                job_uid,
                service,
                from_volume,
                to_volume,
                folders,
                step,
                updated_at: from_micros(updated_at),
            });
        }
        Ok(out)
    }

    /// Forgets a move that has ended (either way).
    pub fn end_move(&self, job_uid: &str) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "DELETE FROM service_moves WHERE job_uid = ?1",
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
    fn a_move_is_kept_at_its_latest_step_until_it_ends() {
        let store = Store::open_in_memory().unwrap();
        let mut record = MoveRecord {
            job_uid: "j1".into(),
            service: "notes".into(),
            from_volume: "sdb".into(),
            to_volume: "sdc".into(),
            folders: vec!["notes".into(), "notes-media".into()],
            step: "copying".into(),
            updated_at: Utc::now(),
        };
        store.save_move(&record).unwrap();
        record.step = "switching".into();
        store.save_move(&record).unwrap();
        let stored = store.moves().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].step, "switching");
        assert_eq!(stored[0].folders, record.folders);
        store.end_move("j1").unwrap();
        assert!(store.moves().unwrap().is_empty());
    }
}
