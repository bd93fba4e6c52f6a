//! What each service's slice uses: CPU time from the slice's cgroup, and
//! memory from the cgroup or, where the memory controller is not delegated
//! (it reports nothing), from the processes in it. Sampled in the
//! background and kept ready for monitoring.

use super::definition::slice_of;
use crate::os::cgroups;
use crate::os::systemd::SystemdLink;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceResources {
    /// CPU time used since the slice was created.
    pub cpu_nanoseconds: Option<u64>,
    /// Share of one CPU used between the last two samples (100 = one core).
    pub cpu_percent: Option<f64>,
    pub memory_bytes: u64,
    pub sampled_at: Instant,
}

pub struct ResourceSampler {
    systemd: Arc<SystemdLink>,
    /// Where the cgroup v2 hierarchy and /proc are (a test reads a
    /// container's from the host).
    cgroup_root: PathBuf,
    proc_dir: PathBuf,
    latest: RwLock<HashMap<String, ServiceResources>>,
}

impl ResourceSampler {
    pub fn new(systemd: Arc<SystemdLink>, cgroup_root: PathBuf, proc_dir: PathBuf) -> Self {
        ResourceSampler {
            systemd,
            cgroup_root,
            proc_dir,
            latest: RwLock::default(),
        }
    }

    /// The last sample of a service, if one was taken.
    pub fn latest(&self, service: &str) -> Option<ServiceResources> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// Samples the slice of each service: its id with `-` -> `_`
    /// (`my-app` -> `my_app.slice`), as SelfPrivacy's modules name them.
    pub async fn sample(&self, services: &[String]) {
        let Ok(systemd) = self.systemd.get().await else {
            return;
        };
        for service in services {
            let slice = slice_of(service);
            let usage = match systemd.slice_usage(&slice).await {
                Ok(usage) => usage,
                Err(e) => {
                    tracing::debug!(slice, "sampling: {e}");
                    continue;
                }
            };
            let memory_bytes = match usage.memory_bytes {
                Some(bytes) => bytes,
                None if usage.control_group.is_empty() => 0,
                None => {
                    let dir = self
                        .cgroup_root
                        .join(usage.control_group.trim_start_matches('/'));
                    let proc_dir = self.proc_dir.clone();
                    tokio::task::spawn_blocking(move || {
                        cgroups::memory_of_processes(&dir, &proc_dir)
                    })
                    .await
                    .unwrap_or(0)
                }
            };
            let now = Instant::now();
            let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
            let cpu_percent = match (latest.get(service), usage.cpu_nanoseconds) {
                (Some(previous), Some(cpu)) => previous.cpu_nanoseconds.and_then(|before| {
                    let wall = now.duration_since(previous.sampled_at).as_nanos() as f64;
                    (wall > 0.0).then(|| cpu.saturating_sub(before) as f64 / wall * 100.0)
                }),
                _ => None,
            };
            latest.insert(
                service.clone(),
                ServiceResources {
                    cpu_nanoseconds: usage.cpu_nanoseconds,
                    cpu_percent,
                    memory_bytes,
                    sampled_at: now,
                },
            );
        }
    }
}
