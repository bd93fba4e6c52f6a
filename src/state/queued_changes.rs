//! Changes to the declared configuration queued behind a running rebuild,
//! in the order they were made, each with the follow-up rebuild job that
//! will apply them. Written durably before the owner is told "queued", so
//! a restart loses none; removed once that job has written them.

use super::{Store, StoreError};
use rusqlite::params;

/// A queued change as stored: its JSON is the domain's to read.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedChangeRecord {
    pub job_uid: String,
    pub change: String,
}

impl Store {
    /// Adds a change at the end of the queue.
    pub fn queue_change(&self, job_uid: &str, change: &str) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "INSERT INTO queued_changes (job_uid, change) VALUES (?1, ?2)",
                params![job_uid, change],
            )
        })?;
        Ok(())
    }

    /// Every queued change, oldest first.
    pub fn queued_changes(&self) -> Result<Vec<QueuedChangeRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT job_uid, change FROM queued_changes ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok(QueuedChangeRecord {
                job_uid: r.get(0)?,
                change: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Hands the changes queued for `from` to `to` (a job merged into
    /// another), keeping their order.
    pub fn move_queued_changes(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "UPDATE queued_changes SET job_uid = ?2 WHERE job_uid = ?1",
                params![from, to],
            )
        })?;
        Ok(())
    }

    /// Removes the changes queued for `job_uid` (its rebuild took them).
    pub fn remove_queued_changes(&self, job_uid: &str) -> Result<(), StoreError> {
        self.durably(|conn| {
            conn.execute(
                "DELETE FROM queued_changes WHERE job_uid = ?1",
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
    fn changes_come_back_in_order_per_job_and_go_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.queue_change("b", "second").unwrap();
        store.queue_change("a", "other").unwrap();
        store.queue_change("b", "third").unwrap();
        drop(store);
        // As after a restart.
        let store = Store::open(dir.path()).unwrap();
        let of = |store: &Store, uid: &str| -> Vec<String> {
            store
                .queued_changes()
                .unwrap()
                .into_iter()
                .filter(|r| r.job_uid == uid)
                .map(|r| r.change)
                .collect()
        };
        assert_eq!(of(&store, "b"), ["second", "third"]);
        store.move_queued_changes("a", "b").unwrap();
        assert_eq!(of(&store, "b"), ["second", "other", "third"]);
        store.remove_queued_changes("b").unwrap();
        assert!(store.queued_changes().unwrap().is_empty());
    }
}
