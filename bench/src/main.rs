//! Benchmark tools (not tests), run by `scripts/bench`:
//! - `bare-server ADDR`: the smallest async-graphql + axum server answering
//!   `{ api { version } }`, so the daemon's overhead over the library is
//!   measured side by side on the same machine in the same run;
//! - `subscribers URL TOKEN COUNT`: COUNT `jobUpdates` subscribers on the
//!   graphql-transport-ws protocol, then the daemon's test job started
//!   over HTTP; prints the delivery latency of every job update to every
//!   subscriber (receive time minus the job's `updatedAt`).

use anyhow::{Context, bail};
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Query;

#[Object]
impl Query {
    async fn api(&self) -> Api {
        Api
    }
}

struct Api;

#[Object]
impl Api {
    async fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}

async fn bare_server(addr: &str) -> anyhow::Result<()> {
    let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
    let router =
        axum::Router::new().route_service("/graphql", async_graphql_axum::GraphQL::new(schema));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscriber(url: String, token: String) -> anyhow::Result<Socket> {
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    socket.send(Message::Text(init.to_string().into())).await?;
    match next_json(&mut socket).await? {
        Some(ack) if ack["type"] == "connection_ack" => {}
        other => bail!("not acknowledged: {other:?}"),
    }
    let subscribe = json!({"id": "1", "type": "subscribe",
        "payload": {"query": "subscription { jobUpdates { uid typeId progress updatedAt } }"}});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    // The current list arrives at once: subscribed.
    match next_json(&mut socket).await? {
        Some(first) if first["type"] == "next" => Ok(socket),
        other => bail!("no first job list: {other:?}"),
    }
}

async fn next_json(socket: &mut Socket) -> anyhow::Result<Option<Value>> {
    loop {
        let Some(message) = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no message within 30 s")?
        else {
            return Ok(None);
        };
        if let Message::Text(text) = message? {
            let value: Value = serde_json::from_str(&text)?;
            if value["type"] != "ping" && value["type"] != "ka" {
                return Ok(Some(value));
            }
        }
    }
}

/// Latencies (ms) of the test job's updates as one subscriber sees them,
/// until the job reaches 100 % (FINISHED).
async fn watch_test_job(mut socket: Socket) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::new();
    loop {
        let Some(message) = next_json(&mut socket).await? else {
            bail!("closed by the server");
        };
        let received = chrono::Utc::now();
        let jobs = message["payload"]["data"]["jobUpdates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(job) = jobs.iter().find(|j| j["typeId"] == "test.job") else {
            continue;
        };
        let updated: chrono::DateTime<chrono::Utc> = job["updatedAt"]
            .as_str()
            .context("updatedAt")?
            .parse()
            .or_else(|_| {
                // The schema's DateTime has no offset: it is UTC.
                chrono::NaiveDateTime::parse_from_str(
                    job["updatedAt"].as_str().unwrap_or_default(),
                    "%Y-%m-%dT%H:%M:%S%.f",
                )
                .map(|naive| naive.and_utc())
            })
            .context("updatedAt is not a time")?;
        latencies.push((received - updated).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        if job["progress"] == 100 || latencies.len() >= 10 {
            return Ok(latencies);
        }
    }
}

async fn subscribers(url: &str, token: &str, count: usize) -> anyhow::Result<()> {
    let ws_url = url.replacen("http", "ws", 1);
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(subscriber(ws_url.clone(), token.to_owned()).await?);
    }
    eprintln!("subscribers: {count} subscribed");
    // The caller reads the daemon's RSS now (all subscribed, idle).
    println!("subscribed {count}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watchers: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(watch_test_job(socket)))
        .collect();
    // The token goes to curl on stdin (`-H @-`), never in its argv.
    let mut curl = std::process::Command::new("curl")
        .args(["-fsS", "-H", "Content-Type: application/json", "-H", "@-"])
        .args([
            "--data",
            r#"{"query":"mutation { testMutation { success } }"}"#,
            url,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = curl.stdin.take().context("curl stdin")?;
        writeln!(stdin, "Authorization: Bearer {token}")?;
    }
    let response = curl.wait_with_output()?;
    if !response.status.success() {
        bail!(
            "testMutation failed: {}",
            String::from_utf8_lossy(&response.stderr)
        );
    }
    let mut all = Vec::new();
    for watcher in watchers {
        all.extend(watcher.await??);
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    println!(
        "deliveries {} p50_ms {:.2} p99_ms {:.2} max_ms {:.2}",
        all.len(),
        at(0.5),
        at(0.99),
        all[all.len() - 1]
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[1..] {
        ["bare-server", addr] => bare_server(addr).await,
        ["subscribers", url, count] => {
            let token = std::env::var("SP_BENCH_TOKEN").context("SP_BENCH_TOKEN")?;
            subscribers(url, &token, count.parse()?).await
        }
        _ => bail!(
            "usage: sp-bench bare-server ADDR | sp-bench subscribers HTTP_URL COUNT (token in SP_BENCH_TOKEN)"
        ),
    }
}
