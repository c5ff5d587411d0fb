//! The HTTP surface in-process: GraphQL over POST and GET, GraphiQL, health,
//! readiness, request ids, malformed and oversized bodies, an unreachable database.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::harness::{TestApp, TestDb};
use crate::hostile::assert_no_internals;

pub(crate) async fn send(
    router: axum::Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router.oneshot(request).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    (status, headers, body.to_vec())
}

pub(crate) fn post_json(body: impl Into<Body>) -> Request<Body> {
    Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

pub(crate) fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn graphql_round_trip_over_post_and_get() {
    let app = TestApp::new().await;
    let body = json!({ "query": "mutation { createTask(input: { prompt: \"hi\", model: \"m\" }) { id status } }" });
    let (status, headers, body) = send(app.router(), post_json(body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.contains_key("x-request-id"),
        "every response carries a request id"
    );
    let created = json_of(&body);
    assert_eq!(created["data"]["createTask"]["status"], "PENDING");
    let id = created["data"]["createTask"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let uri = format!("/graphql?query=%7Btask(id%3A%22{id}%22)%7Bprompt%7D%7D");
    let (status, _, body) =
        send(app.router(), Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["data"]["task"]["prompt"], "hi");
}

#[tokio::test]
async fn mutations_over_get_are_refused() {
    let app = TestApp::new().await;
    let uri = "/graphql?query=mutation%7BcreateTask(input%3A%7Bprompt%3A%22p%22%2Cmodel%3A%22m%22%7D)%7Bid%7D%7D";
    let (status, headers, _) =
        send(app.router(), Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers.get(header::ALLOW).unwrap(), "POST");
    let count = app.data("{ tasks { totalCount } }", json!({})).await;
    assert_eq!(count["tasks"]["totalCount"], 0, "nothing was created");
}

#[tokio::test]
async fn a_client_request_id_is_kept_and_put_on_errors() {
    let app = TestApp::new().await;
    let request = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "trace-me-123")
        .body(Body::from(
            json!({ "query": "{ task(id: \"x\") { id } }" }).to_string(),
        ))
        .unwrap();
    let (_, headers, body) = send(app.router(), request).await;
    assert_eq!(headers.get("x-request-id").unwrap(), "trace-me-123");
    let error = &json_of(&body)["errors"][0];
    assert_eq!(error["extensions"]["requestId"], "trace-me-123");
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn engine_errors_carry_a_code_and_no_internals() {
    let app = TestApp::new().await;
    for query in [
        json!({ "query": "{ tasks { nope } }" }),
        json!({ "query": "{ tasks(first: \"ten\") { totalCount } }" }),
        json!({ "query": "{ task(id: 1) { id }" }),
        json!({ "query": "mutation($i: CreateTaskInput!) { createTask(input: $i) { id } }", "variables": { "i": { "prompt": "p", "model": "m", "priority": "high" } } }),
    ] {
        let (status, _, body) = send(app.router(), post_json(query.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        let response = json_of(&body);
        assert_eq!(
            response["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{query}"
        );
    }
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_4xx_not_a_crash() {
    let app = TestApp::new().await;
    for body in ["", "{", "[1,2", "{\"query\": 5}", "\u{0}\u{1}binary"] {
        let (status, _, response) = send(app.router(), post_json(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        let response = json_of(&response);
        assert_eq!(response["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    }

    let huge =
        json!({ "query": format!("{{ task(id: \"{}\") {{ id }} }}", "9".repeat(3 * 1024 * 1024)) });
    let (status, _, _) = send(app.router(), post_json(huge.to_string())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A prompt at its limit, JSON-escaped at worst, is still accepted.
    let prompt: String = "😀".repeat(100_000);
    let escaped = serde_json::to_string(&prompt)
        .unwrap()
        .replace('😀', "\\ud83d\\ude00");
    let body = format!(
        r#"{{"query":"mutation($p: String!) {{ createTask(input: {{ prompt: $p, model: \"m\" }}) {{ id }} }}","variables":{{"p":{escaped}}}}}"#
    );
    assert!(body.len() > 1_000_000);
    let (status, _, response) = send(app.router(), post_json(body)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        json_of(&response)["data"]["createTask"]["id"].is_string(),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[tokio::test]
async fn graphiql_and_health_pages() {
    let app = TestApp::new().await;
    for path in ["/", "/graphiql"] {
        let (status, headers, body) = send(
            app.router(),
            Request::get(path).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let page = String::from_utf8(body).unwrap();
        assert!(
            page.contains("graphiql") && page.contains("/graphql"),
            "{path} serves GraphiQL"
        );
    }
    let (status, _, body) = send(
        app.router(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    let (status, _, body) = send(
        app.router(),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );
}

#[tokio::test]
async fn an_unreachable_database_is_service_unavailable_within_seconds() {
    // A port nothing listens on: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let db = TestDb::named_fresh();
    let mut args = db.args();
    args.database_url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    args.db_timeout_seconds = 2;
    let state = taskrunner::AppState::new(
        taskrunner::db::build_pool(&args).unwrap(),
        crate::harness::any_model_router(),
    );
    let router = taskrunner::http::router(state);

    let started = Instant::now();
    let body = json!({ "query": "mutation { createTask(input: { prompt: \"p\", model: \"m\" }) { id } }" });
    let (status, _, body) = send(router.clone(), post_json(body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let response = json_of(&body);
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains("127.0.0.1") && !message.contains("refused"),
        "no internals: {message}"
    );

    let (status, _, _) = send(router, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_database_that_vanishes_mid_flight_is_service_unavailable() {
    let app = TestApp::new().await;
    app.create(json!({ "prompt": "p", "model": "m" })).await;
    let mut held = app.state.db().await.unwrap();
    // Kill every connection of the pool, as a database restart would.
    crate::harness::admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        app.db.name
    ))
    .await
    .unwrap();
    // A query on a connection the server ended is SERVICE_UNAVAILABLE.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = taskrunner::tasks::store::count(
        &mut held,
        &taskrunner::tasks::Scope::All,
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        taskrunner::error::ApiError::from(error).code(),
        "SERVICE_UNAVAILABLE"
    );
    drop(held);
    let response = app.gql("{ tasks { totalCount } }", json!({})).await;
    let code = response["errors"][0]["extensions"]["code"].as_str();
    // The pooled connection was dead: the client is told to retry, not given a 500…
    assert!(
        code.is_none() || code == Some("SERVICE_UNAVAILABLE"),
        "{response:#}"
    );
    // …and the pool heals itself: the next request gets a fresh connection.
    let data = app.data("{ tasks { totalCount } }", json!({})).await;
    assert_eq!(data["tasks"]["totalCount"], 1);
}

#[tokio::test]
async fn an_internal_error_is_masked_and_carries_the_request_id() {
    let app = TestApp::new().await;
    let created = app.create(json!({ "prompt": "p", "model": "m" })).await;
    // Take a column from under the server: every statement that reads a task
    // now fails with a database error that is neither a lost connection nor
    // a broken rule.
    app.db
        .client()
        .await
        .batch_execute("ALTER TABLE tasks DROP COLUMN worker_id")
        .await
        .expect("drop a column");

    let request = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "broken-table-7")
        .body(Body::from(
            json!({
                "query": "query($id: ID!) { task(id: $id) { id prompt } tasks { nodes { id } } }",
                "variables": { "id": created["id"] },
            })
            .to_string(),
        ))
        .unwrap();
    let (status, _, body) = send(app.router(), request).await;
    assert_eq!(status, StatusCode::OK);
    let response = json_of(&body);
    let errors = response["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{response:#}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], "INTERNAL_SERVER_ERROR");
        assert_eq!(
            error["message"],
            "internal error; the server log has the details"
        );
        assert_eq!(error["extensions"]["requestId"], "broken-table-7");
    }
    let text = String::from_utf8_lossy(&body);
    assert_no_internals(&text);
    for detail in ["worker_id", "does not exist", "column \"", "42703"] {
        assert!(!text.contains(detail), "leaks {detail:?}: {text}");
    }
}
