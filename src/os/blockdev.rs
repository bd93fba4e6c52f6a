//! Block devices and their filesystems: `lsblk -J -b` for the list, and
//! `blkid -p` (a direct probe of the device) for filesystems lsblk cannot
//! name because udev is absent (containers, the testbed). Also growing an
//! ext4 filesystem with `resize2fs`.

use serde::Deserialize;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The kernel's name: `sdb`, `vda1`, `loop3`.
    pub name: String,
    /// `/dev/<name>`.
    pub path: String,
    pub fstype: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// The device's size in bytes.
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// `disk`, `part`, `loop`, `rom`...
    pub kind: String,
    pub mount_points: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockDevError {
    #[error("running {tool}: {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
    #[error("lsblk printed what is not its JSON: {0}")]
    Parse(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Listing {
    blockdevices: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    path: Option<String>,
    fstype: Option<String>,
    uuid: Option<String>,
    label: Option<String>,
    size: Option<u64>,
    model: Option<String>,
    serial: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    mountpoints: Vec<Option<String>>,
    #[serde(default)]
    children: Vec<Entry>,
}

const COLUMNS: &str = "NAME,PATH,FSTYPE,UUID,LABEL,SIZE,MODEL,SERIAL,TYPE,MOUNTPOINTS";

/// Every block device (partitions included), with its filesystem as far
/// as it can be told.
pub fn list() -> Result<Vec<BlockDevice>, BlockDevError> {
    let output = Command::new("lsblk")
        .args(["-J", "-b", "-o", COLUMNS])
        .output()
        .map_err(|source| BlockDevError::Spawn {
            tool: "lsblk",
            source,
        })?;
    if !output.status.success() {
        return Err(BlockDevError::Failed {
            tool: "lsblk",
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let mut devices = parse_lsblk(&output.stdout)?;
    for device in &mut devices {
        if device.fstype.is_none() && Path::new(&device.path).exists() {
            probe_into(device);
        }
    }
    Ok(devices)
}

/// `lsblk -J -b -o COLUMNS` output, partitions after their disk.
pub fn parse_lsblk(json: &[u8]) -> Result<Vec<BlockDevice>, BlockDevError> {
    let listing: Listing = serde_json::from_slice(json)?;
    let mut out = Vec::new();
    let mut stack: Vec<Entry> = listing.blockdevices.into_iter().rev().collect();
    while let Some(entry) = stack.pop() {
        stack.extend(entry.children.into_iter().rev());
        out.push(BlockDevice {
            path: entry
                .path
                .filter(|path| !path.is_empty())
                .unwrap_or_else(|| format!("/dev/{}", entry.name)),
            name: entry.name,
            fstype: entry.fstype,
            uuid: entry.uuid,
            label: entry.label,
            size: entry.size.unwrap_or(0),
            model: entry.model.map(|m| m.trim().to_owned()),
            serial: entry.serial.map(|s| s.trim().to_owned()),
            kind: entry.kind.unwrap_or_default(),
            mount_points: entry.mountpoints.into_iter().flatten().collect(),
        });
    }
    Ok(out)
}

/// Fills the filesystem facts from `blkid -p` (reads the device itself; no
/// udev database needed). A device that cannot be probed stays as it is.
fn probe_into(device: &mut BlockDevice) {
    let Ok(output) = Command::new("blkid")
        .args(["-p", "-o", "export", &device.path])
        .output()
    else {
        return;
    };
    if !output.status.success() {
        return;
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match line.split_once('=') {
            Some(("TYPE", v)) => device.fstype = Some(v.to_owned()),
            Some(("UUID", v)) => device.uuid = Some(v.to_owned()),
            Some(("LABEL", v)) => device.label = Some(v.to_owned()),
            _ => {}
        }
    }
}

/// Grows the ext4 filesystem on `device` to fill it. A mounted filesystem
/// is grown online; an unmounted one is checked (`e2fsck -f -p`) first, as
/// resize2fs demands. Returns resize2fs's own words on success.
pub fn grow_ext4(device: &str, mounted: bool) -> Result<String, BlockDevError> {
    if !mounted {
        run("e2fsck", &["-f", "-p", device])?;
    }
    run("resize2fs", &[device])
}

fn run(tool: &'static str, args: &[&str]) -> Result<String, BlockDevError> {
    let output = Command::new(tool)
        .args(args)
        .output()
        .map_err(|source| BlockDevError::Spawn { tool, source })?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if output.status.success() {
        Ok(if stdout.is_empty() { stderr } else { stdout })
    } else {
        Err(BlockDevError::Failed {
            tool,
            stderr: if stderr.is_empty() { stdout } else { stderr },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_listed_with_their_disks_and_empty_mount_points_dropped() {
        let json = br#"{"blockdevices": [
          {"name":"sda","path":"/dev/sda","fstype":null,"uuid":null,"label":null,
           "size":1000,"model":"QEMU HARDDISK   ","serial":"drive-1","type":"disk",
           "mountpoints":[null],
           "children":[{"name":"sda1","path":"/dev/sda1","fstype":"ext4","uuid":"u-1",
             "label":null,"size":900,"model":null,"serial":null,"type":"part",
             "mountpoints":["/"]}]},
          {"name":"sr0","fstype":"iso9660","uuid":"u-2","size":10,"type":"rom","mountpoints":[null]}
        ]}"#;
        let devices = parse_lsblk(json).unwrap();
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sda1", "sr0"]);
        assert_eq!(devices[0].model.as_deref(), Some("QEMU HARDDISK"));
        assert!(devices[0].mount_points.is_empty());
        assert_eq!(devices[1].mount_points, ["/"]);
        assert_eq!(devices[2].path, "/dev/sr0");
        assert_eq!(devices[2].kind, "rom");
    }

    #[test]
    fn an_empty_path_is_the_kernel_name_under_dev() {
        // Found by fuzzing (fuzz/artifacts/lsblk_json): `"path": ""` was
        // taken as the device's path.
        let json = br#"{"blockdevices":[{"name":"sda2","path":"","type":"part"}]}"#;
        assert_eq!(parse_lsblk(json).unwrap()[0].path, "/dev/sda2");
    }

    mod generated {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        /// A device tree as lsblk prints it: names, sizes, mount points
        /// (some null), children nested a few levels.
        fn tree() -> impl Strategy<Value = Value> {
            let leaf = (
                "[a-z]{2,4}[0-9]{0,2}",
                any::<u64>(),
                prop::collection::vec(proptest::option::of("/[a-z/]{0,12}"), 0..3),
            )
                .prop_map(|(name, size, mounts)| {
                    json!({"name": name, "size": size, "type": "part", "mountpoints": mounts})
                });
            leaf.prop_recursive(3, 24, 4, |inner| {
                (inner.clone(), prop::collection::vec(inner, 0..4)).prop_map(
                    |(mut parent, children)| {
                        parent["children"] = Value::Array(children);
                        parent
                    },
                )
            })
        }

        /// Parents before their children, depth first, as `lsblk` shows them.
        fn preorder(device: &Value, out: &mut Vec<String>) {
            out.push(device["name"].as_str().unwrap().to_owned());
            for child in device["children"].as_array().into_iter().flatten() {
                preorder(child, out);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Every device of any tree is listed once, in lsblk's order,
            /// with its size and only its real mount points.
            #[test]
            fn every_device_is_listed_in_order(disks in prop::collection::vec(tree(), 0..4)) {
                let json = json!({"blockdevices": disks});
                let devices = parse_lsblk(json.to_string().as_bytes()).unwrap();
                let mut expected = Vec::new();
                for disk in &disks {
                    preorder(disk, &mut expected);
                }
                let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
                prop_assert_eq!(names, expected);
                for device in &devices {
                    prop_assert_eq!(&device.path, &format!("/dev/{}", device.name));
                    prop_assert!(device.mount_points.iter().all(|m| m.starts_with('/')));
                }
            }
        }
    }
}
