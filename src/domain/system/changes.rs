//! What the owner changes in the declared configuration (userdata.json),
//! as data: a change queued behind a running rebuild is kept in the state
//! database and applied after a restart of the daemon as it would have
//! been without one.
//!
//! Each change is checked against the document it is applied to and
//! refuses what is invalid there; the same check runs when the change is
//! made and, if it was queued, when it is applied. The logic of each lives
//! next to what it edits (users, services, storage, settings); `apply`
//! only chooses it.

use crate::domain::error::Outcome;
use crate::domain::services::definition::Definition;
use crate::domain::services::{config, install_module, service_not_found};
use crate::domain::storage;
use crate::domain::system::settings;
use crate::domain::users::{self, UserKind, json as json_users};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// One change to userdata, named for what the owner did. Stored as JSON
/// (tagged by `change`): a variant's name and fields are a stored format,
/// renamed only with a migration of the queued rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "change",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum UserdataChange {
    /// `modules.<service>.enable = true`, and `location =
    /// default_location` when the module needs one and has none (the
    /// need was decided when the owner asked).
    EnableService {
        service: String,
        default_location: Option<String>,
    },
    DisableService {
        service: String,
    },
    /// Option values of a service, each checked against its definition
    /// (and subdomains against the other services') when applied.
    ConfigureService {
        service: String,
        settings: Map<String, Value>,
    },
    /// `modules.<service>.location`: where its data lives.
    SetServiceLocation {
        service: String,
        volume: String,
    },
    /// `useBinds = true` and the `location` of each listed service (service
    /// id: volume name), in one change.
    EnableBinds {
        locations: BTreeMap<String, String>,
    },
    /// `useBinds = false` and each listed service's `location` put back as
    /// it was (`None`: none), undoing a migration whose switch failed.
    DisableBinds {
        locations: BTreeMap<String, Option<String>>,
    },
    /// An entry in `volumes`: the device mounted at /volumes/<name>.
    MountVolume {
        device: String,
        name: String,
    },
    UnmountVolume {
        device: String,
        name: String,
    },
    /// A user of `users` (without an identity provider). Only the
    /// password's hash is kept, as in userdata itself.
    AddUser {
        username: String,
        hashed_password: String,
    },
    SetUserPassword {
        username: String,
        hashed_password: String,
    },
    /// Removes a user of `users` (refused if there is none).
    DeleteUser {
        username: String,
    },
    /// Removes the entry of an identity-provider user (its SSH keys) from
    /// `users`, if there is one.
    ForgetUserEntry {
        username: String,
    },
    AddSshKey {
        username: String,
        kind: UserKind,
        key: String,
    },
    /// Removes the user's keys with the identity of `key`.
    RemoveSshKey {
        username: String,
        kind: UserKind,
        key: String,
    },
    SetTimezone {
        timezone: String,
    },
    SetAutoUpgrade {
        enable: Option<bool>,
        allow_reboot: Option<bool>,
    },
    SetSsh {
        enable: bool,
        turn_off_password_authentication: bool,
    },
    /// `dns.provider` (its credentials are in the secrets file).
    SetDnsProvider {
        provider: String,
    },
}

/// What a change is checked against besides the document: the service
/// definitions as the catalogue has them when it is applied.
#[derive(Clone, Default)]
pub struct ChangeContext {
    pub definitions: Arc<Vec<Arc<Definition>>>,
}

impl UserdataChange {
    /// Applies the change to `document`, or refuses it (the document may
    /// then be half changed: callers apply to a copy or drop it).
    pub fn apply(&self, document: &mut Value, context: &ChangeContext) -> Outcome<()> {
        use UserdataChange as C;
        match self {
            C::EnableService {
                service,
                default_location,
            } => config::enable_module(document, service, default_location.as_deref()),
            C::DisableService { service } => {
                config::module_entry(document, service)?
                    .insert("enable".into(), Value::Bool(false));
                Ok(())
            }
            C::ConfigureService { service, settings } => {
                let definition = context
                    .definitions
                    .iter()
                    .find(|d| &d.meta.id == service)
                    .ok_or_else(service_not_found)?;
                config::apply_settings(definition, &context.definitions, settings, document)
            }
            C::SetServiceLocation { service, volume } => {
                storage::set_location(document, service, volume)
            }
            C::EnableBinds { locations } => storage::enable_binds(document, locations),
            C::DisableBinds { locations } => storage::disable_binds(document, locations),
            C::MountVolume { device, name } => storage::add_volume(document, device, name),
            C::UnmountVolume { device, name } => storage::remove_volume(document, device, name),
            C::AddUser {
                username,
                hashed_password,
            } => json_users::add_user(document, username, hashed_password),
            C::SetUserPassword {
                username,
                hashed_password,
            } => json_users::set_password(document, username, hashed_password),
            C::DeleteUser { username } => json_users::delete_user(document, username),
            C::ForgetUserEntry { username } => {
                users::remove_user_entry(document, username);
                Ok(())
            }
            C::AddSshKey {
                username,
                kind,
                key,
            } => users::add_ssh_key(document, username, *kind, key),
            C::RemoveSshKey {
                username,
                kind,
                key,
            } => users::remove_ssh_key(document, username, *kind, key),
            C::SetTimezone { timezone } => settings::set_timezone(document, timezone),
            C::SetAutoUpgrade {
                enable,
                allow_reboot,
            } => settings::set_auto_upgrade(document, *enable, *allow_reboot),
            C::SetSsh {
                enable,
                turn_off_password_authentication,
            } => settings::set_ssh(document, *enable, *turn_off_password_authentication),
            C::SetDnsProvider { provider } => settings::set_dns_provider(document, provider),
        }
    }
}

/// An edit of another configuration file, made just before the userdata
/// change it comes with is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "edit",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum FileEdit {
    /// Adds the module's `sp-module-<id>` input to flake.nix (nothing is
    /// written if it is there already).
    AddModuleInput { module: String, url: String },
}

impl FileEdit {
    pub fn apply(&self, flake: &Path) -> Outcome<()> {
        match self {
            FileEdit::AddModuleInput { module, url } => install_module(flake, module, url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::FailureKind;
    use proptest::prelude::*;
    use serde_json::json;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl owner@phone";
    const SAME_KEY_OTHER_COMMENT: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl laptop";

    fn definition(id: &str) -> Arc<Definition> {
        let text = json!({
            "meta": {"spModuleSchemaVersion": 1, "id": id, "name": id.to_uppercase(), "description": id,
                     "svgIcon": "<svg/>", "supportLevel": "community", "systemdServices": [format!("{id}.service")]},
            "options": {
                "enable": {"name": "enable", "default": false, "meta": {"type": "enable"}},
                "location": {"name": "location", "default": "sda1", "meta": {"type": "location"}},
                "subdomain": {"name": "subdomain", "default": id, "description": "Subdomain",
                    "meta": {"type": "string", "widget": "subdomain", "weight": 0, "regex": "[a-z0-9][a-z0-9-]{0,61}[a-z0-9]"}},
                "debug": {"name": "debug", "default": false, "description": "Debug", "meta": {"type": "bool"}}
            }
        });
        Arc::new(Definition::parse(id, text.to_string().as_bytes()).unwrap())
    }

    fn context() -> ChangeContext {
        ChangeContext {
            definitions: Arc::new(vec![definition("notes"), definition("git")]),
        }
    }

    /// `change` applied to `document`: the document it leaves, or the
    /// kind of its refusal.
    fn applied(change: &UserdataChange, mut document: Value) -> Result<Value, FailureKind> {
        change
            .apply(&mut document, &context())
            .map(|()| document)
            .map_err(|f| f.kind)
    }

    fn settings(values: Value) -> Map<String, Value> {
        values.as_object().unwrap().clone()
    }

    #[test]
    fn enabling_a_service_sets_a_location_only_where_it_has_none() {
        let enable = |location: Option<&str>| UserdataChange::EnableService {
            service: "notes".into(),
            default_location: location.map(str::to_owned),
        };
        let after = applied(&enable(Some("sda1")), json!({})).unwrap();
        assert_eq!(
            after,
            json!({"modules": {"notes": {"enable": true, "location": "sda1"}}})
        );
        let after = applied(
            &enable(Some("sda1")),
            json!({"modules": {"notes": {"location": "sdb"}}}),
        )
        .unwrap();
        assert_eq!(after["modules"]["notes"]["location"], "sdb");
        let after = applied(&enable(None), json!({})).unwrap();
        assert!(after["modules"]["notes"].get("location").is_none());
        assert_eq!(
            applied(&enable(None), json!({"modules": []})),
            Err(FailureKind::Internal)
        );
        assert_eq!(
            applied(&enable(None), json!([])),
            Err(FailureKind::Internal)
        );
    }

    #[test]
    fn disabling_a_service_sets_enable_false() {
        let disable = UserdataChange::DisableService {
            service: "notes".into(),
        };
        let after = applied(
            &disable,
            json!({"modules": {"notes": {"enable": true, "x": 1}}}),
        );
        assert_eq!(
            after.unwrap(),
            json!({"modules": {"notes": {"enable": false, "x": 1}}})
        );
        assert_eq!(
            applied(&disable, json!({"modules": {"notes": 3}})),
            Err(FailureKind::Internal)
        );
    }

    #[test]
    fn settings_are_checked_against_the_catalogue_when_applied() {
        let configure = |service: &str, values: Value| UserdataChange::ConfigureService {
            service: service.into(),
            settings: settings(values),
        };
        let after = applied(
            &configure("notes", json!({"subdomain": "memo", "debug": true})),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            after["modules"]["notes"],
            json!({"subdomain": "memo", "debug": true})
        );
        // git's default subdomain is taken.
        assert_eq!(
            applied(&configure("notes", json!({"subdomain": "git"})), json!({})),
            Err(FailureKind::BadInput)
        );
        assert_eq!(
            applied(&configure("notes", json!({"debug": "yes"})), json!({})),
            Err(FailureKind::BadInput)
        );
        assert_eq!(
            applied(&configure("notes", json!({})), json!({})),
            Err(FailureKind::BadInput)
        );
        // A service gone from the catalogue since the change was queued.
        assert_eq!(
            applied(&configure("gone", json!({"debug": true})), json!({})),
            Err(FailureKind::NotFound)
        );
    }

    #[test]
    fn locations_and_binds() {
        let after = applied(
            &UserdataChange::SetServiceLocation {
                service: "notes".into(),
                volume: "sdb".into(),
            },
            json!({"modules": {"notes": {"enable": true}}}),
        )
        .unwrap();
        assert_eq!(
            after["modules"]["notes"],
            json!({"enable": true, "location": "sdb"})
        );
        let binds = UserdataChange::EnableBinds {
            locations: [
                ("notes".into(), "sdb".into()),
                ("git".into(), "sda1".into()),
            ]
            .into(),
        };
        let after = applied(&binds, json!({"useBinds": false})).unwrap();
        assert_eq!(
            after,
            json!({"useBinds": true, "modules": {"notes": {"location": "sdb"}, "git": {"location": "sda1"}}})
        );
        assert_eq!(applied(&binds, json!(null)), Err(FailureKind::Internal));
        assert_eq!(
            applied(&binds, json!({"modules": 1})),
            Err(FailureKind::Internal)
        );
    }

    #[test]
    fn volumes_are_declared_once_per_device_and_removed_by_device_or_mount_point() {
        let mount = UserdataChange::MountVolume {
            device: "/dev/sdb".into(),
            name: "sdb".into(),
        };
        let stale = json!({"device": "/dev/sdb", "mountPoint": "/volumes/old", "fsType": "ext4"});
        let other = json!({"device": "/dev/sdc", "mountPoint": "/volumes/sdc", "fsType": "ext4"});
        let after = applied(&mount, json!({"volumes": [stale, other]})).unwrap();
        assert_eq!(
            after["volumes"],
            json!([other, {"device": "/dev/sdb", "mountPoint": "/volumes/sdb", "fsType": "ext4"}])
        );
        let unmount = UserdataChange::UnmountVolume {
            device: "/dev/sdx".into(),
            name: "sdc".into(),
        };
        let after = applied(&unmount, after).unwrap();
        assert_eq!(after["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            applied(&mount, json!({"volumes": {}})),
            Err(FailureKind::Internal)
        );
        assert_eq!(
            applied(&unmount, json!({"volumes": "x"})),
            Err(FailureKind::Internal)
        );
    }

    #[test]
    fn users_are_added_once_changed_and_deleted_only_if_there() {
        let add = |name: &str| UserdataChange::AddUser {
            username: name.into(),
            hashed_password: "$6$hash".into(),
        };
        let document = json!({"username": "owner", "users": null});
        let after = applied(&add("bob"), document).unwrap();
        assert_eq!(
            after["users"],
            json!([{"username": "bob", "hashedPassword": "$6$hash", "sshKeys": []}])
        );
        assert_eq!(
            applied(&add("bob"), after.clone()),
            Err(FailureKind::Conflict)
        );
        assert_eq!(
            applied(&add("owner"), after.clone()),
            Err(FailureKind::Conflict)
        );
        assert_eq!(
            applied(&add("eve"), json!({"users": {}})),
            Err(FailureKind::Internal)
        );

        let password = |name: &str| UserdataChange::SetUserPassword {
            username: name.into(),
            hashed_password: "$6$new".into(),
        };
        let changed = applied(&password("owner"), after.clone()).unwrap();
        assert_eq!(changed["hashedPassword"], "$6$new");
        let changed = applied(&password("bob"), changed).unwrap();
        assert_eq!(changed["users"][0]["hashedPassword"], "$6$new");
        assert_eq!(
            applied(&password("eve"), after.clone()),
            Err(FailureKind::NotFound)
        );

        let delete = |name: &str| UserdataChange::DeleteUser {
            username: name.into(),
        };
        let deleted = applied(&delete("bob"), after.clone()).unwrap();
        assert_eq!(deleted["users"], json!([]));
        assert_eq!(applied(&delete("bob"), deleted), Err(FailureKind::NotFound));
        assert_eq!(applied(&delete("x"), json!({})), Err(FailureKind::NotFound));

        // An identity-provider user's entry goes if it is there; never refused.
        let forget = UserdataChange::ForgetUserEntry {
            username: "bob".into(),
        };
        assert_eq!(applied(&forget, after).unwrap()["users"], json!([]));
        assert_eq!(applied(&forget, json!({})).unwrap(), json!({}));
    }

    #[test]
    fn ssh_keys_are_added_once_per_identity_and_removed_only_if_there() {
        let add = |name: &str, kind, key: &str| UserdataChange::AddSshKey {
            username: name.into(),
            kind,
            key: key.into(),
        };
        let remove = |name: &str, kind, key: &str| UserdataChange::RemoveSshKey {
            username: name.into(),
            kind,
            key: key.into(),
        };
        let document = json!({"username": "owner", "users": [{"username": "bob", "sshKeys": []}]});
        let after = applied(&add("owner", UserKind::Primary, KEY), document.clone()).unwrap();
        assert_eq!(after["sshKeys"], json!([KEY]));
        let after = applied(&add("root", UserKind::Root, KEY), after).unwrap();
        assert_eq!(after["ssh"]["rootKeys"], json!([KEY]));
        let after = applied(&add("bob", UserKind::Normal, KEY), after).unwrap();
        assert_eq!(after["users"][0]["sshKeys"], json!([KEY]));
        // A Kanidm user without an entry gets one holding its keys.
        let after = applied(&add("kim", UserKind::Normal, KEY), after).unwrap();
        assert_eq!(
            after["users"][1],
            json!({"username": "kim", "sshKeys": [KEY]})
        );
        assert_eq!(
            applied(
                &add("bob", UserKind::Normal, SAME_KEY_OTHER_COMMENT),
                after.clone()
            ),
            Err(FailureKind::Conflict)
        );
        let removed = applied(
            &remove("bob", UserKind::Normal, SAME_KEY_OTHER_COMMENT),
            after,
        )
        .unwrap();
        assert_eq!(removed["users"][0]["sshKeys"], json!([]));
        assert_eq!(
            applied(&remove("bob", UserKind::Normal, KEY), removed),
            Err(FailureKind::NotFound)
        );
        assert_eq!(
            applied(
                &add("owner", UserKind::Primary, KEY),
                json!({"username": "owner", "sshKeys": 1})
            ),
            Err(FailureKind::Internal)
        );
    }

    #[test]
    fn server_settings() {
        let after = applied(
            &UserdataChange::SetTimezone {
                timezone: "Europe/Moscow".into(),
            },
            json!({"timezone": "Etc/UTC"}),
        )
        .unwrap();
        assert_eq!(after, json!({"timezone": "Europe/Moscow"}));
        assert_eq!(
            applied(
                &UserdataChange::SetTimezone {
                    timezone: "Etc/UTC".into()
                },
                json!(7)
            ),
            Err(FailureKind::Internal)
        );

        let upgrade = UserdataChange::SetAutoUpgrade {
            enable: None,
            allow_reboot: Some(true),
        };
        let after = applied(&upgrade, json!({"autoUpgrade": {"enable": false}})).unwrap();
        assert_eq!(
            after["autoUpgrade"],
            json!({"enable": false, "allowReboot": true})
        );
        assert_eq!(
            applied(&upgrade, json!({"autoUpgrade": true})),
            Err(FailureKind::Internal)
        );

        let ssh = |turn_off| UserdataChange::SetSsh {
            enable: false,
            turn_off_password_authentication: turn_off,
        };
        let after = applied(
            &ssh(false),
            json!({"ssh": {"passwordAuthentication": true}}),
        )
        .unwrap();
        assert_eq!(
            after["ssh"],
            json!({"enable": false, "passwordAuthentication": true})
        );
        let after = applied(&ssh(true), after).unwrap();
        assert_eq!(after["ssh"]["passwordAuthentication"], false);
        assert_eq!(
            applied(&ssh(true), json!({"ssh": []})),
            Err(FailureKind::Internal)
        );

        let dns = UserdataChange::SetDnsProvider {
            provider: "DESEC".into(),
        };
        let after = applied(&dns, json!({"dns": {"useStagingACME": false}})).unwrap();
        assert_eq!(
            after["dns"],
            json!({"useStagingACME": false, "provider": "DESEC"})
        );
        assert_eq!(applied(&dns, json!({"dns": 1})), Err(FailureKind::Internal));
    }

    #[test]
    fn a_module_input_is_added_to_flake_nix_once() {
        let dir = tempfile::tempdir().unwrap();
        let flake = dir.path().join("flake.nix");
        std::fs::write(
            &flake,
            "{\n  inputs = {\n    sp-module-git.url = \"git+https://example.org/git\";\n  };\n  outputs = { self, ... }: { };\n}\n",
        )
        .unwrap();
        let edit = FileEdit::AddModuleInput {
            module: "notes".into(),
            url: "git+https://example.org/notes".into(),
        };
        edit.apply(&flake).unwrap();
        let once = std::fs::read_to_string(&flake).unwrap();
        assert!(once.contains("sp-module-notes"), "{once}");
        edit.apply(&flake).unwrap();
        assert_eq!(std::fs::read_to_string(&flake).unwrap(), once);
    }

    /// One of every variant.
    fn every_variant() -> Vec<UserdataChange> {
        use UserdataChange as C;
        vec![
            C::EnableService {
                service: "notes".into(),
                default_location: Some("sda1".into()),
            },
            C::DisableService {
                service: "notes".into(),
            },
            C::ConfigureService {
                service: "notes".into(),
                settings: settings(json!({"subdomain": "memo", "debug": true})),
            },
            C::SetServiceLocation {
                service: "git".into(),
                volume: "sdb".into(),
            },
            C::EnableBinds {
                locations: [("notes".into(), "sdb".into())].into(),
            },
            C::DisableBinds {
                locations: [("notes".into(), None), ("git".into(), Some("sda1".into()))].into(),
            },
            C::MountVolume {
                device: "/dev/sdb".into(),
                name: "sdb".into(),
            },
            C::UnmountVolume {
                device: "/dev/sdb".into(),
                name: "sdb".into(),
            },
            C::AddUser {
                username: "bob".into(),
                hashed_password: "$6$hash".into(),
            },
            C::SetUserPassword {
                username: "bob".into(),
                hashed_password: "$6$new".into(),
            },
            C::DeleteUser {
                username: "bob".into(),
            },
            C::ForgetUserEntry {
                username: "kim".into(),
            },
            C::AddSshKey {
                username: "root".into(),
                kind: UserKind::Root,
                key: KEY.into(),
            },
            C::RemoveSshKey {
                username: "owner".into(),
                kind: UserKind::Primary,
                key: KEY.into(),
            },
            C::SetTimezone {
                timezone: "Europe/Moscow".into(),
            },
            C::SetAutoUpgrade {
                enable: Some(true),
                allow_reboot: None,
            },
            C::SetSsh {
                enable: true,
                turn_off_password_authentication: true,
            },
            C::SetDnsProvider {
                provider: "CLOUDFLARE".into(),
            },
        ]
    }

    #[test]
    fn changes_survive_a_round_trip_through_their_stored_form() {
        let variants = every_variant();
        assert_eq!(variants.len(), 18, "one of each");
        for change in variants {
            let stored = serde_json::to_string(&change).unwrap();
            let back: UserdataChange = serde_json::from_str(&stored).unwrap();
            assert_eq!(back, change, "{stored}");
        }
        let edit = FileEdit::AddModuleInput {
            module: "notes".into(),
            url: "git+https://example.org/notes".into(),
        };
        let stored = serde_json::to_string(&edit).unwrap();
        assert_eq!(serde_json::from_str::<FileEdit>(&stored).unwrap(), edit);
    }

    #[test]
    fn the_stored_form_is_stable() {
        // Rows written by this version must read the same in the next one.
        let change = UserdataChange::EnableService {
            service: "notes".into(),
            default_location: None,
        };
        assert_eq!(
            serde_json::to_value(&change).unwrap(),
            json!({"change": "enableService", "service": "notes", "defaultLocation": null})
        );
        let stored =
            json!({"change": "setSsh", "enable": true, "turnOffPasswordAuthentication": false});
        assert_eq!(
            serde_json::from_value::<UserdataChange>(stored).unwrap(),
            UserdataChange::SetSsh {
                enable: true,
                turn_off_password_authentication: false
            }
        );
        // One from a newer version is an error, not a guess.
        assert!(serde_json::from_value::<UserdataChange>(json!({"change": "teleport"})).is_err());
    }

    // --- The property: a change touches only its own part of userdata. ---

    const NAMES: [&str; 3] = ["owner", "bob", "kim"];
    const SERVICES: [&str; 2] = ["notes", "git"];
    const DEVICES: [&str; 2] = ["/dev/sdb", "/dev/sdc"];

    /// A key no variant knows: `x-` and letters.
    fn unknown_key() -> impl Strategy<Value = String> {
        "x-[a-z]{1,6}"
    }

    /// Any JSON value, a few levels deep.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(unknown_key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `known` with unknown keys (of any value) added.
    fn with_unknown(known: Vec<(String, Value)>) -> impl Strategy<Value = Value> {
        prop::collection::btree_map(unknown_key(), any_value(), 0..3).prop_map(move |extra| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            object.extend(known.clone());
            Value::Object(object)
        })
    }

    fn maybe<T: Clone + std::fmt::Debug + 'static>(
        strategy: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<T>> {
        prop::option::of(strategy)
    }

    /// An object holding `entries`' present fields, and unknown keys.
    fn object(entries: Vec<(&'static str, BoxedStrategy<Option<Value>>)>) -> BoxedStrategy<Value> {
        let (keys, values): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        values
            .prop_flat_map(move |values| {
                let known = keys
                    .iter()
                    .zip(values)
                    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                    .collect();
                with_unknown(known)
            })
            .boxed()
    }

    fn some_bool() -> BoxedStrategy<Option<Value>> {
        maybe(any::<bool>().prop_map(Value::Bool)).boxed()
    }

    fn some_of(choices: &'static [&'static str]) -> BoxedStrategy<Option<Value>> {
        maybe(prop::sample::select(choices).prop_map(Value::from)).boxed()
    }

    fn user_entry() -> BoxedStrategy<Value> {
        object(vec![
            (
                "username",
                prop::sample::select(&NAMES[..])
                    .prop_map(|n| Some(Value::from(n)))
                    .boxed(),
            ),
            ("hashedPassword", some_of(&["$6$a", "$6$b"])),
            (
                "sshKeys",
                maybe(
                    prop::collection::vec(
                        prop::sample::select(&[KEY, "ssh-rsa AAAAB3 other"][..])
                            .prop_map(Value::from),
                        0..3,
                    )
                    .prop_map(Value::Array),
                )
                .boxed(),
            ),
        ])
    }

    fn volume_entry() -> BoxedStrategy<Value> {
        object(vec![
            (
                "device",
                prop::sample::select(&DEVICES[..])
                    .prop_map(|d| Some(Value::from(d)))
                    .boxed(),
            ),
            (
                "mountPoint",
                some_of(&["/volumes/sdb", "/volumes/sdc", "/volumes/old"]),
            ),
        ])
    }

    /// A userdata document: what the daemon knows, each part there or
    /// not, with unknown keys at every level.
    fn userdata() -> BoxedStrategy<Value> {
        let module = || {
            maybe(object(vec![
                ("enable", some_bool()),
                ("location", some_of(&["sda1", "sdb"])),
                ("subdomain", some_of(&["memo", "code"])),
            ]))
            .boxed()
        };
        object(vec![
            ("username", some_of(&["owner"])),
            ("hashedPassword", some_of(&["$6$owner"])),
            ("timezone", some_of(&["Etc/UTC", "Europe/Berlin"])),
            ("useBinds", some_bool()),
            (
                "modules",
                maybe(object(vec![("notes", module()), ("git", module())])).boxed(),
            ),
            (
                "users",
                maybe(prop::collection::vec(user_entry(), 0..3).prop_map(Value::Array)).boxed(),
            ),
            (
                "volumes",
                maybe(prop::collection::vec(volume_entry(), 0..3).prop_map(Value::Array)).boxed(),
            ),
            (
                "ssh",
                maybe(object(vec![
                    ("enable", some_bool()),
                    ("passwordAuthentication", some_bool()),
                ]))
                .boxed(),
            ),
            (
                "autoUpgrade",
                maybe(object(vec![
                    ("enable", some_bool()),
                    ("allowReboot", some_bool()),
                ]))
                .boxed(),
            ),
            (
                "dns",
                maybe(object(vec![("provider", some_of(&["CLOUDFLARE"]))])).boxed(),
            ),
        ])
    }

    fn change() -> impl Strategy<Value = UserdataChange> {
        use UserdataChange as C;
        let service = || prop::sample::select(&SERVICES[..]).prop_map(str::to_owned);
        let name = || prop::sample::select(&NAMES[..]).prop_map(str::to_owned);
        let volume = || prop::sample::select(&["sda1", "sdb", "sdc"][..]).prop_map(str::to_owned);
        let device = || prop::sample::select(&DEVICES[..]).prop_map(str::to_owned);
        let kind =
            || prop::sample::select(&[UserKind::Root, UserKind::Primary, UserKind::Normal][..]);
        let key = || {
            prop::sample::select(&[KEY, SAME_KEY_OTHER_COMMENT, "ssh-rsa AAAAB3 other"][..])
                .prop_map(str::to_owned)
        };
        prop_oneof![
            (service(), maybe(volume())).prop_map(|(service, default_location)| C::EnableService {
                service,
                default_location
            }),
            service().prop_map(|service| C::DisableService { service }),
            (
                service(),
                maybe(prop::sample::select(&["memo", "code", "api"][..])),
                maybe(any::<bool>())
            )
                .prop_map(|(service, subdomain, debug)| {
                    let mut settings = Map::new();
                    if let Some(s) = subdomain {
                        settings.insert("subdomain".into(), s.into());
                    }
                    if let Some(d) = debug {
                        settings.insert("debug".into(), d.into());
                    }
                    C::ConfigureService { service, settings }
                }),
            (service(), volume())
                .prop_map(|(service, volume)| C::SetServiceLocation { service, volume }),
            prop::collection::btree_map(service(), volume(), 0..3)
                .prop_map(|locations| C::EnableBinds { locations }),
            prop::collection::btree_map(service(), prop::option::of(volume()), 0..3)
                .prop_map(|locations| C::DisableBinds { locations }),
            (device(), volume()).prop_map(|(device, name)| C::MountVolume { device, name }),
            (device(), volume()).prop_map(|(device, name)| C::UnmountVolume { device, name }),
            name().prop_map(|username| C::AddUser {
                username,
                hashed_password: "$6$new".into()
            }),
            name().prop_map(|username| C::SetUserPassword {
                username,
                hashed_password: "$6$new".into()
            }),
            name().prop_map(|username| C::DeleteUser { username }),
            name().prop_map(|username| C::ForgetUserEntry { username }),
            (name(), kind(), key()).prop_map(|(username, kind, key)| C::AddSshKey {
                username,
                kind,
                key
            }),
            (name(), kind(), key()).prop_map(|(username, kind, key)| C::RemoveSshKey {
                username,
                kind,
                key
            }),
            prop::sample::select(&["Etc/UTC", "Asia/Tokyo"][..])
                .prop_map(|t| C::SetTimezone { timezone: t.into() }),
            (maybe(any::<bool>()), maybe(any::<bool>())).prop_map(|(enable, allow_reboot)| {
                C::SetAutoUpgrade {
                    enable,
                    allow_reboot,
                }
            }),
            (any::<bool>(), any::<bool>()).prop_map(
                |(enable, turn_off_password_authentication)| C::SetSsh {
                    enable,
                    turn_off_password_authentication
                }
            ),
            prop::sample::select(&["DESEC", "PORKBUN"][..])
                .prop_map(|p| C::SetDnsProvider { provider: p.into() }),
        ]
    }

    /// Removes from `document` every part `change` may change, and the
    /// objects and lists left empty: what stays must be the same before
    /// and after the change. Written from what each change is for, not
    /// from its code.
    fn without_its_part(change: &UserdataChange, document: &Value) -> Value {
        use UserdataChange as C;
        let mut d = document.clone();
        let remove = |d: &mut Value, path: &[&str]| {
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut *d;
            for p in parents {
                match at.get_mut(*p) {
                    Some(next) => at = next,
                    None => return,
                }
            }
            if let Some(object) = at.as_object_mut() {
                object.remove(*last);
            }
        };
        let retain = |d: &mut Value, list: &str, keep: &dyn Fn(&Value) -> bool| {
            if let Some(items) = d.get_mut(list).and_then(Value::as_array_mut) {
                items.retain(|item| keep(item));
            }
        };
        let is_user = |u: &Value, name: &str| u["username"] == name;
        match change {
            C::EnableService { service, .. } => {
                remove(&mut d, &["modules", service, "enable"]);
                remove(&mut d, &["modules", service, "location"]);
            }
            C::DisableService { service } => remove(&mut d, &["modules", service, "enable"]),
            C::ConfigureService { service, settings } => {
                for key in settings.keys() {
                    remove(&mut d, &["modules", service, key]);
                }
            }
            C::SetServiceLocation { service, .. } => {
                remove(&mut d, &["modules", service, "location"])
            }
            C::EnableBinds { locations } => {
                remove(&mut d, &["useBinds"]);
                for service in locations.keys() {
                    remove(&mut d, &["modules", service, "location"]);
                }
            }
            C::DisableBinds { locations } => {
                remove(&mut d, &["useBinds"]);
                for service in locations.keys() {
                    remove(&mut d, &["modules", service, "location"]);
                }
            }
            C::MountVolume { device, name } | C::UnmountVolume { device, name } => {
                let mount_point = format!("/volumes/{name}");
                retain(&mut d, "volumes", &|v| {
                    v["device"] != device.as_str() && v["mountPoint"] != mount_point.as_str()
                });
            }
            C::AddUser { username, .. }
            | C::DeleteUser { username }
            | C::ForgetUserEntry { username } => {
                retain(&mut d, "users", &|u| !is_user(u, username));
            }
            C::SetUserPassword { username, .. } => {
                if d["username"] == username.as_str() {
                    remove(&mut d, &["hashedPassword"]);
                }
                if let Some(users) = d.get_mut("users").and_then(Value::as_array_mut) {
                    for user in users.iter_mut().filter(|u| is_user(u, username)) {
                        remove(user, &["hashedPassword"]);
                    }
                }
            }
            C::AddSshKey {
                username,
                kind,
                key,
            }
            | C::RemoveSshKey {
                username,
                kind,
                key,
            } => {
                let identity: String = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                let other_key = |k: &Value| {
                    k.as_str().is_none_or(|k| {
                        k.split_whitespace().take(2).collect::<Vec<_>>().join(" ") != identity
                    })
                };
                let list = if *kind == UserKind::Root {
                    d.get_mut("ssh").and_then(|s| s.get_mut("rootKeys"))
                } else if d["username"] == username.as_str() {
                    d.get_mut("sshKeys")
                } else {
                    d.get_mut("users")
                        .and_then(Value::as_array_mut)
                        .and_then(|users| users.iter_mut().find(|u| is_user(u, username)))
                        .and_then(|u| u.get_mut("sshKeys"))
                };
                if let Some(keys) = list.and_then(Value::as_array_mut) {
                    keys.retain(|k| other_key(k));
                }
                // The entry made for a Kanidm user's keys holds only them.
                retain(&mut d, "users", &|u| {
                    !(is_user(u, username)
                        && u.as_object().is_some_and(|o| {
                            o.iter().all(|(k, v)| {
                                k == "username" || (k == "sshKeys" && *v == json!([]))
                            })
                        }))
                });
            }
            C::SetTimezone { .. } => remove(&mut d, &["timezone"]),
            C::SetAutoUpgrade { .. } => {
                remove(&mut d, &["autoUpgrade", "enable"]);
                remove(&mut d, &["autoUpgrade", "allowReboot"]);
            }
            C::SetSsh { .. } => {
                remove(&mut d, &["ssh", "enable"]);
                remove(&mut d, &["ssh", "passwordAuthentication"]);
            }
            C::SetDnsProvider { .. } => remove(&mut d, &["dns", "provider"]),
        }
        prune_empty(&mut d);
        d
    }

    /// Drops the objects and lists that are empty (a change may create
    /// the containers of what it sets).
    fn prune_empty(value: &mut Value) {
        let empty = |v: &Value| match v {
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        match value {
            Value::Object(object) => {
                object.values_mut().for_each(prune_empty);
                object.retain(|_, v| !empty(v));
            }
            Value::Array(items) => items.iter_mut().for_each(prune_empty),
            _ => {}
        }
    }

    /// What the change must have done, where it was accepted.
    fn did_its_part(change: &UserdataChange, after: &Value) -> bool {
        use UserdataChange as C;
        let user = |name: &str| {
            after["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|u| u["username"] == name)
                .count()
        };
        match change {
            C::EnableService { service, default_location } => {
                after["modules"][service]["enable"] == true
                    && (default_location.is_none() || !after["modules"][service]["location"].is_null())
            }
            C::DisableService { service } => after["modules"][service]["enable"] == false,
            C::ConfigureService { service, settings } => settings
                .iter()
                .all(|(k, v)| after["modules"][service][k] == *v),
            C::SetServiceLocation { service, volume } => after["modules"][service]["location"] == volume.as_str(),
            C::EnableBinds { locations } => {
                after["useBinds"] == true
                    && locations.iter().all(|(s, v)| after["modules"][s]["location"] == v.as_str())
            }
            C::DisableBinds { locations } => {
                after["useBinds"] == false
                    && locations.iter().all(|(s, v)| match v {
                        Some(v) => after["modules"][s]["location"] == v.as_str(),
                        None => after["modules"][s].get("location").is_none(),
                    })
            }
            C::MountVolume { device, name } => after["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["device"] == device.as_str())
                .eq([&json!({"device": device, "mountPoint": format!("/volumes/{name}"), "fsType": "ext4"})]),
            C::UnmountVolume { device, name } => !after["volumes"].as_array().unwrap().iter().any(|v| {
                v["device"] == device.as_str() || v["mountPoint"] == format!("/volumes/{name}").as_str()
            }),
            C::AddUser { username, .. } => user(username) == 1,
            C::DeleteUser { username } | C::ForgetUserEntry { username } => user(username) == 0,
            C::SetUserPassword { .. } => true,
            C::AddSshKey { .. } | C::RemoveSshKey { .. } => true,
            C::SetTimezone { timezone } => after["timezone"] == timezone.as_str(),
            C::SetAutoUpgrade { enable, allow_reboot } => {
                enable.is_none_or(|e| after["autoUpgrade"]["enable"] == e)
                    && allow_reboot.is_none_or(|r| after["autoUpgrade"]["allowReboot"] == r)
            }
            C::SetSsh { enable, turn_off_password_authentication } => {
                after["ssh"]["enable"] == *enable
                    && (!turn_off_password_authentication || after["ssh"]["passwordAuthentication"] == false)
            }
            C::SetDnsProvider { provider } => after["dns"]["provider"] == provider.as_str(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_change_keeps_every_key_and_value_outside_its_part(
            document in userdata(),
            change in change(),
        ) {
            let mut after = document.clone();
            if change.apply(&mut after, &context()).is_ok() {
                prop_assert!(did_its_part(&change, &after), "{change:?}: {after}");
                prop_assert_eq!(
                    without_its_part(&change, &document),
                    without_its_part(&change, &after),
                    "{:?} on {}", change, document
                );
            }
        }
    }
}
