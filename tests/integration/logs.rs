//! The app's `Logs` query and `LogEntries` subscription against the
//! testbed's real journald, through the daemon running inside it.

use crate::app_operations::operation;
use crate::support::Client;
use crate::testbed::{Setup, Testbed};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ENTRIES: usize = 3000;

fn bare_testbed() -> Testbed {
    Testbed::up(Setup {
        modules: vec![],
        userdata: json!({}),
        volumes: vec![],
        config: "",
    })
}

/// `unit` logged `count` lines (after `journalctl --sync`), within 60 s.
fn wait_for_lines(testbed: &Testbed, unit: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        testbed.run(&["journalctl", "--sync"]);
        let logged = testbed
            .run(&[
                "journalctl",
                "--no-pager",
                "-o",
                "cat",
                &format!("_SYSTEMD_UNIT={unit}"),
            ])
            .lines()
            .count();
        if logged >= count {
            assert_eq!(logged, count, "{unit} logged more than it wrote");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{unit} logged {logged} of {count} lines within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn page(client: &Client, variables: Value) -> Value {
    let response = client.query(&operation("Logs"), variables).await;
    assert!(response.get("errors").is_none(), "{response}");
    response["data"]["logs"]["paginated"].clone()
}

fn messages(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn logs_page_both_ways_without_gaps_or_repeats_and_filter_by_unit_and_slice() {
    let testbed = bare_testbed();
    let client = testbed.start_daemon().await;
    testbed.run(&[
        "systemd-run",
        "--unit=log-writer",
        "--slice=writer.slice",
        "sh",
        "-c",
        &format!("i=1; while [ $i -le {ENTRIES} ]; do echo \"entry $i\"; i=$((i+1)); done"),
    ]);
    testbed.run(&[
        "systemd-run",
        "--unit=other-writer",
        "echo",
        "not in the slice",
    ]);
    wait_for_lines(&testbed, "log-writer.service", ENTRIES);
    wait_for_lines(&testbed, "other-writer.service", 1);
    let expected: Vec<String> = (1..=ENTRIES).map(|i| format!("entry {i}")).collect();

    // Down, from the newest: each page is older than the one before.
    let unit = json!("log-writer.service");
    let mut first = page(&client, json!({"limit": 50, "filterByUnit": unit})).await;
    let newest_cursor = first["pageMeta"]["downCursor"].clone();
    let mut downwards = Vec::new();
    let mut oldest_cursor = Value::Null;
    let mut pages = 0;
    loop {
        let batch = messages(&first);
        if batch.is_empty() {
            assert!(first["pageMeta"]["upCursor"].is_null(), "{first}");
            assert!(first["pageMeta"]["downCursor"].is_null(), "{first}");
            break;
        }
        let entries = first["entries"].as_array().unwrap();
        assert_eq!(first["pageMeta"]["upCursor"], entries[0]["cursor"]);
        assert_eq!(
            first["pageMeta"]["downCursor"],
            entries[entries.len() - 1]["cursor"]
        );
        for entry in entries {
            assert_eq!(entry["systemdUnit"], "log-writer.service", "{entry}");
            assert_eq!(entry["systemdSlice"], "writer.slice", "{entry}");
            assert_eq!(entry["priority"], 6, "{entry}");
            assert!(entry["timestamp"].as_str().unwrap().ends_with("+00:00"));
        }
        downwards.splice(0..0, batch);
        oldest_cursor = entries[0]["cursor"].clone();
        pages += 1;
        assert!(pages <= ENTRIES / 50 + 2, "paging down does not end");
        let older = first["pageMeta"]["upCursor"].clone();
        first = page(
            &client,
            json!({"limit": 50, "downCursor": older, "filterByUnit": unit}),
        )
        .await;
    }
    assert_eq!(downwards, expected, "paging down lost or repeated entries");

    // Up, from the oldest: each page is newer, the cursor's entry excluded.
    let mut upwards = vec!["entry 1".to_owned()];
    let mut cursor = oldest_cursor;
    loop {
        let next = page(
            &client,
            json!({"limit": 50, "upCursor": cursor, "filterByUnit": unit}),
        )
        .await;
        let batch = messages(&next);
        if batch.is_empty() {
            break;
        }
        upwards.extend(batch);
        assert!(upwards.len() <= ENTRIES, "paging up repeats entries");
        cursor = next["pageMeta"]["downCursor"].clone();
    }
    assert_eq!(upwards, expected, "paging up lost or repeated entries");
    assert_eq!(cursor, newest_cursor);

    // By slice: the writer's entries, not the other unit's.
    let slice = page(
        &client,
        json!({"limit": 50, "filterBySlice": "writer.slice"}),
    )
    .await;
    assert_eq!(messages(&slice), expected[ENTRIES - 50..].to_vec());
    let other = page(
        &client,
        json!({"limit": 50, "filterByUnit": "other-writer.service"}),
    )
    .await;
    assert_eq!(messages(&other), ["not in the slice"]);

    // The whole journal, unfiltered: two pages down meet without overlap.
    let newest = page(&client, json!({"limit": 50})).await;
    let older = page(
        &client,
        json!({"limit": 50, "downCursor": newest["pageMeta"]["upCursor"]}),
    )
    .await;
    let cursors = |p: &Value| -> Vec<String> {
        p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cursor"].as_str().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (cursors(&older), cursors(&newest));
    assert_eq!((a.len(), b.len()), (50, 50));
    let all: HashSet<_> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 100, "pages overlap");
    let last_older = older["entries"][49]["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_newer = newest["entries"][0]["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(last_older <= first_newer, "{last_older} > {first_newer}");
}

#[tokio::test]
async fn bad_limits_cursors_and_names_get_400() {
    let testbed = bare_testbed();
    let client = testbed.start_daemon().await;
    let cursor = page(&client, json!({"limit": 1})).await["pageMeta"]["upCursor"].clone();
    assert!(cursor.is_string());
    for variables in [
        json!({"limit": 51}),
        json!({"limit": 0}),
        json!({"limit": 10, "downCursor": "--all"}),
        json!({"limit": 10, "upCursor": "s=zz;i=1"}),
        json!({"limit": 10, "upCursor": cursor, "downCursor": cursor}),
        json!({"limit": 10, "filterByUnit": "nginx"}),
        json!({"limit": 10, "filterByUnit": "a b.service"}),
        json!({"limit": 10, "filterBySlice": "nginx.service"}),
    ] {
        let response = client.query(&operation("Logs"), variables.clone()).await;
        let error = &response["errors"][0];
        assert_eq!(
            error["extensions"]["status"], 400,
            "{variables}: {response}"
        );
        assert_eq!(error["path"], json!(["logs", "paginated"]), "{response}");
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(client: &Client, query: &str, variables: Value) -> Socket {
    let mut request = client
        .url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = async |socket: &mut Socket, message: Value| {
        socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap()
    };
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", client.token)}}),
    )
    .await;
    assert_eq!(
        next_message(&mut socket, Duration::from_secs(10))
            .await
            .unwrap()["type"],
        "connection_ack"
    );
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}),
    )
    .await;
    socket
}

/// The next message other than a keep-alive, or None after `wait`.
async fn next_message(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??;
        if let Message::Text(text) = message.unwrap() {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "ka" && value["type"] != "ping" {
                return Some(value);
            }
        }
    }
}

/// The daemon's child processes named journalctl, inside the testbed.
fn journalctl_children(testbed: &Testbed) -> usize {
    testbed
        .run(&[
            "sh",
            "-c",
            "ps -o comm= --ppid \"$(systemctl show -p MainPID --value selfprivacy-api)\" || true",
        ])
        .lines()
        .filter(|name| name.trim() == "journalctl")
        .count()
}

fn wait_for_journalctl_children(testbed: &Testbed, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = journalctl_children(testbed);
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} journalctl processes under the daemon, not {count}, after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn log_entries_stream_live_filtered_and_stop_with_the_client() {
    let testbed = bare_testbed();
    let client = testbed.start_daemon().await;

    // The app's subscription, unfiltered: a line logged now arrives. Logged
    // again until it does, as the stream starts at its first entry.
    let mut all = subscribe(&client, &operation("LogEntries"), json!({})).await;
    wait_for_journalctl_children(&testbed, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    'marker: loop {
        attempt += 1;
        let marker = format!("live marker {attempt}");
        testbed.run(&[
            "systemd-run",
            &format!("--unit=marker-{attempt}"),
            "echo",
            &marker,
        ]);
        while let Some(message) = next_message(&mut all, Duration::from_secs(2)).await {
            assert_eq!(message["type"], "next", "{message}");
            let entry = &message["payload"]["data"]["logEntries"];
            assert!(
                entry["cursor"].as_str().unwrap().starts_with("s="),
                "{entry}"
            );
            if entry["message"] == marker {
                assert_eq!(entry["systemdUnit"], format!("marker-{attempt}.service"));
                assert_eq!(entry["__typename"], "LogEntry");
                break 'marker;
            }
        }
        assert!(Instant::now() < deadline, "no live entry within 30 s");
    }

    // Filtered by unit: only that unit's entries.
    let mut ticks = subscribe(
        &client,
        "subscription($unit: String) { logEntries(filterByUnit: $unit) { message systemdUnit systemdSlice } }",
        json!({"unit": "ticker.service"}),
    )
    .await;
    wait_for_journalctl_children(&testbed, 2);
    testbed.run(&[
        "systemd-run",
        "--unit=ticker",
        "--slice=ticks.slice",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.2; done",
    ]);
    testbed.run(&["systemd-run", "--unit=noise", "echo", "noise"]);
    for _ in 0..5 {
        let message = next_message(&mut ticks, Duration::from_secs(10))
            .await
            .expect("a tick within 10 s");
        let entry = &message["payload"]["data"]["logEntries"];
        assert_eq!(
            entry,
            &json!({"message": "tick", "systemdUnit": "ticker.service", "systemdSlice": "ticks.slice"})
        );
    }
    testbed.run(&["systemctl", "stop", "ticker"]);

    // Clients gone: their journalctl processes end with them.
    drop(all);
    wait_for_journalctl_children(&testbed, 1);
    ticks.close(None).await.unwrap();
    drop(ticks);
    wait_for_journalctl_children(&testbed, 0);
}
