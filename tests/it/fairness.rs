//! Fair share: within a priority, workers take tenants' tasks in turn, so a
//! tenant's backlog delays another tenant's task by a claim or two at most.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_provider::FakeProvider;
use crate::harness::TestApp;
use crate::queue::{app_with, start_worker, test_config};
use crate::tenancy::{create_as, member};

/// Inserts `count` PENDING tasks of `tenant` straight into the table.
async fn backlog(app: &TestApp, tenant: &str, count: i64) {
    let client = app.db.client().await;
    client
        .execute(
            "INSERT INTO tasks (prompt, model, tenant)
             SELECT $1 || '-' || g, 'fake-model', $1 FROM generate_series(1, $2::bigint) AS g",
            &[&tenant, &count],
        )
        .await
        .expect("backlog inserted");
    client
        .batch_execute("ANALYZE tasks")
        .await
        .expect("statistics");
}

/// Waits until `condition` (SQL returning one boolean) holds.
async fn wait_until(app: &TestApp, condition: &str, within: Duration) {
    let client = app.db.client().await;
    let deadline = Instant::now() + within;
    loop {
        let row = client.query_one(condition, &[]).await.expect("condition");
        if row.get::<_, bool>(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {condition}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_task_behind_another_tenants_hundred_thousand_starts_within_two_claims() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    backlog(&app, "a", 100_000).await;
    let slots = 8;
    let worker = start_worker(&app, &fake, test_config(slots)).await;
    // The worker is busy with A's backlog when B's task arrives.
    wait_until(
        &app,
        "SELECT count(*) >= 200 FROM tasks WHERE tenant = 'a' AND started_at IS NOT NULL",
        Duration::from_secs(60),
    )
    .await;
    let id: i64 = create_as(&app, &member("b"), "b's one task")
        .await
        .parse()
        .expect("numeric id");
    wait_until(
        &app,
        &format!("SELECT started_at IS NOT NULL FROM tasks WHERE id = {id}"),
        Duration::from_secs(30),
    )
    .await;
    worker.shutdown().await;

    // A's tasks claimed after B's was created and before it started: a claim
    // takes at most `slots` tasks, so two claims' worth at most.
    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT count(*) FROM tasks AS a, tasks AS b
             WHERE b.id = $1 AND a.tenant = 'a'
               AND a.started_at > b.created_at AND a.started_at < b.started_at",
            &[&id],
        )
        .await
        .expect("count");
    let ahead: i64 = row.get(0);
    assert!(
        ahead <= 2 * slots as i64,
        "{ahead} of A's tasks started between B's task's creation and its start"
    );
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM tasks WHERE tenant = 'a' AND status = 'pending'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(
        pending > 90_000,
        "B did not wait for A's backlog: {pending} left"
    );
}

#[tokio::test]
async fn tenants_with_backlogs_share_the_workers_evenly() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    // Uneven backlogs, created one after the other: the oldest would win
    // every claim if the queue only looked at age.
    for (tenant, count) in [("x", 3_000), ("y", 1_000), ("z", 500)] {
        backlog(&app, tenant, count).await;
    }
    let slots = 3;
    let worker = start_worker(&app, &fake, test_config(slots)).await;
    wait_until(
        &app,
        "SELECT count(*) >= 300 FROM tasks WHERE started_at IS NOT NULL",
        Duration::from_secs(60),
    )
    .await;
    worker.shutdown().await;
    let client = app.db.client().await;
    let rows = client
        .query(
            "SELECT tenant, count(*) FROM tasks WHERE started_at IS NOT NULL GROUP BY tenant ORDER BY tenant",
            &[],
        )
        .await
        .expect("counts");
    let started: Vec<(String, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let total: i64 = started.iter().map(|(_, n)| n).sum();
    assert_eq!(started.len(), 3, "every tenant got work: {started:?}");
    for (tenant, n) in &started {
        // A third each, give or take a claim's worth.
        assert!(
            (n - total / 3).abs() <= 2 * slots as i64,
            "{tenant} started {n} of {total}: {started:?}"
        );
    }
}

#[tokio::test]
async fn priority_still_comes_before_turns() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    backlog(&app, "a", 200).await;
    let urgent = app
        .gql_as(
            &member("b"),
            "mutation { createTask(input: { prompt: \"urgent\", model: \"fake-model\", priority: 9 }) { id } }",
            json!({}),
        )
        .await;
    let id = urgent["data"]["createTask"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let worker = start_worker(&app, &fake, test_config(1)).await;
    wait_until(
        &app,
        &format!("SELECT started_at IS NOT NULL FROM tasks WHERE id = {id}"),
        Duration::from_secs(30),
    )
    .await;
    worker.shutdown().await;
    let client = app.db.client().await;
    let first: i64 = client
        .query_one(
            "SELECT id FROM tasks WHERE started_at IS NOT NULL ORDER BY started_at, id LIMIT 1",
            &[],
        )
        .await
        .expect("first")
        .get(0);
    assert_eq!(first.to_string(), id, "the higher priority task ran first");
}
