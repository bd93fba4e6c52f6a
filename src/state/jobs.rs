use super::{Store, StoreError, from_micros, to_micros};
use chrono::{DateTime, Utc};
use rusqlite::params;

/// A job as stored. Person-facing texts are JSON-encoded `Text`s so each
/// reader gets its own language.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub uid: String,
    pub type_id: String,
    pub name: String,
    pub description: String,
    pub status: String,
    pub status_text: Option<String>,
    pub progress: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub result: Option<String>,
}

impl Store {
    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT uid, type_id, name, description, status, status_text, progress,
                    created_at, updated_at, finished_at, error, result
             FROM jobs ORDER BY created_at, uid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(JobRecord {
                uid: r.get(0)?,
                type_id: r.get(1)?,
                name: r.get(2)?,
                description: r.get(3)?,
                status: r.get(4)?,
                status_text: r.get(5)?,
                progress: r.get(6)?,
                created_at: from_micros(r.get(7)?),
                updated_at: from_micros(r.get(8)?),
                finished_at: r.get::<_, Option<i64>>(9)?.map(from_micros),
                error: r.get(10)?,
                result: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn upsert_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO jobs (uid, type_id, name, description, status, status_text,
                progress, created_at, updated_at, finished_at, error, result)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                job.uid,
                job.type_id,
                job.name,
                job.description,
                job.status,
                job.status_text,
                job.progress,
                to_micros(job.created_at),
                to_micros(job.updated_at),
                job.finished_at.map(to_micros),
                job.error,
                job.result
            ],
        )?;
        Ok(())
    }

    pub fn delete_jobs(&self, uids: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for uid in uids {
            tx.execute("DELETE FROM jobs WHERE uid = ?1", params![uid])?;
        }
        tx.commit()?;
        Ok(())
    }
}
