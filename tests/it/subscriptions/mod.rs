//! GraphQL subscriptions over real WebSockets: `taskUpdated` and
//! `taskEvents`, both protocols, errors, a slow subscriber, a listener that
//! reconnects, and events crossing from a worker process to an API process.

mod client;

use std::time::Duration;

use serde_json::{Value, json};

pub use client::{Protocol, Received, WsClient};

use crate::fake_provider::FakeProvider;
use crate::harness::{TestApp, TestDb};
use crate::process::{Launch, ProviderConfig};
use crate::proxy::{Proxy, database_address, via};
use crate::queue::{app_with, create, start_worker, test_config};

const TASK_UPDATED: &str = "subscription($id: ID!) { taskUpdated(id: $id) { id status prompt result attempts updatedAt } }";
const TASK_EVENTS: &str = "subscription($filter: TaskFilter) { taskEvents(filter: $filter) { type task { id status model prompt } } }";
const WITHIN: Duration = Duration::from_secs(20);

/// The statuses of a `taskUpdated` stream's results, and how it ended.
fn statuses(received: &[Received]) -> (Vec<String>, &Received) {
    let statuses = received
        .iter()
        .filter_map(|r| match r {
            Received::Next(payload) => Some(
                payload["data"]["taskUpdated"]["status"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a task in {payload}"))
                    .to_owned(),
            ),
            _ => None,
        })
        .collect();
    (statuses, received.last().expect("something was received"))
}

/// Creates a PENDING task on the echo model; returns its id.
async fn echo_task(app: &TestApp, prompt: &str) -> String {
    app.create(json!({ "prompt": prompt, "model": "echo" }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn mutate(app: &TestApp, query: &str, id: &str) -> Value {
    app.data(query, json!({ "id": id })).await
}

#[tokio::test]
async fn task_updated_follows_a_task_to_success_and_completes() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let served = app.serve().await;
    let id = create(&app, json!({ "prompt": "slow:300:done" })).await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_UPDATED, json!({ "id": id })).await;
    // The task as it is now comes first, before any worker runs.
    let first = client.next_for(&sub, WITHIN).await;
    let Received::Next(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!(first["data"]["taskUpdated"]["status"], "PENDING");
    assert_eq!(first["data"]["taskUpdated"]["id"], id);

    let worker = start_worker(&app, &fake, test_config(2)).await;
    let rest = client.collect_until_complete(&sub, WITHIN).await;
    let (seen, end) = statuses(&rest);
    assert_eq!(end, &Received::Complete, "{rest:?}");
    assert_eq!(seen, ["RUNNING", "SUCCEEDED"], "{rest:?}");
    let Received::Next(last) = &rest[rest.len() - 2] else {
        panic!()
    };
    assert_eq!(last["data"]["taskUpdated"]["result"], "done");
    worker.shutdown().await;
}

#[tokio::test]
async fn the_legacy_protocol_sees_a_cancel_and_a_deletion() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let cancelled = echo_task(&app, "p").await;
    let deleted = echo_task(&app, "last words").await;
    let mut client = WsClient::connect(&served.address, Protocol::LegacyWs).await;
    let first = client
        .subscribe(TASK_UPDATED, json!({ "id": cancelled }))
        .await;
    let second = client
        .subscribe(TASK_UPDATED, json!({ "id": deleted }))
        .await;
    for sub in [&first, &second] {
        let Received::Next(now) = client.next_for(sub, WITHIN).await else {
            panic!()
        };
        assert_eq!(now["data"]["taskUpdated"]["status"], "PENDING");
    }

    mutate(
        &app,
        "mutation($id: ID!) { cancelTask(id: $id) { id } }",
        &cancelled,
    )
    .await;
    let received = client.collect_until_complete(&first, WITHIN).await;
    let (seen, end) = statuses(&received);
    assert_eq!(seen, ["CANCELLED"]);
    assert_eq!(end, &Received::Complete);

    // A deleted task's stream sends nothing new (its last state is what was
    // sent) and completes.
    mutate(&app, "mutation($id: ID!) { deleteTask(id: $id) }", &deleted).await;
    let rest = client.collect_until_complete(&second, WITHIN).await;
    assert_eq!(rest, [Received::Complete]);
}

#[tokio::test]
async fn a_deleted_task_changed_since_it_was_sent_gets_its_last_state() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let id = echo_task(&app, "before").await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_UPDATED, json!({ "id": id })).await;
    let Received::Next(_) = client.next_for(&sub, WITHIN).await else {
        panic!()
    };
    // Changed and deleted at once: the stream may or may not see the change
    // as UPDATED, but it ends with the task's last state, then completes.
    app.data(
        "mutation($id: ID!) { updateTask(id: $id, input: { prompt: \"after\" }) { id } }",
        json!({ "id": id }),
    )
    .await;
    mutate(&app, "mutation($id: ID!) { deleteTask(id: $id) }", &id).await;
    let rest = client.collect_until_complete(&sub, WITHIN).await;
    assert_eq!(rest.last(), Some(&Received::Complete), "{rest:?}");
    let Some(Received::Next(last)) = rest.iter().rev().nth(1) else {
        panic!("{rest:?}")
    };
    assert_eq!(last["data"]["taskUpdated"]["prompt"], "after");
}

#[tokio::test]
async fn subscriptions_refuse_missing_and_malformed_ids_with_codes() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        let mut client = WsClient::connect(&served.address, protocol).await;
        let cases = [
            (TASK_UPDATED, json!({ "id": "987654321" }), "NOT_FOUND"),
            (TASK_UPDATED, json!({ "id": "abc" }), "BAD_USER_INPUT"),
            (
                "subscription { nope }",
                json!({}),
                "GRAPHQL_VALIDATION_FAILED",
            ),
        ];
        for (query, variables, code) in cases {
            let sub = client.subscribe(query, variables).await;
            let errors = match client.next_for(&sub, WITHIN).await {
                Received::Error(errors) => errors,
                // The legacy protocol reports a resolver's error as data with errors.
                Received::Next(payload) => payload["errors"].clone(),
                other => panic!("{other:?}"),
            };
            let errors = if errors.is_array() {
                errors
            } else {
                json!([errors])
            };
            assert_eq!(errors[0]["extensions"]["code"], code, "{errors}");
        }
    }
}

#[tokio::test]
async fn task_events_reports_matching_changes_and_deletions_with_the_last_state() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client
        .subscribe(TASK_EVENTS, json!({ "filter": { "model": "watched" } }))
        .await;
    // The subscription is in place once the server has seen it: create
    // probes until one is reported (later probes' events are skipped below).
    loop {
        app.create(json!({ "prompt": "probe", "model": "watched" }))
            .await;
        match tokio::time::timeout(Duration::from_millis(500), client.next_for(&sub, WITHIN)).await
        {
            Ok(Received::Next(event)) => {
                assert_eq!(event["data"]["taskEvents"]["type"], "CREATED");
                break;
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => continue,
        }
    }
    let ignored = app
        .create(json!({ "prompt": "other", "model": "unwatched" }))
        .await;
    let created = app
        .create(json!({ "prompt": "one", "model": "watched" }))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let next_event = async |client: &mut WsClient| loop {
        let Received::Next(event) = client.next_for(&sub, WITHIN).await else {
            panic!()
        };
        let event = event["data"]["taskEvents"].clone();
        assert_eq!(
            event["task"]["model"], "watched",
            "only matching tasks: {event}"
        );
        if event["task"]["prompt"] != "probe" {
            return (
                event["type"].as_str().expect("type").to_owned(),
                event["task"]["status"].as_str().expect("status").to_owned(),
                event["task"]["prompt"].as_str().expect("prompt").to_owned(),
                event["task"]["id"].as_str().expect("id").to_owned(),
            );
        }
    };
    let expect = |kind: &str, status: &str| {
        (
            kind.to_owned(),
            status.to_owned(),
            "one".to_owned(),
            id.clone(),
        )
    };
    assert_eq!(next_event(&mut client).await, expect("CREATED", "PENDING"));
    mutate(
        &app,
        "mutation($id: ID!) { cancelTask(id: $id) { id } }",
        &id,
    )
    .await;
    // A change to a task the filter leaves out is not reported.
    mutate(
        &app,
        "mutation($id: ID!) { cancelTask(id: $id) { id } }",
        ignored["id"].as_str().expect("id"),
    )
    .await;
    assert_eq!(
        next_event(&mut client).await,
        expect("UPDATED", "CANCELLED")
    );
    mutate(&app, "mutation($id: ID!) { deleteTask(id: $id) }", &id).await;
    assert_eq!(
        next_event(&mut client).await,
        expect("DELETED", "CANCELLED")
    );
}

#[tokio::test]
async fn a_subscriber_on_an_api_process_sees_a_task_run_by_a_worker_process() {
    let fake = FakeProvider::start().await;
    let db = TestDb::migrated().await;
    let providers = ProviderConfig::for_fake(&fake);
    let api = Launch::serve()
        .database(&db.url)
        .providers(&providers)
        .args(["--workers", "0"])
        .spawn();
    let address = api.address().await;
    let created: Value = reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .json(&json!({
            "query": "mutation { createTask(input: { prompt: \"slow:200:done\", model: \"m\" }) { id } }"
        }))
        .send()
        .await
        .expect("createTask is answered")
        .json()
        .await
        .expect("a JSON answer");
    let id = created["data"]["createTask"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let mut client = WsClient::connect(&address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_UPDATED, json!({ "id": id })).await;
    let Received::Next(first) = client.next_for(&sub, WITHIN).await else {
        panic!()
    };
    assert_eq!(first["data"]["taskUpdated"]["status"], "PENDING");

    // Only the worker process changes the task from here on; its changes
    // reach the API process through PostgreSQL alone.
    let _worker = Launch::worker()
        .database(&db.url)
        .providers(&providers)
        .spawn();
    let rest = client
        .collect_until_complete(&sub, Duration::from_secs(60))
        .await;
    let (seen, end) = statuses(&rest);
    assert_eq!(end, &Received::Complete, "{rest:?}");
    assert_eq!(seen, ["RUNNING", "SUCCEEDED"], "{rest:?}");
}

#[tokio::test]
async fn a_stalled_subscriber_holds_up_no_one_and_goes_on_later() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let watched = echo_task(&app, "watched").await;
    let mut stalled = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let firehose = stalled.subscribe(TASK_EVENTS, json!({})).await;
    // In place once it reports a change.
    loop {
        mutate(
            &app,
            "mutation($id: ID!) { updateTask(id: $id, input: { priority: 3 }) { id } }",
            &watched,
        )
        .await;
        if tokio::time::timeout(
            Duration::from_millis(500),
            stalled.next_for(&firehose, WITHIN),
        )
        .await
        .is_ok()
        {
            break;
        }
    }
    // Far more events than the stalled subscriber's buffers hold, announced
    // as the publisher would: 20,000 new tasks.
    let client = app.db.client().await;
    client
        .batch_execute(
            "INSERT INTO tasks (prompt, model) SELECT 'bulk ' || n, 'echo' FROM generate_series(1, 20000) AS n;
             SELECT pg_notify('taskrunner_task_events', string_agg('c' || id, ','))
             FROM (SELECT id, row_number() OVER (ORDER BY id) / 500 AS part FROM tasks) AS t
             GROUP BY part",
        )
        .await
        .expect("bulk insert");

    let mut other = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = other
        .subscribe(TASK_UPDATED, json!({ "id": watched }))
        .await;
    let Received::Next(_) = other.next_for(&sub, WITHIN).await else {
        panic!()
    };
    mutate(
        &app,
        "mutation($id: ID!) { cancelTask(id: $id) { id } }",
        &watched,
    )
    .await;
    let (seen, _) = statuses(&other.collect_until_complete(&sub, WITHIN).await);
    assert_eq!(seen, ["CANCELLED"]);

    // The stalled subscriber reads again: it skipped what it could not hold,
    // and still hears of the cancellation.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut read = 0;
    loop {
        let Received::Next(event) = stalled.next_for(&firehose, WITHIN).await else {
            panic!()
        };
        read += 1;
        let event = &event["data"]["taskEvents"];
        if event["task"]["id"] == watched && event["task"]["status"] == "CANCELLED" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cancellation after {read} events"
        );
    }
    assert!(
        read < 20_000,
        "the stalled subscriber skipped ahead ({read} events read)"
    );
}

#[tokio::test]
async fn after_the_listener_reconnects_subscribers_get_what_they_missed() {
    let app = TestApp::new().await;
    let proxy = Proxy::start(&database_address(&app.db.url)).await;
    let served = app
        .serve_on(&via(&app.db.url, &proxy.address().to_string()))
        .await;
    let id = echo_task(&app, "before").await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_UPDATED, json!({ "id": id })).await;
    let Received::Next(_) = client.next_for(&sub, WITHIN).await else {
        panic!()
    };

    // The listening connection is cut; a change made meanwhile announces
    // itself to no one.
    proxy.cut();
    app.db
        .client()
        .await
        .execute(
            "UPDATE tasks SET prompt = 'while cut' WHERE id = $1",
            &[&id.parse::<i64>().expect("an id")],
        )
        .await
        .expect("update");
    proxy.restore();
    let Received::Next(after) = client.next_for(&sub, WITHIN).await else {
        panic!()
    };
    assert_eq!(after["data"]["taskUpdated"]["prompt"], "while cut");
}

#[tokio::test]
async fn unsubscribing_or_leaving_releases_the_watch() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let id = echo_task(&app, "p").await;
    let watched = || app.state.events().watched_tasks();
    let until_unwatched = async || {
        let deadline = std::time::Instant::now() + WITHIN;
        while watched() > 0 {
            assert!(std::time::Instant::now() < deadline, "the watch was kept");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_UPDATED, json!({ "id": id })).await;
    let Received::Next(_) = client.next_for(&sub, WITHIN).await else {
        panic!()
    };
    assert_eq!(watched(), 1);
    client.unsubscribe(&sub).await;
    until_unwatched().await;

    let sub = client.subscribe(TASK_UPDATED, json!({ "id": id })).await;
    let Received::Next(_) = client.next_for(&sub, WITHIN).await else {
        panic!()
    };
    assert_eq!(watched(), 1);
    drop(client);
    until_unwatched().await;
}
