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

/// Removes the temp files [`write_atomically`] left in `dir` when their
/// process was killed between creating one and renaming it: those of this
/// process (called before it writes) or of a process that is gone. A live
/// writer's are left alone. Returns how many were removed.
pub fn remove_abandoned_temp_files_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let own_pid = std::process::id().to_string();
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(temp_file_writer) else {
            continue;
        };
        let abandoned = pid == own_pid || !Path::new("/proc").join(pid).exists();
        if abandoned && std::fs::remove_file(entry.path()).is_ok() {
            tracing::warn!(file = %entry.path().display(), "removed a temp file left by a killed writer");
            removed += 1;
        }
    }
    removed
}

/// The writer's pid, if `file_name` is one of [`write_atomically`]'s temp
/// files: `.{name}.{pid}.{16 hex digits}.tmp`.
fn temp_file_writer(file_name: &str) -> Option<&str> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, random) = inner.rsplit_once('.')?;
    let (name, pid) = rest.rsplit_once('.')?;
    let is_random = random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit());
    let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (!name.is_empty() && is_random && is_pid).then_some(pid)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandoned_temp_files_are_removed_and_a_live_writers_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("userdata.json");
        write_atomically(&target, b"{}", 0o600).unwrap();
        let own = format!(".userdata.json.{}.00000000000000aa.tmp", std::process::id());
        // pid 1 is alive; pid 2^22+1 is above the kernel's highest pid.
        let live = ".userdata.json.1.00000000000000bb.tmp";
        let gone = ".userdata.json.4194305.00000000000000cc.tmp";
        // Any file's: every atomically written file in the folder.
        let other = ".other.json.4194305.00000000000000dd.tmp";
        for name in [own.as_str(), live, gone, other] {
            std::fs::write(dir.path().join(name), b"{\"half\":").unwrap();
        }
        std::fs::write(dir.path().join(".notes.txt"), b"not ours").unwrap();
        assert_eq!(remove_abandoned_temp_files_in(dir.path()), 3);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".notes.txt", live, "userdata.json"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
    }
}
