//! The tz database on disk: which timezone names the system knows.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where NixOS (`/etc/zoneinfo`) and Debian keep the tz database.
const KNOWN_DIRS: [&str; 2] = ["/etc/zoneinfo", "/usr/share/zoneinfo"];

/// The configured directory, else the first known one that exists.
pub fn database_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    KNOWN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from(KNOWN_DIRS[0]))
}

/// True if `name` (`Europe/Berlin`, `Etc/UTC`) is a zone of the database in
/// `dir`: a relative path of plain name parts whose file is a TZif file.
pub fn is_zone(dir: &Path, name: &str) -> bool {
    let plain_parts = !name.is_empty()
        && name.len() <= 64
        && name.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        });
    if !plain_parts {
        return false;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(dir.join(name))
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"TZif")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_real_zones_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Europe")).unwrap();
        std::fs::write(dir.path().join("Europe/Berlin"), b"TZif2\0\0").unwrap();
        std::fs::write(dir.path().join("zone.tab"), b"# not a zone").unwrap();
        assert!(is_zone(dir.path(), "Europe/Berlin"));
        for bad in [
            "",
            "Europe",
            "Europe/Nowhere",
            "zone.tab",
            "../Europe/Berlin",
            "/Europe/Berlin",
            "Europe//Berlin",
            "Europe/Berlin ",
            "Europe/Berlin\n",
        ] {
            assert!(!is_zone(dir.path(), bad), "{bad:?}");
        }
    }

    #[test]
    fn the_hosts_database_has_utc() {
        let dir = database_dir(None);
        if dir.is_dir() {
            assert!(is_zone(&dir, "Etc/UTC"));
            assert!(is_zone(&dir, "Europe/Moscow"));
            assert!(!is_zone(&dir, "Mars/Olympus_Mons"));
        }
    }
}
