//! GraphQL over a websocket, held to the protocols' letter.
//!
//! async-graphql runs the operations; this module stands in front of it and
//! enforces what it does not, for `graphql-transport-ws`:
//! - `subscribe` before `connection_init` closes with 4401 Unauthorized
//!   (async-graphql closes with 1011);
//! - a message that is not JSON or not of the protocol closes with 4400;
//! - a second `connection_init` closes with 4429, a rejected one with 4403;
//! - no `connection_init` within [`CONNECTION_INIT_TIMEOUT`] closes with 4408;
//! - a `subscribe` reusing the id of a running operation closes with 4409.
//!
//! On both protocols, at most [`MAX_OPERATIONS_IN_FLIGHT`] operations run at
//! once per connection; one more is answered at once with an error for its
//! id, so a socket cannot queue unbounded work (say, throttled key guesses).

use async_graphql::Executor;
use async_graphql::http::{WebSocket as GraphQLStream, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub const MAX_OPERATIONS_IN_FLIGHT: usize = 16;

/// How many websockets are open, in all and per client, so that neither
/// one client nor many can hold an unbounded number.
pub struct SocketSlots {
    total: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// Why a websocket was refused before its upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotRefusal {
    TooManyInAll,
    TooManyFromClient,
}

/// One open websocket; its slot is given back when dropped.
pub struct SocketSlot {
    slots: Arc<SocketSlots>,
    client: String,
}

impl SocketSlots {
    pub fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(SocketSlots {
            total,
            per_client,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn try_open(self: &Arc<Self>, client: &str) -> Result<SocketSlot, SlotRefusal> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_client) = &mut *open;
        if *all >= self.total {
            return Err(SlotRefusal::TooManyInAll);
        }
        let mine = by_client.entry(client.to_owned()).or_default();
        if *mine >= self.per_client {
            return Err(SlotRefusal::TooManyFromClient);
        }
        *mine += 1;
        *all += 1;
        Ok(SocketSlot {
            slots: self.clone(),
            client: client.to_owned(),
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_client) = &mut *open;
        *all -= 1;
        if let Some(mine) = by_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                by_client.remove(&self.client);
            }
        }
    }
}
pub const CONNECTION_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A close the server sends: code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close(pub u16, pub String);

/// What to do with one message from the client.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Forward,
    /// Answer with this text and do not run the message.
    Reply(String),
    Close(Close),
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<serde_json::Value>,
}

/// The protocol state this module keeps beside async-graphql's.
struct Guard {
    protocol: WebSocketProtocols,
    initialised: bool,
    in_flight: HashSet<String>,
}

impl Guard {
    fn new(protocol: WebSocketProtocols) -> Self {
        Guard {
            protocol,
            initialised: false,
            in_flight: HashSet::new(),
        }
    }

    fn transport_ws(&self) -> bool {
        self.protocol == WebSocketProtocols::GraphQLWS
    }

    fn admit(&mut self, text: &str) -> Verdict {
        let Ok(head) = serde_json::from_str::<Head>(text) else {
            return self.invalid("Invalid message: not a JSON object");
        };
        let Some(kind) = head.kind else {
            return self.invalid("Invalid message: no type");
        };
        let id = head.id.as_ref().and_then(|id| id.as_str());
        match kind.as_str() {
            "connection_init" => {
                if self.initialised && self.transport_ws() {
                    return Verdict::Close(Close(4429, "Too many initialisation requests".into()));
                }
                self.initialised = true;
                Verdict::Forward
            }
            "subscribe" | "start" => {
                let Some(id) = id.filter(|id| !id.is_empty()) else {
                    return self.invalid("Invalid message: an operation needs an id");
                };
                if self.transport_ws() && !self.initialised {
                    return Verdict::Close(Close(4401, "Unauthorized".into()));
                }
                if self.in_flight.contains(id) {
                    if self.transport_ws() {
                        return Verdict::Close(Close(
                            4409,
                            format!("Subscriber for {} already exists", truncate(id, 80)),
                        ));
                    }
                    // The legacy protocol replaces the operation.
                    return Verdict::Forward;
                }
                if self.in_flight.len() >= MAX_OPERATIONS_IN_FLIGHT {
                    return Verdict::Reply(self.operation_error(
                        id,
                        &format!(
                            "Too many operations at once on this connection (at most {MAX_OPERATIONS_IN_FLIGHT})"
                        ),
                    ));
                }
                self.in_flight.insert(id.to_owned());
                Verdict::Forward
            }
            "complete" | "stop" => {
                if let Some(id) = id {
                    self.in_flight.remove(id);
                }
                Verdict::Forward
            }
            "ping" | "pong" | "connection_terminate" => Verdict::Forward,
            _ => self.invalid("Invalid message type"),
        }
    }

    /// The server's own messages end operations too.
    fn observe_outgoing(&mut self, text: &str) {
        if let Ok(head) = serde_json::from_str::<Head>(text)
            && matches!(head.kind.as_deref(), Some("complete" | "error"))
            && let Some(id) = head.id.as_ref().and_then(|id| id.as_str())
        {
            self.in_flight.remove(id);
        }
    }

    fn invalid(&self, reason: &str) -> Verdict {
        // 4400 is graphql-transport-ws's; the legacy protocol closes with a
        // protocol error, as async-graphql does.
        let code = if self.transport_ws() { 4400 } else { 1002 };
        Verdict::Close(Close(code, reason.into()))
    }

    fn operation_error(&self, id: &str, message: &str) -> String {
        let error = json!({"message": message, "extensions": {"code": "TOO_MANY_OPERATIONS"}});
        let payload = if self.transport_ws() {
            json!([error])
        } else {
            error
        };
        json!({"type": "error", "id": id, "payload": payload}).to_string()
    }

    /// async-graphql's closes, in this protocol's codes.
    fn translate_close(&self, code: u16, reason: String) -> Close {
        match code {
            // A rejected connection_init.
            1002 if self.transport_ws() => Close(4403, truncate(&reason, 120)),
            _ => Close(code, truncate(&reason, 120)),
        }
    }
}

/// Close reasons are limited to 123 bytes.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Serves GraphQL on `socket` until either side closes it.
pub async fn serve<E, OnInit, OnInitFut>(
    socket: WebSocket,
    executor: E,
    protocol: WebSocketProtocols,
    data: async_graphql::Data,
    on_connection_init: OnInit,
) where
    E: Executor,
    OnInit: FnOnce(serde_json::Value) -> OnInitFut + Send + 'static,
    OnInitFut: Future<Output = async_graphql::Result<async_graphql::Data>> + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    let guard = Arc::new(Mutex::new(Guard::new(protocol)));
    // Admitted messages, with backpressure on the client while async-graphql
    // is busy (say, checking a throttled connection_init).
    let (admitted_tx, admitted_rx) = mpsc::channel::<String>(8);
    // What the reader answers itself: replies, and the close that ends it.
    let (control_tx, mut control_rx) = mpsc::channel::<Verdict>(4);

    let reader_guard = guard.clone();
    let reader = tokio::spawn(async move {
        while let Some(message) = source.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    // tungstenite refuses a message over the size limit.
                    let too_big = error.to_string().to_lowercase().contains("too long");
                    let close = if too_big {
                        Close(1009, "Message too big".into())
                    } else {
                        Close(1002, "Protocol error".into())
                    };
                    let _ = control_tx.send(Verdict::Close(close)).await;
                    break;
                }
            };
            let text = match message {
                Message::Text(text) => text.to_string(),
                Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Message::Close(_) => break,
                // axum answers pings itself.
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            let verdict = reader_guard.lock().expect("guard lock").admit(&text);
            match verdict {
                Verdict::Forward => {
                    if admitted_tx.send(text).await.is_err() {
                        break;
                    }
                }
                Verdict::Reply(_) => {
                    if control_tx.send(verdict).await.is_err() {
                        break;
                    }
                }
                Verdict::Close(_) => {
                    let _ = control_tx.send(verdict).await;
                    break;
                }
            }
        }
    });

    let input = tokio_stream::wrappers::ReceiverStream::new(admitted_rx);
    let mut operations = std::pin::pin!(
        GraphQLStream::new(executor, input, protocol)
            .connection_data(data)
            .on_connection_init(on_connection_init)
    );
    let init_deadline = tokio::time::sleep(CONNECTION_INIT_TIMEOUT);
    let mut init_deadline = std::pin::pin!(init_deadline);

    // Once the reader has stopped, only async-graphql's answers are left.
    let mut reader_running = true;
    let close = loop {
        let initialised = guard.lock().expect("guard lock").initialised;
        tokio::select! {
            // The reader's verdicts first: a close it asks for must win over
            // the end of async-graphql's stream that follows it.
            biased;
            control = control_rx.recv(), if reader_running => match control {
                Some(Verdict::Reply(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break None;
                    }
                }
                Some(Verdict::Close(close)) => break Some(close),
                Some(Verdict::Forward) => {}
                None => reader_running = false,
            },
            outgoing = operations.next() => match outgoing {
                Some(WsMessage::Text(text)) => {
                    guard.lock().expect("guard lock").observe_outgoing(&text);
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break None;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    break Some(guard.lock().expect("guard lock").translate_close(code, reason));
                }
                None => break None,
            },
            () = &mut init_deadline, if !initialised => {
                break Some(Close(4408, "Connection initialisation timeout".into()));
            }
        }
    };
    reader.abort();
    if let Some(Close(code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_slots_cap_each_client_and_the_total_and_come_back_when_closed() {
        let slots = SocketSlots::new(3, 2);
        let a1 = slots.try_open("a").unwrap();
        let _a2 = slots.try_open("a").unwrap();
        assert_eq!(
            slots.try_open("a").err(),
            Some(SlotRefusal::TooManyFromClient)
        );
        let _b1 = slots.try_open("b").unwrap();
        assert_eq!(slots.try_open("c").err(), Some(SlotRefusal::TooManyInAll));
        drop(a1);
        let _c1 = slots.try_open("c").unwrap();
        assert_eq!(slots.try_open("a").err(), Some(SlotRefusal::TooManyInAll));
    }

    fn transport() -> Guard {
        Guard::new(WebSocketProtocols::GraphQLWS)
    }

    fn closes_with(verdict: Verdict) -> u16 {
        match verdict {
            Verdict::Close(Close(code, _)) => code,
            other => panic!("not a close: {other:?}"),
        }
    }

    #[test]
    fn subscribe_before_init_is_unauthorized() {
        let mut guard = transport();
        let code = closes_with(guard.admit(r#"{"type":"subscribe","id":"1","payload":{}}"#));
        assert_eq!(code, 4401);
    }

    #[test]
    fn invalid_and_duplicate_messages_close_with_the_protocols_codes() {
        let mut guard = transport();
        assert_eq!(closes_with(guard.admit("not json")), 4400);
        assert_eq!(closes_with(guard.admit(r#"{"type":"nonsense"}"#)), 4400);
        assert_eq!(
            guard.admit(r#"{"type":"connection_init"}"#),
            Verdict::Forward
        );
        assert_eq!(
            closes_with(guard.admit(r#"{"type":"connection_init"}"#)),
            4429
        );
        let subscribe = r#"{"type":"subscribe","id":"a","payload":{}}"#;
        assert_eq!(guard.admit(subscribe), Verdict::Forward);
        assert_eq!(closes_with(guard.admit(subscribe)), 4409);
        // Once complete, the id may be used again.
        guard.observe_outgoing(r#"{"type":"complete","id":"a"}"#);
        assert_eq!(guard.admit(subscribe), Verdict::Forward);
    }

    #[test]
    fn operations_in_flight_are_bounded() {
        for protocol in [
            WebSocketProtocols::GraphQLWS,
            WebSocketProtocols::SubscriptionsTransportWS,
        ] {
            let mut guard = Guard::new(protocol);
            guard.admit(r#"{"type":"connection_init"}"#);
            for i in 0..MAX_OPERATIONS_IN_FLIGHT {
                let message = format!(r#"{{"type":"start","id":"{i}","payload":{{}}}}"#);
                assert_eq!(guard.admit(&message), Verdict::Forward);
            }
            let one_more = guard.admit(r#"{"type":"start","id":"x","payload":{}}"#);
            let Verdict::Reply(text) = one_more else {
                panic!("{one_more:?}");
            };
            assert!(text.contains("TOO_MANY_OPERATIONS") && text.contains(r#""id":"x""#));
            guard.admit(r#"{"type":"stop","id":"0"}"#);
            assert_eq!(
                guard.admit(r#"{"type":"start","id":"x","payload":{}}"#),
                Verdict::Forward
            );
        }
    }

    mod generated {
        use super::super::*;
        use proptest::prelude::*;

        /// A client's message: known and unknown types, string ids (short,
        /// long, unicode), other ids, or not JSON at all.
        fn message() -> impl Strategy<Value = String> {
            let kind = prop_oneof![
                Just("connection_init"),
                Just("subscribe"),
                Just("start"),
                Just("complete"),
                Just("stop"),
                Just("ping"),
                Just("pong"),
                Just("connection_terminate"),
                Just("nonsense"),
            ];
            let id = prop_oneof![
                (0..20u8).prop_map(|n| json!(n.to_string())),
                "\\PC{0,200}".prop_map(|s| json!(s)),
                Just(json!(7)),
                Just(json!(null)),
            ];
            prop_oneof![
                8 => (kind, id).prop_map(|(kind, id)| json!({"type": kind, "id": id, "payload": {}}).to_string()),
                1 => "\\PC{0,40}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever a client sends: no more operations in flight than
            /// allowed, close reasons that fit a close frame, operations
            /// refused only before init, refusals for the right id.
            #[test]
            fn any_message_sequence_keeps_the_bounds(
                transport_ws in any::<bool>(),
                messages in prop::collection::vec(message(), 0..60),
            ) {
                let protocol = if transport_ws {
                    WebSocketProtocols::GraphQLWS
                } else {
                    WebSocketProtocols::SubscriptionsTransportWS
                };
                let mut guard = Guard::new(protocol);
                for text in &messages {
                    let initialised = guard.initialised;
                    match guard.admit(text) {
                        Verdict::Close(Close(code, reason)) => {
                            prop_assert!(reason.len() <= 123, "{}", reason);
                            if code == 4401 {
                                prop_assert!(transport_ws && !initialised);
                            }
                            break;
                        }
                        Verdict::Reply(reply) => {
                            let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
                            let sent: serde_json::Value = serde_json::from_str(text).unwrap();
                            prop_assert_eq!(&reply["type"], "error");
                            prop_assert_eq!(&reply["id"], &sent["id"]);
                        }
                        Verdict::Forward => {}
                    }
                    prop_assert!(guard.in_flight.len() <= MAX_OPERATIONS_IN_FLIGHT);
                }
            }
        }
    }
}
