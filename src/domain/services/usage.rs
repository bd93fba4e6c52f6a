//! How much disk each service uses: measured in the background and cached,
//! so a query never walks a data folder while the app waits, not even the
//! first time (it then answers that nothing is measured yet).

use crate::os::disks;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A measurement older than this is refreshed in the background.
const FRESH_FOR: Duration = Duration::from_secs(300);

/// Measures the bytes under one folder (blocking; run off the runtime).
pub type Walker = Arc<dyn Fn(&Path) -> u64 + Send + Sync>;

pub struct UsageCache {
    entries: Mutex<HashMap<String, Entry>>,
    walker: Walker,
    /// Counts finished measurements: what was derived from the figures
    /// is out of date once it moves.
    generation: AtomicU64,
}

impl Default for UsageCache {
    fn default() -> Self {
        UsageCache::with_walker(Arc::new(disks::folder_size))
    }
}

struct Entry {
    folders: Vec<PathBuf>,
    /// The last measurement of these folders, if one has finished.
    measured: Option<(u64, Instant)>,
    /// A walk is under way (at most one per service at a time).
    walking: bool,
}

impl Entry {
    fn of(folders: &[PathBuf]) -> Self {
        Entry {
            folders: folders.to_vec(),
            measured: None,
            walking: false,
        }
    }
}

impl UsageCache {
    pub fn with_walker(walker: Walker) -> Self {
        UsageCache {
            entries: Mutex::default(),
            walker,
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The bytes last measured in `folders`, or None while the first
    /// measurement is under way. Never waits for a walk: a missing or
    /// stale measurement is started in the background (needs a runtime).
    pub fn bytes(self: &Arc<Self>, service: &str, folders: &[PathBuf]) -> Option<u64> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.get(service).is_none_or(|e| e.folders != folders) {
            // New, or its folders changed: what was measured is not theirs.
            entries.insert(service.to_owned(), Entry::of(folders));
        }
        let entry = entries.get_mut(service).expect("inserted above");
        let measured = entry.measured;
        let due = measured.is_none_or(|(_, at)| at.elapsed() >= FRESH_FOR);
        if due && !entry.walking {
            entry.walking = true;
            drop(entries);
            self.walk_in_background(service.to_owned(), folders.to_vec());
        }
        measured.map(|(bytes, _)| bytes)
    }

    fn walk_in_background(self: &Arc<Self>, service: String, folders: Vec<PathBuf>) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = folders.iter().map(|f| (this.walker)(f)).sum();
            let mut entries = this.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get_mut(&service) {
                entry.walking = false;
                // Only if the folders are still the ones walked.
                if entry.folders == folders {
                    entry.measured = Some((bytes, Instant::now()));
                    this.generation.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// The first ask answers at once (nothing measured yet) while the walk
    /// runs in the background; once it ends, its figure is the answer.
    #[tokio::test]
    async fn the_first_ask_never_waits_for_the_walk() {
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let walks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = walks.clone();
        let cache = Arc::new(UsageCache::with_walker(Arc::new(move |_: &Path| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            gate.lock().unwrap().recv().ok();
            4096
        })));
        let folders = vec![PathBuf::from("/var/lib/echo")];
        let asked = Instant::now();
        assert_eq!(cache.bytes("echo", &folders), None, "nothing measured yet");
        assert_eq!(cache.bytes("echo", &folders), None);
        assert!(asked.elapsed() < Duration::from_secs(1), "answered at once");

        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let bytes = loop {
            if let Some(bytes) = cache.bytes("echo", &folders) {
                break bytes;
            }
            assert!(Instant::now() < deadline, "the background walk never ended");
            tokio::task::yield_now().await;
            std::thread::yield_now();
        };
        assert_eq!(bytes, 4096);
        assert_eq!(cache.generation(), 1, "a finished measurement counts");
        assert_eq!(
            walks.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one walk, however many asks"
        );
    }
}
