//! Writing files so that a crash never leaves a half-written one: a temp
//! file beside the target, fsync, rename over it, fsync the directory.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` with `bytes`. The file keeps its permission bits, or
/// gets `new_mode` if it did not exist.
pub fn write_atomically(path: &Path, bytes: &[u8], new_mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(new_mode);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique per write: two writers never share a temp file.
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Copies `from` over `to` atomically.
pub fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(from)?;
    write_atomically(to, &bytes, 0o600)
}

/// The first existing component of `path` (absolute) that is a symlink, if
/// any: a path the owner typed that a link would lead somewhere else.
pub fn first_symlink(path: &Path) -> Option<std::path::PathBuf> {
    let mut so_far = std::path::PathBuf::new();
    for component in path.components() {
        so_far.push(component);
        match std::fs::symlink_metadata(&so_far) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(so_far),
            Ok(_) => {}
            // Nothing further exists, so nothing further is a link.
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod symlink_tests {
    use super::first_symlink;

    #[test]
    fn a_link_anywhere_on_the_path_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        assert_eq!(first_symlink(&real.join("repo")), None);
        assert_eq!(
            first_symlink(&dir.path().join("link/x/y")),
            Some(dir.path().join("link"))
        );
        assert_eq!(first_symlink(&dir.path().join("missing/link")), None);
    }
}
