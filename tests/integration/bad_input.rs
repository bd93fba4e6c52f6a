//! The bad-input matrix: every mutation field that takes arguments (root
//! and under each namespace), called with a valid token and each argument
//! or input-object field replaced in turn by a hostile value, against a
//! daemon in a testbed (so whatever reaches systemd or mounts acts there).
//! Every call answers with JSON and the daemon stays up; a refusal says why
//! and changes nothing on disk (userdata.json, flake.nix, the secrets file,
//! every row of the state DB); an accepted call stores what it was given; no
//! shell ran a value and no path appeared outside the daemon's places.

use crate::auth::{INTROSPECTION, Types};
use crate::storage::notes_module;
use crate::support::*;
use crate::testbed::{Setup, Testbed, module};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Bodies big enough for a 1 MB value to reach the resolvers (the default
/// limit refuses it with 413 first: tests/integration/limits.rs), and no
/// rebuild started by an accepted change while the matrix runs.
const CONFIG: &str = "max_body_bytes = 4194304\nrebuild_debounce_ms = 600000\n";
const STATE_DB: &str = "/var/lib/selfprivacy-api/state.db";
const USERDATA: &str = "/etc/nixos/userdata.json";
const FLAKE: &str = "/etc/nixos/flake.nix";
const SECRETS: &str = "/etc/selfprivacy/secrets.json";
const BACKUP_SETTINGS: &str = "/var/lib/selfprivacy-api/backups/settings.json";
const BACKUP_KEY: &str = "/var/lib/selfprivacy-api/backups/repository-password";
/// Tables the resource sampler fills every few seconds, whatever the
/// mutations do: left out of the before/after comparison.
const SAMPLER_TABLES: [&str; 2] = ["monitoring_samples", "monitoring_series"];
/// What the shell-metacharacter values would create if a shell ran them.
const MARKER: &str = "sp-inject";
/// Argument names whose values are secrets: stored hashed or in the
/// secrets file, so an accepted one is not looked for in plain text.
const SECRET_NAMES: [&str; 6] = [
    "password",
    "key",
    "token",
    "secondaryToken",
    "localSecret",
    "login",
];

fn setup() -> Setup<'static> {
    Setup {
        modules: vec![
            ("notes", notes_module()),
            ("echo", module("echo", &["echo.service"], json!({}))),
        ],
        userdata: json!({
            "domain": "example.org", "hostname": "testbed", "timezone": "Etc/UTC",
            "useBinds": true, "username": "owner",
            "hashedPassword": "$6$rounds=5000$salt$hash", "sshKeys": [],
            "ssh": {"enable": true, "rootKeys": [], "passwordAuthentication": false},
            "autoUpgrade": {"enable": true, "allowReboot": false},
            "users": [{"username": "alice", "hashedPassword": "$6$x$y", "sshKeys": []}],
            "modules": {"notes": {"enable": true, "location": "sdb"}, "echo": {"enable": false}}
        }),
        volumes: vec!["sdb:16"],
        config: CONFIG,
    }
}

/// A well-formed ed25519 public key (32 zero bytes: never anyone's key).
fn valid_ssh_key() -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    for field in [&b"ssh-ed25519"[..], &[0u8; 32][..]] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    format!(
        "ssh-ed25519 {} matrix",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// One argument, or one field of an input-object argument.
struct Leaf {
    arg: String,
    field: Option<String>,
    ty: Value,
}

impl Leaf {
    fn name(&self) -> &str {
        self.field.as_deref().unwrap_or(&self.arg)
    }

    fn label(&self) -> String {
        match &self.field {
            Some(field) => format!("{}.{field}", self.arg),
            None => self.arg.clone(),
        }
    }
}

/// `String!`, `[String!]`... as a variable declaration says it.
fn type_ref(ty: &Value) -> String {
    match ty["kind"].as_str().unwrap() {
        "NON_NULL" => format!("{}!", type_ref(&ty["ofType"])),
        "LIST" => format!("[{}]", type_ref(&ty["ofType"])),
        _ => ty["name"].as_str().unwrap().to_owned(),
    }
}

/// The named type under NON_NULL and LIST wrappers.
fn named(ty: &Value) -> &Value {
    if ty["kind"] == "NON_NULL" || ty["kind"] == "LIST" {
        named(&ty["ofType"])
    } else {
        ty
    }
}

fn leaves(types: &Types, field: &Value) -> Vec<Leaf> {
    let mut out = Vec::new();
    for arg in field["args"].as_array().unwrap() {
        let name = arg["name"].as_str().unwrap().to_owned();
        let base = named(&arg["type"]);
        if base["kind"] == "INPUT_OBJECT" {
            for input in types.get(base["name"].as_str().unwrap())["inputFields"]
                .as_array()
                .unwrap()
            {
                out.push(Leaf {
                    arg: name.clone(),
                    field: Some(input["name"].as_str().unwrap().to_owned()),
                    ty: input["type"].clone(),
                });
            }
        } else {
            out.push(Leaf {
                arg: name,
                field: None,
                ty: arg["type"].clone(),
            });
        }
    }
    out
}

/// A valid-looking value for an argument that is not under test, so the
/// value under test is what decides the answer.
fn baseline(
    types: &Types,
    mutation: &str,
    name: &str,
    ty: &Value,
    case: usize,
    key: &str,
) -> Value {
    let fresh = |prefix: &str| json!(format!("{prefix}{case}"));
    match (mutation, name) {
        ("createUser", "username") => return fresh("fresh"),
        ("initializeRepository", "provider") => return json!("FILE"),
        ("initializeRepository", "locationName") => {
            return json!(format!("/volumes/sdb/repo{case}"));
        }
        ("initializeRepository", "password" | "login" | "locationId") => return json!(""),
        ("setDnsProvider", "token") => return json!("dns-token-value"),
        _ => {}
    }
    match name {
        "serviceId" => json!("notes"),
        "location" | "name" => json!("sdb"),
        "username" => json!("alice"),
        "sshKey" => json!(valid_ssh_key()),
        "password" => json!("correct horse battery staple"),
        "displayName" => json!("Alice"),
        "key" => json!(key),
        "deviceName" => fresh("device"),
        "timezone" => json!("Europe/Berlin"),
        "jobId" | "uuid" => json!("00000000-0000-4000-8000-000000000000"),
        "snapshotId" => json!("deadbeef"),
        "expirationDate" => json!("2099-01-01T00:00:00"),
        "configuration" => json!({"subdomain": format!("notes{case}")}),
        "strategy" => json!("DOWNLOAD_VERIFY_OVERWRITE"),
        _ if name.ends_with("BlockDevice") => json!("sdb"),
        _ if ty["kind"] != "NON_NULL" => Value::Null,
        _ => {
            let base = named(ty);
            match (base["kind"].as_str().unwrap(), base["name"].as_str()) {
                ("ENUM", Some(enum_name)) => types.get(enum_name)["enumValues"][0]["name"].clone(),
                (_, Some("Int")) => json!(1),
                (_, Some("Boolean")) => json!(true),
                (_, Some("JSON")) => json!({}),
                _ if ty["ofType"]["kind"] == "LIST" => json!([]),
                _ => json!("x"),
            }
        }
    }
}

/// The hostile values for a leaf of type `ty`.
fn bad_values(ty: &Value) -> Vec<(String, Value)> {
    let text = |s: &str| Value::String(s.to_owned());
    let mut values: Vec<(String, Value)> = vec![
        ("empty".into(), text("")),
        ("1 MB".into(), Value::String("a".repeat(1 << 20))),
        (
            "unicode".into(),
            text("مرحبا\u{202e}abc 👩\u{200d}👩\u{200d}👧 e\u{301}\u{20dd}"),
        ),
        ("\\u0001".into(), text("a\u{1}b")),
        ("\\n".into(), text("a\nb")),
        ("\\r".into(), text("a\rb")),
        ("\\t".into(), text("a\tb")),
        ("\\u007f".into(), text("a\u{7f}b")),
        ("relative traversal".into(), text("../../etc/passwd")),
        ("absolute path".into(), text("/etc/shadow")),
        ("symlink name".into(), text("link-to-etc")),
        ("symlink path".into(), text("/volumes/link-to-etc/x")),
        ("$()".into(), text(&format!("$(touch /tmp/{MARKER}-sub)"))),
        (";".into(), text(&format!("x; touch /tmp/{MARKER}-semi"))),
        (
            "backticks".into(),
            text(&format!("`touch /tmp/{MARKER}-tick`")),
        ),
        ("|".into(), text(&format!("x | touch /tmp/{MARKER}-pipe"))),
        ("number".into(), json!(12345)),
        ("object".into(), json!({"a": 1})),
        ("null".into(), Value::Null),
        ("list".into(), json!(["x"])),
        ("boolean".into(), json!(true)),
        ("unknown id".into(), text("no-such-id")),
        (
            "unknown uuid".into(),
            text("11111111-2222-4333-8444-555555555555"),
        ),
        ("unknown hex id".into(), text(&"0123456789abcdef".repeat(4))),
    ];
    let base = named(ty);
    match (
        base["kind"].as_str().unwrap(),
        base["name"].as_str().unwrap(),
    ) {
        (_, "Int") => {
            for (label, value) in [
                ("0", json!(0)),
                ("-1", json!(-1)),
                ("i32 max", json!(i32::MAX)),
                ("i32 min", json!(i32::MIN)),
                ("2^53+1", json!(9_007_199_254_740_993u64)),
                ("1.5", json!(1.5)),
            ] {
                values.push((label.into(), value));
            }
        }
        ("ENUM", _) => {
            values.push(("unknown enum value".into(), text("NOT_A_VALUE")));
            values.push(("lowercase enum value".into(), text("file")));
        }
        (_, "DateTime") => {
            values.push(("past date".into(), text("2000-01-01T00:00:00")));
            values.push(("far date".into(), text("9999-12-31T23:59:59")));
            values.push(("not a date".into(), text("yesterday")));
        }
        (_, "JSON") => {
            for (label, value) in [
                ("subdomain traversal", json!({"subdomain": "../../etc"})),
                (
                    "subdomain shell",
                    json!({"subdomain": format!("$(touch /tmp/{MARKER}-json)")}),
                ),
                ("subdomain unicode", json!({"subdomain": "ünïcödé"})),
                ("subdomain empty", json!({"subdomain": ""})),
                ("subdomain newline", json!({"subdomain": "a\nb"})),
                ("location traversal", json!({"location": "../../etc"})),
                ("location absolute", json!({"location": "/etc"})),
                ("enable as text", json!({"enable": "yes"})),
                ("unknown option", json!({"noSuchOption": 1})),
                ("nested object", json!({"subdomain": {"deep": [1, 2]}})),
            ] {
                values.push((label.into(), value));
            }
        }
        _ => {}
    }
    values
}

/// Everything a refusal must leave as it was.
#[derive(PartialEq, Clone)]
struct Snapshot {
    files: BTreeMap<&'static str, Option<Vec<u8>>>,
    tables: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    fn take(testbed: &Testbed) -> Snapshot {
        let files = [USERDATA, FLAKE, SECRETS, BACKUP_SETTINGS, BACKUP_KEY]
            .into_iter()
            .map(|path| (path, std::fs::read(testbed.path(path)).ok()))
            .collect();
        let mut tables = dump_db(&testbed.path(STATE_DB));
        tables.retain(|name, _| !SAMPLER_TABLES.contains(&name.as_str()));
        Snapshot { files, tables }
    }

    /// What differs, by file and table.
    fn differences(&self, other: &Snapshot) -> Vec<String> {
        let mut out: Vec<String> = self
            .files
            .iter()
            .filter(|(path, bytes)| other.files.get(*path) != Some(bytes))
            .map(|(path, _)| path.to_string())
            .collect();
        let names: BTreeSet<&String> = self.tables.keys().chain(other.tables.keys()).collect();
        for name in names {
            if self.tables.get(name) != other.tables.get(name) {
                out.push(format!("table {name}"));
            }
        }
        out
    }

    /// Everything as text, to look for a stored value.
    fn text(&self) -> String {
        let mut out = String::new();
        for bytes in self.files.values().flatten() {
            out.push_str(&String::from_utf8_lossy(bytes));
        }
        for rows in self.tables.values() {
            for row in rows {
                out.push_str(row);
            }
        }
        out
    }
}

/// Every row of every table, each rendered as text.
pub fn dump_db(path: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    use rusqlite::{Connection, OpenFlags, types::ValueRef};
    // A copy (with its write-ahead log): SQLite resolves symlinks in the
    // path, and a testbed's /proc/PID/root resolves to the host's root.
    let copy = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let from = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::copy(&from, copy.path().join(format!("state.db{suffix}"))).unwrap();
        }
    }
    let db = Connection::open_with_flags(
        copy.path().join("state.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = BTreeMap::new();
    for table in tables {
        let mut statement = db
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
            .or_else(|_| db.prepare(&format!("SELECT * FROM \"{table}\"")))
            .unwrap();
        let columns = statement.column_count();
        let rows: Vec<String> = statement
            .query_map([], |row| {
                let mut cells = Vec::new();
                for i in 0..columns {
                    cells.push(match row.get_ref(i)? {
                        ValueRef::Null => "NULL".to_owned(),
                        ValueRef::Integer(n) => n.to_string(),
                        ValueRef::Real(x) => x.to_string(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        ValueRef::Blob(b) => format!("{b:02x?}"),
                    });
                }
                Ok(cells.join("\u{1f}"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.insert(table, rows);
    }
    out
}

/// Every path in the testbed but the kernel's, the host's /usr, the
/// journal, and the host's build tree bound read-only at /opt (it changes
/// when the host builds meanwhile, not by the daemon).
fn paths(testbed: &Testbed) -> BTreeSet<String> {
    let listing = testbed.run(&[
        "find",
        "/",
        "(",
        "-path",
        "/proc",
        "-o",
        "-path",
        "/sys",
        "-o",
        "-path",
        "/dev",
        "-o",
        "-path",
        "/usr",
        "-o",
        "-path",
        "/nix",
        "-o",
        "-path",
        "/opt",
        "-o",
        "-path",
        "/var/log/journal",
        "-o",
        "-path",
        "/run/systemd",
        "-o",
        "-path",
        "/run/udev",
        ")",
        "-prune",
        "-o",
        "-print",
    ]);
    listing.lines().map(str::to_owned).collect()
}

/// Where the daemon (or what it runs) may create files.
fn allowed_new_path(path: &str) -> bool {
    [
        "/volumes/sdb/",
        "/var/lib/notes",
        "/var/lib/selfprivacy-api/",
        "/etc/nixos/",
        "/etc/selfprivacy",
        "/var/lib/systemd/",
        "/run/",
        "/tmp/systemd-private-",
        "/var/tmp/systemd-private-",
        "/root/.cache/restic",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// POSTs a document: the HTTP status and the body, which must be JSON.
async fn send(
    client: &Client,
    address: &str,
    document: &str,
    variables: &Value,
) -> Result<(u16, Value), String> {
    let response = http_client()
        .post(&client.url)
        .timeout(std::time::Duration::from_secs(120))
        .header("Authorization", format!("Bearer {}", client.token))
        .header("X-Real-IP", address)
        .json(&json!({"query": document, "variables": variables}))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("no body: {e}"))?;
    let body = serde_json::from_str(&body)
        .map_err(|_| format!("HTTP {status} without a JSON body: {body:.300}"))?;
    Ok((status, body))
}

/// A fresh key for the mutations that take one, so the other arguments
/// are what is under test.
async fn key_for(client: &Client, mutation: &str) -> String {
    let asking = match mutation {
        "useRecoveryApiKey" => "getNewRecoveryApiKey",
        "authorizeWithNewDeviceApiKey" => "getNewDeviceApiKey",
        _ => return "abandon ability able".into(),
    };
    let r = client
        .query(
            &format!("mutation {{ api {{ {asking} {{ key }} }} }}"),
            json!({}),
        )
        .await;
    r["data"]["api"][asking]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{asking}: {r}"))
        .to_owned()
}

/// An accepted string value left what it asked for: one more copy of it
/// (as given, JSON-escaped, or as the daemon's documented rewrite stores
/// it), or one less for a removal. A password is never stored as given.
fn check_stored(
    failures: &mut Vec<String>,
    what: &str,
    mutation: &str,
    leaf: &Leaf,
    given: &str,
    before: &Snapshot,
    after: &Snapshot,
) {
    let (before, after) = (before.text(), after.text());
    let count = |text: &str, value: &str| {
        if value.is_empty() {
            0
        } else {
            let escaped = serde_json::to_string(value).unwrap();
            let escaped = &escaped[1..escaped.len() - 1];
            text.matches(value)
                .count()
                .max(text.matches(escaped).count())
        }
    };
    let name = leaf.name();
    if name == "password" {
        if count(&after, given) > count(&before, given) {
            failures.push(format!("{what}: a password stored as given"));
        }
        return;
    }
    // Secrets go to the secrets file as given; dates are stored in the
    // daemon's own format; userdata has no place for a display name (the
    // JSON user store keeps username, hash and keys, as the Python API).
    if SECRET_NAMES.contains(&name) || name == "expirationDate" || name == "displayName" {
        return;
    }
    let value = if name == "deviceName" {
        sanitized_device_name(given)
    } else {
        given.to_owned()
    };
    if value.is_empty() {
        return;
    }
    let removes = ["delete", "remove", "forget"]
        .iter()
        .any(|verb| mutation.starts_with(verb));
    let (was, is) = (count(&before, &value), count(&after, &value));
    if removes && is >= was {
        failures.push(format!(
            "{what}: accepted removal, but {value:.80} is still there"
        ));
    }
    if !removes && is <= was {
        failures.push(format!(
            "{what}: accepted, but {value:.80} is not stored as given"
        ));
    }
}

/// How the daemon names a device (the Python API's rule, which the app
/// shows): ASCII letters and digits kept, anything else `_`.
fn sanitized_device_name(name: &str) -> String {
    if name.is_empty() {
        return "Unknown device".to_owned();
    }
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}... ({} bytes)", &text[..60], text.len())
    } else {
        text
    }
}

#[derive(Default)]
struct Counts {
    mutations: usize,
    cases: usize,
    refused: usize,
    accepted: usize,
    accepted_unchanged: usize,
    changes_on_refusal: usize,
    request_level: BTreeMap<u16, usize>,
}

#[tokio::test]
async fn every_mutation_argument_survives_hostile_values_and_a_refusal_changes_nothing() {
    let testbed = Testbed::up(setup());
    let client = testbed.start_daemon().await;
    // A symlink out of the volumes, for the "symlink" values.
    testbed.run(&["ln", "-s", "/etc", "/volumes/link-to-etc"]);
    let schema = client.query(INTROSPECTION, json!({})).await;
    assert_no_errors(&schema);
    let types = Types::introspect(&schema);
    let main_pid = testbed.run(&["systemctl", "show", "-P", "MainPID", "selfprivacy-api"]);

    // (namespace or "", field)
    let mut fields: Vec<(String, Value)> = Vec::new();
    let mut skipped = Vec::new();
    for field in types.get("Mutation")["fields"].as_array().unwrap() {
        let base = named(&field["type"]);
        let name = field["name"].as_str().unwrap();
        if base["name"].as_str().unwrap().ends_with("Mutations") {
            for nested in types.get(base["name"].as_str().unwrap())["fields"]
                .as_array()
                .unwrap()
            {
                fields.push((name.to_owned(), nested.clone()));
            }
        } else {
            fields.push((String::new(), field.clone()));
        }
    }
    fields.retain(|(namespace, field)| {
        let keep = !field["args"].as_array().unwrap().is_empty();
        if !keep {
            skipped.push(format!("{namespace}.{}", field["name"].as_str().unwrap()));
        }
        keep
    });

    let mut counts = Counts::default();
    let mut failures: Vec<String> = Vec::new();
    let mut files_before = paths(&testbed);
    for (namespace, field) in &fields {
        let mutation = field["name"].as_str().unwrap();
        let at = if namespace.is_empty() {
            mutation.to_owned()
        } else {
            format!("{namespace}.{mutation}")
        };
        counts.mutations += 1;
        let args = field["args"].as_array().unwrap();
        let declarations: Vec<String> = args
            .iter()
            .map(|a| format!("${}: {}", a["name"].as_str().unwrap(), type_ref(&a["type"])))
            .collect();
        let call_args: Vec<String> = args
            .iter()
            .map(|a| format!("{0}: ${0}", a["name"].as_str().unwrap()))
            .collect();
        let call = format!(
            "{mutation}({}) {{ success message code }}",
            call_args.join(", ")
        );
        let document = if namespace.is_empty() {
            format!("mutation({}) {{ {call} }}", declarations.join(", "))
        } else {
            format!(
                "mutation({}) {{ {namespace} {{ {call} }} }}",
                declarations.join(", ")
            )
        };
        for leaf in leaves(&types, field) {
            for (label, bad) in bad_values(&leaf.ty) {
                let case = counts.cases;
                counts.cases += 1;
                let what = format!("{at}({} = {label})", leaf.label());
                let key = key_for(&client, mutation).await;
                // The arguments: baselines, the leaf replaced.
                let mut variables = serde_json::Map::new();
                for arg in args {
                    let name = arg["name"].as_str().unwrap();
                    let base = named(&arg["type"]);
                    let value = if base["kind"] == "INPUT_OBJECT" {
                        let mut object = serde_json::Map::new();
                        for input in types.get(base["name"].as_str().unwrap())["inputFields"]
                            .as_array()
                            .unwrap()
                        {
                            let input_name = input["name"].as_str().unwrap();
                            let value = if leaf.arg == name
                                && leaf.field.as_deref() == Some(input_name)
                            {
                                bad.clone()
                            } else {
                                baseline(&types, mutation, input_name, &input["type"], case, &key)
                            };
                            object.insert(input_name.to_owned(), value);
                        }
                        Value::Object(object)
                    } else if leaf.arg == name {
                        bad.clone()
                    } else {
                        baseline(&types, mutation, name, &arg["type"], case, &key)
                    };
                    variables.insert(name.to_owned(), value);
                }
                let variables = Value::Object(variables);
                let before = Snapshot::take(&testbed);
                // An address of its own per call: a refused key is refused
                // for what it is, not throttled as a repeated guess.
                let address = format!(
                    "10.{}.{}.{}",
                    case / 62500,
                    case / 250 % 250,
                    case % 250 + 1
                );
                let (status, response) = match send(&client, &address, &document, &variables).await
                {
                    Ok(answer) => answer,
                    Err(error) => {
                        failures.push(format!("{what}: {error}"));
                        continue;
                    }
                };
                let after = Snapshot::take(&testbed);

                let alive = client.query("{ api { version } }", json!({})).await;
                assert_eq!(
                    alive["data"]["api"]["version"], "3.8.3",
                    "{what}: the daemon stopped answering: {alive}"
                );
                if status != 200 {
                    // Refused before any resolver ran (a documented 4xx).
                    *counts.request_level.entry(status).or_default() += 1;
                    if !(400..500).contains(&status) {
                        failures.push(format!("{what}: HTTP {status}: {}", shorten(&response)));
                    }
                }
                let payload = if namespace.is_empty() {
                    &response["data"][mutation]
                } else {
                    &response["data"][namespace.as_str()][mutation]
                };
                let errors = response["errors"].as_array();
                let refused = errors.is_some_and(|e| !e.is_empty())
                    || payload["success"] != true
                    || payload["code"].as_i64().is_none_or(|code| code >= 400);
                if refused {
                    counts.refused += 1;
                    let message = errors
                        .and_then(|e| e.first())
                        .map(|e| e["message"].clone())
                        .unwrap_or_else(|| payload["message"].clone());
                    if message.as_str().is_none_or(|m| m.trim().is_empty()) {
                        failures.push(format!(
                            "{what}: refused without a message: {}",
                            shorten(&response)
                        ));
                    }
                    if let Some(code) = errors
                        .into_iter()
                        .flatten()
                        .find_map(|e| e["extensions"]["code"].as_str())
                        .filter(|c| c.contains("INTERNAL"))
                    {
                        failures.push(format!("{what}: an internal error ({code}): {response}"));
                    }
                    if before != after {
                        counts.changes_on_refusal += 1;
                        failures.push(format!(
                            "{what}: refused ({}) but changed {:?}",
                            shorten(&message),
                            before.differences(&after)
                        ));
                    }
                    continue;
                }
                counts.accepted += 1;
                // Accepted: what changed holds what was asked.
                if before == after {
                    counts.accepted_unchanged += 1;
                    eprintln!("accepted, nothing changed: {what}");
                    continue;
                }
                eprintln!("accepted: {what} changed {:?}", before.differences(&after));
                if let Value::String(text) = &bad {
                    check_stored(&mut failures, &what, mutation, &leaf, text, &before, &after);
                }
            }
        }
        // After each field: no panic, the same process, no shell ran a
        // value, and no file appeared outside the daemon's places.
        let panics = testbed.exec(&[
            "journalctl",
            "-u",
            "selfprivacy-api",
            "--no-pager",
            "-q",
            "--grep",
            "panicked",
        ]);
        let panics = String::from_utf8_lossy(&panics.stdout).trim().to_owned();
        assert!(panics.is_empty(), "{at}: the daemon panicked:\n{panics}");
        let pid = testbed.run(&["systemctl", "show", "-P", "MainPID", "selfprivacy-api"]);
        assert_eq!(pid, main_pid, "{at}: the daemon restarted");
        let files_after = paths(&testbed);
        for new in files_after.difference(&files_before) {
            if new.contains(MARKER) {
                failures.push(format!("{at}: a shell ran a value: {new} exists"));
            } else if !allowed_new_path(new) {
                failures.push(format!("{at}: created {new}"));
            }
        }
        files_before = files_after;
    }
    let host_markers: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(MARKER))
        .map(|e| e.path())
        .collect();
    assert!(host_markers.is_empty(), "on the host: {host_markers:?}");

    eprintln!("skipped (no arguments): {}", skipped.join(", "));
    report(format!(
        "bad-input matrix: {} mutations, {} cases, {} refused ({} before any resolver: {:?}), {} accepted ({} changing nothing), {} changes on refusal",
        counts.mutations,
        counts.cases,
        counts.refused,
        counts.request_level.values().sum::<usize>(),
        counts.request_level,
        counts.accepted,
        counts.accepted_unchanged,
        counts.changes_on_refusal
    ));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(counts.changes_on_refusal, 0);
    assert!(
        counts.mutations >= 40,
        "walked {} mutations",
        counts.mutations
    );
}
