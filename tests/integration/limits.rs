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

    let with_graphiql = Daemon::start_with_config("graphiql = true\n").await;
    let page = reqwest::get(&with_graphiql.client.url).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("GraphiQL") && html.contains("/graphql"),
        "{html}"
    );
}

/// Every HTTP request runs under `request_timeout_secs`: here 1 s, and a
/// request held longer (a key guess waiting for its throttle slot) is
/// answered with a TIMEOUT error when the second is up.
#[tokio::test]
async fn a_request_that_runs_out_of_time_is_answered_with_an_error() {
    let daemon = Daemon::start_with_config("request_timeout_secs = 1\n").await;
    let wrong_key = "mutation { api { useRecoveryApiKey(input: {key: \"abandon abandon\", deviceName: \"x\"}) { code } } }";
    // Free failures, then each guess waits for a slot further away.
    for _ in 0..7 {
        daemon.query_as(None, wrong_key, json!({})).await;
    }
    let guesses: Vec<_> = (0..4)
        .map(|_| {
            let client = daemon.client.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let r = client.query_as(None, wrong_key, json!({})).await;
                (r, started.elapsed())
            })
        })
        .collect();
    let mut timed_out = 0;
    for guess in guesses {
        let (r, took) = guess.await.unwrap();
        if error_code(&r).as_deref() == Some("TIMEOUT") {
            timed_out += 1;
            assert!(
                took < std::time::Duration::from_secs(3),
                "answered after {took:?}"
            );
            assert!(r["data"].is_null(), "{r}");
        }
    }
    assert!(timed_out >= 2, "{timed_out} timed out");
}
