//! How much disk each service uses: measured in the background and cached,
//! so a query never walks a large data folder while the app waits.

use crate::os::disks;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A measurement older than this is refreshed in the background.
const FRESH_FOR: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct UsageCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// One walk per service at a time: queries arriving during the first
    /// measurement wait for it instead of walking the same folders again.
    walks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct Entry {
    folders: Vec<PathBuf>,
    bytes: u64,
    measured_at: Instant,
    refreshing: bool,
}

impl UsageCache {
    /// The bytes in `folders`: cached; measured now only the first time;
    /// refreshed in the background once stale.
    pub async fn bytes(self: &Arc<Self>, service: &str, folders: Vec<PathBuf>) -> u64 {
        if let Some(bytes) = self.cached(service, &folders) {
            return bytes;
        }
        let walk = self
            .walks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(service.to_owned())
            .or_default()
            .clone();
        let _turn = walk.lock().await;
        self.fresh_or_measure(service, folders).await
    }

    /// A measurement of exactly these folders that needs no refresh.
    fn cached(&self, service: &str, folders: &[PathBuf]) -> Option<u64> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(service)?;
        (entry.folders == folders && entry.measured_at.elapsed() < FRESH_FOR).then_some(entry.bytes)
    }

    async fn fresh_or_measure(self: &Arc<Self>, service: &str, folders: Vec<PathBuf>) -> u64 {
        let stale = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            match entries.get_mut(service) {
                Some(entry) if entry.folders == folders => {
                    if entry.measured_at.elapsed() >= FRESH_FOR && !entry.refreshing {
                        entry.refreshing = true;
                        Some(entry.bytes)
                    } else {
                        return entry.bytes;
                    }
                }
                _ => None,
            }
        };
        match stale {
            Some(bytes) => {
                let this = self.clone();
                let service = service.to_owned();
                tokio::spawn(async move {
                    this.measure(&service, folders).await;
                });
                bytes
            }
            None => self.measure(service, folders).await,
        }
    }

    async fn measure(&self, service: &str, folders: Vec<PathBuf>) -> u64 {
        let walked = folders.clone();
        let bytes =
            tokio::task::spawn_blocking(move || walked.iter().map(|f| disks::folder_size(f)).sum())
                .await
                .unwrap_or(0);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                service.to_owned(),
                Entry {
                    folders,
                    bytes,
                    measured_at: Instant::now(),
                    refreshing: false,
                },
            );
        bytes
    }
}
