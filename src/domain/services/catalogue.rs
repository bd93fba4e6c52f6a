//! The service catalogue: the sp-module definitions on disk, parsed once
//! and re-read only when a file changes. A broken definition is logged
//! (once) and skipped; it never takes the API down.

use super::definition::Definition;
use crate::os::sp_modules::{self, Fingerprint};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How stale the catalogue may be: changes show up within this time.
const RESCAN_AFTER: Duration = Duration::from_secs(1);

pub struct Catalogue {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    scanned_at: Option<Instant>,
    /// Per file: its fingerprint and what it parsed to (None: broken).
    files: HashMap<String, (Fingerprint, Option<Arc<Definition>>)>,
    definitions: Arc<Vec<Arc<Definition>>>,
}

impl Catalogue {
    pub fn new(dir: PathBuf) -> Self {
        Catalogue {
            dir,
            state: Mutex::new(State::default()),
        }
    }

    /// Every usable definition, sorted by id.
    pub fn definitions(&self) -> Arc<Vec<Arc<Definition>>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .scanned_at
            .is_none_or(|at| at.elapsed() >= RESCAN_AFTER)
        {
            self.rescan(&mut state);
        }
        state.definitions.clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Definition>> {
        self.definitions().iter().find(|d| d.meta.id == id).cloned()
    }

    fn rescan(&self, state: &mut State) {
        state.scanned_at = Some(Instant::now());
        let files = match sp_modules::scan(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "reading sp-module definitions: {e}");
                return; // keep what we had
            }
        };
        let mut changed = files.len() != state.files.len();
        let mut next = HashMap::with_capacity(files.len());
        for file in files {
            let known = state
                .files
                .remove(&file.id)
                .filter(|(fingerprint, _)| *fingerprint == file.fingerprint);
            let entry = match known {
                Some(entry) => entry,
                None => {
                    changed = true;
                    let parsed = std::fs::read(&file.path)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| {
                            Definition::parse(&file.id, &bytes).map_err(|e| e.to_string())
                        });
                    match parsed {
                        Ok(definition) => (file.fingerprint, Some(Arc::new(definition))),
                        Err(why) => {
                            tracing::error!(
                                file = %file.path.display(),
                                "skipping a broken sp-module definition: {why}"
                            );
                            (file.fingerprint, None)
                        }
                    }
                }
            };
            next.insert(file.id, entry);
        }
        if !state.files.is_empty() {
            changed = true; // files were removed
        }
        state.files = next;
        if changed {
            let mut definitions: Vec<Arc<Definition>> = state
                .files
                .values()
                .filter_map(|(_, d)| d.clone())
                .collect();
            definitions.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
            state.definitions = Arc::new(definitions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::definition::tests::example;
    use super::*;

    fn expire(catalogue: &Catalogue) {
        catalogue.state.lock().unwrap().scanned_at = None;
    }

    #[test]
    fn picks_up_changes_and_skips_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("echo"), example("echo")).unwrap();
        std::fs::write(dir.path().join("broken"), "{ not json").unwrap();
        let catalogue = Catalogue::new(dir.path().to_path_buf());
        let ids = |c: &Catalogue| {
            c.definitions()
                .iter()
                .map(|d| d.meta.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&catalogue), ["echo"]);

        std::fs::write(dir.path().join("web"), example("web")).unwrap();
        expire(&catalogue);
        assert_eq!(ids(&catalogue), ["echo", "web"]);

        // Replaced in place (a rebuild swaps the store path): re-read.
        let mut changed: serde_json::Value = serde_json::from_str(&example("web")).unwrap();
        changed["meta"]["name"] = "Web 2".into();
        std::fs::write(dir.path().join("web.new"), changed.to_string()).unwrap();
        std::fs::rename(dir.path().join("web.new"), dir.path().join("web")).unwrap();
        std::fs::remove_file(dir.path().join("echo")).unwrap();
        expire(&catalogue);
        assert_eq!(ids(&catalogue), ["web"]);
        assert_eq!(catalogue.get("web").unwrap().meta.name, "Web 2");
    }
}
