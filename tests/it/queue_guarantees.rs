//! The queue's guarantees under hostile rows and lost leases: no row in the
//! table can stop the queue; a worker's lease, not luck, decides who runs a
//! task; poison tasks end. Real PostgreSQL, the fake provider over real HTTP.

use std::time::{Duration, Instant};

use diesel_async::AsyncConnection;
use serde_json::json;
use taskrunner::queue::{Backoff, WorkerConfig, store};

use crate::fake_provider::FakeProvider;
use crate::harness::{TestApp, error_code, error_field};
use crate::queue::{app_with, create, start_worker, task, test_config, wait_for};

/// Waits until `sql` (one boolean) is true in the test's database.
async fn wait_until(app: &TestApp, sql: &str, within: Duration) {
    let client = app.db.client().await;
    let deadline = Instant::now() + within;
    loop {
        let done: bool = client.query_one(sql, &[]).await.unwrap().get(0);
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {sql}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Inserts tasks straight into the table, as another program would.
async fn insert_tasks(app: &TestApp, prompts: &[&str]) {
    let client = app.db.client().await;
    for prompt in prompts {
        client
            .execute(
                "INSERT INTO tasks (prompt, model) VALUES ($1, 'fake-model')",
                &[prompt],
            )
            .await
            .unwrap();
    }
}

/// The id of the task with this prompt.
async fn id_of(app: &TestApp, prompt: &str) -> String {
    let id: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT id FROM tasks WHERE prompt = $1", &[&prompt])
        .await
        .unwrap()
        .get(0);
    id.to_string()
}

/// Installs, in the test's database, a trigger standing for an operator's
/// rule: any UPDATE of a row for which `condition` holds fails with `message`.
async fn refuse_updates_when(app: &TestApp, condition: &str, message: &str) {
    app.db
        .client()
        .await
        .batch_execute(&format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF {condition} THEN
                     RAISE EXCEPTION '{message}';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse BEFORE UPDATE ON tasks
                 FOR EACH ROW EXECUTE FUNCTION refuse();"
        ))
        .await
        .unwrap();
}

fn normal_prompts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("normal-{i}")).collect()
}

#[tokio::test]
async fn a_pending_row_with_no_attempts_left_is_ended_and_the_rest_run() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.db
        .client()
        .await
        .batch_execute(
            "INSERT INTO tasks (prompt, model, attempts, max_attempts, priority)
             VALUES ('spent', 'fake-model', 3, 3, 10)",
        )
        .await
        .unwrap();
    let normal = normal_prompts(5);
    insert_tasks(&app, &normal.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    wait_until(
        &app,
        "SELECT count(*) = 5 FROM tasks WHERE status = 'succeeded'",
        Duration::from_secs(20),
    )
    .await;
    let spent = wait_for(
        &app,
        &id_of(&app, "spent").await,
        "FAILED",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        spent["error"]
            .as_str()
            .unwrap()
            .contains("no attempts left"),
        "{spent}"
    );
    assert_eq!(fake.calls_for("spent"), 0, "never run");
    worker.shutdown().await;
}

#[tokio::test]
async fn lowering_max_attempts_to_the_attempts_made_is_refused() {
    let app = TestApp::new().await;
    let id = app
        .create(json!({ "prompt": "p", "model": "m", "maxAttempts": 3 }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // As after one retryable failure: PENDING, one attempt made.
    app.db
        .client()
        .await
        .execute(
            "UPDATE tasks SET attempts = 1 WHERE id = $1",
            &[&id.parse::<i64>().unwrap()],
        )
        .await
        .unwrap();
    let update = "mutation($id: ID!, $max: Int!) { updateTask(id: $id, input: { maxAttempts: $max }) { maxAttempts attempts } }";
    let refused = app.gql(update, json!({ "id": id, "max": 1 })).await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
    assert_eq!(error_field(&refused), "maxAttempts");
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("1 attempts"), "{message}");
    let allowed = app.data(update, json!({ "id": id, "max": 2 })).await;
    assert_eq!(
        allowed["updateTask"],
        json!({ "maxAttempts": 2, "attempts": 1 })
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_to_start_is_ended_and_the_rest_run() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    // An operator's trigger that refuses to let one row run.
    refuse_updates_when(
        &app,
        "NEW.status = 'running' AND NEW.prompt = 'poison'",
        "poison may not run",
    )
    .await;
    let normal = normal_prompts(20);
    let mut prompts: Vec<&str> = normal.iter().map(String::as_str).collect();
    prompts.insert(7, "poison");
    insert_tasks(&app, &prompts).await;
    let worker = start_worker(&app, &fake, test_config(8)).await;
    wait_until(
        &app,
        "SELECT count(*) = 20 FROM tasks WHERE status = 'succeeded'",
        Duration::from_secs(20),
    )
    .await;
    let poison = wait_for(
        &app,
        &id_of(&app, "poison").await,
        "FAILED",
        Duration::from_secs(10),
    )
    .await;
    let error = poison["error"].as_str().unwrap();
    assert!(
        error.contains("refused to start it") && error.contains("poison may not run"),
        "{error}"
    );
    assert_eq!(fake.calls_for("poison"), 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_row_that_can_be_neither_started_nor_ended_does_not_stop_the_queue() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    insert_tasks(&app, &["poison"]).await;
    // A constraint added without checking the rows already there: the poison
    // row now fails every UPDATE, whatever it sets.
    app.db
        .client()
        .await
        .batch_execute(
            "ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (prompt <> 'poison') NOT VALID",
        )
        .await
        .unwrap();
    let normal = normal_prompts(10);
    insert_tasks(&app, &normal.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    wait_until(
        &app,
        "SELECT count(*) = 10 FROM tasks WHERE status = 'succeeded'",
        Duration::from_secs(20),
    )
    .await;
    // And the queue keeps going for tasks that come later.
    let later = create(&app, json!({ "prompt": "later" })).await;
    wait_for(&app, &later, "SUCCEEDED", Duration::from_secs(10)).await;
    let poison = task(&app, &id_of(&app, "poison").await).await;
    assert_eq!(poison["status"], "PENDING", "left alone: {poison}");
    assert_eq!(fake.calls_for("poison"), 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn an_outcome_the_database_refuses_fails_only_its_own_task() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    refuse_updates_when(
        &app,
        "NEW.status = 'succeeded' AND NEW.result = 'POISON'",
        "this answer may not be stored",
    )
    .await;
    // Answers that arrive together, so they are written in one batch.
    let normal: Vec<String> = (0..12).map(|i| format!("slow:300:n{i}")).collect();
    let mut prompts: Vec<&str> = normal.iter().map(String::as_str).collect();
    prompts.push("slow:300:POISON");
    insert_tasks(&app, &prompts).await;
    let worker = start_worker(&app, &fake, test_config(16)).await;
    wait_until(
        &app,
        "SELECT count(*) = 12 FROM tasks WHERE status = 'succeeded'",
        Duration::from_secs(20),
    )
    .await;
    let poison = wait_for(
        &app,
        &id_of(&app, "slow:300:POISON").await,
        "FAILED",
        Duration::from_secs(10),
    )
    .await;
    let error = poison["error"].as_str().unwrap();
    assert!(
        error.contains("outcome could not be stored")
            && error.contains("this answer may not be stored"),
        "{error}"
    );
    assert_eq!(poison["workerId"], json!(null));
    worker.shutdown().await;
}

/// Registers a worker that will never run anything: its tasks are the test's to move.
async fn ghost(conn: &mut diesel_async::AsyncPgConnection, id: &str) {
    store::heartbeat(conn, id, Duration::from_secs(60))
        .await
        .unwrap();
}

/// Lets the ghost's lease lapse and runs one rescue, atomically (so that no
/// heartbeat of a live worker can come in between).
async fn lapse_and_rescue(
    conn: &mut diesel_async::AsyncPgConnection,
    worker: &str,
    backoff: Backoff,
) -> Vec<store::RescuedTask> {
    use diesel_async::RunQueryDsl;
    let worker = worker.to_owned();
    conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
        diesel::sql_query(
            "UPDATE workers SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        )
        .bind::<diesel::sql_types::Text, _>(&worker)
        .execute(conn)
        .await?;
        store::rescue_lost(conn, 100, &[], &backoff).await
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rescue_the_database_refuses_spares_the_other_tasks() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    insert_tasks(&app, &["a", "poison", "b"]).await;
    let mut conn = app.state.db().await.unwrap();
    ghost(&mut conn, "ghost").await;
    let claimed = store::claim_batch(&mut conn, "ghost", 10, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    refuse_updates_when(
        &app,
        "OLD.status = 'running' AND NEW.status <> 'running' AND NEW.prompt = 'poison'",
        "poison may not leave",
    )
    .await;
    app.db
        .client()
        .await
        .batch_execute(
            "UPDATE workers SET lease_expires_at = now() - interval '1 second' WHERE id = 'ghost'",
        )
        .await
        .unwrap();
    // A live worker's upkeep rescues what it can, and runs it.
    let worker = start_worker(&app, &fake, test_config(4)).await;
    wait_until(
        &app,
        "SELECT count(*) = 2 FROM tasks WHERE status = 'succeeded' AND prompt IN ('a', 'b')",
        Duration::from_secs(30),
    )
    .await;
    let poison = task(&app, &id_of(&app, "poison").await).await;
    assert_eq!(
        poison["status"], "RUNNING",
        "left for an operator: {poison}"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn rescued_tasks_back_off_then_end_failed_when_their_worker_keeps_dying() {
    let app = TestApp::new().await;
    insert_tasks(&app, &["crashes-its-worker"]).await;
    let id: i64 = id_of(&app, "crashes-its-worker").await.parse().unwrap();
    let mut conn = app.state.db().await.unwrap();
    let client = app.db.client().await;
    let backoff = Backoff {
        base: Duration::from_secs(60),
        max: Duration::from_secs(600),
    };
    for round in 1..=3 {
        let worker = format!("doomed-{round}");
        ghost(&mut conn, &worker).await;
        let claimed = store::claim_batch(&mut conn, &worker, 10, &[])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "round {round}");
        let rescued = lapse_and_rescue(&mut conn, &worker, backoff).await;
        assert_eq!(rescued.len(), 1);
        let row = client
            .query_one(
                "SELECT status::text, lost_attempts, error,
                        extract(epoch FROM run_at - now())::float8
                 FROM tasks WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let (status, lost, error, wait): (String, i32, String, f64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(lost, round);
        assert!(error.contains(&format!("lost {round} time")), "{error}");
        if round < 3 {
            assert_eq!(status, "pending");
            // Backed off like any retry: base · 2^(attempt-1), half to all of it.
            let ceiling = 60.0 * f64::from(1 << (round - 1));
            assert!(
                (ceiling / 2.0 - 1.0..=ceiling).contains(&wait),
                "round {round}: due in {wait} s, not at once"
            );
            client
                .execute("UPDATE tasks SET run_at = now() WHERE id = $1", &[&id])
                .await
                .unwrap();
        } else {
            assert_eq!(status, "failed");
            assert!(error.contains("all 3 attempts used"), "{error}");
        }
    }
}

#[tokio::test]
async fn a_rescued_task_whose_cancel_was_asked_for_ends_cancelled() {
    let app = TestApp::new().await;
    insert_tasks(&app, &["cancel-me"]).await;
    let mut conn = app.state.db().await.unwrap();
    ghost(&mut conn, "ghost").await;
    store::claim_batch(&mut conn, "ghost", 10, &[])
        .await
        .unwrap();
    let id = id_of(&app, "cancel-me").await;
    let asked = app
        .data(
            "mutation($id: ID!) { cancelTask(id: $id) { status cancelRequested } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        asked["cancelTask"],
        json!({ "status": "RUNNING", "cancelRequested": true })
    );
    let rescued = lapse_and_rescue(&mut conn, "ghost", Backoff::default()).await;
    assert_eq!(rescued.len(), 1);
    let cancelled = task(&app, &id).await;
    assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
    assert!(cancelled["finishedAt"].is_string());
}

#[tokio::test]
async fn a_heartbeat_keeps_a_task_past_its_lease() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    // The lease is 2 s; the answer takes 5.
    let worker = start_worker(&app, &fake, test_config(2)).await;
    let id = create(&app, json!({ "prompt": "slow:5000:long" })).await;
    let done = wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(30)).await;
    assert_eq!(done["attempts"], 1, "never rescued: {done}");
    assert_eq!(fake.calls_for("slow:5000:long"), 1);
    let lost: i32 = app
        .db
        .client()
        .await
        .query_one("SELECT lost_attempts FROM tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lost, 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_whose_lease_lapsed_abandons_its_attempt_and_a_newer_one_completes() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(2)).await;
    let id = create(&app, json!({ "prompt": "hang-once:second-time" })).await;
    fake.wait_for_calls("hang-once:second-time", 1, Duration::from_secs(10))
        .await;
    // The worker is cut off long enough for its lease to lapse: the rescuer
    // hands the task on (here, right away: no backoff).
    let mut conn = app.state.db().await.unwrap();
    let no_wait = Backoff {
        base: Duration::ZERO,
        max: Duration::ZERO,
    };
    let rescued = lapse_and_rescue(&mut conn, worker.id(), no_wait).await;
    assert_eq!(rescued.len(), 1);
    // Its next heartbeat learns the attempt is not its own any more: the
    // first call is abandoned (the fake sees the client go away), and the
    // task runs again as attempt 2 (here on the same worker).
    let done = wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(20)).await;
    assert_eq!(done["result"], "second-time");
    assert_eq!(done["attempts"], 2);
    assert_eq!(fake.calls_for("hang-once:second-time"), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.aborted().contains(&"hang-once:second-time".to_owned()) {
        assert!(Instant::now() < deadline, "the first call was abandoned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_cancel_reaches_the_worker_through_the_heartbeat_when_the_notification_is_lost() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let client = app.db.client().await;
    client
        .batch_execute("ALTER TABLE tasks DISABLE TRIGGER tasks_notify_cancel")
        .await
        .unwrap();
    let worker = start_worker(&app, &fake, test_config(2)).await;
    let id = create(&app, json!({ "prompt": "hang" })).await;
    fake.wait_for_calls("hang", 1, Duration::from_secs(10))
        .await;
    client
        .execute(
            "UPDATE tasks SET cancel_requested = true WHERE id = $1",
            &[&id.parse::<i64>().unwrap()],
        )
        .await
        .unwrap();
    let cancelled = wait_for(&app, &id, "CANCELLED", Duration::from_secs(10)).await;
    assert_eq!(cancelled["error"], "cancelled while running");
    assert!(fake.aborted().contains(&"hang".to_owned()));
    worker.shutdown().await;
}

#[tokio::test]
async fn the_listener_comes_back_after_its_connection_is_killed() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    // A poll a minute apart: only a notification can start a task quickly.
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(60),
        ..test_config(2)
    };
    let worker = start_worker(&app, &fake, config).await;
    let listening = "SELECT count(*) = 1 FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    wait_until(&app, listening, Duration::from_secs(10)).await;
    let client = app.db.client().await;
    let listener: i32 = client
        .query_one(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT pg_terminate_backend($1)", &[&listener])
        .await
        .unwrap();
    // It reconnects by itself...
    wait_until(
        &app,
        &format!(
            "SELECT count(*) = 1 FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> {listener}"
        ),
        Duration::from_secs(10),
    )
    .await;
    // ...and a new task is picked up at once, not a minute later.
    let id = create(&app, json!({ "prompt": "after-reconnect" })).await;
    wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(10)).await;
    worker.shutdown().await;
}

#[tokio::test]
async fn cancel_never_conflicts_while_a_task_moves_between_pending_and_running() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    // Tasks that fail twice with a retryable error before answering: they
    // bounce between RUNNING and PENDING while the cancels arrive.
    let prompts: Vec<String> = (0..60).map(|i| format!("flaky:2:bounce-{i}")).collect();
    insert_tasks(
        &app,
        &prompts.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let client = app.db.client().await;
    client
        .batch_execute("UPDATE tasks SET max_attempts = 5")
        .await
        .unwrap();
    let ids: Vec<i64> = client
        .query("SELECT id FROM tasks ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let worker = start_worker(&app, &fake, test_config(16)).await;
    fake.wait_for_calls("flaky:2:bounce-0", 1, Duration::from_secs(10))
        .await;
    let cancels = ids.iter().map(|id| {
        let app = &app;
        async move {
            app.gql(
                "mutation($id: ID!) { cancelTask(id: $id) { status cancelRequested } }",
                json!({ "id": id.to_string() }),
            )
            .await
        }
    });
    for response in futures_util::future::join_all(cancels).await {
        if response.get("errors").is_some() {
            // Only a task that already finished may refuse.
            assert_eq!(error_code(&response), "CONFLICT", "{response}");
            let message = response["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains("SUCCEEDED"), "{message}");
        } else {
            let status = &response["data"]["cancelTask"]["status"];
            assert!(
                *status == "CANCELLED"
                    || (*status == "RUNNING"
                        && response["data"]["cancelTask"]["cancelRequested"] == true),
                "{response}"
            );
        }
    }
    wait_until(
        &app,
        "SELECT count(*) = 0 FROM tasks WHERE status IN ('pending', 'running')",
        Duration::from_secs(20),
    )
    .await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_tasks_own_timeout_governs_its_model_call() {
    let fake = FakeProvider::start().await;
    // The provider's default is one second; a task may ask for more.
    let mut settings = fake.settings();
    settings.timeout_seconds = Some(1);
    let router = std::sync::Arc::new(
        taskrunner::providers::config::router_from(vec![settings]).expect("router"),
    );
    let app = app_with(&fake).await;
    let worker = taskrunner::queue::Worker::start(&app.db.args(), router, test_config(4))
        .await
        .expect("worker starts");
    let patient = create(
        &app,
        json!({ "prompt": "slow:2500:patient", "timeoutSeconds": 10 }),
    )
    .await;
    let hurried = create(
        &app,
        json!({ "prompt": "slow:2500:hurried", "maxAttempts": 1 }),
    )
    .await;
    let done = wait_for(&app, &patient, "SUCCEEDED", Duration::from_secs(20)).await;
    assert_eq!(done["result"], "patient");
    let failed = wait_for(&app, &hurried, "FAILED", Duration::from_secs(20)).await;
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("timed out after 1 s"), "{error}");
    worker.shutdown().await;
}

#[tokio::test]
async fn heartbeats_need_no_api_connection_and_leave_updated_at_alone() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(2)).await;
    let client = app.db.client().await;
    let id: i64 = create(&app, json!({ "prompt": "slow:5000:busy-api" }))
        .await
        .parse()
        .unwrap();
    // Every connection of the API's pool is taken, for the whole run.
    let mut held = Vec::new();
    for _ in 0..app.db.args().db_pool_size {
        held.push(app.state.db().await.expect("an API connection"));
    }
    let row =
        "SELECT status::text, updated_at::text, attempts, lost_attempts FROM tasks WHERE id = $1";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut updated_while_running: Option<String> = None;
    let (attempts, lost) = loop {
        let row = client.query_one(row, &[&id]).await.unwrap();
        let (status, updated_at): (String, String) = (row.get(0), row.get(1));
        match status.as_str() {
            "running" => match &updated_while_running {
                None => updated_while_running = Some(updated_at),
                Some(first) => {
                    assert_eq!(*first, updated_at, "lease renewals do not move updatedAt")
                }
            },
            "succeeded" => break (row.get::<_, i32>(2), row.get::<_, i32>(3)),
            "pending" => {}
            other => panic!("unexpected status {other}"),
        }
        assert!(Instant::now() < deadline, "finished in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(updated_while_running.is_some(), "seen RUNNING");
    assert_eq!((attempts, lost), (1, 0), "its lease never lapsed");
    assert_eq!(fake.calls_for("slow:5000:busy-api"), 1);
    drop(held);
    worker.shutdown().await;
}
