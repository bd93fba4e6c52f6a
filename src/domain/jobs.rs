//! The job registry: every long operation is a job the app can watch.
//! Jobs live in memory for fast reads and are written through to SQLite so
//! they survive restarts; each change pushes the whole list to subscribers.

use super::clock::Clock;
use super::error::{Failure, Outcome};
use super::i18n::Text;
use crate::state::{JobRecord, Store};
use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Finished jobs are forgotten after this long.
pub const FINISHED_JOB_TTL: Duration = Duration::days(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Created,
    Running,
    Finished,
    Error,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Finished => "FINISHED",
            JobStatus::Error => "ERROR",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATED" => JobStatus::Created,
            "RUNNING" => JobStatus::Running,
            "FINISHED" => JobStatus::Finished,
            "ERROR" => JobStatus::Error,
            _ => return None,
        })
    }

    pub fn is_done(self) -> bool {
        matches!(self, JobStatus::Finished | JobStatus::Error)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub uid: String,
    pub type_id: String,
    pub name: Text,
    pub description: Text,
    pub status: JobStatus,
    pub status_text: Option<Text>,
    pub progress: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<Text>,
    pub result: Option<Text>,
}

/// A change to a job; fields left `None` stay as they are.
#[derive(Debug, Default, Clone)]
pub struct JobUpdate {
    pub status: Option<JobStatus>,
    pub status_text: Option<Text>,
    pub progress: Option<i32>,
    pub error: Option<Text>,
    pub result: Option<Text>,
}

pub type JobList = Arc<Vec<Job>>;

pub struct JobRegistry {
    store: Arc<Store>,
    clock: Arc<Clock>,
    jobs: Mutex<Vec<Job>>,
    updates: broadcast::Sender<JobList>,
    /// Running jobs found at startup whose work may still be going on.
    resumable: Mutex<Vec<Job>>,
}

impl JobRegistry {
    /// Loads the stored jobs. A job still CREATED or RUNNING belonged to a
    /// daemon that died: it is marked ERROR, never left running forever,
    /// unless `resumable` says its owner can pick it up again (a rebuild
    /// runs in its own unit; a scheduled one can still be started): those
    /// are kept for `take_resumable`.
    pub fn load(
        store: Arc<Store>,
        clock: Arc<Clock>,
        resumable: impl Fn(&Job) -> bool,
    ) -> Outcome<JobRegistry> {
        let records = store
            .jobs()
            .map_err(|e| Failure::internal("loading jobs", e))?;
        let now = clock.now();
        let mut jobs = Vec::with_capacity(records.len());
        let mut resumed = Vec::new();
        for record in records {
            let mut job = job_from_record(record);
            if !job.status.is_done() && resumable(&job) {
                tracing::info!(uid = %job.uid, type_id = %job.type_id, "resuming a job after a restart");
                resumed.push(job.clone());
            } else if !job.status.is_done() {
                job.status = JobStatus::Error;
                job.error = Some(Text::new(
                    "Interrupted: the API service stopped while this job was running",
                    "Прервано: служба API остановилась во время выполнения задачи",
                ));
                job.updated_at = now;
                job.finished_at = Some(now);
                store
                    .upsert_job(&job_to_record(&job))
                    .map_err(|e| Failure::internal("marking an interrupted job", e))?;
                tracing::warn!(uid = %job.uid, type_id = %job.type_id, "job was interrupted by a restart");
            }
            jobs.push(job);
        }
        let (updates, _) = broadcast::channel(64);
        let registry = JobRegistry {
            store,
            clock,
            jobs: Mutex::new(jobs),
            updates,
            resumable: Mutex::new(resumed),
        };
        registry.purge_expired()?;
        Ok(registry)
    }

    /// The jobs `load` kept running for their owner to pick up again.
    pub fn take_resumable(&self) -> Vec<Job> {
        std::mem::take(&mut *self.resumable.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_expired(&self, job: &Job, now: DateTime<Utc>) -> bool {
        job.finished_at
            .is_some_and(|finished| now - finished > FINISHED_JOB_TTL)
    }

    /// All jobs the app should see, oldest first.
    pub fn list(&self) -> JobList {
        self.visible(&self.lock())
    }

    fn visible(&self, jobs: &[Job]) -> JobList {
        let now = self.clock.now();
        Arc::new(
            jobs.iter()
                .filter(|j| !self.is_expired(j, now))
                .cloned()
                .collect(),
        )
    }

    pub fn get(&self, uid: &str) -> Option<Job> {
        let now = self.clock.now();
        self.lock()
            .iter()
            .find(|j| j.uid == uid && !self.is_expired(j, now))
            .cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobList> {
        self.updates.subscribe()
    }

    /// Sends the list as `jobs` (the locked list) has it. Called with the
    /// lock held, so lists are sent in the order the changes were made and
    /// the last one a subscriber gets is the latest.
    fn publish(&self, jobs: &[Job]) {
        // No subscribers is not an error.
        let _ = self.updates.send(self.visible(jobs));
    }

    pub fn create(&self, type_id: &str, name: Text, description: Text) -> Outcome<Job> {
        let now = self.clock.now();
        let job = Job {
            uid: new_uid(),
            type_id: type_id.to_owned(),
            name,
            description,
            status: JobStatus::Created,
            status_text: None,
            progress: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            error: None,
            result: None,
        };
        {
            let mut jobs = self.lock();
            self.store
                .upsert_job(&job_to_record(&job))
                .map_err(|e| Failure::internal("saving a job", e))?;
            jobs.push(job.clone());
            self.publish(&jobs);
        }
        Ok(job)
    }

    /// Changes a job. A job that has ended is final: its end is published
    /// once, whole (a client that sees FINISHED or ERROR sees all of it),
    /// so later changes are refused.
    pub fn update(&self, uid: &str, update: JobUpdate) -> Outcome<Job> {
        let job = {
            let mut jobs = self.lock();
            let Some(job) = jobs.iter_mut().find(|j| j.uid == uid) else {
                return Err(job_not_found());
            };
            if job.status.is_done() {
                return Err(Failure::conflict(
                    "The job has ended and cannot be changed",
                    "Задача завершена, её нельзя изменить",
                ));
            }
            let mut next = job.clone();
            let now = self.clock.now();
            if let Some(status) = update.status {
                next.status = status;
                if status.is_done() {
                    next.finished_at = Some(now);
                    if status == JobStatus::Finished {
                        next.progress = Some(100);
                    }
                }
            }
            if let Some(text) = update.status_text {
                next.status_text = Some(text);
            }
            if let Some(progress) = update.progress {
                next.progress = Some(progress.clamp(0, 100));
            }
            if update.error.is_some() {
                next.error = update.error;
            }
            if update.result.is_some() {
                next.result = update.result;
            }
            next.updated_at = now;
            self.store
                .upsert_job(&job_to_record(&next))
                .map_err(|e| Failure::internal("saving a job", e))?;
            *job = next.clone();
            self.publish(&jobs);
            next
        };
        Ok(job)
    }

    /// Removes a finished job from the list. A running job cannot be
    /// removed: the app would lose sight of work still going on.
    pub fn remove(&self, uid: &str) -> Outcome<()> {
        {
            let mut jobs = self.lock();
            let Some(index) = jobs.iter().position(|j| j.uid == uid) else {
                return Err(job_not_found());
            };
            if !jobs[index].status.is_done() {
                return Err(Failure::conflict(
                    "The job is still running and cannot be removed",
                    "Задача ещё выполняется, её нельзя удалить",
                ));
            }
            self.store
                .delete_jobs(std::slice::from_ref(&jobs[index].uid))
                .map_err(|e| Failure::internal("removing a job", e))?;
            jobs.remove(index);
            self.publish(&jobs);
        }
        Ok(())
    }

    /// Deletes finished jobs older than the TTL from memory and disk.
    pub fn purge_expired(&self) -> Outcome<()> {
        let now = self.clock.now();
        let mut jobs = self.lock();
        let expired: Vec<String> = jobs
            .iter()
            .filter(|j| self.is_expired(j, now))
            .map(|j| j.uid.clone())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        self.store
            .delete_jobs(&expired)
            .map_err(|e| Failure::internal("removing expired jobs", e))?;
        jobs.retain(|j| !expired.contains(&j.uid));
        tracing::info!(count = expired.len(), "removed expired jobs");
        Ok(())
    }
}

/// The job `testMutation` starts: walks from 0 to 100 % in five steps and
/// finishes, so the owner (and the tests) can watch a job end to end.
pub fn run_test_job(registry: Arc<JobRegistry>) -> Outcome<Job> {
    let job = registry.create(
        "test.job",
        Text::new("Test job", "Тестовая задача"),
        Text::new(
            "Checks that jobs and their updates reach the app",
            "Проверяет, что задачи и их обновления доходят до приложения",
        ),
    )?;
    let uid = job.uid.clone();
    tokio::spawn(async move {
        for step in 0..=4 {
            let update = JobUpdate {
                status: Some(JobStatus::Running),
                status_text: Some(Text::new(
                    format!("Step {} of 5", step + 1),
                    format!("Шаг {} из 5", step + 1),
                )),
                progress: Some(step * 20),
                ..Default::default()
            };
            if registry.update(&uid, update).is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let done = JobUpdate {
            status: Some(JobStatus::Finished),
            status_text: Some(Text::new("Done", "Готово")),
            result: Some(Text::new("Test job finished", "Тестовая задача завершена")),
            ..Default::default()
        };
        if let Err(failure) = registry.update(&uid, done) {
            tracing::error!("finishing the test job: {failure}");
        }
    });
    Ok(job)
}

fn job_not_found() -> Failure {
    Failure::not_found("Job not found", "Задача не найдена")
}

/// A random UUID v4 in its usual text form, as the Python API's job uids.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn encode_text(text: &Text) -> String {
    serde_json::to_string(text).expect("a Text always serializes")
}

/// Texts written by this daemon are JSON; anything else is kept as an
/// untranslated string rather than lost.
fn decode_text(stored: String) -> Text {
    serde_json::from_str(&stored).unwrap_or_else(|_| Text::untranslated(stored))
}

fn job_to_record(job: &Job) -> JobRecord {
    JobRecord {
        uid: job.uid.clone(),
        type_id: job.type_id.clone(),
        name: encode_text(&job.name),
        description: encode_text(&job.description),
        status: job.status.as_str().to_owned(),
        status_text: job.status_text.as_ref().map(encode_text),
        progress: job.progress,
        created_at: job.created_at,
        updated_at: job.updated_at,
        finished_at: job.finished_at,
        error: job.error.as_ref().map(encode_text),
        result: job.result.as_ref().map(encode_text),
    }
}

fn job_from_record(record: JobRecord) -> Job {
    Job {
        status: JobStatus::parse(&record.status).unwrap_or(JobStatus::Error),
        uid: record.uid,
        type_id: record.type_id,
        name: decode_text(record.name),
        description: decode_text(record.description),
        status_text: record.status_text.map(decode_text),
        progress: record.progress,
        created_at: record.created_at,
        updated_at: record.updated_at,
        finished_at: record.finished_at,
        error: record.error.map(decode_text),
        result: record.result.map(decode_text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (JobRegistry, Arc<Store>, Arc<Clock>) {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let clock = Arc::new(Clock::default());
        let registry = JobRegistry::load(store.clone(), clock.clone(), |_| false).unwrap();
        (registry, store, clock)
    }

    #[test]
    fn running_job_found_at_startup_is_marked_interrupted() {
        let (registry, store, clock) = registry();
        let job = registry
            .create("test.job", Text::untranslated("a"), Text::untranslated("b"))
            .unwrap();
        registry
            .update(
                &job.uid,
                JobUpdate {
                    status: Some(JobStatus::Running),
                    ..Default::default()
                },
            )
            .unwrap();
        let reloaded = JobRegistry::load(store, clock, |_| false).unwrap();
        let job = reloaded.get(&job.uid).unwrap();
        assert_eq!(job.status, JobStatus::Error);
        assert!(job.error.unwrap().en.contains("Interrupted"));
        assert!(job.finished_at.is_some());
    }

    #[test]
    fn finished_jobs_expire_after_ten_days_and_running_jobs_cannot_be_removed() {
        let (registry, store, clock) = registry();
        let job = registry
            .create("test.job", Text::untranslated("a"), Text::untranslated("b"))
            .unwrap();
        assert_eq!(
            registry.remove(&job.uid).unwrap_err().kind,
            crate::domain::error::FailureKind::Conflict
        );
        registry
            .update(
                &job.uid,
                JobUpdate {
                    status: Some(JobStatus::Finished),
                    ..Default::default()
                },
            )
            .unwrap();
        clock.advance(Duration::days(9));
        assert!(registry.get(&job.uid).is_some());
        clock.advance(Duration::days(2));
        assert!(registry.get(&job.uid).is_none());
        registry.purge_expired().unwrap();
        assert!(store.jobs().unwrap().is_empty());
    }

    #[test]
    fn an_ended_job_is_final() {
        let (registry, store, _) = registry();
        let job = registry
            .create("test.job", Text::untranslated("a"), Text::untranslated("b"))
            .unwrap();
        let ended = registry
            .update(
                &job.uid,
                JobUpdate {
                    status: Some(JobStatus::Error),
                    error: Some(Text::untranslated("it broke")),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut updates = registry.subscribe();
        let late = registry.update(
            &job.uid,
            JobUpdate {
                error: Some(Text::untranslated("it broke\nand more")),
                ..Default::default()
            },
        );
        assert_eq!(
            late.unwrap_err().kind,
            crate::domain::error::FailureKind::Conflict
        );
        assert_eq!(registry.get(&job.uid).unwrap(), ended);
        assert_eq!(
            store.jobs().unwrap()[0].error.as_deref(),
            Some(encode_text(&Text::untranslated("it broke")).as_str())
        );
        assert!(updates.try_recv().is_err(), "nothing was published");
    }

    #[test]
    fn every_change_publishes_the_whole_list() {
        let (registry, _, _) = registry();
        let mut updates = registry.subscribe();
        let first = registry
            .create("a", Text::untranslated("a"), Text::untranslated("a"))
            .unwrap();
        registry
            .create("b", Text::untranslated("b"), Text::untranslated("b"))
            .unwrap();
        assert_eq!(updates.try_recv().unwrap().len(), 1);
        let list = updates.try_recv().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].uid, first.uid);
    }

    #[test]
    fn lists_are_published_in_the_order_of_the_changes() {
        let (registry, _, _) = registry();
        let registry = Arc::new(registry);
        let jobs: Vec<Job> = (0..4)
            .map(|i| {
                let name = Text::untranslated(format!("job {i}"));
                registry.create("test.job", name.clone(), name).unwrap()
            })
            .collect();
        let mut updates = registry.subscribe();
        // Each job's progress only grows, so in lists sent in order no job's
        // progress ever goes back.
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                match updates.blocking_recv() {
                    Ok(list) => seen.push(list),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return seen,
                }
            }
        });
        let writers: Vec<_> = jobs
            .iter()
            .map(|job| {
                let registry = registry.clone();
                let uid = job.uid.clone();
                std::thread::spawn(move || {
                    for step in 0..=2000 {
                        let update = JobUpdate {
                            progress: Some(step / 20),
                            status_text: Some(Text::untranslated(format!("step {step}"))),
                            ..Default::default()
                        };
                        registry.update(&uid, update).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let latest = registry.list();
        // Dropping the registry closes the channel: the reader ends.
        drop(registry);
        let seen = reader.join().unwrap();
        let step = |job: &Job| -> u32 {
            job.status_text
                .as_ref()
                .map_or(0, |t| t.en.trim_start_matches("step ").parse().unwrap_or(0))
        };
        for pair in seen.windows(2) {
            for (before, after) in pair[0].iter().zip(pair[1].iter()) {
                assert!(
                    step(after) >= step(before),
                    "job {} went back from step {} to {}",
                    before.uid,
                    step(before),
                    step(after)
                );
            }
        }
        assert_eq!(
            **seen.last().unwrap(),
            *latest,
            "the last list is the latest"
        );
    }
}
