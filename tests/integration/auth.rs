//! Who may ask what: an auth walk over the whole schema, the accepted token
//! forms, tokens in URLs, and slowing down guessers.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const INTROSPECTION: &str = r#"{ __schema {
  queryType { name } mutationType { name } subscriptionType { name }
  types { name kind enumValues { name }
    inputFields { name defaultValue type { ...T } }
    fields(includeDeprecated: true) { name type { ...T } args { name defaultValue type { ...T } } } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }"#;

pub struct Types(HashMap<String, Value>);

impl Types {
    pub fn get(&self, name: &str) -> &Value {
        &self.0[name]
    }

    fn field(&self, type_name: &str, field: &str) -> &Value {
        self.get(type_name)["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == field)
            .unwrap_or_else(|| panic!("{type_name}.{field} is not in the schema"))
    }

    pub fn introspect(schema: &Value) -> Types {
        Types(
            schema["data"]["__schema"]["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
                .collect(),
        )
    }

    /// A literal of this type, for required arguments.
    fn literal(&self, ty: &Value) -> String {
        match ty["kind"].as_str().unwrap() {
            "NON_NULL" => self.literal(&ty["ofType"]),
            "LIST" => "[]".into(),
            "ENUM" => self.get(ty["name"].as_str().unwrap())["enumValues"][0]["name"]
                .as_str()
                .unwrap()
                .into(),
            "INPUT_OBJECT" => {
                let fields = self.get(ty["name"].as_str().unwrap())["inputFields"]
                    .as_array()
                    .unwrap();
                let required: Vec<String> = fields
                    .iter()
                    .filter(|f| f["type"]["kind"] == "NON_NULL" && f["defaultValue"].is_null())
                    .map(|f| {
                        format!(
                            "{}: {}",
                            f["name"].as_str().unwrap(),
                            self.literal(&f["type"])
                        )
                    })
                    .collect();
                format!("{{{}}}", required.join(", "))
            }
            _ => match ty["name"].as_str().unwrap() {
                "Int" => "1".into(),
                "Boolean" => "true".into(),
                "JSON" => "{}".into(),
                "DateTime" => "\"2030-01-01T00:00:00\"".into(),
                _ => "\"x\"".into(),
            },
        }
    }

    /// `name(args) { __typename }` for a field.
    fn call(&self, field: &Value) -> String {
        let args: Vec<String> = field["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"]["kind"] == "NON_NULL" && a["defaultValue"].is_null())
            .map(|a| {
                format!(
                    "{}: {}",
                    a["name"].as_str().unwrap(),
                    self.literal(&a["type"])
                )
            })
            .collect();
        let mut base = &field["type"];
        while base["kind"] == "NON_NULL" || base["kind"] == "LIST" {
            base = &base["ofType"];
        }
        let selection = match base["kind"].as_str().unwrap() {
            "OBJECT" | "INTERFACE" | "UNION" => " { __typename }",
            _ => "",
        };
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        format!("{}{args}{selection}", field["name"].as_str().unwrap())
    }
}

/// Calls every root and `api` field with each credential (an
/// `Authorization` value, or none) and asserts that only the public fields
/// answer and nothing else leaks data. Each request comes from an address of
/// its own, numbered from `first_address`. Returns the number of calls.
async fn assert_only_public_fields_answer(
    daemon: &Daemon,
    types: &Types,
    credentials: &[(&str, Option<&str>)],
    first_address: usize,
) -> usize {
    let public = [
        "Query.api",
        "Api.version",
        "Mutation.api",
        "Mutation.useRecoveryApiKey",
        "Mutation.authorizeWithNewDeviceApiKey",
        "ApiMutations.useRecoveryApiKey",
        "ApiMutations.authorizeWithNewDeviceApiKey",
    ];
    // (type, how to reach it)
    let walk = [
        ("Query", "query { %s }"),
        ("Mutation", "mutation { %s }"),
        ("Api", "query { api { %s } }"),
        ("ApiMutations", "mutation { api { %s } }"),
    ];
    let mut checked = 0;
    for (type_name, template) in walk {
        for field in types.get(type_name)["fields"].as_array().unwrap() {
            let name = format!("{type_name}.{}", field["name"].as_str().unwrap());
            if name == "Query.api" || name == "Mutation.api" {
                continue; // namespaces, walked through below
            }
            let document = template.replace("%s", &types.call(field));
            for &(credential, authorization) in credentials {
                // Each request from an address of its own (as nginx would say):
                // the wrong tokens must be refused for what they are, not
                // throttled as repeated guesses.
                let n = first_address + checked;
                let address = format!("10.0.{}.{}", n / 250, n % 250 + 1);
                let response = post(
                    &daemon.url,
                    authorization,
                    &[("X-Real-IP", address.as_str())],
                    &document,
                    json!({}),
                )
                .await;
                let name = format!("{name} with {credential}");
                let root = if template.starts_with("query") {
                    "Query"
                } else {
                    "Mutation"
                };
                assert_spec_conformant(types, root, &document, &response);
                let refused = is_unauthenticated(&response);
                if public
                    .iter()
                    .any(|p| name.starts_with(&format!("{p} with")))
                {
                    assert!(!refused, "{name} must be public: {response}");
                } else {
                    assert!(
                        refused,
                        "{name} must need a token: {document} -> {response}"
                    );
                    assert!(
                        response["data"].is_null()
                            || response["data"]
                                .as_object()
                                .is_some_and(|d| d.values().all(Value::is_null)),
                        "{name} leaked data: {response}"
                    );
                }
                checked += 1;
            }
        }
    }
    checked
}

/// What the GraphQL specification promises a client of any answer: no
/// non-null field is null (a failure nulls the nearest nullable ancestor, or
/// `data`), and every field error has a `path` and `locations`.
fn assert_spec_conformant(types: &Types, root_type: &str, document: &str, response: &Value) {
    for error in response["errors"].as_array().into_iter().flatten() {
        if error.get("path").is_some() || error["extensions"]["code"] == "UNAUTHENTICATED" {
            assert!(
                error["path"].as_array().is_some_and(|p| !p.is_empty())
                    && error["locations"].as_array().is_some_and(|l| !l.is_empty()),
                "{document}: a field error without path or locations: {error}"
            );
        }
    }
    if let Some(data) = response["data"].as_object() {
        for (key, value) in data {
            let field = types.field(root_type, key);
            check_value(types, &field["type"], value, &format!("{document}: {key}"));
        }
    }
}

fn check_value(types: &Types, ty: &Value, value: &Value, at: &str) {
    match ty["kind"].as_str().unwrap() {
        "NON_NULL" => {
            assert!(!value.is_null(), "{at} is null but its type is non-null");
            check_value(types, &ty["ofType"], value, at);
        }
        _ if value.is_null() => {}
        "LIST" => {
            for (i, item) in value.as_array().expect("a list").iter().enumerate() {
                check_value(types, &ty["ofType"], item, &format!("{at}[{i}]"));
            }
        }
        "OBJECT" | "INTERFACE" | "UNION" => {
            let object = value.as_object().expect("an object");
            let concrete = object
                .get("__typename")
                .and_then(Value::as_str)
                .unwrap_or_else(|| ty["name"].as_str().unwrap());
            for (key, item) in object {
                if key != "__typename" {
                    let field = types.field(concrete, key);
                    check_value(types, &field["type"], item, &format!("{at}.{key}"));
                }
            }
        }
        _ => {}
    }
}

fn is_unauthenticated(response: &Value) -> bool {
    response["errors"].as_array().is_some_and(|errors| {
        errors
            .iter()
            .any(|e| e["extensions"]["code"] == "UNAUTHENTICATED")
    })
}

#[tokio::test]
async fn every_field_but_the_public_ones_needs_a_token() {
    let daemon = Daemon::start().await;
    let schema = daemon.query(INTROSPECTION, json!({})).await;
    assert_no_errors(&schema);
    let types = Types::introspect(&schema);
    // A token that never existed, and one that existed and was deleted.
    let (ok, doomed, _) = cli(
        daemon.state_dir.path(),
        &["token", "new", "--device", "doomed"],
        None,
    );
    assert!(ok);
    // Made by another process while the daemon runs: it works at once.
    let deleted = format!("Bearer {}", doomed.trim());
    let fresh = daemon
        .query_as(Some(&deleted), "{ api { devices { name } } }", json!({}))
        .await;
    assert_no_errors(&fresh);
    let r = daemon
        .query(
            "mutation { api { deleteDeviceApiToken(device: \"doomed\") { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["api"]["deleteDeviceApiToken"]["code"], 200, "{r}");
    let credentials = [
        ("no token", None),
        ("a malformed token", Some("Bearer not a token at all!")),
        ("a deleted token", Some(deleted.as_str())),
    ];
    let checked = assert_only_public_fields_answer(&daemon, &types, &credentials, 0).await;
    assert!(checked > 3 * 55, "walked {checked} fields");

    // Introspection is for token holders only.
    let anonymous = daemon
        .query_as(None, "{ __schema { types { name } } }", json!({}))
        .await;
    assert!(anonymous["errors"].is_array(), "{anonymous}");
    assert!(anonymous["data"].is_null(), "no schema data: {anonymous}");
    assert!(!anonymous.to_string().contains("\"types\""), "{anonymous}");
    let wrong = daemon
        .query_as(
            Some("Bearer wrong-token"),
            "{ __type(name: \"Api\") { name } }",
            json!({}),
        )
        .await;
    assert!(wrong["errors"].is_array(), "{wrong}");
    assert!(
        wrong["data"].is_null() || wrong["data"]["__type"].is_null(),
        "no type data: {wrong}"
    );
}

/// With a token, systemd out of reach (the test daemon's bus does not
/// exist) and a userdata file that does not parse, many fields fail: every
/// answer must still keep the schema's promises.
#[tokio::test]
async fn failing_fields_null_their_nearest_nullable_ancestor() {
    let daemon = Daemon::start().await;
    std::fs::write(daemon.state_dir.path().join("userdata.json"), "{ not json").unwrap();
    let schema = daemon.query(INTROSPECTION, json!({})).await;
    let types = Types::introspect(&schema);
    // Every field of every namespace of Query (`services`, `system`...).
    let mut documents = Vec::new();
    for namespace in types.get("Query")["fields"].as_array().unwrap() {
        let ty = &namespace["type"];
        let name = if ty["kind"] == "NON_NULL" {
            &ty["ofType"]["name"]
        } else {
            &ty["name"]
        };
        let Some(fields) = name
            .as_str()
            .and_then(|n| types.get(n)["fields"].as_array())
        else {
            documents.push(format!("query {{ {} }}", types.call(namespace)));
            continue;
        };
        for field in fields {
            documents.push(format!(
                "query {{ {} {{ {} }} }}",
                namespace["name"].as_str().unwrap(),
                types.call(field)
            ));
        }
    }
    let mut failed = 0;
    {
        for document in documents {
            let response = daemon.query(&document, json!({})).await;
            assert_spec_conformant(&types, "Query", &document, &response);
            failed += usize::from(response["errors"].is_array());
        }
    }
    // The fields that read userdata (services, users, system): seven now.
    assert!(
        failed >= 5,
        "only {failed} queries failed: the walk tests nothing"
    );
    // The two answers the review found.
    let r = daemon
        .query("{ services { allServices { id } } }", json!({}))
        .await;
    assert!(r["data"].is_null(), "{r}");
    assert_eq!(r["errors"][0]["path"], json!(["services", "allServices"]));
    let r = daemon
        .query_as(None, "{ api { version devices { name } } }", json!({}))
        .await;
    assert!(r["data"].is_null(), "{r}");
    assert_eq!(
        r["errors"][0]["locations"],
        json!([{"line": 1, "column": 17}])
    );
}

#[tokio::test]
async fn version_is_public_and_tokens_work_with_or_without_bearer() {
    let daemon = Daemon::start().await;
    let r = daemon
        .query_as(None, "{ api { version } }", json!({}))
        .await;
    assert_eq!(r["data"]["api"]["version"], "3.8.3");
    let rest: Value = reqwest::get(format!("{}/api/version", daemon.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["version"], "3.8.3");

    let jobs = "{ jobs { getJobs { uid } } }";
    assert_no_errors(
        &daemon
            .query_as(Some(&format!("Bearer {}", daemon.token)), jobs, json!({}))
            .await,
    );
    assert_no_errors(&daemon.query_as(Some(&daemon.token), jobs, json!({})).await);
    assert_no_errors(
        &daemon
            .query_as(Some(&format!("bearer {}", daemon.token)), jobs, json!({}))
            .await,
    );
    for wrong in [
        format!("Basic {}", daemon.token),
        "Bearer nope".into(),
        format!("Bearer {}x", daemon.token),
    ] {
        let r = daemon.query_as(Some(&wrong), jobs, json!({})).await;
        assert!(is_unauthenticated(&r), "{wrong}: {r}");
    }
}

#[tokio::test]
async fn a_token_in_the_url_is_refused() {
    let daemon = Daemon::start().await;
    let response = reqwest::Client::new()
        .post(format!("{}?token={}", daemon.url, daemon.token))
        .json(&json!({"query": "{ jobs { getJobs { uid } } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Authorization header")
    );
}

#[tokio::test]
async fn repeated_failures_from_one_client_are_slowed_down() {
    let daemon = Daemon::start().await;
    let wrong = "mutation { api { authorizeWithNewDeviceApiKey(input: {key: \"abandon abandon\", deviceName: \"x\"}) { code } } }";
    let mut last = Duration::ZERO;
    for _ in 0..8 {
        let started = Instant::now();
        let r = daemon.query_as(None, wrong, json!({})).await;
        assert_eq!(
            r["data"]["api"]["authorizeWithNewDeviceApiKey"]["code"],
            404
        );
        last = started.elapsed();
    }
    // Five free failures, then 0.5 s, 1 s, 2 s...: the eighth waits >= 1 s.
    assert!(
        last >= Duration::from_millis(900),
        "eighth attempt took {last:?}"
    );
    // Wrong tokens count too, and slow that client's token checks.
    let started = Instant::now();
    let r = daemon
        .query_as(Some("Bearer guess"), "{ api { version } }", json!({}))
        .await;
    assert_eq!(r["data"]["api"]["version"], "3.8.3");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Parallel guesses from one client queue in its throttle slots; once the
/// queue reaches its budget, further guesses (keys or tokens) are refused at
/// once without being checked, so pending answers stay bounded.
#[tokio::test]
async fn guesses_past_the_throttle_budget_are_refused_at_once() {
    let daemon = Daemon::start().await;
    let wrong_key = "mutation { api { useRecoveryApiKey(input: {key: \"abandon abandon\", deviceName: \"x\"}) { code } } }";
    for _ in 0..7 {
        daemon.query_as(None, wrong_key, json!({})).await;
    }
    // One client, made before the clock starts (making one is slow in a
    // debug build with TLS compiled in).
    let client = reqwest::Client::new();
    let started = Instant::now();
    // Even: a wrong key (answered in GraphQL, code 429 when refused); odd: a
    // wrong token (HTTP 429 when refused).
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let url = daemon.url.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let mut request = client.post(&url);
                let query = if i % 2 == 0 {
                    wrong_key
                } else {
                    request = request.header("Authorization", "Bearer guess");
                    "{ api { version } }"
                };
                let response = request
                    .json(&json!({ "query": query }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                let code = body["data"]["api"]["useRecoveryApiKey"]["code"].as_i64();
                let refused = status == 429 || code == Some(429);
                (refused, Instant::now())
            })
        })
        .collect();
    let mut refused_at_once = 0;
    let mut latest = started;
    for guess in guesses {
        let (refused, at) = guess.await.unwrap();
        if refused && at.duration_since(started) < Duration::from_secs(2) {
            refused_at_once += 1;
        }
        latest = latest.max(at);
    }
    assert!(
        refused_at_once >= 30,
        "only {refused_at_once} refused at once"
    );
    // No answer waited past the queue's budget (8 s), with slack.
    assert!(latest.duration_since(started) < Duration::from_secs(12));
}

/// Every subscription field, on both websocket protocols, without a token:
/// refused with UNAUTHENTICATED, no data.
#[tokio::test]
async fn every_subscription_needs_a_token() {
    use crate::websockets::{acknowledged_init, connect, receive, send};
    let daemon = Daemon::start().await;
    let schema = daemon.query(INTROSPECTION, json!({})).await;
    let types = Types::introspect(&schema);
    let subscription = schema["data"]["__schema"]["subscriptionType"]["name"]
        .as_str()
        .expect("the schema has subscriptions")
        .to_owned();
    let mut checked = 0;
    for field in types.get(&subscription)["fields"].as_array().unwrap() {
        let document = format!("subscription {{ {} }}", types.call(field));
        for (protocol, start) in [
            ("graphql-transport-ws", "subscribe"),
            ("graphql-ws", "start"),
        ] {
            let mut socket = connect(&daemon, protocol, None).await;
            acknowledged_init(&mut socket, json!({})).await;
            send(
                &mut socket,
                json!({"id": "1", "type": start, "payload": {"query": document}}),
            )
            .await;
            let answer = receive(&mut socket).await.expect("an answer");
            assert!(
                answer.to_string().contains("UNAUTHENTICATED"),
                "{protocol}: {document} -> {answer}"
            );
            let data = &answer["payload"]["data"];
            assert!(
                data.is_null()
                    || data
                        .as_object()
                        .is_some_and(|d| d.values().all(Value::is_null)),
                "{protocol}: {document} leaked data: {answer}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "walked {checked} subscriptions");
}

/// A recovery key and a new-device key past their expiry (the daemon's
/// clock moved by the test hook), presented as bearer tokens on every field
/// and spent through the mutations that take them: only the public fields
/// answer, and each use is refused.
#[tokio::test]
async fn expired_recovery_and_new_device_keys_open_nothing() {
    let daemon = Daemon::start().await;
    let schema = daemon.query(INTROSPECTION, json!({})).await;
    let types = Types::introspect(&schema);
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let r = daemon
        .query(
            "mutation($e: DateTime) { api { getNewRecoveryApiKey(limits: {expirationDate: $e}) { code key } } }",
            json!({"e": expires}),
        )
        .await;
    let recovery = r["data"]["api"]["getNewRecoveryApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    let r = daemon
        .query(
            "mutation { api { getNewDeviceApiKey { code key } } }",
            json!({}),
        )
        .await;
    let new_device = r["data"]["api"]["getNewDeviceApiKey"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    // Past both: the recovery key's hour and the new-device key's ten minutes.
    daemon.hook("advance-clock 7200");
    let r = daemon
        .query("{ api { recoveryKey { exists valid } } }", json!({}))
        .await;
    assert_eq!(r["data"]["api"]["recoveryKey"]["valid"], false, "{r}");

    let as_recovery = format!("Bearer {recovery}");
    let as_new_device = format!("Bearer {new_device}");
    let credentials = [
        ("an expired recovery key", Some(as_recovery.as_str())),
        ("an expired new-device key", Some(as_new_device.as_str())),
    ];
    let checked = assert_only_public_fields_answer(&daemon, &types, &credentials, 0).await;
    assert!(checked > 2 * 55, "walked {checked} fields");

    for (field, key) in [
        ("useRecoveryApiKey", &recovery),
        ("authorizeWithNewDeviceApiKey", &new_device),
    ] {
        for document in [
            format!(
                "mutation($k: String!) {{ api {{ {field}(input: {{key: $k, deviceName: \"late\"}}) {{ success code token }} }} }}"
            ),
            format!(
                "mutation($k: String!) {{ {field}(input: {{key: $k, deviceName: \"late\"}}) {{ success code token }} }}"
            ),
        ] {
            let r = daemon.query_as(None, &document, json!({"k": key})).await;
            let answer = if document.contains("{ api {") {
                &r["data"]["api"][field]
            } else {
                &r["data"][field]
            };
            assert_eq!(answer["success"], false, "{field}: {r}");
            assert_eq!(answer["code"], 404, "{field}: {r}");
            assert!(answer["token"].is_null(), "{field}: {r}");
        }
    }
    let devices = daemon
        .query("{ api { devices { name } } }", json!({}))
        .await;
    assert_eq!(
        devices["data"]["api"]["devices"],
        json!([{"name": "tests"}]),
        "no device was added: {devices}"
    );
}

/// Guessed keys are slowed down and logged with the client and the kind of
/// key, never with what was guessed.
#[tokio::test]
async fn guessed_keys_are_logged_with_the_client_and_the_kind_never_the_guess() {
    let daemon = Daemon::start_logged().await;
    for (field, client, guess) in [
        (
            "useRecoveryApiKey",
            "10.9.9.1",
            "abandon ability able about above absent",
        ),
        (
            "authorizeWithNewDeviceApiKey",
            "10.9.9.2",
            "zoo zone zero youth young yellow",
        ),
    ] {
        let document = format!(
            "mutation($k: String!) {{ api {{ {field}(input: {{key: $k, deviceName: \"guesser\"}}) {{ code }} }} }}"
        );
        let started = Instant::now();
        for _ in 0..8 {
            let r = post(
                &daemon.url,
                None,
                &[("X-Real-IP", client)],
                &document,
                json!({"k": guess}),
            )
            .await;
            assert_eq!(r["data"]["api"][field]["code"], 404, "{r}");
        }
        // Five free failures, then 0.5 s and 1 s before the 7th and 8th.
        assert!(
            started.elapsed() >= Duration::from_millis(1400),
            "{field} was not slowed"
        );
    }
    let log = daemon.log_text();
    for (client, kind) in [("10.9.9.1", "recovery key"), ("10.9.9.2", "new device key")] {
        assert!(
            log.lines()
                .any(|l| l.contains(client) && l.contains(kind) && l.contains("slowing")),
            "no log line names {client} and the {kind}:\n{log}"
        );
    }
    for word in ["abandon ability", "zoo zone"] {
        assert!(!log.contains(word), "the guess is in the log:\n{log}");
    }
}
