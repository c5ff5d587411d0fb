//! `taskrunner worker` as a real process: its `/healthz`, `/readyz` and
//! `/metrics` on `--metrics-bind`, readiness following the database, and the
//! `lost` attempts of a worker killed mid-attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskrunner::metrics::Metrics;
use taskrunner::queue::Worker;

use super::Scrape;
use crate::fake_provider::FakeProvider;
use crate::harness::TestDb;
use crate::process::{Launch, ProviderConfig};
use crate::proxy::{Proxy, database_address, via};
use crate::queue::test_config;

/// Waits until `GET url` answers `status`.
async fn wait_for_status(
    client: &reqwest::Client,
    url: &str,
    status: u16,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let answer = match client.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(response) => Some((
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )),
            Err(_) => None,
        };
        if let Some((got, body)) = &answer
            && *got == status
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {status} within {within:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_health_readiness_and_metrics() {
    let fake = FakeProvider::start().await;
    let providers = ProviderConfig::for_fake(&fake);
    let db = TestDb::migrated().await;
    let url = db.args().database_url;
    let proxy = Proxy::start(&database_address(&url)).await;
    let worker = Launch::worker()
        .database(&via(&url, &proxy.address().to_string()))
        .providers(&providers)
        .args(["--workers", "3"])
        .spawn();
    let address = worker.address().await;
    let client = reqwest::Client::new();
    let base = format!("http://{address}");

    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    wait_for_status(
        &client,
        &format!("{base}/readyz"),
        200,
        Duration::from_secs(10),
    )
    .await;

    // A task it runs shows in its metrics.
    db.client()
        .await
        .execute(
            "INSERT INTO tasks (prompt, model) VALUES ('from the worker', 'fake-w')",
            &[],
        )
        .await
        .expect("a task");
    let deadline = Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let response = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(
            response.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let scraped = Scrape::parse(&response.text().await.expect("text"));
        if scraped.value(
            "taskrunner_task_attempts_total",
            &[("model", "fake-w"), ("outcome", "succeeded")],
        ) == 1.0
        {
            break scraped;
        }
        assert!(
            Instant::now() < deadline,
            "the worker's attempt was not counted: {:#?}",
            scraped.samples
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        scraped.get("taskrunner_worker_slots", &[("state", "free")]),
        Some(3.0)
    );
    assert_eq!(
        scraped.get("taskrunner_worker_slots", &[("state", "busy")]),
        Some(0.0)
    );
    assert!(
        scraped
            .get(
                "taskrunner_db_connections",
                &[("pool", "queue"), ("state", "idle")]
            )
            .is_some()
    );
    assert_eq!(
        scraped.value(
            "taskrunner_provider_requests_total",
            &[("provider", "fake"), ("outcome", "ok")]
        ),
        1.0
    );
    // A worker-only process has no API: it neither serves nor counts the
    // queue's gauges (serve does).
    assert!(scraped.all("taskrunner_tasks").is_empty());

    proxy.cut();
    let body = wait_for_status(
        &client,
        &format!("{base}/readyz"),
        503,
        Duration::from_secs(15),
    )
    .await;
    assert!(body.contains("unavailable"), "{body}");
    proxy.restore();
    wait_for_status(
        &client,
        &format!("{base}/readyz"),
        200,
        Duration::from_secs(20),
    )
    .await;
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rescuer_counts_the_attempt_of_a_killed_worker_as_lost() {
    let fake = FakeProvider::start().await;
    let providers = ProviderConfig::for_fake(&fake);
    let db = TestDb::migrated().await;
    let mut doomed = Launch::worker()
        .database(&db.args().database_url)
        .providers(&providers)
        .args(["--lease-seconds", "2"])
        .spawn();
    doomed.address().await;
    db.client()
        .await
        .execute(
            "INSERT INTO tasks (prompt, model) VALUES ('hang-once:then fine', 'fake-lost')",
            &[],
        )
        .await
        .expect("a task");
    fake.wait_for_calls("hang-once:then fine", 1, Duration::from_secs(20))
        .await;
    doomed.kill().await;

    let metrics = Arc::new(Metrics::new());
    let rescuer = Worker::start_measured(
        &db.args(),
        fake.router(),
        test_config(2),
        Arc::clone(&metrics),
    )
    .await
    .expect("rescuer starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let scraped = loop {
        let scraped = Scrape::parse(&metrics.render().await);
        let counted = |outcome| {
            scraped.value(
                "taskrunner_task_attempts_total",
                &[("model", "fake-lost"), ("outcome", outcome)],
            )
        };
        if counted("lost") == 1.0 && counted("succeeded") == 1.0 {
            break scraped;
        }
        assert!(
            Instant::now() < deadline,
            "no lost attempt counted: {:#?}",
            scraped.samples
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        scraped.value(
            "taskrunner_task_attempts_total",
            &[("model", "fake-lost"), ("outcome", "retry")]
        ),
        0.0
    );
    let lost_attempts: i32 = db
        .client()
        .await
        .query_one("SELECT lost_attempts FROM tasks", &[])
        .await
        .expect("the task")
        .get(0);
    assert_eq!(lost_attempts, 1);
    rescuer.shutdown().await;
}
