//! Tokens on every surface of the real router, served on a port in-process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use taskrunner::auth::secret::Secret;
use taskrunner::auth::store;
use taskrunner::auth::{Authenticator, Role};
use taskrunner::http::{HttpAuth, HttpOptions};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_util::sync::CancellationToken;

use super::{WITHIN, assert_unauthenticated, mint, post_graphql};
use crate::harness::TestApp;

const METRICS_TOKEN: &str = "scrape-me-please";

/// The router with tokens on (and a metrics token), on a free port.
struct Served {
    address: String,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_with_tokens(app: &TestApp) -> Served {
    let options = HttpOptions {
        auth: HttpAuth {
            authenticator: Some(Authenticator::new(app.state.pool().clone())),
            metrics_token: Some(Arc::from(METRICS_TOKEN)),
        },
        ..HttpOptions::default()
    };
    let router = taskrunner::http::router_with(app.state.clone(), options);
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = socket.local_addr().expect("bound").to_string();
    let stop = CancellationToken::new();
    let until = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        let _ = axum::serve(socket, router)
            .with_graceful_shutdown(until)
            .await;
    });
    Served { address, stop }
}

const LIST: &str = "{ tasks(first: 5) { edges { node { id } } } }";
const CREATE: &str = r#"mutation { createTask(input: { prompt: "hi", model: "echo" }) { id } }"#;

#[tokio::test]
async fn missing_malformed_unknown_expired_and_revoked_tokens_get_401() {
    let app = TestApp::new().await;
    let served = serve_with_tokens(&app).await;
    let address = &served.address;
    let (expired, expired_secret) = mint(&app.db, "acme", Role::Member).await;
    let (revoked, revoked_secret) = mint(&app.db, "acme", Role::Member).await;
    let client = app.db.client().await;
    client
        .execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&expired],
        )
        .await
        .expect("expire");
    let mut conn = app.state.pool().get().await.expect("a connection");
    store::revoke_token(&mut conn, revoked)
        .await
        .expect("revoke")
        .expect("the token exists");
    drop(conn);
    let unknown = Secret::generate().expect("random bytes");

    let cases = [
        ("no header", None),
        ("garbage", Some("garbage".to_owned())),
        ("another scheme", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("a bearer that is no token", Some("Bearer nope".to_owned())),
        ("unknown", Some(format!("Bearer {}", unknown.expose()))),
        ("expired", Some(format!("Bearer {expired_secret}"))),
        ("revoked", Some(format!("Bearer {revoked_secret}"))),
    ];
    for (what, header) in &cases {
        let answer = post_graphql(address, header.as_deref(), LIST).await;
        assert_unauthenticated(&answer, what);
    }
    let (_, _, expired_body) =
        post_graphql(address, Some(&format!("Bearer {expired_secret}")), LIST).await;
    assert!(
        expired_body.to_string().contains("expired"),
        "{expired_body}"
    );
    // A query over GET is refused the same way.
    let response = reqwest::get(format!("http://{address}/graphql?query={LIST}"))
        .await
        .expect("answer");
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn a_member_acts_for_its_tenant_and_its_use_is_recorded() {
    let app = TestApp::new().await;
    let served = serve_with_tokens(&app).await;
    let (id, secret) = mint(&app.db, "acme", Role::Member).await;
    let bearer = format!("Bearer {secret}");
    let (status, _, body) = post_graphql(&served.address, Some(&bearer), CREATE).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let task_id: i64 = body["data"]["createTask"]["id"]
        .as_str()
        .expect("an id")
        .parse()
        .expect("numeric");
    let client = app.db.client().await;
    let row = client
        .query_one("SELECT tenant FROM tasks WHERE id = $1", &[&task_id])
        .await
        .expect("the task");
    assert_eq!(row.get::<_, String>(0), "acme");

    // last_used_at is written off the request's path: wait for it.
    let deadline = Instant::now() + WITHIN;
    loop {
        let row = client
            .query_one(
                "SELECT last_used_at IS NOT NULL FROM api_tokens WHERE id = $1",
                &[&id],
            )
            .await
            .expect("the token");
        if row.get::<_, bool>(0) {
            break;
        }
        assert!(Instant::now() < deadline, "last_used_at was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reader_reads_but_may_not_write() {
    let app = TestApp::new().await;
    let served = serve_with_tokens(&app).await;
    let (_, secret) = mint(&app.db, "acme", Role::Reader).await;
    let bearer = format!("Bearer {secret}");
    let (status, _, body) = post_graphql(&served.address, Some(&bearer), LIST).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(body.get("errors").is_none(), "{body}");
    assert!(body["data"]["tasks"]["edges"].is_array(), "{body}");
    let (_, _, body) = post_graphql(&served.address, Some(&bearer), CREATE).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let count = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .expect("count");
    assert_eq!(count.get::<_, i64>(0), 0);
}

/// Opens a `graphql-transport-ws` (or legacy `graphql-ws`) socket and sends
/// `connection_init` with `payload`; returns the first message that is not
/// a keep-alive, or the close frame as `{"close": code, "reason": …}`.
async fn connection_init(address: &str, protocol: &'static str, payload: Value) -> Value {
    let mut request = format!("ws://{address}/graphql")
        .into_client_request()
        .expect("a WebSocket request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade succeeds");
    socket
        .send(Message::text(
            json!({ "type": "connection_init", "payload": payload }).to_string(),
        ))
        .await
        .expect("sent");
    loop {
        let message = tokio::time::timeout(WITHIN, socket.next())
            .await
            .expect("an answer in time")
            .expect("the socket is open")
            .expect("a message");
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if !matches!(value["type"].as_str(), Some("ka" | "ping" | "pong")) {
                    return value;
                }
            }
            Message::Close(frame) => {
                return match frame {
                    Some(frame) => {
                        json!({ "close": u16::from(frame.code), "reason": frame.reason.to_string() })
                    }
                    None => json!({ "close": null }),
                };
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn websocket_connection_init_needs_a_token() {
    let app = TestApp::new().await;
    let served = serve_with_tokens(&app).await;
    let (_, secret) = mint(&app.db, "acme", Role::Member).await;
    let address = &served.address;

    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let accepted = connection_init(
            address,
            protocol,
            json!({ "authorization": format!("Bearer {secret}") }),
        )
        .await;
        assert_eq!(accepted["type"], "connection_ack", "{protocol}: {accepted}");
    }
    for payload in [
        json!({}),
        json!({ "authorization": "Bearer trk_not_a_real_one" }),
        json!({ "authorization": 42 }),
    ] {
        let refused = connection_init(address, "graphql-transport-ws", payload.clone()).await;
        assert_eq!(refused["close"], 1002, "{payload}: {refused}");
        assert!(
            refused["reason"]
                .as_str()
                .is_some_and(|r| r.contains("token")),
            "{refused}"
        );
        let refused = connection_init(address, "graphql-ws", payload.clone()).await;
        assert_eq!(refused["type"], "connection_error", "{payload}: {refused}");
    }
}

#[tokio::test]
async fn mcp_needs_a_token_and_acts_for_its_tenant() {
    let app = TestApp::new().await;
    let served = serve_with_tokens(&app).await;
    let (_, secret) = mint(&app.db, "acme", Role::Member).await;
    let url = format!("http://{}/mcp", served.address);

    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    });
    let refused = reqwest::Client::new()
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let body: Value = refused.json().await.expect("a JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(secret),
    );
    let client = ().serve(transport).await.expect("the MCP handshake with a token");
    let created = client
        .call_tool(
            CallToolRequestParams::new("create_task").with_arguments(
                json!({ "prompt": "from mcp", "model": "echo" })
                    .as_object()
                    .expect("an object")
                    .clone(),
            ),
        )
        .await
        .expect("tools/call");
    assert_ne!(created.is_error, Some(true), "{created:?}");
    let row = app
        .db
        .client()
        .await
        .query_one("SELECT tenant FROM tasks WHERE prompt = 'from mcp'", &[])
        .await
        .expect("the task");
    assert_eq!(row.get::<_, String>(0), "acme");
}

#[tokio::test]
async fn health_and_graphiql_stay_open_and_metrics_asks_for_its_token() {
    let app = TestApp::new().await;
    let served = serve_with_tokens(&app).await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/", "/graphiql"] {
        let response = http
            .get(format!("http://{}{path}", served.address))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{path}");
    }
    let metrics = format!("http://{}/metrics", served.address);
    for header in [None, Some("Bearer wrong"), Some("scrape-me-please")] {
        let mut request = http.get(&metrics);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.expect("answer");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{header:?}"
        );
    }
    let response = http
        .get(&metrics)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(
        response.text().await.expect("text").contains("# EOF"),
        "an OpenMetrics scrape"
    );
}
