//! The queue and its workers, against a real PostgreSQL and a fake provider
//! over real HTTP.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskrunner::AppState;
use taskrunner::queue::{Backoff, Worker, WorkerConfig, store};

use crate::fake_provider::FakeProvider;
use crate::harness::{TestApp, TestDb, error_code};

/// Worker settings scaled down for tests: short leases, fast retries.
pub fn test_config(slots: usize) -> WorkerConfig {
    WorkerConfig {
        slots,
        lease: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(5),
        default_timeout: Duration::from_secs(30),
        claim_batch: 64,
        poll_interval: Duration::from_millis(200),
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_secs(5),
        },
    }
}

/// The service with every model routed to `fake`.
pub async fn app_with(fake: &FakeProvider) -> TestApp {
    let db = TestDb::migrated().await;
    let state = AppState::new(db.pool(), fake.router());
    TestApp {
        schema: taskrunner::graphql::schema(state.clone()),
        state,
        db,
    }
}

pub async fn start_worker(app: &TestApp, fake: &FakeProvider, config: WorkerConfig) -> Worker {
    Worker::start(&app.db.args(), fake.router(), config)
        .await
        .expect("worker starts")
}

const TASK: &str = "query($id: ID!) { task(id: $id) { id prompt status result error attempts promptTokens completionTokens workerId startedAt finishedAt runAt cancelRequested } }";

pub async fn create(app: &TestApp, input: Value) -> String {
    let mut input = input;
    if input.get("model").is_none() {
        input["model"] = json!("fake-model");
    }
    app.create(input).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

pub async fn task(app: &TestApp, id: &str) -> Value {
    app.data(TASK, json!({ "id": id })).await["task"].clone()
}

/// Waits until the task reaches `status`.
pub async fn wait_for(app: &TestApp, id: &str, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let task = task(app, id).await;
        if task["status"] == status {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not reach {status} within {within:?}: {task:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_task_runs_and_records_the_answer_and_usage() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    let id = create(
        &app,
        json!({ "prompt": "hello", "system": "be terse", "temperature": 0.2, "maxTokens": 50 }),
    )
    .await;
    let done = wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(10)).await;
    assert_eq!(done["result"], "HELLO");
    assert_eq!(
        (
            done["promptTokens"].clone(),
            done["completionTokens"].clone()
        ),
        (json!(11), json!(7))
    );
    assert_eq!(done["attempts"], 1);
    assert_eq!(
        done["workerId"],
        json!(null),
        "a finished task is no worker's"
    );
    assert!(done["finishedAt"].is_string() && done["startedAt"].is_string());
    worker.shutdown().await;
}

#[tokio::test]
async fn higher_priority_runs_first_then_older() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    for (prompt, priority) in [
        ("p3-a", 3),
        ("p9-a", 9),
        ("p3-b", 3),
        ("p5", 5),
        ("p9-b", 9),
        ("p1", 1),
    ] {
        create(&app, json!({ "prompt": prompt, "priority": priority })).await;
    }
    let worker = start_worker(
        &app,
        &fake,
        WorkerConfig {
            claim_batch: 1,
            ..test_config(1)
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.calls().len() < 6 {
        assert!(Instant::now() < deadline, "all six ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let order: Vec<String> = fake.calls().into_iter().map(|c| c.prompt).collect();
    assert_eq!(order, ["p9-a", "p9-b", "p5", "p3-a", "p3-b", "p1"]);
    worker.shutdown().await;
}

#[tokio::test]
async fn delayed_tasks_wait_for_their_time() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    let run_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let id = create(
        &app,
        json!({ "prompt": "later", "runAt": run_at.to_rfc3339() }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        task(&app, &id).await["status"],
        "PENDING",
        "not before its time"
    );
    assert_eq!(fake.calls_for("later"), 0);
    let done = wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(10)).await;
    let started: chrono::DateTime<chrono::Utc> =
        done["startedAt"].as_str().unwrap().parse().unwrap();
    assert!(started >= run_at, "started {started} before {run_at}");
    worker.shutdown().await;
}

#[tokio::test]
async fn no_task_is_run_twice_by_concurrent_workers() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    const TASKS: usize = 2000;
    app.db
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO tasks (prompt, model, priority) SELECT 'job-' || g, 'fake-model', g % 10 + 1 FROM generate_series(1, {TASKS}) g"
        ))
        .await
        .unwrap();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(
            start_worker(
                &app,
                &fake,
                WorkerConfig {
                    claim_batch: 16,
                    ..test_config(24)
                },
            )
            .await,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = app
            .data("{ taskStats { succeeded pending running } }", json!({}))
            .await;
        if stats["taskStats"]["succeeded"] == TASKS {
            break;
        }
        assert!(Instant::now() < deadline, "all tasks done in time: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for worker in workers {
        worker.shutdown().await;
    }
    let calls = fake.calls();
    assert_eq!(calls.len(), TASKS, "exactly one provider call per task");
    let distinct: HashSet<&str> = calls.iter().map(|c| c.prompt.as_str()).collect();
    assert_eq!(distinct.len(), TASKS);
    let client = app.db.client().await;
    let row = client
        .query_one("SELECT count(*) FILTER (WHERE attempts = 1 AND status = 'succeeded'), count(DISTINCT result) FROM tasks", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), TASKS as i64);
    assert_eq!(row.get::<_, i64>(1), TASKS as i64);
}

#[tokio::test]
async fn retryable_failures_back_off_and_then_succeed() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    let id = create(
        &app,
        json!({ "prompt": "flaky:2:third time lucky", "maxAttempts": 3 }),
    )
    .await;
    let done = wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(10)).await;
    assert_eq!(done["result"], "third time lucky");
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["error"], json!(null));
    let times: Vec<Instant> = fake.calls().iter().map(|c| c.at).collect();
    assert!(
        times[1] - times[0] >= Duration::from_millis(25),
        "backed off: {:?}",
        times[1] - times[0]
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    let prompt = "status:429:retry-after:2";
    let id = create(&app, json!({ "prompt": prompt, "maxAttempts": 2 })).await;
    let failed = wait_for(&app, &id, "FAILED", Duration::from_secs(15)).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "waited {gap:?} for Retry-After: 2"
    );
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("429") && error.contains("fake provider says 429"),
        "{error}"
    );
    assert!(error.contains("all 2 attempts used"), "{error}");
    worker.shutdown().await;
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried_until_attempts_are_spent() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    let five_hundred = create(&app, json!({ "prompt": "status:503", "maxAttempts": 3 })).await;
    let timeout = create(
        &app,
        json!({ "prompt": "hang", "maxAttempts": 2, "timeoutSeconds": 1 }),
    )
    .await;
    let failed = wait_for(&app, &five_hundred, "FAILED", Duration::from_secs(15)).await;
    assert_eq!(failed["attempts"], 3);
    assert_eq!(fake.calls_for("status:503"), 3);
    let timed_out = wait_for(&app, &timeout, "FAILED", Duration::from_secs(15)).await;
    assert_eq!(timed_out["attempts"], 2);
    assert!(
        timed_out["error"].as_str().unwrap().contains("timed out"),
        "{timed_out}"
    );
    assert_eq!(fake.calls_for("hang"), 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn client_errors_fail_at_once() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    for code in ["400", "401"] {
        let prompt = format!("status:{code}");
        let id = create(&app, json!({ "prompt": prompt, "maxAttempts": 5 })).await;
        let failed = wait_for(&app, &id, "FAILED", Duration::from_secs(10)).await;
        assert_eq!(failed["attempts"], 1, "{code} is not retried");
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains(&format!("fake provider says {code}")),
            "{failed}"
        );
        assert_eq!(fake.calls_for(&prompt), 1);
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_pending_task_stops_it_from_running() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let id = create(&app, json!({ "prompt": "never run me" })).await;
    let cancelled = app
        .data(
            "mutation($id: ID!) { cancelTask(id: $id) { status finishedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancelled["cancelTask"]["status"], "CANCELLED");
    let worker = start_worker(&app, &fake, test_config(4)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.calls_for("never run me"), 0);
    let again = app
        .gql(
            "mutation($id: ID!) { cancelTask(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&again), "CONFLICT");
    worker.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_running_task_aborts_the_provider_call() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    let id = create(&app, json!({ "prompt": "hang" })).await;
    fake.wait_for_calls("hang", 1, Duration::from_secs(10))
        .await;
    let requested = app
        .data(
            "mutation($id: ID!) { cancelTask(id: $id) { status cancelRequested } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        requested["cancelTask"],
        json!({ "status": "RUNNING", "cancelRequested": true })
    );
    let cancelled = wait_for(&app, &id, "CANCELLED", Duration::from_secs(5)).await;
    assert_eq!(cancelled["attempts"], 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.aborted().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the provider call was really aborted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.aborted(), ["hang"]);
    worker.shutdown().await;
}

#[tokio::test]
async fn retry_task_requeues_failed_and_cancelled_tasks_only() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let retry = "mutation($id: ID!) { retryTask(id: $id) { status attempts error } }";
    // FAILED after its one attempt, then retried with a fresh budget.
    let id = create(
        &app,
        json!({ "prompt": "flaky:1:second chance", "maxAttempts": 1 }),
    )
    .await;
    let worker = start_worker(&app, &fake, test_config(4)).await;
    wait_for(&app, &id, "FAILED", Duration::from_secs(10)).await;
    let retried = app.data(retry, json!({ "id": id })).await;
    assert_eq!(
        retried["retryTask"],
        json!({ "status": "PENDING", "attempts": 0, "error": null })
    );
    let done = wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(10)).await;
    assert_eq!(done["result"], "second chance");
    // SUCCEEDED cannot be retried; nor can PENDING; unknown ids are NOT_FOUND.
    assert_eq!(
        error_code(&app.gql(retry, json!({ "id": id })).await),
        "CONFLICT"
    );
    worker.shutdown().await;
    let pending = create(&app, json!({ "prompt": "p" })).await;
    assert_eq!(
        error_code(&app.gql(retry, json!({ "id": pending })).await),
        "CONFLICT"
    );
    assert_eq!(
        error_code(&app.gql(retry, json!({ "id": "999999" })).await),
        "NOT_FOUND"
    );
    // CANCELLED can.
    app.data(
        "mutation($id: ID!) { cancelTask(id: $id) { id } }",
        json!({ "id": pending }),
    )
    .await;
    assert_eq!(
        app.data(retry, json!({ "id": pending })).await["retryTask"]["status"],
        "PENDING"
    );
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_record_its_outcome() {
    use taskrunner::queue::{Outcome, Verdict};
    let app = TestApp::new().await;
    let id: i64 = app.create(json!({ "prompt": "p", "model": "m" })).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = app.state.db().await.unwrap();
    let lease = Duration::from_secs(30);
    for worker in ["worker-a", "worker-b"] {
        store::heartbeat(&mut conn, worker, lease).await.unwrap();
    }

    let first = store::claim_batch(&mut conn, "worker-a", 10, &[])
        .await
        .unwrap();
    assert_eq!((first.len(), first[0].attempts), (1, 1));
    assert!(
        store::claim_batch(&mut conn, "worker-b", 10, &[])
            .await
            .unwrap()
            .is_empty(),
        "claimed once"
    );

    // worker-a stalls; its lease runs out and the rescuer hands the task on.
    app.db
        .client()
        .await
        .execute(
            "UPDATE workers SET lease_expires_at = now() - interval '1 second' WHERE id = 'worker-a'",
            &[],
        )
        .await
        .unwrap();
    let no_wait = Backoff {
        base: Duration::ZERO,
        max: Duration::ZERO,
    };
    let rescued = store::rescue_lost(&mut conn, 100, &[], &no_wait)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    let second = store::claim_batch(&mut conn, "worker-b", 10, &[])
        .await
        .unwrap();
    assert_eq!((second.len(), second[0].attempts), (1, 2));

    let done = |attempt, text: &str| Outcome {
        task_id: id,
        attempt,
        verdict: Verdict::Succeeded(taskrunner::providers::Completion {
            text: text.to_owned(),
            prompt_tokens: None,
            completion_tokens: None,
        }),
    };
    let late = store::record_outcomes(&mut conn, "worker-a", &[done(1, "stale")])
        .await
        .unwrap();
    assert!(late.is_empty(), "the stale worker's outcome is fenced off");
    assert_eq!(task(&app, &id.to_string()).await["status"], "RUNNING");
    let written = store::record_outcomes(&mut conn, "worker-b", &[done(2, "fresh")])
        .await
        .unwrap();
    assert_eq!(written, [id]);
    let finished = task(&app, &id.to_string()).await;
    assert_eq!(
        (finished["status"].clone(), finished["result"].clone()),
        (json!("SUCCEEDED"), json!("fresh"))
    );
    // And worker-a's heartbeat no longer counts it as worker-a's.
    assert!(
        store::heartbeat(&mut conn, "worker-a", lease)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_what_it_can_and_hands_back_the_rest() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let quick = create(&app, json!({ "prompt": "slow:200:quick" })).await;
    let long = create(&app, json!({ "prompt": "hang" })).await;
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(800),
        ..test_config(4)
    };
    let worker = start_worker(&app, &fake, config).await;
    fake.wait_for_calls("hang", 1, Duration::from_secs(10))
        .await;
    fake.wait_for_calls("slow:200:quick", 1, Duration::from_secs(10))
        .await;
    worker.shutdown().await;

    assert_eq!(
        task(&app, &quick).await["status"],
        "SUCCEEDED",
        "finished within the grace period"
    );
    let handed_back = task(&app, &long).await;
    assert_eq!(
        handed_back["status"], "PENDING",
        "handed back: {handed_back}"
    );
    assert_eq!(
        handed_back["attempts"], 0,
        "the interrupted attempt does not count"
    );
    assert_eq!(handed_back["workerId"], json!(null));
    let running: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM tasks WHERE status = 'running'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "no task is left RUNNING without a live worker");
}

#[tokio::test]
async fn task_stats_and_models() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let stats =
        "{ taskStats { pending running succeeded failed cancelled oldestPendingAgeSeconds } }";
    let empty = app.data(stats, json!({})).await;
    assert_eq!(
        empty["taskStats"],
        json!({ "pending": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "oldestPendingAgeSeconds": null })
    );

    let waiting = create(&app, json!({ "prompt": "a" })).await;
    create(&app, json!({ "prompt": "b", "runAt": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339() })).await;
    let cancelled = create(&app, json!({ "prompt": "c" })).await;
    app.data(
        "mutation($id: ID!) { cancelTask(id: $id) { id } }",
        json!({ "id": cancelled }),
    )
    .await;
    app.data(
        "mutation($id: ID!) { deleteTask(id: $id) }",
        json!({ "id": waiting }),
    )
    .await;
    create(&app, json!({ "prompt": "d" })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counted = app.data(stats, json!({})).await["taskStats"].clone();
    assert_eq!(
        (counted["pending"].clone(), counted["cancelled"].clone()),
        (json!(2), json!(1))
    );
    let age = counted["oldestPendingAgeSeconds"].as_f64().unwrap();
    assert!(
        (0.25..60.0).contains(&age),
        "the due task has waited about 0.3 s: {age}"
    );

    let models = app.data("{ models { name provider } }", json!({})).await;
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"*") && names.contains(&"echo"), "{models}");
}

#[tokio::test]
async fn models_no_provider_serves_are_refused() {
    let db = TestDb::migrated().await;
    let router =
        std::sync::Arc::new(taskrunner::providers::config::router_from(Vec::new()).unwrap());
    let state = AppState::new(db.pool(), router);
    let app = TestApp {
        schema: taskrunner::graphql::schema(state.clone()),
        state,
        db,
    };
    let response = app
        .gql(
            "mutation { createTask(input: { prompt: \"p\", model: \"gpt-9\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&response), "BAD_USER_INPUT");
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("gpt-9") && message.contains("echo"),
        "names the known models: {message}"
    );
    let models = app.data("{ models { name provider } }", json!({})).await;
    assert_eq!(
        models["models"],
        json!([{ "name": "echo", "provider": "echo" }])
    );
}

#[tokio::test]
async fn model_parameters_are_validated_and_stored() {
    let app = TestApp::new().await;
    let create = "mutation($input: CreateTaskInput!) { createTask(input: $input) { system temperature maxTokens timeoutSeconds runAt } }";
    for (input, field) in [
        (json!({ "temperature": 2.5 }), "temperature"),
        (json!({ "temperature": -0.1 }), "temperature"),
        (json!({ "maxTokens": 0 }), "maxTokens"),
        (json!({ "timeoutSeconds": 0 }), "timeoutSeconds"),
        (json!({ "timeoutSeconds": 100000 }), "timeoutSeconds"),
        (json!({ "system": "x".repeat(100_001) }), "system"),
    ] {
        let mut full = json!({ "prompt": "p", "model": "m" });
        for (k, v) in input.as_object().unwrap() {
            full[k] = v.clone();
        }
        let response = app.gql(create, json!({ "input": full })).await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{input}");
        assert_eq!(crate::harness::error_field(&response), field, "{input}");
    }
    let stored = app
        .data(create, json!({ "input": { "prompt": "p", "model": "m", "system": "s", "temperature": 0.7, "maxTokens": 64, "timeoutSeconds": 90, "runAt": "2030-01-01T00:00:00Z" } }))
        .await;
    assert_eq!(
        stored["createTask"],
        json!({ "system": "s", "temperature": 0.7, "maxTokens": 64, "timeoutSeconds": 90, "runAt": "2030-01-01T00:00:00+00:00" })
    );
}

#[tokio::test]
async fn a_new_task_wakes_an_idle_worker_at_once() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    // Polling alone would take ten seconds: only the notification is fast.
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(10),
        ..test_config(4)
    };
    let worker = start_worker(&app, &fake, config).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let it go idle
    let started = Instant::now();
    let id = create(&app, json!({ "prompt": "wake up" })).await;
    wait_for(&app, &id, "SUCCEEDED", Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_task_error_names_no_address_of_the_deployment() {
    // A provider at an address where nothing listens: the connection is
    // refused, and the error chain names the URL, host and port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let toml = format!(
        "name = \"internal\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel_prefixes = [\"\"]\ndiscover_models = false"
    );
    let settings: taskrunner::providers::config::ProviderSettings =
        toml::from_str(&toml).expect("settings");
    let router = std::sync::Arc::new(
        taskrunner::providers::config::router_from(vec![settings]).expect("router"),
    );
    let db = TestDb::migrated().await;
    let state = AppState::new(db.pool(), std::sync::Arc::clone(&router));
    let app = TestApp {
        schema: taskrunner::graphql::schema(state.clone()),
        state,
        db,
    };
    let worker = Worker::start(&app.db.args(), router, test_config(1))
        .await
        .expect("worker starts");
    let id = create(&app, json!({ "prompt": "p", "maxAttempts": 1 })).await;
    let failed = wait_for(&app, &id, "FAILED", Duration::from_secs(10)).await;
    let error = failed["error"].as_str().expect("an error");
    assert!(
        error.starts_with("internal: cannot connect to the provider"),
        "{error}"
    );
    for secret in ["127.0.0.1", &port.to_string(), "http", "/v1"] {
        assert!(!error.contains(secret), "{secret:?} in {error:?}");
    }
    worker.shutdown().await;
}
