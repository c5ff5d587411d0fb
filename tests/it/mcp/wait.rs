//! `wait_for_task`: answered when a worker finishes the task, or with the
//! unfinished task when its time is up, with progress notifications meanwhile.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Client, WITHIN, connect};
use crate::fake_provider::FakeProvider;
use crate::harness::TestApp;
use crate::queue::{app_with, start_worker, test_config};

/// Waits until the client has received at least `n` progress notifications.
async fn progress_count_reaches(client: &Client, n: usize) {
    let deadline = Instant::now() + WITHIN;
    while client.recorder.progress().len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} progress notifications within {WITHIN:?}; got {:?}",
            client.recorder.progress()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The messages of the progress notifications received, in order, after
/// checking their progress only grows and stays within their total.
fn progress_messages(client: &Client) -> Vec<String> {
    let progress = client.recorder.progress();
    for pair in progress.windows(2) {
        assert!(pair[1].progress > pair[0].progress, "{progress:?}");
    }
    for notification in &progress {
        let total = notification.total.expect("a total");
        assert!(notification.progress <= total + 1.0, "{notification:?}");
    }
    progress
        .iter()
        .map(|notification| notification.message.clone().expect("a message"))
        .collect()
}

#[tokio::test]
async fn it_answers_as_soon_as_a_worker_finishes_the_task() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let (_served, client) = connect(&app).await;
    let created = client
        .ok(
            "create_task",
            json!({ "prompt": "slow:1500:done", "model": "fake-model" }),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();

    let started = Instant::now();
    let waiting = client.ok("wait_for_task", json!({ "id": id, "timeout_seconds": 120 }));
    let work = async {
        // The wait has begun (its first notification says PENDING) before any
        // worker exists.
        progress_count_reaches(&client, 1).await;
        start_worker(&app, &fake, test_config(2)).await
    };
    let (done, worker) = tokio::join!(waiting, work);
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["result"], "done");
    assert_eq!(done["id"], id.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "answered long before the timeout"
    );

    let messages = progress_messages(&client);
    assert_eq!(
        messages[0],
        format!("task {id} is PENDING (attempt 0 of 3)"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with(&format!("task {id} is RUNNING"))),
        "a notification on the claim: {messages:?}"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn it_answers_with_the_unfinished_task_when_its_time_is_up() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let created = client
        .ok(
            "create_task",
            json!({ "prompt": "nobody runs me", "model": "echo" }),
        )
        .await;
    let started = Instant::now();
    let waited = client
        .ok(
            "wait_for_task",
            json!({ "id": created["id"], "timeout_seconds": 6 }),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(waited, created, "the task as it stands");
    assert!(
        took >= Duration::from_secs(6),
        "waited the whole time: {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "and not much more: {took:?}"
    );
    // One notification at the start, one a few seconds in.
    let messages = progress_messages(&client);
    assert!(messages.len() >= 2, "{messages:?}");
    assert!(
        messages.iter().all(|m| m.contains("is PENDING")),
        "{messages:?}"
    );
    assert!(
        client
            .recorder
            .progress()
            .iter()
            .all(|n| n.total == Some(6.0))
    );
}

#[tokio::test]
async fn a_finished_task_is_answered_at_once() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let created = client
        .ok("create_task", json!({ "prompt": "p", "model": "echo" }))
        .await;
    client
        .ok("cancel_task", json!({ "id": created["id"] }))
        .await;
    let started = Instant::now();
    let waited = client
        .ok(
            "wait_for_task",
            json!({ "id": created["id"], "timeout_seconds": 600 }),
        )
        .await;
    assert_eq!(waited["status"], "CANCELLED");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(client.recorder.progress().is_empty(), "nothing to wait for");
}

#[tokio::test]
async fn a_task_deleted_while_waited_for_is_not_found() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let created = client
        .ok("create_task", json!({ "prompt": "p", "model": "echo" }))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let waiting = client.tool_error("wait_for_task", json!({ "id": id, "timeout_seconds": 120 }));
    let delete = async {
        progress_count_reaches(&client, 1).await;
        app.data(
            "mutation($id: ID!) { deleteTask(id: $id) }",
            json!({ "id": id }),
        )
        .await
    };
    let started = Instant::now();
    let (error, _) = tokio::join!(waiting, delete);
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let missing = client
        .tool_error("wait_for_task", json!({ "id": "999999" }))
        .await;
    assert_eq!(missing["code"], "NOT_FOUND");
}
