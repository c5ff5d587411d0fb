//! Shutdown is bounded even when the database cannot be reached: SIGTERM
//! with tasks running and the network to PostgreSQL cut, or silent (a
//! partition: no error ever comes), and the process still exits within its
//! grace period plus a few seconds.

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::json;

use crate::fake_provider::FakeProvider;
use crate::harness::TestDb;
use crate::process::{Launch, ProviderConfig};
use crate::proxy::{Proxy, database_address, via};

/// `--shutdown-grace-seconds`.
const GRACE_SECONDS: u64 = 2;
/// What a process may take beyond its grace period to exit.
const EXIT_MARGIN: Duration = Duration::from_secs(5);
/// Tasks running (each a call that never answers) when the fault comes.
const RUNNING: usize = 4;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Worker,
    Serve,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Connections stay open but nothing crosses.
    Blackhole,
    /// Connections are closed and new ones refused.
    Cut,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_in_time_when_the_database_goes_silent() {
    stops_in_time(Kind::Worker, Fault::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_in_time_when_the_database_connection_is_cut() {
    stops_in_time(Kind::Worker, Fault::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_in_time_when_the_database_goes_silent() {
    stops_in_time(Kind::Serve, Fault::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_in_time_when_the_database_connection_is_cut() {
    stops_in_time(Kind::Serve, Fault::Cut).await;
}

async fn stops_in_time(kind: Kind, fault: Fault) {
    let fake = FakeProvider::start().await;
    let providers = ProviderConfig::for_fake(&fake);
    let db = TestDb::migrated().await;
    let proxy = Proxy::start(&database_address(&db.url)).await;
    let url = via(&db.url, &proxy.address().to_string());
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO tasks (prompt, model) SELECT 'hang', 'fake-small' FROM generate_series(1, {RUNNING})"
        ))
        .await
        .expect("insert tasks");

    let launch = match kind {
        Kind::Worker => Launch::worker(),
        // Debug events from the HTTP layer say when a request has begun.
        Kind::Serve => Launch::serve().env("RUST_LOG", "info,tower_http=debug"),
    };
    let mut process = launch
        .database(&url)
        .providers(&providers)
        .args([
            "--workers".to_owned(),
            RUNNING.to_string(),
            "--shutdown-grace-seconds".to_owned(),
            GRACE_SECONDS.to_string(),
        ])
        .spawn();
    let address = match kind {
        Kind::Serve => Some(process.address().await),
        Kind::Worker => None,
    };
    fake.wait_for_calls("hang", RUNNING, Duration::from_secs(30))
        .await;

    match fault {
        Fault::Blackhole => proxy.blackhole(),
        Fault::Cut => proxy.cut(),
    }
    // An API request that needs the database, in flight when SIGTERM comes.
    let request = address.map(|address| {
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{address}/graphql"))
                .json(&json!({ "query": "{ tasks { totalCount } }" }))
                .send()
                .await
                .map(|response| response.status().as_u16())
        })
    });
    if request.is_some() {
        process
            .wait_for_event(
                "the start of the request",
                |event| event["message"] == "started processing request",
                Duration::from_secs(10),
            )
            .await;
    }

    process.terminate();
    let limit = Duration::from_secs(GRACE_SECONDS) + EXIT_MARGIN;
    let Some(exited) = process.wait_for_exit(limit).await else {
        let log = process.tail(20);
        process.kill().await;
        panic!(
            "{kind:?} did not exit within {limit:?} of SIGTERM ({fault:?}); its last log lines:\n{log}"
        );
    };
    println!(
        "{kind:?} with the database {fault:?}: exited {} {:.2} s after SIGTERM",
        describe(exited.status),
        exited.took.as_secs_f64()
    );
    assert!(
        exited.status.code().is_some(),
        "{kind:?} ended by itself, not by a signal: {}",
        exited.status
    );
    if let Some(request) = request {
        request.abort();
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("with code {code}"),
        None => format!("by {status}"),
    }
}

#[test]
fn urls_are_pointed_through_the_proxy() {
    let url = "postgres://postgres@localhost:5432/db?sslmode=disable";
    assert_eq!(database_address(url), "localhost:5432");
    assert_eq!(
        via(url, "127.0.0.1:9"),
        "postgres://postgres@127.0.0.1:9/db?sslmode=disable"
    );
    let url = "postgresql://u:p@db.example/x";
    assert_eq!(database_address(url), "db.example:5432");
    assert_eq!(via(url, "127.0.0.1:9"), "postgresql://u:p@127.0.0.1:9/x");
}
