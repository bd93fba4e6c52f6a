//! The server's own settings in userdata: automatic upgrades, SSH, the
//! timezone, the DNS provider (its token goes to the secrets file). Each
//! change is checked first (nothing is written for a bad one) and then
//! applied by a rebuild.

use super::changes::UserdataChange;
use super::rebuild::{Accepted, ConfigChange, Rebuilds};
use crate::domain::error::{Failure, Outcome};
use crate::os::secrets::SecretsFile;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// What NixOS uses when userdata does not say.
const DEFAULT_TIMEZONE: &str = "Etc/UTC";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoUpgrade {
    pub enable: bool,
    pub allow_reboot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    pub enable: bool,
    pub password_authentication: bool,
    pub root_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub auto_upgrade: AutoUpgrade,
    pub ssh: Ssh,
    pub timezone: String,
}

fn flag(section: &Value, key: &str, default: bool) -> bool {
    section[key].as_bool().unwrap_or(default)
}

impl Settings {
    /// The settings a userdata document declares, with NixOS's defaults
    /// for what it leaves out (upgrades on without reboots, SSH on).
    pub fn of(document: &Value) -> Settings {
        let upgrade = &document["autoUpgrade"];
        let ssh = &document["ssh"];
        Settings {
            auto_upgrade: AutoUpgrade {
                enable: flag(upgrade, "enable", true),
                allow_reboot: flag(upgrade, "allowReboot", false),
            },
            ssh: Ssh {
                enable: flag(ssh, "enable", true),
                password_authentication: flag(ssh, "passwordAuthentication", false),
                root_keys: ssh["rootKeys"]
                    .as_array()
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            timezone: document["timezone"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or(DEFAULT_TIMEZONE)
                .to_owned(),
        }
    }
}

/// `document.<key>`, an object, created if missing.
fn section<'a>(document: &'a mut Value, key: &str) -> Outcome<&'a mut Map<String, Value>> {
    let invalid = || {
        Failure::internal(
            "changing userdata",
            format!("userdata.json or its `{key}` is not a JSON object"),
        )
    };
    document
        .as_object_mut()
        .ok_or_else(invalid)?
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(invalid)
}

pub(crate) fn set_timezone(document: &mut Value, timezone: &str) -> Outcome<()> {
    document
        .as_object_mut()
        .ok_or_else(|| {
            Failure::internal("changing userdata", "userdata.json is not a JSON object")
        })?
        .insert("timezone".into(), Value::String(timezone.to_owned()));
    Ok(())
}

/// Sets what is given of `autoUpgrade.{enable, allowReboot}`.
pub(crate) fn set_auto_upgrade(
    document: &mut Value,
    enable: Option<bool>,
    allow_reboot: Option<bool>,
) -> Outcome<()> {
    let upgrade = section(document, "autoUpgrade")?;
    if let Some(enable) = enable {
        upgrade.insert("enable".into(), Value::Bool(enable));
    }
    if let Some(allow_reboot) = allow_reboot {
        upgrade.insert("allowReboot".into(), Value::Bool(allow_reboot));
    }
    Ok(())
}

/// Sets `ssh.enable`; password logins can only be turned off.
pub(crate) fn set_ssh(
    document: &mut Value,
    enable: bool,
    turn_off_password_authentication: bool,
) -> Outcome<()> {
    let ssh = section(document, "ssh")?;
    ssh.insert("enable".into(), Value::Bool(enable));
    if turn_off_password_authentication {
        ssh.insert("passwordAuthentication".into(), Value::Bool(false));
    }
    Ok(())
}

pub(crate) fn set_dns_provider(document: &mut Value, provider: &str) -> Outcome<()> {
    section(document, "dns")?.insert("provider".into(), Value::String(provider.to_owned()));
    Ok(())
}

/// The DNS providers the NixOS configuration can get certificates with,
/// by their names in userdata.
pub const DNS_PROVIDERS: [&str; 4] = ["CLOUDFLARE", "DIGITALOCEAN", "DESEC", "PORKBUN"];

/// A DNS provider's credentials, as the app sends them.
pub struct DnsCredentials {
    pub token: String,
    pub token_id: Option<String>,
    pub url: Option<String>,
    pub tenant: Option<String>,
    pub secondary_token: Option<String>,
}

pub struct SystemSettings {
    /// Every read and write of userdata goes through it.
    rebuilds: Arc<Rebuilds>,
    zoneinfo: PathBuf,
    secrets: SecretsFile,
}

impl SystemSettings {
    pub fn new(rebuilds: Arc<Rebuilds>, zoneinfo: PathBuf, secrets: PathBuf) -> Self {
        SystemSettings {
            rebuilds,
            zoneinfo,
            secrets: SecretsFile::new(secrets),
        }
    }

    /// As declared: with the changes queued behind a running rebuild.
    pub fn userdata(&self) -> Outcome<Value> {
        self.rebuilds.declared_userdata()
    }

    pub fn settings(&self) -> Outcome<Settings> {
        Ok(Settings::of(&self.userdata()?))
    }

    /// Makes the change and returns the settings as it leaves them (also
    /// when it is queued behind a running rebuild and not written yet).
    fn change(&self, change: UserdataChange) -> Outcome<(Settings, Accepted)> {
        let mut preview = self.userdata()?;
        self.rebuilds.preview(&change, &mut preview)?;
        let accepted = self.rebuilds.change(ConfigChange::from(change))?;
        Ok((Settings::of(&preview), accepted))
    }

    pub fn change_timezone(&self, timezone: &str) -> Outcome<(Settings, Accepted)> {
        if !crate::os::zoneinfo::is_zone(&self.zoneinfo, timezone) {
            return Err(Failure::bad_input(
                format!("Invalid timezone: {timezone:?} is not in the tz database"),
                format!("Неверный часовой пояс: {timezone:?} нет в базе часовых поясов"),
            ));
        }
        self.change(UserdataChange::SetTimezone {
            timezone: timezone.to_owned(),
        })
    }

    pub fn change_auto_upgrade(
        &self,
        enable: Option<bool>,
        allow_reboot: Option<bool>,
    ) -> Outcome<(Settings, Accepted)> {
        self.change(UserdataChange::SetAutoUpgrade {
            enable,
            allow_reboot,
        })
    }

    /// Password logins are not offered: asking to turn them on is refused.
    pub fn change_ssh(
        &self,
        enable: bool,
        password_authentication: Option<bool>,
    ) -> Outcome<(Settings, Accepted)> {
        if password_authentication == Some(true) {
            return Err(Failure::bad_input(
                "For security reasons, password authentication is no longer supported. Please use SSH keys.",
                "Из соображений безопасности вход по паролю больше не поддерживается. Используйте SSH-ключи.",
            ));
        }
        self.change(UserdataChange::SetSsh {
            enable,
            turn_off_password_authentication: password_authentication.is_some(),
        })
    }

    /// Keeps the provider's credentials in the secrets file (never in
    /// userdata or a log) and names the provider in userdata.
    pub fn set_dns_provider(
        &self,
        provider: &'static str,
        credentials: DnsCredentials,
    ) -> Outcome<Accepted> {
        let fields = [
            ("apiKey", Some(credentials.token)),
            ("tokenId", credentials.token_id),
            ("url", credentials.url),
            ("tenant", credentials.tenant),
            ("secondaryToken", credentials.secondary_token),
        ];
        for (name, value) in &fields {
            let Some(value) = value else { continue };
            let printable = value.chars().all(|c| !c.is_control() && !c.is_whitespace());
            if value.is_empty() || value.len() > 4096 || !printable {
                return Err(Failure::bad_input(
                    format!(
                        "The DNS provider's {name} must be 1 to 4096 characters without spaces or control characters"
                    ),
                    format!(
                        "Поле {name} провайдера DNS должно содержать от 1 до 4096 символов без пробелов и управляющих символов"
                    ),
                ));
            }
        }
        // Checked against the document before anything is written.
        let name_provider = UserdataChange::SetDnsProvider {
            provider: provider.to_owned(),
        };
        self.rebuilds
            .preview(&name_provider, &mut self.userdata()?)?;
        self.secrets
            .update(|secrets| {
                let dns = secrets
                    .as_object_mut()
                    .expect("the secrets file holds an object")
                    .entry("dns")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !dns.is_object() {
                    *dns = Value::Object(Map::new());
                }
                let dns = dns.as_object_mut().expect("made an object above");
                for (name, value) in fields {
                    match value {
                        Some(value) => dns.insert(name.into(), Value::String(value)),
                        None => dns.remove(name),
                    };
                }
                dns.insert("provider".into(), Value::String(provider.into()));
            })
            .map_err(|e| Failure::internal("writing the secrets file", e))?;
        tracing::info!(provider, "DNS provider credentials stored");
        self.rebuilds.change(ConfigChange::from(name_provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_for_what_userdata_leaves_out() {
        let settings = Settings::of(&json!({}));
        assert_eq!(
            settings,
            Settings {
                auto_upgrade: AutoUpgrade {
                    enable: true,
                    allow_reboot: false
                },
                ssh: Ssh {
                    enable: true,
                    password_authentication: false,
                    root_keys: vec![]
                },
                timezone: "Etc/UTC".into(),
            }
        );
        let settings = Settings::of(&json!({
            "autoUpgrade": {"enable": false, "allowReboot": true},
            "ssh": {"enable": false, "rootKeys": ["ssh-ed25519 AAAA a@b"]},
            "timezone": "Europe/Moscow"
        }));
        assert!(!settings.auto_upgrade.enable && settings.auto_upgrade.allow_reboot);
        assert!(!settings.ssh.enable);
        assert_eq!(settings.ssh.root_keys, ["ssh-ed25519 AAAA a@b"]);
        assert_eq!(settings.timezone, "Europe/Moscow");
    }
}
