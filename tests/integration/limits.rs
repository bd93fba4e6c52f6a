//! Query depth, complexity and body size limits, and GraphiQL behind a setting.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn too_deep_too_complex_and_too_big_requests_get_clear_errors() {
    let daemon = Daemon::start().await;
    let nested = (0..20).fold(String::from("name"), |inner, _| {
        format!("ofType {{ {inner} }}")
    });
    let r = daemon
        .query(
            &format!("{{ __type(name: \"Api\") {{ {nested} }} }}"),
            json!({}),
        )
        .await;
    let message = r["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(message.contains("nested too deep"), "{r}");

    let wide: String = (0..1100).map(|_| "api { version } ").collect();
    let r = daemon.query(&format!("{{ {wide} }}"), json!({})).await;
    let message = r["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(message.contains("too complex"), "{r}");

    let huge = "x".repeat(300 * 1024);
    let response = reqwest::Client::new()
        .post(&daemon.url)
        .header("Authorization", format!("Bearer {}", daemon.token))
        .json(&json!({"query": "{ api { version } }", "variables": {"pad": huge}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

/// `{...F0}`, each fragment spreading the next three times: 3^levels fields
/// once expanded, in a few hundred bytes.
pub fn exponential_document(levels: usize) -> String {
    let mut document = String::from("{...F0}");
    for level in 0..levels {
        let next = level + 1;
        document.push_str(&format!(
            " fragment F{level} on Query {{...F{next} ...F{next} ...F{next}}}"
        ));
    }
    document.push_str(&format!(" fragment F{levels} on Query {{__typename}}"));
    document
}

#[tokio::test]
async fn an_exponential_document_is_refused_in_milliseconds_without_a_token() {
    let daemon = Daemon::start().await;
    let document = exponential_document(20);
    assert!(document.len() < 1000);
    let started = std::time::Instant::now();
    let r = daemon.query_as(None, &document, json!({})).await;
    let took = started.elapsed();
    assert_eq!(error_code(&r).as_deref(), Some("DOCUMENT_TOO_LARGE"), "{r}");
    assert!(r["data"].is_null(), "{r}");
    // 3^20 expansions would take about 35 minutes; the answer is immediate
    // (slack for two loaded cores).
    assert!(
        took < std::time::Duration::from_millis(500),
        "took {took:?}"
    );
    // The daemon is still responsive.
    let r = daemon
        .query_as(None, "{ api { version } }", json!({}))
        .await;
    assert_eq!(r["data"]["api"]["version"], "3.8.3");
}

/// A daemon started with its own configuration file, killed on drop.
struct ConfiguredDaemon {
    child: std::process::Child,
    client: Client,
    _dir: tempfile::TempDir,
}

impl ConfiguredDaemon {
    async fn start(config: &str) -> ConfiguredDaemon {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, config).unwrap();
        for _attempt in 0..5 {
            let client = Client::new(free_port(), "");
            let mut child = std::process::Command::new(BIN)
                .args([
                    "serve",
                    "--listen",
                    client.base.trim_start_matches("http://"),
                ])
                .arg("--state-dir")
                .arg(dir.path().join("state"))
                .arg("--config")
                .arg(&file)
                .env("SELFPRIVACY_API_DBUS_ADDRESS", NO_BUS)
                .env(
                    "SELFPRIVACY_API_USERDATA_FILE",
                    dir.path().join("userdata.json"),
                )
                .env(
                    "SELFPRIVACY_API_SP_MODULES_DIR",
                    dir.path().join("sp-modules"),
                )
                .env("SELFPRIVACY_API_NIXOS_CONFIG_DIR", dir.path().join("nixos"))
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            if wait_ready_or_exit(&client, &mut child).await {
                return ConfiguredDaemon {
                    child,
                    client,
                    _dir: dir,
                };
            }
            // Most likely the port was taken meanwhile: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the daemon did not start");
    }
}

/// Whether the daemon answers before the deadline; false as soon as it exits
/// (its port was taken meanwhile).
async fn wait_ready_or_exit(client: &Client, child: &mut std::process::Child) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if client
            .wait_ready(std::time::Duration::from_millis(100))
            .await
        {
            return true;
        }
    }
    false
}

impl Drop for ConfiguredDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GraphiQL's page loads scripts from a public CDN, so it is served only
/// when the configuration asks for it; otherwise a browser gets a plain
/// page that loads nothing and says where the API is.
#[tokio::test]
async fn a_browser_gets_a_plain_page_unless_graphiql_is_turned_on() {
    let daemon = Daemon::start().await;
    let page = reqwest::Client::new()
        .get(&daemon.url)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = page.text().await.unwrap();
    assert!(
        text.contains("POST") && text.contains("graphiql = true"),
        "{text}"
    );
    for loaded in ["<script", "<link", "http://", "https://", "//"] {
        assert!(!text.contains(loaded), "the page loads nothing: {text}");
    }

    let with_graphiql = ConfiguredDaemon::start("graphiql = true\n").await;
    let page = reqwest::get(&with_graphiql.client.url).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("GraphiQL") && html.contains("/graphql"),
        "{html}"
    );
}
