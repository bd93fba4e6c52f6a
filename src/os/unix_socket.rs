//! Unix sockets that are never reachable with a wider mode than meant.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;

/// Binds a socket for `path` in a fresh 0700 directory beside it, gives it
/// `mode` (and group `gid`) there, then renames it into place: no one can
/// connect before its owner and mode are final. (Setting them after binding
/// in place would leave it open to what the umask allowed meanwhile.)
pub fn bind_staged(
    path: &Path,
    mode: u32,
    gid: Option<nix::unistd::Gid>,
) -> anyhow::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| anyhow::anyhow!("{}: no directory", path.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{name}-{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let bound = (|| {
        let staged = staging.join("sock");
        let listener = UnixListener::bind(&staged)?;
        if let Some(gid) = gid {
            nix::unistd::chown(&staged, None, Some(gid))?;
        }
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        anyhow::Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn the_socket_lands_with_its_mode_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _listener = bind_staged(&path, 0o660, Some(nix::unistd::getgid())).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), nix::unistd::getgid().as_raw());
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "the staging directory is removed");
        tokio::net::UnixStream::connect(&path).await.unwrap();
    }
}
