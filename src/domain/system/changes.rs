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
#[serde(tag = "edit", rename_all = "camelCase", rename_all_fields = "camelCase")]
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
