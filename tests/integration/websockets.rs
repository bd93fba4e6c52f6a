//! Subscriptions over both websocket protocols, with real clients.

use crate::jobs::start_test_job;
use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An upgrade request to the daemon's `/graphql` with this subprotocol.
fn upgrade_request(
    daemon: &Daemon,
    protocol: &str,
    authorization: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = daemon
        .url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("Authorization", value.parse().unwrap());
    }
    request
}

pub async fn connect(daemon: &Daemon, protocol: &str, authorization: Option<&str>) -> Socket {
    let request = upgrade_request(daemon, protocol, authorization);
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    socket
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON message, skipping keep-alives; None when the server closes.
pub async fn receive(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no message within 10 s")?;
        match message.ok()? {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] != "ka" {
                    return Some(value);
                }
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// `connection_init` with `payload`, answered by `connection_ack`.
pub async fn acknowledged_init(socket: &mut Socket, payload: Value) {
    send(
        socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    assert_eq!(receive(socket).await.unwrap()["type"], "connection_ack");
}

const JOB_UPDATES: &str = "subscription { jobUpdates { uid typeId status progress statusText } }";

/// Reads job lists until the test job has finished; returns every list.
async fn follow_test_job(socket: &mut Socket, data_type: &str) -> Vec<Value> {
    let mut lists = Vec::new();
    loop {
        let message = receive(socket).await.expect("the server closed the socket");
        assert_eq!(message["type"], data_type, "{message}");
        let list = message["payload"]["data"]["jobUpdates"].clone();
        let finished = list
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["typeId"] == "test.job" && j["status"] == "FINISHED");
        lists.push(list);
        if finished {
            return lists;
        }
    }
}

fn assert_saw_the_job_run(lists: &[Value]) {
    assert_eq!(lists[0], json!([]), "first comes the current (empty) list");
    assert!(lists.iter().any(|l| l[0]["status"] == "RUNNING"));
    let last = &lists.last().unwrap()[0];
    assert_eq!(
        (last["status"].clone(), last["progress"].clone()),
        (json!("FINISHED"), json!(100))
    );
    assert!(lists.len() >= 4, "several updates pushed: {}", lists.len());
}

#[tokio::test]
async fn graphql_transport_ws_pushes_job_updates_and_answers_pings() {
    let daemon = Daemon::start().await;
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    acknowledged_init(
        &mut socket,
        json!({"Authorization": format!("Bearer {}", daemon.token)}),
    )
    .await;
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(receive(&mut socket).await.unwrap()["type"], "pong");

    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": JOB_UPDATES}}),
    )
    .await;
    let first = receive(&mut socket).await.unwrap();
    assert_eq!(first["payload"]["data"]["jobUpdates"], json!([]));
    start_test_job(&daemon).await;
    let mut lists = vec![first["payload"]["data"]["jobUpdates"].clone()];
    lists.extend(follow_test_job(&mut socket, "next").await);
    assert_saw_the_job_run(&lists);

    // Queries work over the socket too, with the connection's token.
    send(&mut socket, json!({"id": "2", "type": "subscribe", "payload": {"query": "{ api { devices { name isCaller } } }"}})).await;
    let answer = receive(&mut socket).await.unwrap();
    assert_eq!(answer["id"], "2");
    assert_eq!(
        answer["payload"]["data"]["api"]["devices"][0]["isCaller"], true,
        "{answer}"
    );
}

#[tokio::test]
async fn legacy_graphql_ws_pushes_job_updates_with_the_token_in_the_upgrade_request() {
    let daemon = Daemon::start().await;
    let mut socket = connect(
        &daemon,
        "graphql-ws",
        Some(&format!("Bearer {}", daemon.token)),
    )
    .await;
    acknowledged_init(&mut socket, json!({})).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "start", "payload": {"query": JOB_UPDATES}}),
    )
    .await;
    let first = receive(&mut socket).await.unwrap();
    assert_eq!(first["type"], "data");
    start_test_job(&daemon).await;
    let mut lists = vec![first["payload"]["data"]["jobUpdates"].clone()];
    lists.extend(follow_test_job(&mut socket, "data").await);
    assert_saw_the_job_run(&lists);
    send(&mut socket, json!({"id": "1", "type": "stop"})).await;
}

#[tokio::test]
async fn a_wrong_token_in_connection_init_closes_the_connection() {
    let daemon = Daemon::start().await;
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": "Bearer wrong"}}),
    )
    .await;
    // Refused with 4403 Forbidden, never acknowledged.
    assert_eq!(close_code(&mut socket).await, Some(4403));

    let request = upgrade_request(&daemon, "graphql-ws", Some("Bearer wrong"));
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "upgrade refused"
    );
}

#[tokio::test]
async fn a_deleted_token_stops_working_on_an_open_socket() {
    let daemon = Daemon::start().await;
    let (ok, other, _) = cli(
        daemon.state_dir.path(),
        &["token", "new", "--device", "other"],
        None,
    );
    assert!(ok);
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    acknowledged_init(
        &mut socket,
        json!({"Authorization": format!("Bearer {}", other.trim())}),
    )
    .await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": JOB_UPDATES}}),
    )
    .await;
    assert_eq!(receive(&mut socket).await.unwrap()["type"], "next");

    let r = daemon
        .query(
            "mutation { api { deleteDeviceApiToken(device: \"other\") { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["api"]["deleteDeviceApiToken"]["code"], 200);
    start_test_job(&daemon).await;
    // The subscription ends instead of delivering the next list.
    let ended = receive(&mut socket).await.unwrap();
    assert_eq!(
        (ended["type"].clone(), ended["id"].clone()),
        (json!("complete"), json!("1")),
        "{ended}"
    );
    // And nothing else on the socket works any more.
    send(&mut socket, json!({"id": "2", "type": "subscribe", "payload": {"query": "{ api { devices { name } } }"}})).await;
    let answer = receive(&mut socket).await.unwrap();
    assert!(answer.to_string().contains("UNAUTHENTICATED"), "{answer}");
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_the_connection() {
    let daemon = Daemon::start().await;
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    let huge = "x".repeat(300 * 1024);
    let _ = socket
        .send(Message::Text(
            json!({"type": "connection_init", "payload": {"pad": huge}})
                .to_string()
                .into(),
        ))
        .await;
    // Closed (1009, message too big), not acknowledged.
    assert_eq!(close_code(&mut socket).await, Some(1009));
    assert!(
        socket.send(Message::Text("{}".into())).await.is_err() || socket.next().await.is_none()
    );
}

/// Reads until the server closes the socket; the close code, if it sent
/// one. Panics if the socket stays open for 10 s.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the server did not close the socket within 10 s");
        match message {
            Some(Ok(Message::Close(frame))) => {
                eprintln!("close frame {frame:?}");
                return frame.map(|f| u16::from(f.code));
            }
            Some(Ok(m)) => {
                eprintln!("got {m:?}");
                continue;
            }
            Some(Err(e)) => {
                eprintln!("socket error: {e}");
                return None;
            }
            None => return None,
        }
    }
}

#[tokio::test]
async fn graphql_transport_ws_closes_with_the_protocols_codes() {
    let daemon = Daemon::start().await;
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": JOB_UPDATES}});

    // subscribe before connection_init: 4401 Unauthorized.
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    send(&mut socket, subscribe.clone()).await;
    assert_eq!(close_code(&mut socket).await, Some(4401));

    // Not a message of the protocol: 4400.
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    socket.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(close_code(&mut socket).await, Some(4400));

    // A second connection_init: 4429.
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    let token = json!({"Authorization": format!("Bearer {}", daemon.token)});
    acknowledged_init(&mut socket, token.clone()).await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": token}),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(4429));

    // An id already running: 4409.
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    acknowledged_init(&mut socket, token.clone()).await;
    send(&mut socket, subscribe.clone()).await;
    assert_eq!(receive(&mut socket).await.unwrap()["type"], "next");
    send(&mut socket, subscribe.clone()).await;
    assert_eq!(close_code(&mut socket).await, Some(4409));
}

#[tokio::test]
async fn an_exponential_document_over_a_websocket_is_refused_at_once() {
    let daemon = Daemon::start().await;
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    acknowledged_init(&mut socket, json!({})).await;
    let document = crate::limits::exponential_document(20);
    let started = std::time::Instant::now();
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": document}}),
    )
    .await;
    let answer = receive(&mut socket).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        answer.to_string().contains("DOCUMENT_TOO_LARGE"),
        "{answer}"
    );
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One socket, a thousand wrong recovery keys sent at once: every one is
/// answered promptly (queued guesses are bounded, the rest refused at once)
/// and the daemon's memory stays flat.
#[tokio::test]
async fn a_thousand_wrong_keys_on_one_websocket_are_answered_promptly() {
    let daemon = Daemon::start().await;
    let pid = daemon.child.as_ref().unwrap().id();
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    acknowledged_init(&mut socket, json!({})).await;
    let guess = "mutation { api { useRecoveryApiKey(input: {key: \"abandon abandon abandon\", deviceName: \"x\"}) { code } } }";
    // Warm up the allocator with a few answers before measuring.
    for id in 0..5 {
        send(
            &mut socket,
            json!({"id": format!("w{id}"), "type": "subscribe", "payload": {"query": guess}}),
        )
        .await;
        receive(&mut socket).await.unwrap();
        receive(&mut socket).await.unwrap();
    }
    let before = resident_kib(pid);
    let started = std::time::Instant::now();
    for id in 0..1000 {
        send(
            &mut socket,
            json!({"id": id.to_string(), "type": "subscribe", "payload": {"query": guess}}),
        )
        .await;
    }
    let (mut answered, mut too_many_operations, mut too_many_attempts) = (0, 0, 0);
    let mut ended = std::collections::HashSet::new();
    let mut longest_gap = Duration::ZERO;
    let mut last = std::time::Instant::now();
    while ended.len() < 1000 {
        let message = receive(&mut socket).await.expect("socket closed");
        longest_gap = longest_gap.max(last.elapsed());
        last = std::time::Instant::now();
        let id = message["id"].as_str().unwrap().to_owned();
        match message["type"].as_str().unwrap() {
            "next" => {
                answered += 1;
                let code = &message["payload"]["data"]["api"]["useRecoveryApiKey"]["code"];
                too_many_attempts += usize::from(code == 429);
                assert!(code == 404 || code == 429, "{message}");
            }
            "error" => {
                assert!(
                    message.to_string().contains("TOO_MANY_OPERATIONS"),
                    "{message}"
                );
                too_many_operations += 1;
                ended.insert(id);
            }
            "complete" => {
                ended.insert(id);
            }
            other => panic!("unexpected {other}: {message}"),
        }
    }
    let took = started.elapsed();
    let after = resident_kib(pid);
    assert_eq!(answered + too_many_operations, 1000);
    // Sent at once: only the operations in flight ran (and queued in the
    // throttle, within its budget); the rest were refused at once.
    assert!(too_many_operations > 900, "{too_many_operations} refused");
    eprintln!(
        "{answered} answered ({too_many_attempts} refused by the throttle), {too_many_operations} refused, in {took:?}; longest wait {longest_gap:?}; RSS {before} -> {after} KiB"
    );
    // The queue of throttled guesses is bounded by 8 s; slack for two loaded
    // cores.
    assert!(
        longest_gap < Duration::from_secs(12),
        "an answer waited {longest_gap:?}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        after < before + 8 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
    // The socket still works.
    send(
        &mut socket,
        json!({"id": "v", "type": "subscribe", "payload": {"query": "{ api { version } }"}}),
    )
    .await;
    assert_eq!(
        receive(&mut socket).await.unwrap()["payload"]["data"]["api"]["version"],
        "3.8.3"
    );
}

/// Queries and mutations on a websocket run under `request_timeout_secs`
/// too; a subscription streams on past it.
#[tokio::test]
async fn websocket_operations_run_under_the_time_limit_and_subscriptions_do_not() {
    let daemon = Daemon::start_with_config("request_timeout_secs = 1\n").await;
    let mut socket = connect(&daemon, "graphql-transport-ws", None).await;
    acknowledged_init(
        &mut socket,
        json!({"Authorization": format!("Bearer {}", daemon.token)}),
    )
    .await;
    send(
        &mut socket,
        json!({"id": "jobs", "type": "subscribe", "payload": {"query": JOB_UPDATES}}),
    )
    .await;
    assert_eq!(receive(&mut socket).await.unwrap()["id"], "jobs");
    // Free failures first (over HTTP: the same client), then guesses that
    // each wait for a throttle slot further away than the limit.
    let guess = "mutation { api { useRecoveryApiKey(input: {key: \"abandon abandon\", deviceName: \"x\"}) { code } } }";
    for _ in 0..7 {
        daemon.query_as(None, guess, json!({})).await;
    }
    for id in 0..4 {
        send(
            &mut socket,
            json!({"id": format!("g{id}"), "type": "subscribe", "payload": {"query": guess}}),
        )
        .await;
    }
    let mut timed_out = 0;
    let mut completed = 0;
    while completed < 4 {
        let message = receive(&mut socket).await.expect("socket closed");
        match message["type"].as_str().unwrap() {
            "complete" => completed += 1,
            "next" if message.to_string().contains("TIMEOUT") => timed_out += 1,
            _ => {}
        }
    }
    assert!(timed_out >= 2, "{timed_out} timed out");
    // The subscription outlived the limit: it still delivers.
    start_test_job(&daemon).await;
    let lists = follow_test_job(&mut socket, "next").await;
    assert!(!lists.is_empty());
}

/// The upgrade answer for a websocket from the client at `real_ip` (nginx's
/// X-Real-IP): Ok with the open socket, or the HTTP status it was refused with.
async fn open_from(daemon: &Daemon, real_ip: &str) -> Result<Socket, u16> {
    let mut request = upgrade_request(daemon, "graphql-transport-ws", None);
    request
        .headers_mut()
        .insert("X-Real-IP", real_ip.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("websocket from {real_ip}: {other}"),
    }
}

#[tokio::test]
async fn open_websockets_are_capped_per_client_and_in_all() {
    let daemon =
        Daemon::start_with_config("max_websockets = 3\nmax_websockets_per_client = 2\n").await;
    let first = open_from(&daemon, "10.0.0.1").await.unwrap();
    let _second = open_from(&daemon, "10.0.0.1").await.unwrap();
    assert_eq!(open_from(&daemon, "10.0.0.1").await.err(), Some(429));
    let _third = open_from(&daemon, "10.0.0.2").await.unwrap();
    assert_eq!(open_from(&daemon, "10.0.0.3").await.err(), Some(503));
    // A closed socket gives its slot back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let _fourth = loop {
        match open_from(&daemon, "10.0.0.3").await {
            Ok(socket) => break socket,
            Err(503) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("the freed slot was not given back: {status}"),
        }
    };
}
