//! What the server runs: the NixOS version, this daemon's own build, the
//! hosting provider, and whether it is busy.

use crate::domain::jobs::{JobRegistry, JobStatus};
use crate::domain::system::rebuild::Rebuilds;
use serde_json::Value;
use std::path::Path;

/// This daemon's name, version and the Rust compiler it was built with
/// (the app shows it where the Python API gave its Python version).
pub fn daemon_build() -> String {
    format!(
        "{} {} ({})",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        env!("SELFPRIVACY_API_RUSTC_VERSION")
    )
}

/// `PRETTY_NAME` of an os-release file.
fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = value.trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The running system: `NixOS <version>` from the current system's
/// `nixos-version`, else the os-release file's name.
pub fn system_version(nixos_version_file: &Path, os_release_file: &Path) -> Option<String> {
    if let Ok(version) = std::fs::read_to_string(nixos_version_file) {
        let version = version.trim();
        if !version.is_empty() {
            return Some(format!("NixOS {version}"));
        }
    }
    pretty_name(&std::fs::read_to_string(os_release_file).ok()?)
}

/// Hosting providers as the app names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Hetzner,
    Digitalocean,
    Other,
}

/// `server.provider` of userdata (the installer writes HETZNER or
/// DIGITALOCEAN), and the server's id there if it has one.
pub fn provider(userdata: &Value) -> (Provider, Option<String>) {
    let provider = match userdata["server"]["provider"]
        .as_str()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("HETZNER") => Provider::Hetzner,
        Some("DIGITALOCEAN") => Provider::Digitalocean,
        _ => Provider::Other,
    };
    let id = match &userdata["server"]["id"] {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    };
    (provider, id)
}

/// `dns.provider` of userdata, upper-cased; Cloudflare when not set (the
/// installer's default).
pub fn dns_provider(userdata: &Value) -> String {
    userdata["dns"]["provider"]
        .as_str()
        .filter(|p| !p.is_empty())
        .unwrap_or("CLOUDFLARE")
        .to_ascii_uppercase()
}

/// Busy: a rebuild is scheduled or running, or any job is running.
pub fn busy(rebuilds: &Rebuilds, jobs: &JobRegistry) -> bool {
    rebuilds.is_running() || jobs.list().iter().any(|j| j.status == JobStatus::Running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_from_the_system_files() {
        let dir = tempfile::tempdir().unwrap();
        let nixos = dir.path().join("nixos-version");
        let os_release = dir.path().join("os-release");
        std::fs::write(
            &os_release,
            "NAME=NixOS\nPRETTY_NAME=\"NixOS 24.05 (Uakari)\"\n",
        )
        .unwrap();
        assert_eq!(
            system_version(&nixos, &os_release).unwrap(),
            "NixOS 24.05 (Uakari)"
        );
        std::fs::write(&nixos, "24.05.1234.abcdef\n").unwrap();
        assert_eq!(
            system_version(&nixos, &os_release).unwrap(),
            "NixOS 24.05.1234.abcdef"
        );
        assert_eq!(
            system_version(&dir.path().join("x"), &dir.path().join("y")),
            None
        );
        let build = daemon_build();
        assert!(
            build.starts_with(&format!(
                "selfprivacy-api {} (rustc 1.",
                env!("CARGO_PKG_VERSION")
            )),
            "{build}"
        );
    }

    #[test]
    fn providers_from_userdata() {
        assert_eq!(
            provider(&json!({"server": {"provider": "HETZNER", "id": 42}})),
            (Provider::Hetzner, Some("42".into()))
        );
        assert_eq!(provider(&json!({})), (Provider::Other, None));
        assert_eq!(
            dns_provider(&json!({"dns": {"provider": "desec"}})),
            "DESEC"
        );
        assert_eq!(dns_provider(&json!({})), "CLOUDFLARE");
    }
}
