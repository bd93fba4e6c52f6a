//! HTTP and websocket transport for the schema: `/graphql` (POST queries,
//! websocket subscriptions, GraphiQL for a browser if configured) and
//! `/api/version`.

use super::auth::{ClientId, PresentedToken};
use super::build_schema;
use super::time_limit::TimeLimited;
use super::types::api::API_VERSION;
use super::websocket::{SlotRefusal, SocketSlots};
use crate::app::App;
use crate::domain::i18n::Locale;
use crate::domain::tokens::{Caller, Credential, TooManyAttempts};
use async_graphql::http::WebSocketProtocols;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::{Data, Executor};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;

#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    /// The schema, every request under the configured time limit.
    executor: TimeLimited,
    sockets: Arc<SocketSlots>,
}

pub fn router(app: Arc<App>) -> Router {
    let executor = TimeLimited {
        schema: build_schema(Some(app.clone())),
        limit: Duration::from_secs(app.config.request_timeout_secs),
    };
    let limit = app.config.max_body_bytes;
    let sockets = SocketSlots::new(
        app.config.max_websockets,
        app.config.max_websockets_per_client,
    );
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/api/version", get(version))
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(middleware::from_fn(refuse_token_in_url))
        .with_state(Shared {
            app,
            executor,
            sockets,
        })
}

/// Serves until SIGTERM or SIGINT, telling systemd when it is ready.
pub async fn serve(app: Arc<App>, test_hooks_socket: Option<PathBuf>) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", app.config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving the SelfPrivacy API");
    #[cfg(feature = "test-hooks")]
    if let Some(path) = test_hooks_socket {
        crate::test_hooks::spawn(path, app.clone())?;
    }
    #[cfg(not(feature = "test-hooks"))]
    anyhow::ensure!(
        test_hooks_socket.is_none(),
        "test hooks are not built into this binary"
    );
    spawn_housekeeping(app.clone());
    // Samples taken since the last batch are written on the way out.
    let monitoring = app.monitoring.clone();
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result?,
        _ = async {
            let _ = stop_rx.await;
            // Websocket clients may hold on forever; give requests in flight
            // a moment, then go.
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => tracing::info!("closing remaining connections"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    monitoring.flush();
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed now, not at
/// the first poll: the server may answer (and be sent SIGTERM) before it
/// polls its shutdown future, and an uninstalled handler means death.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

fn spawn_housekeeping(app: Arc<App>) {
    // Once start-up and the samplers' first round are over, the code only
    // they ran need not stay resident (idle RSS).
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = tokio::task::spawn_blocking(crate::os::process_memory::release_startup_pages).await;
    });
    let monitor = app.clone();
    tokio::spawn(crate::domain::monitoring::run(
        app.monitoring.clone(),
        app.resources.clone(),
        Duration::from_secs(app.config.monitoring_flush_secs),
        move || {
            monitor
                .services
                .catalogue()
                .definitions()
                .iter()
                .map(|d| d.meta.id.clone())
                .collect()
        },
    ));
    let sampler = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let services: Vec<String> = sampler
                .services
                .catalogue()
                .definitions()
                .iter()
                .map(|d| d.meta.id.clone())
                .collect();
            sampler.resources.sample(&services).await;
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(failure) = app.jobs.purge_expired() {
                tracing::error!("purging expired jobs: {failure}");
            }
        }
    });
}

/// URLs end up in proxy and browser logs, so a token there is refused
/// outright rather than ignored.
async fn refuse_token_in_url(request: Request, next: Next) -> Response {
    let has_token = request.uri().query().is_some_and(|query| {
        query.split('&').any(|pair| {
            pair.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("token"))
        })
    });
    if has_token {
        return (
            StatusCode::BAD_REQUEST,
            "Tokens in the URL are refused: send it in the Authorization header",
        )
            .into_response();
    }
    next.run(request).await
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": API_VERSION }))
}

/// The client's address: the peer, or what nginx on this machine says the
/// peer was.
fn client_id(peer: SocketAddr, headers: &HeaderMap) -> ClientId {
    let forwarded = || {
        let real_ip = headers.get("x-real-ip").and_then(|v| v.to_str().ok());
        let last_forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next());
        real_ip.or(last_forwarded).map(str::trim)
    };
    let id = if peer.ip().is_loopback() {
        match forwarded() {
            Some(text) => text
                .parse::<IpAddr>()
                .map_or_else(|_| text.to_owned(), client_of),
            None => client_of(peer.ip()),
        }
    } else {
        client_of(peer.ip())
    };
    ClientId(id)
}

/// Who an address counts as for throttling and socket caps: an IPv6
/// client is its /64, the block one subscriber gets (one machine can take
/// a new address from it for every attempt).
fn client_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let network = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{network}/64")
            }
        },
    }
}

fn locale(headers: &HeaderMap) -> Locale {
    Locale::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// `Bearer <token>`, or the bare token the app sends during setup.
fn token_from_authorization(value: &str) -> Option<&str> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None if value.eq_ignore_ascii_case("bearer") => return None,
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

/// Why a presented token was not accepted.
enum Refusal {
    Wrong,
    /// The client failed too often: the token was not even checked.
    TooManyAttempts,
}

/// Checks a presented token in the client's turn (a client that failed too
/// often waits, or is refused at once when its queue is full).
async fn check_token(
    app: &App,
    client: &ClientId,
    token: Option<&str>,
) -> Result<Option<Caller>, Refusal> {
    let Some(token) = token else {
        return Ok(None);
    };
    match app
        .throttle
        .attempt(&client.0, Credential::DeviceToken, || {
            app.tokens.authenticate(token).ok_or(())
        })
        .await
    {
        Ok(Ok(caller)) => Ok(Some(caller)),
        Ok(Err(())) => Err(Refusal::Wrong),
        Err(TooManyAttempts) => Err(Refusal::TooManyAttempts),
    }
}

/// The answer to a client that failed too often, in GraphQL's error shape.
fn too_many_attempts() -> Response {
    let error =
        super::errors::request_error(TooManyAttempts::failure().message.en, "TOO_MANY_ATTEMPTS");
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "60")],
        GraphQLResponse::from(async_graphql::Response::from_errors(vec![error])),
    )
        .into_response()
}

fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token_from_authorization)
}

async fn graphql_post(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> Response {
    let client = client_id(peer, &headers);
    // A wrong token is answered like no token: public fields still work,
    // everything else says the request is not authenticated.
    let caller = match check_token(&shared.app, &client, header_token(&headers)).await {
        Ok(caller) => caller,
        Err(Refusal::Wrong) => None,
        Err(Refusal::TooManyAttempts) => return too_many_attempts(),
    };
    let mut request = request.into_inner().data(locale(&headers)).data(client);
    if let Some(caller) = caller {
        request = request.data(caller);
    }
    let response = shared.executor.execute(request).await;
    GraphQLResponse::from(response).into_response()
}

async fn graphql_get(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match (upgrade, websocket_protocol(&headers)) {
        (Ok(upgrade), Some(protocol)) => websocket(shared, peer, headers, upgrade, protocol).await,
        (Ok(_), None) => (
            StatusCode::BAD_REQUEST,
            "Unsupported websocket subprotocol: use graphql-transport-ws or graphql-ws",
        )
            .into_response(),
        _ if shared.app.config.graphiql => {
            Html(GraphiQLSource::build().endpoint("/graphql").finish()).into_response()
        }
        _ => (StatusCode::NOT_FOUND, NO_GRAPHIQL).into_response(),
    }
}

/// What a browser gets on `GET /graphql` while GraphiQL is off: plain text,
/// nothing loaded from anywhere.
const NO_GRAPHIQL: &str = "This is the SelfPrivacy API: send GraphQL queries to this URL with POST, \
or subscribe over a websocket (graphql-transport-ws). The GraphiQL page is off \
(graphiql = true in the configuration file turns it on).\n";

async fn websocket(
    shared: Shared,
    peer: SocketAddr,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
    protocol: WebSocketProtocols,
) -> Response {
    let client = client_id(peer, &headers);
    let slot = match shared.sockets.try_open(&client.0) {
        Ok(slot) => slot,
        Err(SlotRefusal::TooManyInAll) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many open websockets on this server; try again later",
            )
                .into_response();
        }
        Err(SlotRefusal::TooManyFromClient) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many open websockets from this client; close one first",
            )
                .into_response();
        }
    };
    let header_caller = match check_token(&shared.app, &client, header_token(&headers)).await {
        Ok(caller) => caller,
        Err(Refusal::Wrong) => return (StatusCode::UNAUTHORIZED, "Invalid token").into_response(),
        Err(Refusal::TooManyAttempts) => return too_many_attempts(),
    };
    let mut data = Data::default();
    data.insert(locale(&headers));
    data.insert(client.clone());
    let header_token = header_caller.and(header_token(&headers).map(str::to_owned));
    if let Some(token) = header_token.clone() {
        data.insert(PresentedToken(token));
    }
    let app = shared.app.clone();
    // The same size limit as a request body; axum's default is 64 MiB.
    let limit = shared.app.config.max_body_bytes;
    // Small buffers: the app's messages are small, and the 128 KiB default
    // read buffer was most of an idle subscriber's memory.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            // Held while the socket is open.
            let _slot = slot;
            super::websocket::serve(
                socket,
                shared.executor.clone(),
                protocol,
                data,
                move |payload| async move {
                    let mut data = Data::default();
                    if header_token.is_some() {
                        return Ok(data);
                    }
                    let token = init_payload_token(&payload);
                    match check_token(&app, &client, token).await {
                        Ok(Some(_)) => {
                            data.insert(PresentedToken(token.unwrap_or_default().to_owned()))
                        }
                        Ok(None) => {}
                        Err(Refusal::Wrong) => {
                            return Err(async_graphql::Error::new("Invalid token"));
                        }
                        Err(Refusal::TooManyAttempts) => {
                            return Err(async_graphql::Error::new("Too many failed attempts"));
                        }
                    }
                    Ok(data)
                },
            )
            .await
        })
}

/// The first GraphQL subprotocol the client offers.
fn websocket_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())?
        .split(',')
        .find_map(|p| p.trim().parse().ok())
}

/// The token in a `connection_init` payload: `{"Authorization": "Bearer t"}`
/// as the app sends it, or inside a `headers` object as some clients do.
fn init_payload_token(payload: &serde_json::Value) -> Option<&str> {
    fn find(object: &serde_json::Value) -> Option<&str> {
        object.as_object().and_then(|map| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| v.as_str())
        })
    }
    find(payload)
        .or_else(|| payload.get("headers").and_then(find))
        .and_then(token_from_authorization)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_accepts_bearer_and_bare_tokens() {
        assert_eq!(token_from_authorization("Bearer abc"), Some("abc"));
        assert_eq!(token_from_authorization("bearer  abc "), Some("abc"));
        assert_eq!(token_from_authorization("abc"), Some("abc"));
        assert_eq!(token_from_authorization("Basic abc"), None);
        assert_eq!(token_from_authorization("Bearer "), None);
    }

    #[test]
    fn init_payload_token_is_found_in_either_place() {
        let app_style = serde_json::json!({"Authorization": "Bearer t1"});
        let nested = serde_json::json!({"headers": {"authorization": "Bearer t2"}});
        assert_eq!(init_payload_token(&app_style), Some("t1"));
        assert_eq!(init_payload_token(&nested), Some("t2"));
        assert_eq!(init_payload_token(&serde_json::json!({})), None);
    }

    #[test]
    fn an_ipv6_client_is_its_64_block() {
        let id = |peer: &str, real_ip: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(real_ip) = real_ip {
                headers.insert("x-real-ip", real_ip.parse().unwrap());
            }
            client_id(peer.parse().unwrap(), &headers).0
        };
        let a = id("[2001:db8:1:2:aaaa::1]:4000", None);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(id("[2001:db8:1:2:ffff:1:2:3]:4000", None), a);
        assert_ne!(id("[2001:db8:1:3::1]:4000", None), a);
        // Through nginx on this machine.
        assert_eq!(id("127.0.0.1:4000", Some("2001:db8:1:2::77")), a);
        assert_eq!(id("127.0.0.1:4000", Some("203.0.113.9")), "203.0.113.9");
        assert_eq!(id("[::ffff:203.0.113.9]:4000", None), "203.0.113.9");
        assert_eq!(id("203.0.113.9:4000", Some("10.0.0.1")), "203.0.113.9");
    }
}
