//! The sp-module definitions directory (`/etc/sp-modules`): one JSON file
//! per module, named after its id, usually a symlink into the Nix store.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Identifies a file's content cheaply: Nix store files all have the same
/// mtime, so the inode and size (after following symlinks) count too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

#[derive(Debug, Clone)]
pub struct DefinitionFile {
    pub id: String,
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
}

/// The definition files in `dir`, sorted by id. A missing directory is an
/// empty catalogue. Hidden files and editor leftovers are skipped.
pub fn scan(dir: &Path) -> std::io::Result<Vec<DefinitionFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if id.starts_with('.') || id.ends_with('~') || id.ends_with(".tmp") {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling symlink
        };
        if !meta.is_file() {
            continue;
        }
        files.push(DefinitionFile {
            id,
            path,
            fingerprint: Fingerprint {
                dev: meta.dev(),
                ino: meta.ino(),
                len: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            },
        });
    }
    files.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(files)
}
