//! A service's settings: the options of its definition that the owner may
//! change, their values (userdata, else the default) and their checks.

use super::definition::{Definition, OptionDefinition};
use crate::domain::error::{Failure, Outcome};
use serde_json::Value;

/// Subdomains that belong to the server itself.
const RESERVED_SUBDOMAINS: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "auth",
    "user",
    "users",
    "ntfy",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    String {
        regex: Option<String>,
        allow_empty: bool,
    },
    Bool,
    Enum {
        options: Vec<String>,
    },
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub id: String,
    pub description: String,
    pub widget: String,
    pub weight: i64,
    pub kind: Kind,
    pub default: Value,
    pub value: Value,
}

impl Setting {
    /// For the app, which knows no int items: integers as text.
    pub fn text(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// The regex the app checks an int item's text with.
    pub fn int_regex(min: Option<i64>) -> String {
        if min.is_some_and(|m| m >= 0) {
            "^[0-9]+$".into()
        } else {
            "^-?[0-9]+$".into()
        }
    }
}

fn setting_of(option: &OptionDefinition) -> Option<Setting> {
    let meta = option.meta.as_ref()?;
    let (kind, widget) = match meta.kind.as_deref()? {
        "string" => (
            Kind::String {
                regex: meta.regex.clone(),
                allow_empty: meta.allow_empty,
            },
            "text",
        ),
        "bool" => (Kind::Bool, "switch"),
        "enum" => (
            Kind::Enum {
                options: meta.options.clone(),
            },
            "select",
        ),
        "int" => (
            Kind::Int {
                min: meta.min_value,
                max: meta.max_value,
            },
            "number",
        ),
        _ => return None, // enable, location: not settings
    };
    Some(Setting {
        id: option.name.clone(),
        description: option.description.clone().unwrap_or_default(),
        widget: meta.widget.clone().unwrap_or_else(|| widget.to_owned()),
        weight: meta.weight.unwrap_or(50),
        kind,
        default: option.default.clone(),
        value: option.default.clone(),
    })
}

/// The settings of a service, with their current values from `module`
/// (`userdata.modules.<id>`), sorted by weight (ties: by name).
pub fn settings(definition: &Definition, module: &serde_json::Map<String, Value>) -> Vec<Setting> {
    let mut settings: Vec<Setting> = definition
        .options
        .iter()
        .filter_map(|(key, option)| {
            let mut setting = setting_of(option)?;
            setting.id = key.clone();
            if let Some(value) = module.get(key).filter(|v| !v.is_null()) {
                setting.value = value.clone();
            }
            Some(setting)
        })
        .collect();
    settings.sort_by_key(|s| s.weight);
    settings
}

fn bad(en: String, ru: String) -> Failure {
    Failure::bad_input(en, ru)
}

/// Checks one new value and gives the form it is stored in.
pub fn check_value(setting: &Setting, value: &Value) -> Outcome<Value> {
    let id = &setting.id;
    match &setting.kind {
        Kind::String { regex, allow_empty } => {
            let Some(text) = value.as_str() else {
                return Err(bad(
                    format!("{id} must be text"),
                    format!("{id} должно быть текстом"),
                ));
            };
            if text.is_empty() && !allow_empty {
                return Err(bad(
                    format!("{id} must not be empty"),
                    format!("{id} не может быть пустым"),
                ));
            }
            if let Some(pattern) = regex
                && !(text.is_empty() && *allow_empty)
                && !whole_match(pattern, text)
            {
                return Err(bad(
                    format!("{text:?} is not a valid value for {id} (must match {pattern})"),
                    format!(
                        "{text:?} — недопустимое значение {id} (должно соответствовать {pattern})"
                    ),
                ));
            }
            Ok(Value::String(text.to_owned()))
        }
        Kind::Bool => value.as_bool().map(Value::Bool).ok_or_else(|| {
            bad(
                format!("{id} must be true or false"),
                format!("{id} должно быть true или false"),
            )
        }),
        Kind::Enum { options } => match value.as_str() {
            Some(choice) if options.iter().any(|o| o == choice) => {
                Ok(Value::String(choice.to_owned()))
            }
            _ => Err(bad(
                format!("{id} must be one of: {}", options.join(", ")),
                format!("{id} должно быть одним из: {}", options.join(", ")),
            )),
        },
        Kind::Int { min, max } => {
            // The app sends ints as text (it shows them as string items).
            let number = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) if !s.trim().is_empty() => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            let Some(number) = number else {
                return Err(bad(
                    format!("{id} must be a whole number"),
                    format!("{id} должно быть целым числом"),
                ));
            };
            let low = min.unwrap_or(i64::MIN);
            let high = max.unwrap_or(i64::MAX);
            if number < low || number > high {
                let range = match (min, max) {
                    (Some(a), Some(b)) => format!("{a}–{b}"),
                    (Some(a), None) => format!("≥ {a}"),
                    (None, Some(b)) => format!("≤ {b}"),
                    (None, None) => String::new(),
                };
                return Err(bad(
                    format!("{id} must be within {range}, not {number}"),
                    format!("{id} должно быть в пределах {range}, а не {number}"),
                ));
            }
            Ok(Value::from(number))
        }
    }
}

/// A regex match of the whole value (not just a prefix, as Python's
/// `re.match` did).
pub fn whole_match(pattern: &str, text: &str) -> bool {
    regex_lite::Regex::new(&format!("^(?:{pattern})$"))
        .map(|re| re.is_match(text))
        .unwrap_or(false)
}

/// Checks every new value of `changes` for `definition` against `document`
/// (the whole userdata) and writes them into it. Nothing is written unless
/// every value passes. `catalogue` gives the other services, whose
/// subdomains must not be taken.
pub fn apply_settings(
    definition: &Definition,
    catalogue: &[std::sync::Arc<Definition>],
    changes: &serde_json::Map<String, Value>,
    document: &mut Value,
) -> Outcome<()> {
    let id = &definition.meta.id;
    if changes.is_empty() {
        return Err(bad(
            "No settings were given".into(),
            "Не передано ни одной настройки".into(),
        ));
    }
    let current = document["modules"][id]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let all = settings(definition, &current);
    // Values are checked against a working copy that already holds the
    // earlier values of this batch (two options given one subdomain clash).
    let mut working = document.clone();
    for (key, value) in changes {
        let Some(setting) = all.iter().find(|s| &s.id == key) else {
            return Err(bad(
                format!("{key} is not a setting of {}", definition.meta.name),
                format!("{key} не является настройкой {}", definition.meta.name),
            ));
        };
        let stored = check_value(setting, value)?;
        if setting.widget == "subdomain" {
            check_subdomain_free(
                definition,
                key,
                stored.as_str().unwrap_or(""),
                catalogue,
                &working,
            )?;
        }
        module_entry(&mut working, id)?.insert(key.clone(), stored);
    }
    *document = working;
    Ok(())
}

/// Switches module `id` on; `default_location` is set as its `location`
/// when it has none.
pub fn enable_module(
    document: &mut Value,
    id: &str,
    default_location: Option<&str>,
) -> Outcome<()> {
    let module = module_entry(document, id)?;
    module.insert("enable".into(), Value::Bool(true));
    if let Some(location) = default_location
        && module.get("location").is_none_or(Value::is_null)
    {
        module.insert("location".into(), Value::String(location.to_owned()));
    }
    Ok(())
}

/// `document.modules.<id>`, created if missing.
pub fn module_entry<'a>(
    document: &'a mut Value,
    id: &str,
) -> Outcome<&'a mut serde_json::Map<String, Value>> {
    let invalid = || Failure::internal("changing userdata", "userdata.json is not a JSON object");
    let root = document.as_object_mut().ok_or_else(invalid)?;
    let modules = root
        .entry("modules")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(invalid)?;
    modules
        .entry(id.to_owned())
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(invalid)
}

/// A subdomain may not be reserved or used by another service (or another
/// option of the same one); keeping the current value is fine.
fn check_subdomain_free(
    definition: &Definition,
    option: &str,
    subdomain: &str,
    catalogue: &[std::sync::Arc<Definition>],
    document: &Value,
) -> Outcome<()> {
    let taken = |by: &str| {
        bad(
            format!("The subdomain {subdomain} is already used by {by}"),
            format!("Поддомен {subdomain} уже занят: {by}"),
        )
    };
    let lower = subdomain.to_ascii_lowercase();
    if RESERVED_SUBDOMAINS.contains(&lower.as_str()) {
        return Err(taken("the server itself"));
    }
    for other in catalogue {
        let module = &document["modules"][&other.meta.id];
        for other_option in other.subdomain_options() {
            if other.meta.id == definition.meta.id && other_option == option {
                continue;
            }
            let value = module
                .get(other_option)
                .filter(|v| !v.is_null())
                .or_else(|| other.options.get(other_option).map(|o| &o.default));
            if value
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(subdomain))
            {
                return Err(taken(&other.meta.name));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn definition(id: &str, subdomain_default: &str) -> Arc<Definition> {
        let text = json!({
            "meta": {"spModuleSchemaVersion": 1, "id": id, "name": id.to_uppercase(), "description": id, "svgIcon": "<svg/>", "supportLevel": "community", "systemdServices": [format!("{id}.service")]},
            "options": {
                "enable": {"name": "enable", "default": false, "meta": {"type": "enable"}},
                "subdomain": {"name": "subdomain", "default": subdomain_default, "description": "Subdomain",
                    "meta": {"type": "string", "widget": "subdomain", "weight": 0, "regex": "[a-z0-9][a-z0-9-]{0,61}[a-z0-9]"}},
                "adminSubdomain": {"name": "adminSubdomain", "default": format!("{subdomain_default}-admin"), "description": "Admin subdomain",
                    "meta": {"type": "string", "widget": "subdomain", "weight": 1, "regex": "[a-z0-9][a-z0-9-]{0,61}[a-z0-9]"}},
                "theme": {"name": "theme", "default": "light", "description": "Theme",
                    "meta": {"type": "enum", "options": ["light", "dark"], "weight": 5}},
                "debug": {"name": "debug", "default": false, "description": "Debug", "meta": {"type": "bool"}},
                "uploadMb": {"name": "uploadMb", "default": 10, "description": "Upload limit",
                    "meta": {"type": "int", "minValue": 1, "maxValue": 1024, "weight": 3}},
                "motd": {"name": "motd", "default": "", "description": "Message", "meta": {"type": "string", "allowEmpty": true}}
            }
        });
        Arc::new(Definition::parse(id, text.to_string().as_bytes()).unwrap())
    }

    #[test]
    fn settings_are_sorted_by_weight_with_values_from_userdata() {
        let notes = definition("notes", "notes");
        let module = json!({"enable": true, "theme": "dark"});
        let list = settings(&notes, module.as_object().unwrap());
        let ids: Vec<_> = list.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "subdomain",
                "adminSubdomain",
                "uploadMb",
                "theme",
                "debug",
                "motd"
            ]
        );
        assert_eq!(list[3].value, "dark");
        assert_eq!(list[0].widget, "subdomain");
        assert_eq!(list[4].widget, "switch");
    }

    #[test]
    fn values_are_checked_whole_and_nothing_is_written_on_any_failure() {
        let notes = definition("notes", "notes");
        let git = definition("git", "git");
        let catalogue = vec![notes.clone(), git.clone()];
        let mut document = json!({"domain": "x.org", "modules": {"notes": {"enable": true, "subdomain": "notes"}}});
        let original = document.clone();
        let try_apply = |changes: serde_json::Value, doc: &mut Value| {
            apply_settings(&notes, &catalogue, changes.as_object().unwrap(), doc)
        };
        for bad_change in [
            json!({"subdomain": "Not valid!"}),
            json!({"subdomain": "ok-prefix!!"}), // only a prefix matches
            json!({"subdomain": "git"}),         // another service's default
            json!({"subdomain": "api"}),         // reserved
            json!({"theme": "blue"}),
            json!({"debug": "yes"}),
            json!({"uploadMb": 0}),
            json!({"uploadMb": "2000"}),
            json!({"uploadMb": "12abc"}),
            json!({"enable": false}), // not a setting
            json!({"nonsense": 1}),
            json!({"theme": "dark", "uploadMb": 5000}), // one bad value spoils all
            json!({"subdomain": "same", "adminSubdomain": "same"}), // clash within the batch
        ] {
            let failure = try_apply(bad_change.clone(), &mut document).unwrap_err();
            assert_eq!(
                failure.kind,
                crate::domain::error::FailureKind::BadInput,
                "{bad_change}"
            );
            assert_eq!(document, original, "{bad_change} changed nothing");
        }
        try_apply(
            json!({"subdomain": "notes", "uploadMb": "512", "motd": "", "theme": "dark"}),
            &mut document,
        )
        .unwrap();
        assert_eq!(
            document["modules"]["notes"]["uploadMb"], 512,
            "stored as a number"
        );
        assert_eq!(document["modules"]["notes"]["theme"], "dark");
        assert_eq!(document["domain"], "x.org");
    }
}
