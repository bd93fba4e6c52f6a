//! Disk facts about folders: how much they hold, and the filesystem they
//! live on (from /proc/self/mountinfo and statvfs).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes of the files under `path` (apparent sizes, symlinks not
/// followed, each hard-linked file once). A missing folder holds 0.
pub fn folder_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.file_type().is_symlink() {
                continue;
            } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// The device's name (`sda1`, `loop3`), or the source for others.
    pub name: String,
    pub fstype: String,
    pub mount_point: String,
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

/// The filesystem holding `path` (the deepest mount point above it),
/// following bind mounts to the device they come from.
pub fn filesystem_of(path: &Path) -> Option<Filesystem> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut best: Option<(usize, String, String, String)> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options... - fstype source super-options
        let mut parts = line.split(" - ");
        let (Some(left), Some(right)) = (parts.next(), parts.next()) else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fstype), Some(source)) =
            (fields.get(4), tail.first(), tail.get(1))
        else {
            continue;
        };
        let mount_point = unescape(mount_point);
        if target.starts_with(&mount_point)
            && best.as_ref().is_none_or(|b| mount_point.len() >= b.0)
        {
            best = Some((
                mount_point.len(),
                mount_point,
                fstype.to_string(),
                source.to_string(),
            ));
        }
    }
    let (_, mount_point, fstype, source) = best?;
    let stat = nix::sys::statvfs::statvfs(mount_point.as_str()).ok()?;
    let block = stat.fragment_size();
    let total = stat.blocks() * block;
    let free = stat.blocks_available() * block;
    let used = total.saturating_sub(stat.blocks_free() * block);
    let name = source.strip_prefix("/dev/").unwrap_or(&source).to_owned();
    Some(Filesystem {
        name,
        fstype,
        mount_point,
        total,
        free,
        used,
    })
}

/// Whether something is mounted on `path` itself (a bind mount of a
/// folder of the same filesystem included, which `st_dev` cannot tell).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|field| Path::new(&unescape(field)) == path)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&code, 8) {
                out.push(byte as char);
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_files_once_and_the_root_filesystem_is_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![0u8; 24]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("sub/a-again")).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        assert_eq!(folder_size(dir.path()), 1024);
        assert_eq!(folder_size(&dir.path().join("missing")), 0);
        let fs = filesystem_of(Path::new("/")).unwrap();
        assert_eq!(fs.mount_point, "/");
        assert!(fs.total > 0 && fs.used <= fs.total);
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
    }
}
