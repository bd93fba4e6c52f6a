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

    let wide: String = (0..1100)
        .map(|i| format!("a{i}: api {{ version }} "))
        .collect();
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
