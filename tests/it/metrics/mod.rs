//! Prometheus metrics and readiness: `/metrics` tells what happened (tasks
//! created, attempts by outcome, tokens, provider calls, histograms, the
//! queue's gauges, GraphQL requests, pools and slots), its labels stay
//! bounded, its gauges cost one query a second however often it is scraped,
//! and `/readyz` says when the database is not ready.

mod scrape;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use taskrunner::queue::Worker;
use tower::ServiceExt;

use crate::fake_provider::FakeProvider;
use crate::harness::TestApp;
use crate::queue::{app_with, create, test_config, wait_for};
pub use scrape::Scrape;

/// `GET path` on the application in-process: status, content type, body.
async fn get(app: &TestApp, path: &str) -> (StatusCode, String, String) {
    let response = app
        .router()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

/// Scrapes `/metrics` in-process.
async fn scrape(app: &TestApp) -> Scrape {
    let (status, content_type, body) = get(app, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    Scrape::parse(&body)
}

/// Scrapes until `done` holds for the scrape, within `within`.
async fn scrape_until(
    app: &TestApp,
    what: &str,
    within: Duration,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + within;
    loop {
        let scraped = scrape(app).await;
        if done(&scraped) {
            return scraped;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {within:?}: {:#?}",
            scraped.samples
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Task counts by status, straight from the table.
async fn counts_in_database(app: &TestApp) -> Vec<(String, i64)> {
    let client = app.db.client().await;
    client
        .query(
            "SELECT status::text, count(*) FROM tasks GROUP BY status ORDER BY 1",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

fn created(app_scrape: &Scrape, model: &str) -> f64 {
    app_scrape.value("taskrunner_tasks_created_total", &[("model", model)])
}

fn attempts(scrape: &Scrape, model: &str, outcome: &str) -> f64 {
    scrape.value(
        "taskrunner_task_attempts_total",
        &[("model", model), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn metrics_tell_what_happened() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let input = |prompt: &str, model: &str, max: i32| json!({ "prompt": prompt, "model": model, "maxAttempts": max });

    // Before any worker: one due task, waiting for an hour by the database's
    // clock, shows in the gauges.
    let waiting = create(&app, input("hello", "fake-a", 3)).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE tasks SET run_at = now() - interval '1 hour' WHERE id = $1",
            &[&waiting.parse::<i64>().expect("id")],
        )
        .await
        .expect("backdated");
    let before = scrape_until(&app, "the backdated task", Duration::from_secs(10), |s| {
        s.get("taskrunner_oldest_pending_age_seconds", &[])
            .is_some_and(|age| age >= 3600.0)
    })
    .await;
    assert_eq!(
        before.get("taskrunner_tasks", &[("status", "pending")]),
        Some(1.0)
    );
    assert_eq!(
        before.get("taskrunner_tasks", &[("status", "succeeded")]),
        Some(0.0)
    );

    let worker = Worker::start_measured(
        &app.db.args(),
        fake.router(),
        test_config(4),
        Arc::clone(app.state.metrics()),
    )
    .await
    .expect("worker starts");
    let client_error = create(&app, input("status:400", "fake-a", 3)).await;
    let flaky = create(&app, input("flaky:1:fine", "fake-a", 3)).await;
    let spent = create(&app, input("status:500", "fake-a", 1)).await;
    let hanging = create(&app, input("hang", "fake-b", 3)).await;
    for (id, status) in [
        (&waiting, "SUCCEEDED"),
        (&client_error, "FAILED"),
        (&flaky, "SUCCEEDED"),
        (&spent, "FAILED"),
    ] {
        wait_for(&app, id, status, Duration::from_secs(20)).await;
    }
    fake.wait_for_calls("hang", 1, Duration::from_secs(10))
        .await;
    app.data(
        "mutation($id: ID!) { cancelTask(id: $id) { status } }",
        json!({ "id": hanging }),
    )
    .await;
    wait_for(&app, &hanging, "CANCELLED", Duration::from_secs(10)).await;
    // A query the schema refuses, and a document that does not parse.
    let refused = app.gql("{ noSuchField }", json!({})).await;
    assert!(refused["errors"].is_array());
    let unparsed = app.gql("{", json!({})).await;
    assert!(unparsed["errors"].is_array());

    let database = counts_in_database(&app).await;
    let scraped = scrape_until(
        &app,
        "every outcome, and gauges matching the table",
        Duration::from_secs(20),
        |s| {
            attempts(s, "fake-b", "cancelled") == 1.0
                && database.iter().all(|(status, n)| {
                    s.get("taskrunner_tasks", &[("status", status)]) == Some(*n as f64)
                })
                && s.value("taskrunner_worker_slots", &[("state", "busy")]) == 0.0
        },
    )
    .await;

    assert_eq!(created(&scraped, "fake-a"), 4.0);
    assert_eq!(created(&scraped, "fake-b"), 1.0);
    // hello and flaky's second attempt answered; flaky's first is a retry;
    // the 400 fails at once, and the 500 on its last attempt fails too.
    assert_eq!(attempts(&scraped, "fake-a", "succeeded"), 2.0);
    assert_eq!(attempts(&scraped, "fake-a", "retry"), 1.0);
    assert_eq!(attempts(&scraped, "fake-a", "failed"), 2.0);
    assert_eq!(attempts(&scraped, "fake-a", "cancelled"), 0.0);
    assert_eq!(attempts(&scraped, "fake-b", "cancelled"), 1.0);
    // Every answer of the fake reports 11 prompt and 7 completion tokens.
    let tokens = |kind| {
        scraped.value(
            "taskrunner_tokens_total",
            &[("model", "fake-a"), ("kind", kind)],
        )
    };
    assert_eq!((tokens("prompt"), tokens("completion")), (22.0, 14.0));
    let provider = |outcome| {
        scraped.value(
            "taskrunner_provider_requests_total",
            &[("provider", "fake"), ("outcome", outcome)],
        )
    };
    assert_eq!(provider("ok"), 2.0);
    assert_eq!(provider("client_error"), 1.0);
    assert_eq!(provider("server_error"), 2.0);
    assert_eq!(provider("cancelled"), 1.0);
    assert_eq!(
        scraped.value(
            "taskrunner_provider_request_duration_seconds_count",
            &[("provider", "fake")]
        ),
        6.0
    );
    let count = |name: &str, model| scraped.value(name, &[("model", model)]);
    assert_eq!(
        count("taskrunner_task_attempt_duration_seconds_count", "fake-a"),
        5.0
    );
    assert_eq!(
        count("taskrunner_task_attempt_duration_seconds_count", "fake-b"),
        1.0
    );
    assert_eq!(
        count("taskrunner_task_queue_wait_seconds_count", "fake-a"),
        5.0
    );
    // The backdated task waited an hour: past every bucket below it.
    assert_eq!(
        scraped.value(
            "taskrunner_task_queue_wait_seconds_bucket",
            &[("model", "fake-a"), ("le", "1800.0")]
        ),
        4.0
    );
    assert!(count("taskrunner_task_queue_wait_seconds_sum", "fake-a") >= 3600.0);
    // Nothing due waits now.
    assert_eq!(
        scraped.get("taskrunner_oldest_pending_age_seconds", &[]),
        Some(0.0)
    );

    let graphql = |operation_type, outcome| {
        scraped.value(
            "taskrunner_graphql_requests_total",
            &[("operation_type", operation_type), ("outcome", outcome)],
        )
    };
    assert_eq!(graphql("mutation", "ok"), 6.0, "five creates and a cancel");
    assert_eq!(graphql("mutation", "error"), 0.0);
    assert!(graphql("query", "ok") >= 5.0, "the waits read the tasks");
    assert_eq!(graphql("query", "error"), 1.0);
    assert_eq!(graphql("unknown", "error"), 1.0);
    assert_eq!(
        scraped.value(
            "taskrunner_graphql_request_duration_seconds_count",
            &[("operation_type", "mutation")]
        ),
        6.0
    );

    assert_eq!(
        scraped.value("taskrunner_worker_slots", &[("state", "free")]),
        4.0
    );
    for pool in ["api", "queue"] {
        let state = |state| {
            scraped
                .get(
                    "taskrunner_db_connections",
                    &[("pool", pool), ("state", state)],
                )
                .unwrap_or_else(|| panic!("{pool} {state} connections"))
        };
        assert!(
            state("in_use") + state("idle") >= 1.0,
            "{pool} has opened a connection"
        );
        assert_eq!(state("waiting"), 0.0);
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn model_labels_stay_bounded() {
    let app = TestApp::new().await;
    for n in 0..130 {
        app.create(json!({ "prompt": "p", "model": format!("model-{n}") }))
            .await;
    }
    let scraped = scrape(&app).await;
    let series = scraped.all("taskrunner_tasks_created_total");
    assert_eq!(series.len(), 101, "100 names and other: {series:?}");
    assert_eq!(created(&scraped, "other"), 30.0);
    assert_eq!(created(&scraped, "model-0"), 1.0);
    assert_eq!(created(&scraped, "model-129"), 0.0);
    let total: f64 = series.iter().map(|(_, value)| value).sum();
    assert_eq!(total, 130.0);
}

#[tokio::test]
async fn concurrent_scrapes_share_one_stats_query() {
    let app = TestApp::new().await;
    app.create(json!({ "prompt": "p", "model": "echo" })).await;
    let scrapes = (0..20).map(|_| scrape(&app));
    let scraped = futures_util::future::join_all(scrapes).await;
    let queries = |s: &Scrape| s.value("taskrunner_metrics_stats_queries_total", &[]);
    assert!(
        scraped.iter().all(|s| queries(s) == 1.0),
        "twenty scrapes at once read the stats once: {:?}",
        scraped.iter().map(queries).collect::<Vec<_>>()
    );
    for s in &scraped {
        assert_eq!(
            s.get("taskrunner_tasks", &[("status", "pending")]),
            Some(1.0)
        );
    }
    // Once the reading is a second old, the next scrape reads again.
    scrape_until(&app, "a second stats query", Duration::from_secs(10), |s| {
        queries(s) == 2.0
    })
    .await;
}

#[tokio::test]
async fn readyz_is_503_while_migrations_are_pending() {
    let app = TestApp::new().await;
    let (status, _, _) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let client = app.db.client().await;
    let latest: String = client
        .query_one(
            "DELETE FROM __diesel_schema_migrations
             WHERE version = (SELECT max(version) FROM __diesel_schema_migrations)
             RETURNING version",
            &[],
        )
        .await
        .expect("a migration's row removed")
        .get(0);
    let (status, _, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        body,
        json!({ "status": "unavailable", "reason": "migrations pending", "pending": [latest] })
    );
}
