//! Copying a data folder to another volume, checking the copy against the
//! original, and removing a tree. The copy is `cp -a` (GNU coreutils):
//! ownership, modes, times, symlinks, hard links, sparse files and
//! extended attributes are kept, at the speed of the tool people compare
//! against. The check is ours: it reads both trees and compares every
//! entry, so a copy is only trusted once it has been read back.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cp failed: {0}")]
    Copy(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the copy differs from the original at {path}: {what}")]
    Differs { path: PathBuf, what: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the folder `from` to `to` (which must not exist) with `cp -a`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), CopyError> {
    let output = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from)
        .arg(to)
        .output()
        .map_err(io(from))?;
    if output.status.success() {
        Ok(())
    } else {
        // The first lines say why; a thousand more would only repeat it.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        let mut said = lines.iter().take(3).copied().collect::<Vec<_>>().join("\n");
        if lines.len() > 3 {
            said.push_str(&format!("\n({} more lines)", lines.len() - 3));
        }
        Err(CopyError::Copy(said))
    }
}

/// Bytes the tree takes on disk (allocated blocks: a sparse file counts
/// what it really holds; each hard-linked file once). Missing: 0.
pub fn allocated_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = dir.symlink_metadata() else {
            continue;
        };
        total += meta.blocks() * 512;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Checks that `copy` holds exactly what `original` holds: the same
/// entries, types, modes, owners, modification times of files, symlink
/// targets, extended attributes, contents, and the same hard links.
/// `done` is told the bytes compared so far.
pub fn verify_tree(
    original: &Path,
    copy: &Path,
    mut done: impl FnMut(u64),
) -> Result<(), CopyError> {
    let mut compared = 0u64;
    // One pair of buffers for the whole tree: zeroing fresh ones per file
    // cost more than the reading itself on trees of small files.
    let mut buffers = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    // Hard links: an inode of the original maps to one inode of the copy.
    let mut links: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let a = original.join(&relative);
        let b = copy.join(&relative);
        let meta_a = a.symlink_metadata().map_err(io(&a))?;
        let meta_b = b.symlink_metadata().map_err(|_| CopyError::Differs {
            path: b.clone(),
            what: "missing".into(),
        })?;
        compare_meta(&b, &meta_a, &meta_b, !relative.as_os_str().is_empty())?;
        compare_xattrs(&a, &b)?;
        let kind = meta_a.file_type();
        if kind.is_dir() {
            let names_a = sorted_names(&a)?;
            let names_b = sorted_names(&b)?;
            if names_a != names_b {
                return Err(CopyError::Differs {
                    path: b,
                    what: "the folder's entries differ".into(),
                });
            }
            stack.extend(names_a.into_iter().map(|name| relative.join(name)));
        } else if kind.is_symlink() {
            if std::fs::read_link(&a).map_err(io(&a))? != std::fs::read_link(&b).map_err(io(&b))? {
                return Err(CopyError::Differs {
                    path: b,
                    what: "symlink target".into(),
                });
            }
        } else if kind.is_file() {
            if meta_a.nlink() > 1 {
                let seen = links
                    .entry((meta_a.dev(), meta_a.ino()))
                    .or_insert((meta_b.dev(), meta_b.ino()));
                if *seen != (meta_b.dev(), meta_b.ino()) {
                    return Err(CopyError::Differs {
                        path: b,
                        what: "a hard link became a separate file".into(),
                    });
                }
            }
            compare_contents(&a, &b, &mut buffers)?;
            compared += meta_a.len();
            done(compared);
        }
    }
    Ok(())
}

fn compare_meta(
    path: &Path,
    a: &std::fs::Metadata,
    b: &std::fs::Metadata,
    check_times: bool,
) -> Result<(), CopyError> {
    let differs = |what: &str| CopyError::Differs {
        path: path.to_path_buf(),
        what: what.to_owned(),
    };
    let (ta, tb) = (a.file_type(), b.file_type());
    let same_kind = ta.is_dir() == tb.is_dir()
        && ta.is_file() == tb.is_file()
        && ta.is_symlink() == tb.is_symlink()
        && ta.is_fifo() == tb.is_fifo()
        && ta.is_socket() == tb.is_socket()
        && ta.is_block_device() == tb.is_block_device()
        && ta.is_char_device() == tb.is_char_device();
    if !same_kind {
        return Err(differs("type"));
    }
    if a.mode() != b.mode() {
        return Err(differs(&format!("mode {:o} != {:o}", a.mode(), b.mode())));
    }
    if (a.uid(), a.gid()) != (b.uid(), b.gid()) {
        return Err(differs("owner"));
    }
    if ta.is_file() && a.len() != b.len() {
        return Err(differs("size"));
    }
    if ta.is_file() && check_times && (a.mtime(), a.mtime_nsec()) != (b.mtime(), b.mtime_nsec()) {
        return Err(differs("modification time"));
    }
    if (ta.is_block_device() || ta.is_char_device()) && a.rdev() != b.rdev() {
        return Err(differs("device number"));
    }
    Ok(())
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, CopyError> {
    let mut names = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(dir))?;
    names.sort();
    Ok(names)
}

/// Compares two files of equal length. Only the ranges where either holds
/// data are read: elsewhere both are holes, which read as zeros (a sparse
/// disk image is mostly holes).
fn compare_contents(
    a: &Path,
    b: &Path,
    (ba, bb): &mut (Vec<u8>, Vec<u8>),
) -> Result<(), CopyError> {
    use std::io::{Seek, SeekFrom};
    let mut fa = std::fs::File::open(a).map_err(io(a))?;
    let mut fb = std::fs::File::open(b).map_err(io(b))?;
    let len = fa.metadata().map_err(io(a))?.len();
    let mut ranges = data_ranges(&fa, len).map_err(io(a))?;
    ranges.extend(data_ranges(&fb, len).map_err(io(b))?);
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let differs = || CopyError::Differs {
        path: b.to_path_buf(),
        what: "contents".into(),
    };
    for (start, end) in merged {
        fa.seek(SeekFrom::Start(start)).map_err(io(a))?;
        fb.seek(SeekFrom::Start(start)).map_err(io(b))?;
        let mut left = end - start;
        while left > 0 {
            let want = left.min(ba.len() as u64) as usize;
            let na = read_full(&mut fa, &mut ba[..want]).map_err(io(a))?;
            let nb = read_full(&mut fb, &mut bb[..want]).map_err(io(b))?;
            if na != nb || ba[..na] != bb[..nb] {
                return Err(differs());
            }
            if na < want {
                break; // both ended early (the file shrank meanwhile)
            }
            left -= want as u64;
        }
    }
    Ok(())
}

/// The byte ranges of `file` that hold data (SEEK_DATA/SEEK_HOLE), or the
/// whole file where the filesystem cannot tell.
fn data_ranges(file: &std::fs::File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut offset: i64 = 0;
    while (offset as u64) < len {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
        if data < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENXIO) => Ok(ranges), // no data after offset
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(vec![(0, len)]),
                _ => Err(error),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ranges.push((data as u64, (hole as u64).min(len)));
        offset = hole;
    }
    Ok(ranges)
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The extended attributes of `path` itself (a symlink's own), sorted.
pub fn xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: the path is NUL-terminated; a null buffer of size 0 asks
    // for the size only.
    let size = unsafe { libc::llistxattr(c_path.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let error = std::io::Error::last_os_error();
        // A filesystem without xattrs has none.
        return if error.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(error)
        };
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: the buffer is `names.len()` bytes long.
    let size = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(std::io::Error::last_os_error());
    }
    names.truncate(size as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(name)?;
        // SAFETY: as above, size query with a null buffer.
        let len =
            unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: the buffer is `value.len()` bytes long.
        let len = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            return Err(std::io::Error::last_os_error());
        }
        value.truncate(len as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

fn compare_xattrs(a: &Path, b: &Path) -> Result<(), CopyError> {
    if xattrs(a).map_err(io(a))? != xattrs(b).map_err(io(b))? {
        return Err(CopyError::Differs {
            path: b.to_path_buf(),
            what: "extended attributes".into(),
        });
    }
    Ok(())
}

/// Writes everything of the filesystem holding `path` to disk (syncfs):
/// the old copy is removed only once the new one is durable.
pub fn sync_filesystem(path: &Path) -> Result<(), CopyError> {
    let dir = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: a valid open descriptor, borrowed for the call.
    let done = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    if done == 0 {
        Ok(())
    } else {
        Err(io(path)(std::io::Error::last_os_error()))
    }
}

/// Removes a tree; a missing one is already gone.
pub fn remove_tree(path: &Path) -> Result<(), CopyError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CopyError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Gives the folder itself (not its contents, whose owners were copied
/// as they were) to `user:group`.
pub fn set_owner(path: &Path, user: &str, group: &str) -> Result<(), String> {
    let uid = nix::unistd::User::from_name(user)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no user {user}"))?
        .uid;
    let gid = nix::unistd::Group::from_name(group)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no group {group}"))?
        .gid;
    nix::unistd::chown(path, Some(uid), Some(gid)).map_err(|e| format!("{}: {e}", path.display()))
}

/// A name fit to be one path component: not empty, not `.`/`..`, no `/`.
pub fn is_plain_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && bytes != b"." && bytes != b".." && !bytes.contains(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample(dir: &Path) {
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        std::fs::write(dir.join("a.txt"), b"hello").unwrap();
        std::fs::write(dir.join("sub/deeper/b.bin"), vec![7u8; 300_000]).unwrap();
        std::fs::hard_link(dir.join("a.txt"), dir.join("sub/a-link")).unwrap();
        std::os::unix::fs::symlink("../a.txt", dir.join("sub/sym")).unwrap();
        std::fs::set_permissions(dir.join("a.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        let sparse = std::fs::File::create(dir.join("sparse")).unwrap();
        sparse.set_len(50 << 20).unwrap();
    }

    #[test]
    fn a_copy_verifies_and_any_difference_is_found() {
        let root = tempfile::tempdir().unwrap();
        let original = root.path().join("data");
        sample(&original);
        let copy = root.path().join("copy");
        copy_tree(&original, &copy).unwrap();
        let mut seen = 0;
        verify_tree(&original, &copy, |n| seen = n).unwrap();
        assert_eq!(seen, 5 + 300_000 + 5 + (50 << 20));
        // The sparse file stayed sparse.
        assert!(allocated_size(&copy.join("sparse")) < 1 << 20);

        std::fs::write(copy.join("sub/deeper/b.bin"), vec![8u8; 300_000]).unwrap();
        let err = verify_tree(&original, &copy, |_| {}).unwrap_err();
        assert!(err.to_string().contains("modification time"), "{err}");
        // Same size and time, other bytes: found by reading.
        let touched = Command::new("touch")
            .arg("-r")
            .arg(original.join("sub/deeper/b.bin"))
            .arg(copy.join("sub/deeper/b.bin"))
            .status()
            .unwrap();
        assert!(touched.success());
        let err = verify_tree(&original, &copy, |_| {}).unwrap_err();
        assert!(err.to_string().contains("contents"), "{err}");
        std::fs::write(copy.join("sub/deeper/b.bin"), vec![7u8; 300_000]).unwrap();
        let touched = Command::new("touch")
            .arg("-r")
            .arg(original.join("sub/deeper/b.bin"))
            .arg(copy.join("sub/deeper/b.bin"))
            .status()
            .unwrap();
        assert!(touched.success());

        std::fs::set_permissions(copy.join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = verify_tree(&original, &copy, |_| {}).unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
        std::fs::set_permissions(
            copy.join("sub"),
            std::fs::Permissions::from_mode(
                std::fs::metadata(original.join("sub")).unwrap().mode(),
            ),
        )
        .unwrap();

        // Data where the original has a hole is found too.
        {
            use std::io::{Seek, Write};
            let mut sparse = std::fs::OpenOptions::new()
                .write(true)
                .open(copy.join("sparse"))
                .unwrap();
            sparse.seek(std::io::SeekFrom::Start(30 << 20)).unwrap();
            sparse.write_all(b"not a hole").unwrap();
        }
        let touched = Command::new("touch")
            .arg("-r")
            .arg(original.join("sparse"))
            .arg(copy.join("sparse"))
            .status()
            .unwrap();
        assert!(touched.success());
        let err = verify_tree(&original, &copy, |_| {}).unwrap_err();
        assert!(err.to_string().contains("contents"), "{err}");
        std::fs::remove_file(copy.join("sparse")).unwrap();
        std::fs::File::create(copy.join("sparse"))
            .unwrap()
            .set_len(50 << 20)
            .unwrap();
        let touched = Command::new("touch")
            .arg("-r")
            .arg(original.join("sparse"))
            .arg(copy.join("sparse"))
            .status()
            .unwrap();
        assert!(touched.success());
        verify_tree(&original, &copy, |_| {}).unwrap();

        std::fs::remove_file(copy.join("sub/sym")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", copy.join("sub/sym")).unwrap();
        let err = verify_tree(&original, &copy, |_| {}).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        std::fs::remove_file(copy.join("sub/sym")).unwrap();

        let err = verify_tree(&original, &copy, |_| {}).unwrap_err();
        assert!(err.to_string().contains("entries"), "{err}");

        remove_tree(&copy).unwrap();
        remove_tree(&copy).unwrap();
        assert!(!copy.exists());
        assert!(is_plain_name(OsStr::new("notes")));
        assert!(!is_plain_name(OsStr::new("..")));
        assert!(!is_plain_name(OsStr::new("a/b")));
    }
}
