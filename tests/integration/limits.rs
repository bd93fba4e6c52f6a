//! Query depth, complexity and body size limits, and GraphiQL.

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

#[tokio::test]
async fn a_browser_gets_graphiql() {
    let daemon = Daemon::start().await;
    let page = reqwest::get(&daemon.url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
}
