//! What one request may cost: depth, complexity (with `totalCount` and
//! `taskStats` priced at what they cost), the size of a query once its
//! fragments are inlined, the statement timeout, and the share of the pool one
//! request may hold, down to the 2,000-count request on 200,000 rows that once
//! starved every other client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use taskrunner::AppState;
use taskrunner::config::DatabaseArgs;

use crate::harness::{TestApp, TestDb, any_model_router, error_code};
use crate::hostile::assert_no_internals;
use crate::http::{json_of, post_json, send};

/// The introspection query GraphiQL sends on load.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

const FULL_PAGE: &str = "{ tasks(first: 100) { totalCount pageInfo { hasPreviousPage hasNextPage startCursor endCursor } edges { cursor node { id prompt model priority status result error attempts maxAttempts createdAt updatedAt startedAt finishedAt } } nodes { id prompt model priority status result error attempts maxAttempts createdAt updatedAt startedAt finishedAt } } }";

#[tokio::test]
async fn graphiql_introspection_and_a_full_page_are_within_limits() {
    let app = TestApp::new().await;
    let schema = app.data(INTROSPECTION, json!({})).await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query");
    let page = app.data(FULL_PAGE, json!({})).await;
    assert_eq!(page["tasks"]["totalCount"], 0);
    // A dashboard's request: the page, its count and the stats, together.
    let with_stats = FULL_PAGE.replacen(
        "{ tasks",
        "{ taskStats { pending running succeeded failed cancelled oldestPendingAgeSeconds } tasks",
        1,
    );
    let both = app.data(&with_stats, json!({})).await;
    assert_eq!(both["taskStats"]["pending"], 0);
}

#[tokio::test]
async fn too_deep_a_query_is_refused() {
    let app = TestApp::new().await;
    let mut selection = String::from("name");
    for _ in 0..16 {
        selection = format!("name ofType {{ {selection} }}");
    }
    let query = format!("{{ __schema {{ types {{ {selection} }} }} }}");
    let response = app.gql(&query, json!({})).await;
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("nested too deep"), "{response:#}");
}

#[tokio::test]
async fn too_many_rows_at_once_is_refused() {
    let app = TestApp::new().await;
    let page = "tasks(first: 100) { nodes { id prompt model priority status result error attempts maxAttempts createdAt updatedAt startedAt finishedAt } }";
    let query = format!("{{ a: {page} b: {page} c: {page} d: {page} }}");
    let response = app.gql(&query, json!({})).await;
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("too complex"), "{response:#}");
}

/// `n` aliased `tasks(first: 1) { totalCount }` fields: `n` list statements and `n` counts.
fn counts(n: usize) -> String {
    let fields: String = (0..n)
        .map(|i| format!("c{i}: tasks(first: 1) {{ totalCount }} "))
        .collect();
    format!("{{ {fields}}}")
}

/// The most counts the complexity limit lets one request ask for.
const MOST_COUNTS_ALLOWED: usize = 9;

/// The first error's message, or "".
fn message(response: &Value) -> &str {
    response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn counts_and_stats_are_priced_once_each_not_per_row() {
    let app = TestApp::new().await;
    app.create(json!({ "prompt": "p", "model": "m" })).await;

    let data = app.data(&counts(MOST_COUNTS_ALLOWED), json!({})).await;
    assert_eq!(data["c8"]["totalCount"], 1);
    let response = app.gql(&counts(MOST_COUNTS_ALLOWED + 1), json!({})).await;
    assert!(message(&response).contains("too complex"), "{response:#}");

    // A count costs the same beside a page of 100 as beside a page of 1.
    let data = app
        .data(
            "{ tasks(first: 100) { totalCount nodes { id prompt status } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["tasks"]["totalCount"], 1);

    let stats = |n: usize| {
        let fields: String = (0..n)
            .map(|i| format!("s{i}: taskStats {{ pending }} "))
            .collect();
        format!("{{ {fields}}}")
    };
    let data = app.data(&stats(9), json!({})).await;
    assert_eq!(data["s8"]["pending"], 1);
    let response = app.gql(&stats(10), json!({})).await;
    assert!(message(&response).contains("too complex"), "{response:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_inlines_to_billions_of_fields_is_refused_before_it_is_walked() {
    let app = TestApp::new().await;
    // 40 fragments, each spreading the next twice: 2^40 fields once inlined,
    // in under 2 KiB. Walked spread by spread, it would take days.
    let mut query = String::from("{ ...F0 }\n");
    for i in 0..40 {
        query.push_str(&format!(
            "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
            n = i + 1
        ));
    }
    query.push_str("fragment F40 on Query { __typename }");
    let router = app.router();
    let body = json!({ "query": query }).to_string();
    let answered = tokio::spawn(async move { send(router, post_json(body)).await });
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(60), answered)
        .await
        .expect("answered within a minute")
        .expect("no panic");
    assert_eq!(status, StatusCode::OK);
    let response = json_of(&body);
    assert_eq!(error_code(&response), "GRAPHQL_VALIDATION_FAILED");
    assert!(message(&response).contains("too large"), "{response:#}");

    // A chain of thousands of fragments is refused too, without overflowing a stack.
    let mut chain = String::from("{ ...F0 }\n");
    for i in 0..5_000 {
        chain.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i + 1));
    }
    chain.push_str("fragment F5000 on Query { __typename }");
    let response = app.gql(&chain, json!({})).await;
    assert!(
        message(&response).contains("nested too deep"),
        "{response:#}"
    );
}

/// The service over `db` with the given settings and per-request connection cap.
fn app_with(db: TestDb, args: &DatabaseArgs, connections_per_request: usize) -> TestApp {
    let pool = taskrunner::db::build_pool(args).expect("pool");
    let state = AppState::new(pool, any_model_router())
        .with_connections_per_request(connections_per_request);
    TestApp {
        schema: taskrunner::graphql::schema(state.clone()),
        state,
        db,
    }
}

/// Adds `rows` finished tasks in one statement.
async fn seed_rows(db: &TestDb, rows: i64) {
    db.client()
        .await
        .execute(
            "INSERT INTO tasks (prompt, model, status, attempts, started_at, finished_at)
             SELECT 'seeded task ' || g, 'echo', 'succeeded', 1, now(), now()
             FROM generate_series(1, $1::bigint) AS g",
            &[&rows],
        )
        .await
        .expect("seed");
}

/// A connection that holds an ACCESS EXCLUSIVE lock on `tasks` until it
/// rolls back: every statement on the table waits meanwhile.
async fn lock_tasks(db: &TestDb) -> tokio_postgres::Client {
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock tasks");
    locker
}

/// How many backends of `db` wait for a lock now.
async fn lock_waiters(observer: &tokio_postgres::Client, db: &TestDb) -> i64 {
    observer
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            &[&db.name],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Waits (up to 20 s) until `n` backends of `db` wait for a lock.
async fn wait_for_lock_waiters(observer: &tokio_postgres::Client, db: &TestDb, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = lock_waiters(observer, db).await;
        if waiting >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} statements wait for the lock, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_holds_at_most_its_share_of_the_pool() {
    let db = TestDb::migrated().await;
    let args = db.args(); // a pool of 5
    let app = app_with(db, &args, 2);
    app.create(json!({ "prompt": "p", "model": "m" })).await;

    let locker = lock_tasks(&app.db).await;
    let schema = app.schema.clone();
    let request = tokio::spawn(async move {
        let request =
            async_graphql::Request::new(counts(5)).data(taskrunner::auth::Principal::operator());
        schema.execute(request).await
    });
    let observer = app.db.client().await;
    wait_for_lock_waiters(&observer, &app.db, 2).await;

    // Five fields want a connection, two hold one (and wait for the lock);
    // the other three wait for their turn, not for the pool, which still has
    // three connections for everyone else.
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(
            tokio::time::timeout(Duration::from_secs(4), app.state.db())
                .await
                .expect("the pool answers")
                .unwrap_or_else(|_| panic!("a connection is left for other clients")),
        );
    }
    assert_eq!(lock_waiters(&observer, &app.db).await, 2);
    drop(others);

    locker.batch_execute("ROLLBACK").await.expect("unlock");
    let response = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the request finishes once the lock is gone")
        .expect("no panic");
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let data = response.data.into_json().expect("JSON");
    for i in 0..5 {
        assert_eq!(data[format!("c{i}")]["totalCount"], 1);
    }
}

#[tokio::test]
async fn a_field_waits_for_its_turn_no_longer_than_the_pool_wait_timeout() {
    let db = TestDb::migrated().await;
    let mut args = db.args();
    args.db_timeout_seconds = 1;
    args.db_statement_timeout_ms = 3_000;
    let app = app_with(db, &args, 1);
    let locker = lock_tasks(&app.db).await;

    // One field takes the request's only connection and waits for the lock
    // until the statement timeout stops it (3 s); the other waits for its
    // turn until the pool's wait timeout (1 s) and is told to retry.
    let (status, _, body) = send(
        app.router(),
        post_json(json!({ "query": counts(2) }).to_string()),
    )
    .await;
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(status, StatusCode::OK);
    let response = json_of(&body);
    let mut codes: Vec<&str> = response["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["extensions"]["code"].as_str().expect("a code"))
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        ["QUERY_TIMEOUT", "SERVICE_UNAVAILABLE"],
        "{response:#}"
    );
    assert_no_internals(&String::from_utf8_lossy(&body));

    // Nothing was lost: the connection that was stopped serves the next request.
    let data = app.data(&counts(2), json!({})).await;
    assert_eq!(data["c1"]["totalCount"], 0);
}

#[tokio::test]
async fn a_statement_over_the_statement_timeout_is_a_query_timeout() {
    let db = TestDb::migrated().await;
    seed_rows(&db, 100_000).await;
    let mut args = db.args();
    args.db_statement_timeout_ms = 1;
    let app = app_with(db, &args, 2);

    let request = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", "slow-count-1")
        .body(Body::from(
            json!({ "query": "{ tasks(first: 1) { totalCount } }" }).to_string(),
        ))
        .expect("request");
    let (status, _, body) = send(app.router(), request).await;
    assert_eq!(status, StatusCode::OK);
    let response = json_of(&body);
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["code"], "QUERY_TIMEOUT", "{response:#}");
    assert_eq!(error["extensions"]["requestId"], "slow-count-1");
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.contains("took too long") && message.contains("totalCount"),
        "{message}"
    );
    let text = String::from_utf8_lossy(&body);
    assert_no_internals(&text);
    assert!(!text.contains("cancel"), "{text}");
}

/// Sends `query` through `router` and returns the JSON response.
async fn post(router: &axum::Router, query: &str, variables: Value) -> Value {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let (status, _, body) = send(router.clone(), post_json(body)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    json_of(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_2000_count_request_is_refused_and_the_heaviest_allowed_starves_no_one() {
    const ROWS: i64 = 200_000;
    let db = TestDb::migrated().await;
    seed_rows(&db, ROWS).await;
    let args = db.args(); // a pool of 5, the default timeouts
    let app = app_with(db, &args, 2);
    let router = app.router();

    // The request that held every connection for seconds is now refused
    // before it runs, with a code.
    let refused = post(&router, &counts(2_000), json!({})).await;
    assert_eq!(error_code(&refused), "GRAPHQL_VALIDATION_FAILED");
    assert!(message(&refused).contains("too complex"), "{refused:#}");

    // The heaviest request the limit allows, sent back to back by two
    // clients, while four others read one task at a time.
    let id: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT min(id) FROM tasks", &[])
        .await
        .expect("an id")
        .get(0);
    let heavy_done = Arc::new(AtomicBool::new(false));
    let heavy: Vec<_> = (0..2)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..3 {
                    answers.push(post(&router, &counts(MOST_COUNTS_ALLOWED), json!({})).await);
                }
                answers
            })
        })
        .collect();
    let plain: Vec<_> = (0..4)
        .map(|_| {
            let router = router.clone();
            let heavy_done = Arc::clone(&heavy_done);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !heavy_done.load(Ordering::Relaxed) || answers.len() < 10 {
                    answers.push(
                        post(
                            &router,
                            "query($id: ID!) { task(id: $id) { id status } }",
                            json!({ "id": id.to_string() }),
                        )
                        .await,
                    );
                }
                answers
            })
        })
        .collect();

    for client in heavy {
        for answer in client.await.expect("no panic") {
            assert!(answer.get("errors").is_none(), "{answer:#}");
            for i in 0..MOST_COUNTS_ALLOWED {
                assert_eq!(answer["data"][format!("c{i}")]["totalCount"], ROWS);
            }
        }
    }
    heavy_done.store(true, Ordering::Relaxed);
    let id_text = id.to_string();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for client in plain {
        for answer in client.await.expect("no panic") {
            let outcome = match answer.get("errors") {
                None if answer["data"]["task"]["id"].as_str() == Some(id_text.as_str()) => {
                    "ok".to_owned()
                }
                None => format!("wrong data: {answer}"),
                Some(_) => error_code(&answer).to_owned(),
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    assert_eq!(outcomes.keys().collect::<Vec<_>>(), ["ok"], "{outcomes:?}");
}
