//! Creating safely and in bulk: idempotency keys, `createTasks`, and the MCP
//! `create_tasks` tool.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use taskrunner::AppState;
use taskrunner::auth::{Principal, Role};
use taskrunner::graphql;
use taskrunner::tasks::validation::MAX_IDEMPOTENCY_KEY_CHARS;

use crate::harness::{TestApp, TestDb, any_model_router, error_code, error_field};
use crate::mcp::connect;

const CREATE_TASK: &str =
    "mutation($input: CreateTaskInput!) { createTask(input: $input) { id prompt status } }";
const CREATE_TASKS: &str =
    "mutation($inputs: [CreateTaskInput!]!) { createTasks(inputs: $inputs) { id prompt status } }";

/// A TestApp whose pool can hold `connections` connections at once, so that
/// that many requests really run side by side in the database.
async fn app_with_pool(connections: u16) -> TestApp {
    let db = TestDb::migrated().await;
    let mut args = db.args();
    args.db_pool_size = connections;
    let pool = taskrunner::db::build_pool(&args).expect("pool");
    let state = AppState::new(pool, any_model_router());
    TestApp {
        schema: graphql::schema(state.clone()),
        state,
        db,
    }
}

/// How many tasks the database holds.
async fn task_count(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .expect("count tasks")
        .get(0)
}

/// Adds tenants `names` (tasks name their tenant without a foreign key, but
/// the API only acts for tenants that exist).
async fn add_tenants(app: &TestApp, names: &[&str]) {
    for name in names {
        app.db
            .client()
            .await
            .execute("INSERT INTO tenants (name) VALUES ($1)", &[name])
            .await
            .expect("add tenant");
    }
}

/// `count` inputs with prompts `p0`, `p1`, …
fn inputs(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| json!({ "prompt": format!("p{i}"), "model": "echo" }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_key_make_one_task() {
    let app = Arc::new(app_with_pool(50).await);
    let start = Arc::new(tokio::sync::Barrier::new(50));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (app, start) = (Arc::clone(&app), Arc::clone(&start));
        calls.spawn(async move {
            start.wait().await;
            app.gql(
                CREATE_TASK,
                json!({ "input": { "prompt": format!("try {i}"), "model": "echo",
                                   "idempotencyKey": "order-42" } }),
            )
            .await
        });
    }
    let mut ids = BTreeSet::new();
    let mut prompts = BTreeSet::new();
    while let Some(response) = calls.join_next().await {
        let response = response.expect("the call ran");
        assert!(response.get("errors").is_none(), "{response:#}");
        let task = &response["data"]["createTask"];
        ids.insert(task["id"].as_str().expect("an id").to_owned());
        prompts.insert(task["prompt"].as_str().expect("a prompt").to_owned());
    }
    assert_eq!(ids.len(), 1, "every answer carries the one task: {ids:?}");
    assert_eq!(prompts.len(), 1, "and the one task's fields: {prompts:?}");
    assert_eq!(task_count(&app).await, 1);
}

#[tokio::test]
async fn one_key_in_two_tenants_makes_two_tasks() {
    let app = TestApp::new().await;
    add_tenants(&app, &["a", "b"]).await;
    let create_as = |tenant: &'static str| {
        let principal = Principal::token(tenant, Role::Member, 1);
        let app = &app;
        async move {
            let response = app
                .gql_as(
                    &principal,
                    CREATE_TASK,
                    json!({ "input": { "prompt": "hi", "model": "echo", "idempotencyKey": "k" } }),
                )
                .await;
            response["data"]["createTask"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("created: {response:#}"))
                .to_owned()
        }
    };
    let a = create_as("a").await;
    let b = create_as("b").await;
    assert_ne!(a, b);
    assert_eq!(create_as("a").await, a, "a's key still names a's task");
    assert_eq!(create_as("b").await, b);
    assert_eq!(task_count(&app).await, 2);
}

#[tokio::test]
async fn a_key_whose_task_was_deleted_creates_a_new_task() {
    let app = TestApp::new().await;
    let input = json!({ "input": { "prompt": "hi", "model": "echo", "idempotencyKey": "k" } });
    let first = app.data(CREATE_TASK, input.clone()).await["createTask"]["id"].clone();
    app.data(
        "mutation($id: ID!) { deleteTask(id: $id) }",
        json!({ "id": first }),
    )
    .await;
    let second = app.data(CREATE_TASK, input.clone()).await["createTask"]["id"].clone();
    assert_ne!(first, second);
    let again = app.data(CREATE_TASK, input).await["createTask"]["id"].clone();
    assert_eq!(again, second);
    assert_eq!(task_count(&app).await, 1);
}

#[tokio::test]
async fn keys_of_0_or_201_characters_are_refused() {
    let app = TestApp::new().await;
    for key in [String::new(), "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1)] {
        let response = app
            .gql(
                CREATE_TASK,
                json!({ "input": { "prompt": "hi", "model": "echo", "idempotencyKey": key } }),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response:#}");
        assert_eq!(error_field(&response), "idempotencyKey");
    }
    let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS);
    app.data(
        CREATE_TASK,
        json!({ "input": { "prompt": "hi", "model": "echo", "idempotencyKey": longest } }),
    )
    .await;
    assert_eq!(task_count(&app).await, 1);
}

#[tokio::test]
async fn a_thousand_tasks_are_created_in_order_and_pending() {
    let app = TestApp::new().await;
    let data = app
        .data(CREATE_TASKS, json!({ "inputs": inputs(1_000) }))
        .await;
    let created = data["createTasks"].as_array().expect("a list");
    assert_eq!(created.len(), 1_000);
    let mut ids = BTreeSet::new();
    for (i, task) in created.iter().enumerate() {
        assert_eq!(task["prompt"], format!("p{i}"));
        assert_eq!(task["status"], "PENDING");
        ids.insert(task["id"].as_str().expect("an id").to_owned());
    }
    assert_eq!(ids.len(), 1_000, "each input is its own task");
    assert_eq!(task_count(&app).await, 1_000);
    // Each is the task `task(id:)` reads.
    let last = &created[999];
    let read = app
        .data(
            "query($id: ID!) { task(id: $id) { id prompt status } }",
            json!({ "id": last["id"] }),
        )
        .await;
    assert_eq!(&read["task"], last);
}

#[tokio::test]
async fn batch_inputs_keep_every_field() {
    let app = TestApp::new().await;
    let data = app
        .data(
            "mutation($inputs: [CreateTaskInput!]!) { createTasks(inputs: $inputs) {
                 prompt model priority maxAttempts } }",
            json!({ "inputs": [
                { "prompt": "a", "model": "m1", "priority": 9, "maxAttempts": 1,
                  "system": "s", "temperature": 0.5, "maxTokens": 7, "timeoutSeconds": 30,
                  "runAt": "2030-01-01T00:00:00Z" },
                { "prompt": "b", "model": "m2" },
            ] }),
        )
        .await;
    assert_eq!(
        data["createTasks"],
        json!([
            { "prompt": "a", "model": "m1", "priority": 9, "maxAttempts": 1 },
            { "prompt": "b", "model": "m2", "priority": 5, "maxAttempts": 3 },
        ])
    );
    let rows = app
        .db
        .client()
        .await
        .query(
            "SELECT system_prompt, temperature, max_tokens, timeout_seconds,
                    run_at = '2030-01-01T00:00:00Z', run_at <= now(), tenant
             FROM tasks ORDER BY id",
            &[],
        )
        .await
        .expect("read tasks");
    let first = &rows[0];
    assert_eq!(first.get::<_, Option<&str>>(0), Some("s"));
    assert_eq!(first.get::<_, Option<f64>>(1), Some(0.5));
    assert_eq!(first.get::<_, Option<i32>>(2), Some(7));
    assert_eq!(first.get::<_, Option<i32>>(3), Some(30));
    assert!(first.get::<_, bool>(4), "runAt kept");
    let second = &rows[1];
    assert_eq!(second.get::<_, Option<&str>>(0), None);
    assert!(second.get::<_, bool>(5), "no runAt: due now");
    assert_eq!(second.get::<_, &str>(6), "default");
}

#[tokio::test]
async fn a_bad_input_at_index_999_creates_nothing() {
    let app = TestApp::new().await;
    let mut batch = inputs(1_000);
    batch[999]["prompt"] = json!("   ");
    let response = app.gql(CREATE_TASKS, json!({ "inputs": batch })).await;
    assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response:#}");
    assert_eq!(error_field(&response), "inputs.999.prompt");
    assert_eq!(task_count(&app).await, 0);
}

#[tokio::test]
async fn bad_inputs_are_named_by_index_and_field() {
    let app = TestApp::new().await;
    let cases = [
        (json!({ "maxAttempts": 21 }), "inputs.3.maxAttempts"),
        (json!({ "priority": 0 }), "inputs.3.priority"),
        (json!({ "idempotencyKey": "" }), "inputs.3.idempotencyKey"),
        (json!({ "temperature": 3.0 }), "inputs.3.temperature"),
        (json!({ "model": "bad model" }), "inputs.3.model"),
    ];
    for (change, field) in cases {
        let mut batch = inputs(5);
        for (name, value) in change.as_object().expect("an object") {
            batch[3][name] = value.clone();
        }
        let response = app.gql(CREATE_TASKS, json!({ "inputs": batch })).await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response:#}");
        assert_eq!(error_field(&response), field, "{response:#}");
    }
    assert_eq!(task_count(&app).await, 0);
}

#[tokio::test]
async fn batches_of_0_or_1001_are_refused() {
    let app = TestApp::new().await;
    // 5,000 inputs are refused as too many, not as too complex.
    for size in [0, 1_001, 5_000] {
        let response = app
            .gql(
                "mutation($inputs: [CreateTaskInput!]!) { createTasks(inputs: $inputs) { id } }",
                json!({ "inputs": inputs(size) }),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response:#}");
        assert_eq!(error_field(&response), "inputs");
    }
    assert_eq!(task_count(&app).await, 0);
}

#[tokio::test]
async fn a_batch_is_charged_its_fields_once_per_input() {
    let app = TestApp::new().await;
    // Five fields of 1,000 tasks (5,001) are over the limit of 5,000; four fit.
    let response = app
        .gql(
            "mutation($inputs: [CreateTaskInput!]!) {
                 createTasks(inputs: $inputs) { id prompt status model priority } }",
            json!({ "inputs": inputs(1_000) }),
        )
        .await;
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("too complex"), "{response:#}");
    assert_eq!(task_count(&app).await, 0);
    app.data(
        "mutation($inputs: [CreateTaskInput!]!) {
             createTasks(inputs: $inputs) { id prompt status model } }",
        json!({ "inputs": inputs(1_000) }),
    )
    .await;
    assert_eq!(task_count(&app).await, 1_000);
}

#[tokio::test]
async fn keys_in_a_batch_return_the_tasks_they_name() {
    let app = TestApp::new().await;
    let earlier = app
        .create(json!({ "prompt": "earlier", "model": "echo", "idempotencyKey": "k1" }))
        .await;
    let data = app
        .data(
            CREATE_TASKS,
            json!({ "inputs": [
                { "prompt": "again", "model": "echo", "idempotencyKey": "k1" },
                { "prompt": "new", "model": "echo" },
                { "prompt": "first k2", "model": "echo", "idempotencyKey": "k2" },
                { "prompt": "second k2", "model": "echo", "idempotencyKey": "k2" },
            ] }),
        )
        .await;
    let created = data["createTasks"].as_array().expect("a list");
    assert_eq!(created[0]["id"], earlier["id"]);
    assert_eq!(created[0]["prompt"], "earlier");
    assert_eq!(created[1]["prompt"], "new");
    assert_eq!(created[2]["prompt"], "first k2");
    assert_eq!(created[3], created[2], "one key, one task");
    assert_eq!(task_count(&app).await, 3);

    // The whole batch again creates nothing and answers the same.
    let repeated = app
        .data(
            CREATE_TASKS,
            json!({ "inputs": [
                { "prompt": "again", "model": "echo", "idempotencyKey": "k1" },
                { "prompt": "first k2", "model": "echo", "idempotencyKey": "k2" },
            ] }),
        )
        .await;
    assert_eq!(
        repeated["createTasks"],
        json!([created[0].clone(), created[2].clone()])
    );
    assert_eq!(task_count(&app).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_with_keys_in_common_do_not_deadlock() {
    let app = Arc::new(app_with_pool(20).await);
    let keys: Vec<String> = (0..1_000).map(|i| format!("key-{i:04}")).collect();
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..8 {
        let (app, start) = (Arc::clone(&app), Arc::clone(&start));
        let mut keys = keys.clone();
        // Half the batches take the keys the other way round: inserted in the
        // order given, two such batches would each wait for the other.
        if round % 2 == 1 {
            keys.reverse();
        }
        calls.spawn(async move {
            let batch: Vec<Value> = keys
                .iter()
                .map(|key| json!({ "prompt": key, "model": "echo", "idempotencyKey": key }))
                .collect();
            start.wait().await;
            app.gql(
                "mutation($inputs: [CreateTaskInput!]!) { createTasks(inputs: $inputs) { id prompt } }",
                json!({ "inputs": batch }),
            )
            .await
        });
    }
    let mut answers = Vec::new();
    while let Some(response) = calls.join_next().await {
        let response = response.expect("the call ran");
        assert!(response.get("errors").is_none(), "{response:#}");
        let mut by_key: Vec<(String, String)> = response["data"]["createTasks"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|task| (task["prompt"].to_string(), task["id"].to_string()))
            .collect();
        by_key.sort();
        answers.push(by_key);
    }
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "every batch names the same task for each key"
    );
    assert_eq!(task_count(&app).await, 1_000);
}

#[tokio::test]
async fn readers_may_not_create_in_bulk() {
    let app = TestApp::new().await;
    let reader = Principal::token("default", Role::Reader, 1);
    let response = app
        .gql_as(&reader, CREATE_TASKS, json!({ "inputs": inputs(2) }))
        .await;
    assert_eq!(error_code(&response), "FORBIDDEN", "{response:#}");
    assert_eq!(task_count(&app).await, 0);
}

#[tokio::test]
async fn batches_belong_to_the_callers_tenant() {
    let app = TestApp::new().await;
    add_tenants(&app, &["a"]).await;
    let member = Principal::token("a", Role::Member, 1);
    let response = app
        .gql_as(&member, CREATE_TASKS, json!({ "inputs": inputs(3) }))
        .await;
    assert!(response.get("errors").is_none(), "{response:#}");
    let tenants: Vec<String> = app
        .db
        .client()
        .await
        .query("SELECT DISTINCT tenant FROM tasks", &[])
        .await
        .expect("read tenants")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(tenants, ["a"]);
    // A member of the default tenant sees none of them.
    let other = Principal::token("default", Role::Member, 2);
    let listed = app
        .gql_as(&other, "{ tasks { nodes { id } } }", json!({}))
        .await;
    assert_eq!(listed["data"]["tasks"]["nodes"], json!([]), "{listed:#}");
}

#[tokio::test]
async fn mcp_create_task_honours_idempotency_keys() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let arguments = json!({ "prompt": "hi", "model": "echo", "idempotency_key": "k" });
    let first = client.ok("create_task", arguments.clone()).await;
    let second = client.ok("create_task", arguments).await;
    assert_eq!(first["id"], second["id"]);
    let refused = client
        .tool_error(
            "create_task",
            json!({ "prompt": "hi", "model": "echo", "idempotency_key": "" }),
        )
        .await;
    assert_eq!(refused["code"], "BAD_USER_INPUT");
    assert_eq!(refused["field"], "idempotency_key");
    assert_eq!(task_count(&app).await, 1);
}

#[tokio::test]
async fn mcp_create_tasks_creates_in_order_or_names_the_bad_input() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let created = client
        .ok(
            "create_tasks",
            json!({ "inputs": [
                { "prompt": "one", "model": "echo", "max_attempts": 2 },
                { "prompt": "two", "model": "echo", "idempotency_key": "k" },
                { "prompt": "three", "model": "echo", "idempotency_key": "k" },
            ] }),
        )
        .await;
    let tasks = created["tasks"].as_array().expect("a list of tasks");
    let prompts: Vec<&Value> = tasks.iter().map(|task| &task["prompt"]).collect();
    assert_eq!(prompts, [&json!("one"), &json!("two"), &json!("two")]);
    assert_eq!(tasks[0]["max_attempts"], 2);
    assert_eq!(tasks[0]["status"], "PENDING");
    assert_eq!(tasks[1]["id"], tasks[2]["id"]);
    assert_eq!(task_count(&app).await, 2);

    let refused = client
        .tool_error(
            "create_tasks",
            json!({ "inputs": [
                { "prompt": "fine", "model": "echo" },
                { "prompt": "fine", "model": "echo" },
                { "prompt": "fine", "model": "echo" },
                { "prompt": "fine", "model": "echo", "max_attempts": 99 },
            ] }),
        )
        .await;
    assert_eq!(refused["code"], "BAD_USER_INPUT");
    assert_eq!(refused["field"], "inputs.3.max_attempts");
    let empty = client
        .tool_error("create_tasks", json!({ "inputs": [] }))
        .await;
    assert_eq!(empty["field"], "inputs");
    assert_eq!(task_count(&app).await, 2);
}

#[tokio::test]
async fn subscribers_hear_of_every_task_a_batch_created() {
    use crate::subscriptions::{Protocol, Received, WsClient};
    let within = std::time::Duration::from_secs(20);
    let app = TestApp::new().await;
    let served = app.serve().await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client
        .subscribe(
            "subscription($filter: TaskFilter) { taskEvents(filter: $filter) { type task { id prompt } } }",
            json!({ "filter": { "model": "watched" } }),
        )
        .await;
    // The subscription is in place once the server has seen it: create
    // probes until one is reported (later probes' events are skipped below).
    loop {
        app.create(json!({ "prompt": "probe", "model": "watched" }))
            .await;
        match tokio::time::timeout(
            std::time::Duration::from_millis(500),
            client.next_for(&sub, within),
        )
        .await
        {
            Ok(Received::Next(_)) => break,
            Ok(other) => panic!("{other:?}"),
            Err(_) => continue,
        }
    }
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({ "prompt": format!("p{i}"), "model": "watched" }))
        .collect();
    let data = app.data(CREATE_TASKS, json!({ "inputs": batch })).await;
    let mut expected: BTreeSet<String> = data["createTasks"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|task| task["id"].as_str().expect("an id").to_owned())
        .collect();
    while !expected.is_empty() {
        let Received::Next(event) = client.next_for(&sub, within).await else {
            panic!("the events of {} tasks never came", expected.len())
        };
        let event = &event["data"]["taskEvents"];
        if event["task"]["prompt"] == "probe" {
            continue;
        }
        assert_eq!(event["type"], "CREATED", "{event}");
        let id = event["task"]["id"].as_str().expect("an id");
        assert!(expected.remove(id), "one event per task: {event}");
    }
}

#[tokio::test]
async fn a_thousand_prompts_of_a_thousand_characters_fit_one_request_body() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};

    use crate::http::{json_of, post_json, send};
    let app = TestApp::new().await;
    let request = |prompt_chars: usize| {
        let batch: Vec<Value> = (0..1_000)
            .map(|i| json!({ "prompt": format!("{i:04}{}", "x".repeat(prompt_chars - 4)), "model": "echo" }))
            .collect();
        json!({
            "query": "mutation($inputs: [CreateTaskInput!]!) { createTasks(inputs: $inputs) { id } }",
            "variables": { "inputs": batch },
        })
        .to_string()
    };
    // About 1 MiB: accepted.
    let (status, _, body) = send(app.router(), post_json(request(1_000))).await;
    assert_eq!(status, StatusCode::OK);
    let created = json_of(&body);
    assert_eq!(
        created["data"]["createTasks"].as_array().map(Vec::len),
        Some(1_000),
        "{created:#}"
    );
    // Over 2 MiB: refused whole, before anything is read into tasks.
    let (status, _, _) = send(app.router(), post_json(request(2_200))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(task_count(&app).await, 1_000);

    // Each created task is counted once.
    let (status, _, body) = send(
        app.router(),
        Request::get("/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).expect("text");
    let counted = text
        .lines()
        .find(|line| {
            line.starts_with("taskrunner_tasks_created_total{") && line.contains("model=\"echo\"")
        })
        .unwrap_or_else(|| panic!("a created-tasks series for echo in:\n{text}"));
    assert!(counted.ends_with(" 1000"), "{counted}");
}
