//! Storage: the server's volumes (read fresh on each query), mounting,
//! unmounting and growing them, and moving a service's data between them
//! (`moves`).

pub mod binds;
pub mod moves;

use super::error::{Failure, FailureKind, Outcome};
use super::i18n::Text;
use super::jobs::JobRegistry;
use super::services::catalogue::Catalogue;
use super::system::changes::UserdataChange;
use super::system::rebuild::{Accepted, ConfigChange, Rebuilds};
use crate::os::blockdev::{self, BlockDevice};
use crate::os::systemd::SystemdLink;
use crate::os::userdata::UserdataFile;
use crate::state::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where volumes are mounted: `/volumes/<name>`.
pub const VOLUMES_DIR: &str = "/volumes";

/// A volume: an ext4 block device with a UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    /// As userdata names it: the `<name>` of its `/volumes/<name>` mount,
    /// else the kernel's name (`sdb`).
    pub name: String,
    pub device: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub kind: String,
    pub total: u64,
    pub free: u64,
    pub used: u64,
    pub root: bool,
    /// Where it is mounted under /volumes, if it is.
    pub mount_point: Option<PathBuf>,
}

pub struct StorageSetup {
    pub unit_timeout: Duration,
    pub rebuild_timeout: Duration,
    /// TEST SCAFFOLDING: the move step at which a move stops dead (the
    /// test then kills the daemon). Never set on a server.
    pub test_pause_move_at_step: Option<String>,
}

pub struct Storage {
    store: Arc<Store>,
    userdata: Arc<UserdataFile>,
    catalogue: Catalogue,
    systemd: Arc<SystemdLink>,
    rebuilds: Arc<Rebuilds>,
    jobs: Arc<JobRegistry>,
    setup: StorageSetup,
}

fn volume_not_found(name: &str) -> Failure {
    Failure::not_found(
        format!("No volume named {name}"),
        format!("Нет тома с именем {name}"),
    )
}

impl Storage {
    pub fn new(
        store: Arc<Store>,
        userdata: Arc<UserdataFile>,
        sp_modules_dir: PathBuf,
        systemd: Arc<SystemdLink>,
        rebuilds: Arc<Rebuilds>,
        jobs: Arc<JobRegistry>,
        setup: StorageSetup,
    ) -> Self {
        Storage {
            store,
            userdata,
            catalogue: Catalogue::new(sp_modules_dir),
            systemd,
            rebuilds,
            jobs,
            setup,
        }
    }

    /// Every volume, read now.
    pub async fn volumes(&self) -> Outcome<Vec<VolumeView>> {
        tokio::task::spawn_blocking(read_volumes)
            .await
            .map_err(|e| Failure::internal("listing volumes", e))?
    }

    async fn volume(&self, name: &str) -> Outcome<VolumeView> {
        check_volume_name(name)?;
        self.volumes()
            .await?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| volume_not_found(name))
    }

    /// Adds the volume to `userdata.volumes` (mounted at /volumes/<name>)
    /// and has a rebuild mount it.
    pub async fn mount(&self, name: &str) -> Outcome<Accepted> {
        let volume = self.volume(name).await?;
        if volume.root || volume.mount_point.is_some() {
            return Err(Failure::conflict(
                format!("Volume {name} is already mounted"),
                format!("Том {name} уже подключён"),
            ));
        }
        self.rebuilds
            .change(ConfigChange::from(UserdataChange::MountVolume {
                device: volume.device,
                name: name.to_owned(),
            }))
    }

    /// Removes the volume from `userdata.volumes` and has a rebuild unmount
    /// it; refused while a service keeps its data there.
    pub async fn unmount(&self, name: &str) -> Outcome<Accepted> {
        let volume = self.volume(name).await?;
        if volume.root {
            return Err(Failure::bad_input(
                "The system volume cannot be unmounted",
                "Системный том нельзя отключить",
            ));
        }
        let users = self.services_on(name)?;
        if !users.is_empty() {
            let list = users.join(", ");
            return Err(Failure::conflict(
                format!("Volume {name} holds the data of {list}: move them first"),
                format!("На томе {name} лежат данные сервисов {list}: сначала перенесите их"),
            ));
        }
        self.rebuilds
            .change(ConfigChange::from(UserdataChange::UnmountVolume {
                device: volume.device,
                name: name.to_owned(),
            }))
    }

    /// `userdata.useBinds`: service folders are bound from their volume.
    pub fn uses_binds(&self) -> Outcome<bool> {
        let userdata = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        Ok(userdata["useBinds"] == true)
    }

    /// The enabled services whose `location` is the volume `name`.
    pub fn services_on(&self, name: &str) -> Outcome<Vec<String>> {
        let userdata = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        Ok(self
            .catalogue
            .definitions()
            .iter()
            .filter(|d| {
                let module = &userdata["modules"][&d.meta.id];
                module["enable"] == true && module["location"] == name
            })
            .map(|d| d.meta.id.clone())
            .collect())
    }

    /// Grows the volume's filesystem to fill its device, and says what
    /// really happened.
    pub async fn resize(&self, name: &str) -> Outcome<String> {
        let volume = self.volume(name).await?;
        let mounted = volume.root || volume.mount_point.is_some();
        let device = volume.device.clone();
        let result = tokio::task::spawn_blocking(move || blockdev::grow_ext4(&device, mounted))
            .await
            .map_err(|e| Failure::internal("resizing a volume", e))?;
        result.map_err(|e| {
            Failure::new(
                FailureKind::Internal,
                Text::new(
                    format!("Volume {name} was not resized: {e}"),
                    format!("Размер тома {name} не изменён: {e}"),
                ),
            )
        })
    }
}

/// Declares the volume on `device` mounted at /volumes/<name> (replacing
/// any entry for that device).
pub(crate) fn add_volume(document: &mut Value, device: &str, name: &str) -> Outcome<()> {
    let volumes = volumes_entry(document)?;
    volumes.retain(|v| v["device"] != device);
    volumes.push(serde_json::json!({
        "device": device,
        "mountPoint": format!("{VOLUMES_DIR}/{name}"),
        "fsType": "ext4",
    }));
    Ok(())
}

/// Drops the entries for `device` or for /volumes/<name>.
pub(crate) fn remove_volume(document: &mut Value, device: &str, name: &str) -> Outcome<()> {
    let mount_point = format!("{VOLUMES_DIR}/{name}");
    volumes_entry(document)?
        .retain(|v| v["device"] != device && v["mountPoint"] != mount_point.as_str());
    Ok(())
}

/// Binds every service's data from its volume (`useBinds`) and sets the
/// `location` of each service in `locations` (service id: volume name).
pub(crate) fn enable_binds(
    document: &mut Value,
    locations: &std::collections::BTreeMap<String, String>,
) -> Outcome<()> {
    document
        .as_object_mut()
        .ok_or_else(|| Failure::internal("editing userdata", "userdata is not a JSON object"))?
        .insert("useBinds".into(), Value::Bool(true));
    for (service, volume) in locations {
        set_location(document, service, volume)?;
    }
    Ok(())
}

/// `useBinds = false`, and each service's `location` as given (`None`
/// removes it).
pub(crate) fn disable_binds(
    document: &mut Value,
    locations: &std::collections::BTreeMap<String, Option<String>>,
) -> Outcome<()> {
    document
        .as_object_mut()
        .ok_or_else(|| Failure::internal("editing userdata", "userdata is not a JSON object"))?
        .insert("useBinds".into(), Value::Bool(false));
    for (service, volume) in locations {
        match volume {
            Some(volume) => set_location(document, service, volume)?,
            None => {
                crate::domain::services::config::module_entry(document, service)?
                    .remove("location");
            }
        }
    }
    Ok(())
}

/// Sets `modules.<service>.location` to the volume `volume`.
pub(crate) fn set_location(document: &mut Value, service: &str, volume: &str) -> Outcome<()> {
    crate::domain::services::config::module_entry(document, service)?
        .insert("location".into(), Value::String(volume.to_owned()));
    Ok(())
}

/// `userdata.volumes`, created if absent.
fn volumes_entry(document: &mut Value) -> Outcome<&mut Vec<Value>> {
    let Some(object) = document.as_object_mut() else {
        return Err(Failure::internal(
            "editing userdata",
            "userdata is not a JSON object",
        ));
    };
    let volumes = object
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    volumes
        .as_array_mut()
        .ok_or_else(|| Failure::internal("editing userdata", "userdata.volumes is not a list"))
}

/// A volume name is one plain path component.
pub fn check_volume_name(name: &str) -> Outcome<()> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(Failure::bad_input(
            format!("{name:?} is not a volume name"),
            format!("{name:?} не является именем тома"),
        ))
    }
}

fn read_volumes() -> Outcome<Vec<VolumeView>> {
    let devices = blockdev::list().map_err(|e| Failure::internal("listing block devices", e))?;
    Ok(devices.iter().filter_map(volume_of).collect())
}

fn volume_of(device: &BlockDevice) -> Option<VolumeView> {
    if device.fstype.as_deref() != Some("ext4") || device.uuid.is_none() || device.kind == "rom" {
        return None;
    }
    let root = device.mount_points.iter().any(|m| m == "/");
    let volume_mount = device
        .mount_points
        .iter()
        .map(Path::new)
        .find(|m| m.parent() == Some(Path::new(VOLUMES_DIR)));
    let name = volume_mount
        .and_then(|m| m.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| device.name.clone());
    let measured = device
        .mount_points
        .first()
        .and_then(|m| nix::sys::statvfs::statvfs(m.as_str()).ok());
    let (total, free, used) = match measured {
        Some(stat) => {
            let block = stat.fragment_size();
            let total = stat.blocks() * block;
            (
                total,
                stat.blocks_available() * block,
                total.saturating_sub(stat.blocks_free() * block),
            )
        }
        None => (device.size, 0, 0),
    };
    Some(VolumeView {
        name,
        device: device.path.clone(),
        model: device.model.clone().filter(|m| !m.is_empty()),
        serial: device.serial.clone().filter(|s| !s.is_empty()),
        kind: device.kind.clone(),
        total,
        free,
        used,
        root,
        mount_point: volume_mount.map(Path::to_path_buf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, mounts: &[&str]) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            path: format!("/dev/{name}"),
            fstype: Some("ext4".into()),
            uuid: Some("u".into()),
            label: None,
            size: 1000,
            model: Some(String::new()),
            serial: None,
            kind: "disk".into(),
            mount_points: mounts.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn volumes_are_named_by_their_mount_under_volumes_and_only_ext4_counts() {
        let mounted = volume_of(&device("loop3", &["/volumes/sdb"])).unwrap();
        assert_eq!(mounted.name, "sdb");
        assert_eq!(mounted.device, "/dev/loop3");
        assert_eq!(mounted.model, None);
        let unmounted = volume_of(&device("sdc", &[])).unwrap();
        assert_eq!((unmounted.name.as_str(), unmounted.total), ("sdc", 1000));
        assert!(unmounted.mount_point.is_none());
        let root = volume_of(&device("vda1", &["/"])).unwrap();
        assert!(root.root && root.name == "vda1" && root.total > 0);
        let mut other = device("sdd", &[]);
        other.fstype = Some("xfs".into());
        assert!(volume_of(&other).is_none());
        let mut rom = device("sr0", &[]);
        rom.kind = "rom".into();
        assert!(volume_of(&rom).is_none());
        let mut no_uuid = device("sde", &[]);
        no_uuid.uuid = None;
        assert!(volume_of(&no_uuid).is_none());
        assert!(check_volume_name("sdb").is_ok());
        assert!(check_volume_name("..").is_err());
        assert!(check_volume_name("a/b").is_err());
    }

    #[test]
    fn mounting_replaces_the_device_entry_and_keeps_the_others() {
        let mut document = serde_json::json!({"volumes": [
            {"device": "/dev/sdb", "mountPoint": "/volumes/sdb", "fsType": "ext4"}
        ], "other": 1});
        volumes_entry(&mut document)
            .unwrap()
            .push(serde_json::json!({"device": "/dev/sdc"}));
        assert_eq!(document["volumes"].as_array().unwrap().len(), 2);
        let mut empty = serde_json::json!({});
        assert!(volumes_entry(&mut empty).unwrap().is_empty());
        let mut broken = serde_json::json!({"volumes": 3});
        assert!(volumes_entry(&mut broken).is_err());
    }
}
