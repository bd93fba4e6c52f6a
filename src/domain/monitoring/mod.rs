//! Monitoring without Prometheus: the whole machine (CPU, memory, swap,
//! mounted block filesystems, network) and each service's memory, sampled
//! every few seconds, kept in SQLite (a week as sampled, then 5-minute
//! averages with maxima for a month) and read back over any range and step.
//! Samples are written in batches, so SQLite is touched once a minute.

mod query;
mod sampler;

pub use query::{MetricSeries, Point, QueryRange, ServiceSummary};
pub use sampler::HostReadings;

use crate::domain::clock::Clock;
use crate::domain::services::resources::ResourceSampler;
use crate::state::{SamplePoint, Store};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long samples are kept as taken, then as coarse averages.
pub const FULL_RESOLUTION_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
pub const COARSE_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// The coarse resolution, in seconds.
pub const COARSE_STEP: i64 = 300;

/// Series names in the store.
pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const SWAP: &str = "swap";
pub const SERVICE_MEMORY: &str = "service_memory:";
pub const DISK: &str = "disk:";
pub const NETWORK: &str = "network:";

pub struct Monitoring {
    store: Arc<Store>,
    clock: Arc<Clock>,
    /// Seconds between samples: the resolution of recent history.
    interval: Duration,
    proc_dir: PathBuf,
    host: Mutex<sampler::HostSampler>,
    /// Taken but not yet written.
    pending: Mutex<Vec<SamplePoint>>,
}

impl Monitoring {
    pub fn new(
        store: Arc<Store>,
        clock: Arc<Clock>,
        interval: Duration,
        proc_dir: PathBuf,
    ) -> Self {
        Monitoring {
            store,
            clock,
            interval: interval.max(Duration::from_secs(1)),
            proc_dir,
            host: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes one sample of the machine, and of each service's memory from
    /// the resource sampler's latest figures.
    pub fn sample(&self, resources: &ResourceSampler, services: &[String]) {
        let at = self.clock.now().timestamp();
        let readings = HostReadings::read(&self.proc_dir);
        let mut points = self
            .host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .points(at, readings);
        for service in services {
            if let Some(latest) = resources.latest(service) {
                points.push(SamplePoint {
                    series: format!("{SERVICE_MEMORY}{service}"),
                    at,
                    value: latest.memory_bytes as f64,
                });
            }
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(points);
    }

    /// Writes what was sampled since the last write, in one transaction.
    /// On failure the samples are kept for the next try (at most a day's).
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.append_samples(self.resolution(), &batch) {
            tracing::warn!("writing {} monitoring samples: {e}", batch.len());
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let keep = (86_400 / self.resolution()) as usize * 64;
            let mut restored = batch;
            restored.append(&mut pending);
            let excess = restored.len().saturating_sub(keep);
            restored.drain(..excess);
            *pending = restored;
        }
    }

    /// Downsamples and prunes by the clock's now.
    pub fn maintain(&self) {
        let now = self.clock.now().timestamp();
        let fine_until = now - FULL_RESOLUTION_KEPT.as_secs() as i64;
        let coarse_until = now - COARSE_KEPT.as_secs() as i64;
        match self.store.downsample_samples(
            self.resolution(),
            COARSE_STEP,
            fine_until,
            coarse_until,
        ) {
            Ok(removed) => {
                tracing::debug!("monitoring history: {removed} rows downsampled or pruned")
            }
            Err(e) => tracing::warn!("downsampling monitoring history: {e}"),
        }
    }

    fn resolution(&self) -> i64 {
        self.interval.as_secs() as i64
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Stored and pending samples of `series` within `range`, bucketed by
    /// its step.
    fn series(&self, series: &str, range: &QueryRange) -> Result<Vec<Point>, String> {
        let mut samples = self
            .store
            .samples(series, range.start, range.end + 1)
            .map_err(|e| {
                tracing::warn!("reading monitoring history: {e}");
                "the monitoring history could not be read; see the server log".to_owned()
            })?;
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        samples.extend(
            pending
                .iter()
                .filter(|p| p.series == series && p.at >= range.start && p.at <= range.end)
                .map(|p| crate::state::StoredSample {
                    at: p.at,
                    resolution: self.resolution(),
                    value: p.value,
                    max: p.value,
                }),
        );
        Ok(range.bucket(&samples))
    }

    pub fn values(&self, series: &str, range: &QueryRange) -> Result<Vec<Point>, String> {
        self.series(series, range)
    }

    /// Every series under `prefix` with data in `range`, named without it.
    pub fn metrics(&self, prefix: &str, range: &QueryRange) -> Result<Vec<MetricSeries>, String> {
        let mut names = self.store.series_named(prefix).map_err(|e| {
            tracing::warn!("reading monitoring series: {e}");
            "the monitoring history could not be read; see the server log".to_owned()
        })?;
        {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for point in pending.iter().filter(|p| p.series.starts_with(prefix)) {
                if !names.contains(&point.series) {
                    names.push(point.series.clone());
                }
            }
        }
        names.sort();
        let mut metrics = Vec::new();
        for name in names {
            let points = self.series(&name, range)?;
            if !points.is_empty() {
                metrics.push(MetricSeries {
                    id: name[prefix.len()..].to_owned(),
                    points,
                });
            }
        }
        Ok(metrics)
    }

    /// Each service's memory over the whole range: average and maximum.
    pub fn service_memory(&self, range: &QueryRange) -> Result<Vec<ServiceSummary>, String> {
        let whole = range.whole();
        Ok(self
            .metrics(SERVICE_MEMORY, &whole)?
            .into_iter()
            .filter_map(|metric| {
                let point = metric.points.first()?;
                Some(ServiceSummary {
                    service: metric.id,
                    average: point.average,
                    max: point.max,
                })
            })
            .collect())
    }
}

/// The sampler's loop: a sample every interval, a write every
/// `flush_every`, downsampling at start and hourly. `services` lists the
/// services to sample at each tick.
pub async fn run(
    monitoring: Arc<Monitoring>,
    resources: Arc<ResourceSampler>,
    flush_every: Duration,
    services: impl Fn() -> Vec<String>,
) {
    let mut tick = tokio::time::interval(monitoring.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = tokio::time::Instant::now();
    let mut last_maintenance: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let list = services();
        let task = monitoring.clone();
        let sampler = resources.clone();
        let _ = tokio::task::spawn_blocking(move || task.sample(&sampler, &list)).await;
        let due = |since: tokio::time::Instant, every: Duration| since.elapsed() >= every;
        if due(last_flush, flush_every) {
            last_flush = tokio::time::Instant::now();
            let task = monitoring.clone();
            let _ = tokio::task::spawn_blocking(move || task.flush()).await;
        }
        if last_maintenance.is_none_or(|at| due(at, Duration::from_secs(3600))) {
            last_maintenance = Some(tokio::time::Instant::now());
            let task = monitoring.clone();
            let _ = tokio::task::spawn_blocking(move || task.maintain()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitoring() -> (Monitoring, Arc<Clock>) {
        let clock = Arc::new(Clock::default());
        let store = Arc::new(Store::open_in_memory().unwrap());
        let monitoring = Monitoring::new(
            store,
            clock.clone(),
            Duration::from_secs(10),
            PathBuf::from("/proc"),
        );
        (monitoring, clock)
    }

    fn push(monitoring: &Monitoring, series: &str, at: i64, value: f64) {
        monitoring.pending.lock().unwrap().push(SamplePoint {
            series: series.into(),
            at,
            value,
        });
    }

    #[test]
    fn pending_and_written_samples_answer_alike() {
        let (monitoring, clock) = monitoring();
        let now = clock.now().timestamp();
        push(&monitoring, CPU, now - 20, 10.0);
        push(&monitoring, "service_memory:a", now - 20, 100.0);
        monitoring.flush();
        assert!(monitoring.pending.lock().unwrap().is_empty());
        push(&monitoring, CPU, now - 10, 30.0);
        push(&monitoring, "service_memory:a", now - 10, 300.0);
        push(&monitoring, "service_memory:b", now - 10, 5.0);
        let range = QueryRange::new(None, None, 60, clock.now()).unwrap();
        let cpu = monitoring.values(CPU, &range.whole()).unwrap();
        assert_eq!(cpu.len(), 1);
        assert_eq!((cpu[0].average, cpu[0].max), (20.0, 30.0));
        let services = monitoring.service_memory(&range).unwrap();
        assert_eq!(
            services,
            vec![
                ServiceSummary {
                    service: "a".into(),
                    average: 200.0,
                    max: 300.0
                },
                ServiceSummary {
                    service: "b".into(),
                    average: 5.0,
                    max: 5.0
                },
            ]
        );
    }

    #[test]
    fn a_week_later_samples_are_averaged_and_a_month_later_gone() {
        let (monitoring, clock) = monitoring();
        let start = clock.now().timestamp().div_euclid(COARSE_STEP) * COARSE_STEP;
        for i in 0..30 {
            push(&monitoring, MEMORY, start + i * 10, i as f64);
        }
        monitoring.flush();
        let all = |monitoring: &Monitoring| monitoring.store.samples(MEMORY, 0, i64::MAX).unwrap();
        monitoring.maintain();
        assert_eq!(all(&monitoring).len(), 30, "recent samples stay as taken");
        clock.advance(chrono::Duration::days(8));
        monitoring.maintain();
        let coarse = all(&monitoring);
        assert_eq!(coarse.len(), 1, "{coarse:?}");
        assert_eq!((coarse[0].at, coarse[0].resolution), (start, COARSE_STEP));
        assert_eq!((coarse[0].value, coarse[0].max), (14.5, 29.0));
        clock.advance(chrono::Duration::days(30));
        monitoring.maintain();
        assert!(all(&monitoring).is_empty());
    }
}
