//! The sp-module definition format (`/etc/sp-modules/<id>`), as generated
//! from each module flake's `meta` and options by the NixOS configuration.

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    pub meta: Meta,
    pub options: BTreeMap<String, OptionDefinition>,
    /// Configuration paths the module reads (older generator versions).
    #[serde(default)]
    pub config_paths_needed: Vec<Vec<String>>,
}

fn yes() -> bool {
    true
}

fn default_description() -> String {
    "No description found!".into()
}

fn default_backup_description() -> String {
    "No backup description found!".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub id: String,
    pub name: String,
    #[serde(default = "default_description")]
    pub description: String,
    /// Raw SVG text.
    #[serde(default)]
    pub svg_icon: String,
    /// `svg_icon` in base64, as the API sends it: encoded once per parse,
    /// not once per service per query.
    #[serde(skip)]
    pub svg_icon_base64: String,
    #[serde(default = "yes")]
    pub show_url: bool,
    #[serde(default)]
    pub primary_subdomain: Option<String>,
    #[serde(default)]
    pub is_movable: bool,
    #[serde(default)]
    pub is_required: bool,
    #[serde(default = "yes")]
    pub can_be_backed_up: bool,
    #[serde(default = "default_backup_description")]
    pub backup_description: String,
    pub systemd_services: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub folders: Vec<String>,
    #[serde(default)]
    pub owned_folders: Vec<OwnedFolder>,
    #[serde(default)]
    pub postgre_databases: Vec<String>,
    #[serde(default)]
    pub license: Vec<License>,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub source_page: Option<String>,
    #[serde(default)]
    pub support_level: SupportLevel,
    #[serde(default)]
    pub sso: Option<Sso>,
}

impl Meta {
    /// The service's system user: `user`, or the id.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.id)
    }

    /// The service's group: `group`, or the user.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or_else(|| self.user())
    }

    /// Every data folder: `folders` and the paths of `ownedFolders`.
    pub fn all_folders(&self) -> Vec<&str> {
        self.folders
            .iter()
            .map(String::as_str)
            .chain(self.owned_folders.iter().map(|f| f.path.as_str()))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OwnedFolder {
    pub path: String,
    pub owner: String,
    pub group: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct License {
    pub deprecated: bool,
    pub free: bool,
    pub full_name: String,
    pub redistributable: bool,
    pub short_name: String,
    #[serde(default)]
    pub spdx_id: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SupportLevel {
    Normal,
    Experimental,
    Deprecated,
    Community,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sso {
    #[serde(default)]
    pub user_group: Option<String>,
    #[serde(default)]
    pub admin_group: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OptionDefinition {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub default: Value,
    #[serde(default)]
    pub meta: Option<OptionMeta>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptionMeta {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub widget: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub allow_empty: bool,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub min_value: Option<i64>,
    #[serde(default)]
    pub max_value: Option<i64>,
    #[serde(default)]
    pub weight: Option<i64>,
}

/// The systemd slice of a module: its id with `-` replaced by `_`
/// (`my-app` runs in `my_app.slice`; `my-app.slice` would be a slice nested
/// in `my.slice`).
pub fn slice_of(id: &str) -> String {
    format!("{}.slice", id.replace('-', "_"))
}

/// Whether `id` is a module id as documented: 1 to 64 of `A-Za-z0-9` and
/// `-`, not starting with `-`. (No `_`: `my-app` and `my_app` would share
/// a slice.)
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('-')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Meta fields without which SelfPrivacy's format is not followed (the
/// types above would otherwise fill in defaults).
const REQUIRED_META: [&str; 4] = [
    "spModuleSchemaVersion",
    "description",
    "svgIcon",
    "supportLevel",
];

/// A definition that cannot be used, and why; the message names the module.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("module {0:?}: not a valid definition: {1}")]
    Format(String, serde_json::Error),
    #[error("module {0:?}: {1}")]
    Invalid(String, String),
}

impl Definition {
    /// Parses and checks a definition file named `file_id`.
    pub fn parse(file_id: &str, bytes: &[u8]) -> Result<Definition, DefinitionError> {
        let format = |e| DefinitionError::Format(file_id.to_owned(), e);
        let raw: Value = serde_json::from_slice(bytes).map_err(format)?;
        Self::check_required(&raw)
            .map_err(|why| DefinitionError::Invalid(file_id.to_owned(), why))?;
        let mut definition: Definition = serde_json::from_value(raw).map_err(format)?;
        definition.meta.svg_icon_base64 =
            base64::engine::general_purpose::STANDARD.encode(definition.meta.svg_icon.as_bytes());
        definition
            .check(file_id)
            .map_err(|why| DefinitionError::Invalid(file_id.to_owned(), why))?;
        Ok(definition)
    }

    /// The fields that have defaults in the types but are required by the
    /// format: every missing one is listed.
    fn check_required(raw: &Value) -> Result<(), String> {
        let meta = &raw["meta"];
        let mut missing: Vec<String> = REQUIRED_META
            .iter()
            .filter(|key| meta.get(**key).is_none_or(Value::is_null))
            .map(|key| format!("meta.{key}"))
            .collect();
        if let Some(version) = meta.get("spModuleSchemaVersion")
            && !version.is_null()
            && version != 1
        {
            return Err(format!(
                "meta.spModuleSchemaVersion is {version}; this daemon reads version 1"
            ));
        }
        let enable = &raw["options"]["enable"];
        if enable.is_null() {
            missing.push("the `enable` option".into());
        } else if enable["meta"]["type"] != "enable" || !enable["default"].is_boolean() {
            return Err(
                "option enable: needs meta.type \"enable\" and a true/false default".into(),
            );
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {}", missing.join(", ")))
        }
    }

    fn check(&self, file_id: &str) -> Result<(), String> {
        let invalid = |why: String| Err(why);
        let id = &self.meta.id;
        if !is_valid_id(id) {
            return invalid(format!(
                "meta.id {id:?} must be 1 to 64 letters (A-Z, a-z), digits or '-', not starting with '-'"
            ));
        }
        if id != file_id {
            return invalid(format!(
                "meta.id {id:?} differs from the file name {file_id:?}"
            ));
        }
        for unit in &self.meta.systemd_services {
            if unit.is_empty() || unit.contains('/') || !unit.contains('.') {
                return invalid(format!("{unit:?} is not a systemd unit name"));
            }
        }
        if self.meta.is_movable && !self.options.contains_key("location") {
            return invalid("the service is movable but has no `location` option".into());
        }
        for (key, option) in &self.options {
            let Some(meta) = &option.meta else { continue };
            match meta.kind.as_deref() {
                None | Some("enable" | "location" | "string" | "bool" | "enum" | "int") => {}
                Some(other) => return invalid(format!("option {key}: unknown type {other:?}")),
            }
            if meta.widget.as_deref() == Some("subdomain") && meta.regex.is_none() {
                return invalid(format!("option {key}: a subdomain option needs a regex"));
            }
            if let Some(pattern) = &meta.regex
                && regex_lite::Regex::new(pattern).is_err()
            {
                return invalid(format!("option {key}: invalid regex {pattern:?}"));
            }
            if meta.kind.as_deref() == Some("enum") && meta.options.is_empty() {
                return invalid(format!("option {key}: an enum option needs options"));
            }
        }
        Ok(())
    }

    /// The names of the options whose widget is `subdomain`.
    pub fn subdomain_options(&self) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(_, o)| o.meta.as_ref().and_then(|m| m.widget.as_deref()) == Some("subdomain"))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// The option that gives the service's address: `primarySubdomain` if
    /// it names a subdomain option, otherwise the first one.
    pub fn primary_subdomain_option(&self) -> Option<&str> {
        let options = self.subdomain_options();
        match &self.meta.primary_subdomain {
            Some(primary) if options.contains(&primary.as_str()) => Some(primary.as_str()),
            _ => options.first().copied(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn example(id: &str) -> String {
        serde_json::json!({
            "meta": {
                "spModuleSchemaVersion": 1, "id": id, "name": "Echo",
                "description": "An example", "svgIcon": "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
                "systemdServices": [format!("{id}.service")],
                "isMovable": true, "folders": [format!("/var/lib/{id}")],
                "license": [{"deprecated": false, "free": true, "fullName": "MIT License",
                             "redistributable": true, "shortName": "mit", "spdxId": "MIT",
                             "url": "https://spdx.org/licenses/MIT.html"}],
                "supportLevel": "community"
            },
            "options": {
                "enable": {"name": "enable", "default": false, "meta": {"type": "enable"}},
                "location": {"name": "location", "default": null, "meta": {"type": "location"}},
                "subdomain": {"name": "subdomain", "default": id, "description": "Subdomain",
                              "meta": {"type": "string", "widget": "subdomain", "weight": 0,
                                       "regex": "[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]"}}
            }
        })
        .to_string()
    }

    #[test]
    fn parses_with_documented_defaults() {
        let d = Definition::parse("echo", example("echo").as_bytes()).unwrap();
        assert!(d.meta.show_url && d.meta.can_be_backed_up && !d.meta.is_required);
        assert_eq!(d.meta.user(), "echo");
        assert_eq!(d.meta.group(), "echo");
        assert_eq!(d.meta.support_level, SupportLevel::Community);
        assert_eq!(d.meta.backup_description, "No backup description found!");
        assert_eq!(d.primary_subdomain_option(), Some("subdomain"));
    }

    #[test]
    fn rejects_broken_definitions_with_a_reason() {
        let wrong_name = Definition::parse("other", example("echo").as_bytes()).unwrap_err();
        assert!(wrong_name.to_string().contains("file name"));
        let mut movable = serde_json::from_str::<Value>(&example("echo")).unwrap();
        movable["options"]
            .as_object_mut()
            .unwrap()
            .remove("location");
        let err = Definition::parse("echo", movable.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("movable"));
        assert!(Definition::parse("echo", b"{\"meta\":{}}").is_err());
        let mut path_id = serde_json::from_str::<Value>(&example("echo")).unwrap();
        path_id["meta"]["id"] = "../etc".into();
        assert!(Definition::parse("../etc", path_id.to_string().as_bytes()).is_err());
    }

    #[test]
    fn ids_are_letters_digits_and_hyphens() {
        for good in ["my-app", "MyApp2", "a"] {
            assert!(is_valid_id(good), "{good}");
            let text = example(good);
            let d = Definition::parse(good, text.as_bytes()).unwrap();
            assert_eq!(d.meta.id, good);
        }
        for bad in ["my_app", "-app", "", "a.b", "caf\u{e9}", &"a".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad}");
        }
        let mut underscore = serde_json::from_str::<Value>(&example("my-app")).unwrap();
        underscore["meta"]["id"] = "my_app".into();
        let err = Definition::parse("my_app", underscore.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("\"my_app\""), "{err}");
    }

    #[test]
    fn a_slice_is_the_id_with_underscores() {
        assert_eq!(slice_of("my-awesome-service"), "my_awesome_service.slice");
        assert_eq!(slice_of("echo"), "echo.slice");
    }

    #[test]
    fn required_meta_is_checked_naming_the_module() {
        for key in REQUIRED_META {
            let mut without = serde_json::from_str::<Value>(&example("echo")).unwrap();
            without["meta"].as_object_mut().unwrap().remove(key);
            let err = Definition::parse("echo", without.to_string().as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("module \"echo\": "), "{text}");
            assert!(text.contains(&format!("meta.{key}")), "{text}");
        }
        let mut all = serde_json::from_str::<Value>(&example("echo")).unwrap();
        for key in REQUIRED_META {
            all["meta"].as_object_mut().unwrap().remove(key);
        }
        let text = Definition::parse("echo", all.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        for key in REQUIRED_META {
            assert!(text.contains(&format!("meta.{key}")), "all listed: {text}");
        }

        let mut version = serde_json::from_str::<Value>(&example("echo")).unwrap();
        version["meta"]["spModuleSchemaVersion"] = 2.into();
        let err = Definition::parse("echo", version.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("version 1"), "{err}");

        let mut no_enable = serde_json::from_str::<Value>(&example("echo")).unwrap();
        no_enable["options"]
            .as_object_mut()
            .unwrap()
            .remove("enable");
        let err = Definition::parse("echo", no_enable.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("`enable` option"), "{err}");

        let mut wrong_enable = serde_json::from_str::<Value>(&example("echo")).unwrap();
        wrong_enable["options"]["enable"]["meta"]["type"] = "bool".into();
        let err = Definition::parse("echo", wrong_enable.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("option enable"), "{err}");
        wrong_enable["options"]["enable"]["meta"]["type"] = "enable".into();
        wrong_enable["options"]["enable"]["default"] = "no".into();
        assert!(Definition::parse("echo", wrong_enable.to_string().as_bytes()).is_err());
    }
}
