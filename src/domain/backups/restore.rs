//! Restores. The live data is replaced only once the snapshot's data is
//! complete and verified beside it (DOWNLOAD_VERIFY_OVERWRITE), or after a
//! PRE_RESTORE snapshot that a failure rolls back to (INPLACE). A killed
//! or failed restic leaves the service's data as it was.

use super::{Backups, Reason, SnapshotEntry, Strategy, Target, free_bytes, restic_failure};
use crate::domain::error::{Failure, Outcome};
use crate::domain::i18n::Text;
use crate::domain::jobs::Job;
use crate::domain::locks::ServiceOperation;
use crate::domain::system::rebuild::RebuildKind;
use crate::os::restic::Restic;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Names inside a live folder used while swapping (never in a snapshot).
const STAGING: &str = ".sp-restore-staging";
const OLD: &str = ".sp-restore-old";

/// What an interrupted restore may leave in a folder; never backed up.
pub(super) const LEFTOVERS: [&str; 2] = [STAGING, OLD];

/// Where a snapshot's path is staged, on the same filesystem as its data:
/// inside the folder itself (a bind-mounted folder is its own volume), or
/// beside a file.
fn staging_for(live: &Path) -> PathBuf {
    if live.is_dir() {
        live.join(STAGING)
    } else {
        let name = live
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        live.with_file_name(format!(".{name}{STAGING}"))
    }
}

/// Where restic puts `path` when restoring under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn io(context: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::internal(context, e)
}

/// A swap in progress, written (atomically) to the backups' `swaps`
/// folder before its renames, so that a daemon killed among them finishes
/// or undoes it at its next start.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SwapRecord {
    live: PathBuf,
    staged: PathBuf,
    /// The staging folders of the whole restore, removed afterwards.
    stagings: Vec<PathBuf>,
    phase: SwapPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum SwapPhase {
    /// Moving the live entries into `live/OLD`: undone (moved back).
    Aside,
    /// Moving the restored entries in: finished.
    In,
}

impl SwapPhase {
    fn as_str(self) -> &'static str {
        match self {
            SwapPhase::Aside => "aside",
            SwapPhase::In => "in",
        }
    }
}

/// Whether a swap ran to its end or stopped at a test hook.
#[derive(Debug, PartialEq)]
enum SwapEnd {
    Done,
    /// TEST SCAFFOLDING: stopped after the first rename of this phase.
    Paused,
}

fn write_record(path: &Path, record: &SwapRecord) -> Outcome<()> {
    let bytes = serde_json::to_vec(record).map_err(|e| Failure::internal("recording a swap", e))?;
    crate::os::files::write_atomically(path, &bytes, 0o600).map_err(io("recording a swap"))
}

/// Moves every entry of `from` (but the swap's own folders) into `to`.
fn move_entries(from: &Path, to: &Path, mut after_first: impl FnMut() -> bool) -> Outcome<bool> {
    let special = |name: &std::ffi::OsStr| name == STAGING || name == OLD;
    let mut first = true;
    for entry in std::fs::read_dir(from).map_err(io("reading a folder to swap"))? {
        let entry = entry.map_err(io("reading a folder to swap"))?;
        if special(&entry.file_name()) {
            continue;
        }
        std::fs::rename(entry.path(), to.join(entry.file_name()))
            .map_err(io("moving data during the swap"))?;
        if std::mem::take(&mut first) && after_first() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Replaces the contents of `live` with those of `staged` (renames only,
/// so on one filesystem; the folder itself stays, as it may be a mount
/// point). Files are renamed over. A folder's swap is recorded in
/// `journal` (a folder) while it runs. `pause_at` (test hooks only) stops
/// after the first rename of that phase.
fn swap_in(
    live: &Path,
    staged: &Path,
    stagings: &[PathBuf],
    journal: &Path,
    pause_at: Option<&str>,
) -> Outcome<SwapEnd> {
    let meta = std::fs::symlink_metadata(staged).map_err(io("reading restored data"))?;
    if !meta.is_dir() {
        std::fs::rename(staged, live).map_err(io("putting a restored file in place"))?;
        return Ok(SwapEnd::Done);
    }
    if !live.exists() {
        if let Some(parent) = live.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating a folder"))?;
        }
        std::fs::rename(staged, live).map_err(io("putting a restored folder in place"))?;
        return Ok(SwapEnd::Done);
    }
    std::fs::create_dir_all(journal).map_err(io("recording a swap"))?;
    let record_path = journal.join(format!("{:016x}.json", rand::random::<u64>()));
    let mut record = SwapRecord {
        live: live.to_path_buf(),
        staged: staged.to_path_buf(),
        stagings: stagings.to_vec(),
        phase: SwapPhase::Aside,
    };
    let old = live.join(OLD);
    let _ = std::fs::remove_dir_all(&old);
    std::fs::create_dir(&old).map_err(io("preparing the swap"))?;
    write_record(&record_path, &record)?;
    let paused = |phase: SwapPhase| move || pause_at == Some(phase.as_str());
    if move_entries(live, &old, paused(SwapPhase::Aside))? {
        return Ok(SwapEnd::Paused);
    }
    record.phase = SwapPhase::In;
    write_record(&record_path, &record)?;
    if move_entries(staged, live, paused(SwapPhase::In))? {
        return Ok(SwapEnd::Paused);
    }
    finish_swap(&record, &meta)?;
    std::fs::remove_file(&record_path).map_err(io("recording a swap"))?;
    Ok(SwapEnd::Done)
}

/// The end of a swap once every restored entry is in: the folder's mode
/// and owner as restored, the old data removed.
fn finish_swap(record: &SwapRecord, meta: &std::fs::Metadata) -> Outcome<()> {
    let live = &record.live;
    std::fs::set_permissions(live, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io("setting the folder's mode"))?;
    let _ = nix::unistd::chown(
        live,
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
    );
    std::fs::remove_dir_all(live.join(OLD)).map_err(io("removing the old data"))
}

/// At start: finishes the swaps a killed daemon left recorded in
/// `journal` (every restored entry was verified before the swap began),
/// or undoes those that were still moving the old data aside. Returns the
/// folders put right.
pub(super) fn recover_swaps(journal: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(journal) else {
        return Vec::new();
    };
    let mut recovered = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let record: SwapRecord = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(record) => record,
            Err(e) => {
                tracing::error!("unreadable swap record {}: {e}", path.display());
                continue;
            }
        };
        let result = match record.phase {
            SwapPhase::Aside => move_entries(&record.live.join(OLD), &record.live, || false)
                .and_then(|_| {
                    std::fs::remove_dir(record.live.join(OLD)).map_err(io("undoing a swap"))
                }),
            SwapPhase::In => std::fs::symlink_metadata(&record.staged)
                .map_err(io("reading restored data"))
                .and_then(|meta| {
                    move_entries(&record.staged, &record.live, || false)?;
                    finish_swap(&record, &meta)
                }),
        };
        match result {
            Ok(()) => {
                tracing::warn!(
                    folder = %record.live.display(),
                    phase = record.phase.as_str(),
                    "an interrupted restore's swap was {}",
                    if record.phase == SwapPhase::In { "finished" } else { "undone" }
                );
                for staging in &record.stagings {
                    let _ = std::fs::remove_dir_all(staging);
                }
                let _ = std::fs::remove_file(&path);
                recovered.push(record.live);
            }
            Err(e) => tracing::error!(
                "recovering the swap of {}: {}",
                record.live.display(),
                e.message.en
            ),
        }
    }
    recovered
}

/// Empties `folder` (keeps the folder itself).
fn clear(folder: &Path) -> Outcome<()> {
    if !folder.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(folder).map_err(io("reading a folder"))? {
        let path = entry.map_err(io("reading a folder"))?.path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(io("clearing a folder"))?;
    }
    Ok(())
}

impl Backups {
    /// Starts restoring a snapshot into its service as a job: refused at
    /// once (409) while a backup, restore or move of that service runs.
    pub async fn start_restore(
        self: &Arc<Self>,
        snapshot_id: &str,
        strategy: Strategy,
    ) -> Outcome<Job> {
        let entry = self.find_snapshot(snapshot_id).await?;
        let target = self.restore_target(&entry.service)?;
        let lease = self
            .locks
            .try_acquire(&entry.service, ServiceOperation::Restore)?;
        let job = self.jobs.create(
            &format!("backups.{}.restore", entry.service),
            Text::new(
                format!("Restore of {}", target.name),
                format!("Восстановление: {}", target.name),
            ),
            Text::new(
                format!("Restoring {} from snapshot {}", target.name, entry.id),
                format!("Восстановление {} из снимка {}", target.name, entry.id),
            ),
        )?;
        let this = self.clone();
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let outcome = this.restore_now(&target, &entry, strategy, &uid).await;
            drop(lease);
            let _ = this.reload_snapshots().await;
            this.finish(&uid, outcome.map(|()| format!("Restored {}", entry.id)));
        });
        Ok(job)
    }

    /// The service a snapshot is restored into: the catalogue's entry (its
    /// folders now), or only what the snapshot holds for a service the
    /// catalogue no longer has.
    fn restore_target(&self, service: &str) -> Outcome<Target> {
        self.target(service)
    }

    /// Restores every service's latest snapshot, then the server's settings.
    pub fn start_restore_all(self: &Arc<Self>) -> Outcome<Job> {
        self.restic()?;
        let job = self.jobs.create(
            "backups.restore_all",
            Text::new(
                "Restore of the whole server",
                "Восстановление всего сервера",
            ),
            Text::new(
                "Restoring every service and the server's settings from their latest snapshots",
                "Восстановление всех сервисов и настроек сервера из последних снимков",
            ),
        )?;
        let this = self.clone();
        let uid = job.uid.clone();
        tokio::spawn(async move {
            let outcome = this.run_restore_all(&uid).await;
            this.finish(&uid, outcome);
        });
        Ok(job)
    }

    async fn run_restore_all(&self, job: &str) -> Outcome<String> {
        self.reload_snapshots().await?;
        let snapshots = self.snapshots()?;
        // Services first, the server's settings last (they say which
        // services are enabled).
        let mut ids: Vec<String> = self
            .all_targets()
            .into_iter()
            .filter(|id| snapshots.iter().any(|s| &s.service == id))
            .collect();
        ids.sort_by_key(|id| id == super::SELF_SERVICE_ID);
        let mut failed = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let percent = (n * 100 / ids.len().max(1)) as i32;
            self.progress(
                job,
                percent,
                &format!("Restoring {id}"),
                &format!("Восстановление: {id}"),
            );
            let latest = snapshots
                .iter()
                .filter(|s| &s.service == id && s.reason != Reason::PreRestore)
                .max_by_key(|s| s.created_at)
                .or_else(|| {
                    snapshots
                        .iter()
                        .filter(|s| &s.service == id)
                        .max_by_key(|s| s.created_at)
                });
            let Some(latest) = latest else { continue };
            let done = async {
                let target = self.target(id)?;
                let _lease = self.locks.try_acquire(id, ServiceOperation::Restore)?;
                self.restore_now(&target, latest, Strategy::DownloadVerifyOverwrite, job)
                    .await
            }
            .await;
            if let Err(e) = done {
                failed.push(format!("{id} ({})", e.message.en));
            }
        }
        // The restored userdata (enabled modules, their options, users,
        // SSH keys) takes effect through a rebuild.
        let settings_restored = ids.iter().any(|id| id == super::SELF_SERVICE_ID)
            && !failed.iter().any(|f| f.starts_with(super::SELF_SERVICE_ID));
        let mut result = format!("{} restored", ids.len());
        if settings_restored && let Some(rebuilds) = &self.rebuilds {
            match rebuilds.start(RebuildKind::Rebuild) {
                Ok(accepted) => {
                    result.push_str(&format!(
                        "; a rebuild applies the server's settings (job {})",
                        accepted.job.uid
                    ));
                }
                Err(e) => failed.push(format!("rebuild ({})", e.message.en)),
            }
        }
        if failed.is_empty() {
            Ok(result)
        } else {
            Err(Failure::internal("restoring", failed.join("; ")))
        }
    }

    /// The restore itself; the caller holds the service's lease.
    async fn restore_now(
        &self,
        target: &Target,
        entry: &SnapshotEntry,
        strategy: Strategy,
        job: &str,
    ) -> Outcome<()> {
        let restic = self.restic()?;
        self.progress(job, 0, "Reading the snapshot", "Чтение снимка");
        let snapshot = restic
            .snapshots()
            .await
            .map_err(|e| restic_failure("Listing snapshots", e))?
            .into_iter()
            .find(|s| s.id.starts_with(&entry.id))
            .ok_or_else(|| Failure::not_found("Snapshot not found", "Снимок не найден"))?;
        let dump_suffix = Path::new("dumps").join(&target.id);
        let (dumps, folders): (Vec<PathBuf>, Vec<PathBuf>) = snapshot
            .paths
            .iter()
            .map(PathBuf::from)
            .partition(|p| p.ends_with(&dump_suffix));
        if strategy == Strategy::DownloadVerifyOverwrite {
            let size = restic
                .restore_size(&entry.id)
                .await
                .map_err(|e| restic_failure("Measuring the snapshot", e))?;
            for path in folders.iter().chain([&self.files.dumps()]) {
                if let Some(free) = free_bytes(path)
                    && free < size
                {
                    return Err(Failure::conflict(
                        format!(
                            "Not enough free space next to {}: {size} bytes needed, {free} free. Free some space, or restore in place",
                            path.display()
                        ),
                        format!(
                            "Недостаточно места рядом с {}: нужно {size} байт, свободно {free}. Освободите место или восстановите на месте",
                            path.display()
                        ),
                    ));
                }
            }
        }
        if strategy == Strategy::Inplace {
            self.progress(job, 5, "Taking a snapshot first", "Предварительный снимок");
            let pre = self.backup_now(target, Reason::PreRestore, job).await?;
            return self
                .restore_in_place(target, &restic, &entry.id, &pre, &folders, &dumps, job)
                .await;
        }
        let stopped = self.stop_units(target).await?;
        let restored = self
            .restore_staged(target, &restic, &entry.id, &folders, &dumps, job)
            .await;
        let started = self.start_units(&target.id, &stopped).await;
        restored?;
        started
    }

    /// DOWNLOAD_VERIFY_OVERWRITE: every path is downloaded (restic
    /// verifies each file it writes) beside the live data; only when all
    /// are complete are the databases loaded and the folders swapped in.
    async fn restore_staged(
        &self,
        target: &Target,
        restic: &Restic,
        snapshot: &str,
        folders: &[PathBuf],
        dumps: &[PathBuf],
        job: &str,
    ) -> Outcome<()> {
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let dump_staging = self.files.dumps().join(format!(".restore-{}", target.id));
        let cleanup = |staged: &[(PathBuf, PathBuf)]| {
            for (_, staging) in staged {
                let _ = std::fs::remove_dir_all(staging);
            }
            let _ = std::fs::remove_dir_all(&dump_staging);
        };
        let total = folders.len() + dumps.len();
        for (n, folder) in folders.iter().enumerate() {
            let percent = 10 + (n * 80 / total.max(1)) as i32;
            self.progress(
                job,
                percent,
                &format!("Downloading {}", folder.display()),
                &format!("Загрузка {}", folder.display()),
            );
            let staging = staging_for(folder);
            let _ = std::fs::remove_dir_all(&staging);
            staged.push((folder.clone(), staging.clone()));
            if let Err(e) = restic
                .restore(snapshot, &staging, std::slice::from_ref(folder))
                .await
            {
                cleanup(&staged);
                return Err(restic_failure("The restore (nothing was changed)", e));
            }
        }
        if !dumps.is_empty() {
            self.files.prepare()?;
            let _ = std::fs::remove_dir_all(&dump_staging);
            if let Err(e) = restic.restore(snapshot, &dump_staging, dumps).await {
                cleanup(&staged);
                return Err(restic_failure("The restore (nothing was changed)", e));
            }
        }
        self.progress(
            job,
            90,
            "Putting the restored data in place",
            "Замена данных",
        );
        // Databases first: each is loaded beside the live one and renamed
        // over it only once complete.
        for dump in dumps {
            if let Err(e) = self.load_dumps(&under(&dump_staging, dump)).await {
                cleanup(&staged);
                return Err(e);
            }
        }
        let mut result = Ok(());
        let stagings: Vec<PathBuf> = staged.iter().map(|(_, staging)| staging.clone()).collect();
        for (folder, staging) in &staged {
            let restored = under(staging, folder);
            if result.is_ok() {
                match swap_in(
                    folder,
                    &restored,
                    &stagings,
                    &self.files.swaps(),
                    self.test_pause_restore_swap.as_deref(),
                ) {
                    Ok(SwapEnd::Done) => {}
                    Ok(SwapEnd::Paused) => {
                        tracing::warn!("test hook: restore paused for good in its swap");
                        self.progress(
                            job,
                            95,
                            "TEST HOOK: paused in the swap",
                            "TEST HOOK: paused in the swap",
                        );
                        std::future::pending::<()>().await;
                    }
                    Err(e) => result = Err(e),
                }
            }
        }
        cleanup(&staged);
        result
    }

    /// Loads every `<db>.dump` in `dir` into its database.
    async fn load_dumps(&self, dir: &Path) -> Outcome<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Failure::internal("reading restored dumps", e)),
        };
        for entry in entries {
            let path = entry.map_err(io("reading restored dumps"))?.path();
            let Some(db) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".dump"))
            else {
                continue;
            };
            self.postgres
                .restore(db, &path)
                .await
                .map_err(|e| restic_failure(&format!("Restoring database {db}"), e))?;
        }
        Ok(())
    }

    /// INPLACE: the live data is replaced directly; on failure the
    /// PRE_RESTORE snapshot just taken is put back.
    #[allow(clippy::too_many_arguments)]
    async fn restore_in_place(
        &self,
        target: &Target,
        restic: &Restic,
        snapshot: &str,
        pre_restore: &str,
        folders: &[PathBuf],
        dumps: &[PathBuf],
        job: &str,
    ) -> Outcome<()> {
        let stopped = self.stop_units(target).await?;
        self.progress(job, 40, "Restoring in place", "Восстановление на месте");
        let replace = |from: String| async move {
            for folder in folders {
                clear(folder)?;
                restic
                    .restore(&from, Path::new("/"), std::slice::from_ref(folder))
                    .await
                    .map_err(|e| restic_failure("The restore", e))?;
            }
            Ok::<(), Failure>(())
        };
        let mut result = replace(snapshot.to_owned()).await;
        if result.is_ok() && !dumps.is_empty() {
            let staging = self.files.dumps().join(format!(".restore-{}", target.id));
            let _ = std::fs::remove_dir_all(&staging);
            result = match restic.restore(snapshot, &staging, dumps).await {
                Ok(()) => {
                    let mut loaded = Ok(());
                    for dump in dumps {
                        if loaded.is_ok() {
                            loaded = self.load_dumps(&under(&staging, dump)).await;
                        }
                    }
                    loaded
                }
                Err(e) => Err(restic_failure("The restore", e)),
            };
            let _ = std::fs::remove_dir_all(&staging);
        }
        if let Err(failure) = result {
            tracing::error!("in-place restore failed, putting back {pre_restore}");
            let rolled_back = replace(pre_restore.to_owned()).await;
            let _ = self.start_units(&target.id, &stopped).await;
            return Err(match rolled_back {
                Ok(()) => Failure::new(
                    failure.kind,
                    Text::new(
                        format!(
                            "{} The data from before the restore was put back.",
                            failure.message.en
                        ),
                        format!(
                            "{} Данные до восстановления возвращены.",
                            failure.message.get(crate::domain::i18n::Locale::Ru)
                        ),
                    ),
                ),
                Err(_) => Failure::new(
                    failure.kind,
                    Text::new(
                        format!(
                            "{} Putting back the data failed too: restore snapshot {pre_restore}.",
                            failure.message.en
                        ),
                        format!(
                            "{} Вернуть данные тоже не удалось: восстановите снимок {pre_restore}.",
                            failure.message.get(crate::domain::i18n::Locale::Ru)
                        ),
                    ),
                ),
            });
        }
        self.start_units(&target.id, &stopped).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapping_replaces_contents_and_keeps_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        std::fs::create_dir_all(live.join("sub")).unwrap();
        std::fs::write(live.join("old.txt"), "old").unwrap();
        let staging = live.join(STAGING);
        let staged = under(&staging, &live);
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(staged.join("new.txt"), "new").unwrap();
        let inode = std::fs::metadata(&live).unwrap().ino();
        let journal = dir.path().join("swaps");
        assert_eq!(
            swap_in(
                &live,
                &staged,
                std::slice::from_ref(&staging),
                &journal,
                None
            )
            .unwrap(),
            SwapEnd::Done
        );
        assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&staging);
        let mut names: Vec<_> = std::fs::read_dir(&live)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["new.txt"]);
        assert_eq!(
            std::fs::metadata(&live).unwrap().ino(),
            inode,
            "same folder"
        );
    }
}
