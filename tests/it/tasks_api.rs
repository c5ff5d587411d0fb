//! Every query and mutation, every validation rule and error code.

use serde_json::json;

use crate::harness::{TestApp, error_code, error_field};

const TASK_FIELDS: &str = "id prompt model priority status result error attempts maxAttempts createdAt updatedAt startedAt finishedAt";

#[tokio::test]
async fn create_then_read_back() {
    let app = TestApp::new().await;
    let created = app
        .create(json!({ "prompt": "Summarise this", "model": "gpt-4o-mini", "priority": 8, "maxAttempts": 5 }))
        .await;
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["priority"], 8);
    assert_eq!(created["maxAttempts"], 5);
    assert_eq!(created["attempts"], 0);
    assert_eq!(created["createdAt"], created["updatedAt"]);

    let data = app
        .data(
            &format!("query($id: ID!) {{ task(id: $id) {{ {TASK_FIELDS} }} }}"),
            json!({ "id": created["id"] }),
        )
        .await;
    let task = &data["task"];
    assert_eq!(task["id"], created["id"]);
    assert_eq!(task["prompt"], "Summarise this");
    assert_eq!(task["model"], "gpt-4o-mini");
    assert_eq!(task["result"], json!(null));
    assert_eq!(task["startedAt"], json!(null));
    assert_eq!(task["finishedAt"], json!(null));
}

#[tokio::test]
async fn defaults_apply_when_priority_and_attempts_are_left_out_or_null() {
    let app = TestApp::new().await;
    let omitted = app.create(json!({ "prompt": "p", "model": "m" })).await;
    assert_eq!(
        (omitted["priority"].clone(), omitted["maxAttempts"].clone()),
        (json!(5), json!(3))
    );
    let nulls = app
        .create(json!({ "prompt": "p", "model": "m", "priority": null, "maxAttempts": null }))
        .await;
    assert_eq!(
        (nulls["priority"].clone(), nulls["maxAttempts"].clone()),
        (json!(5), json!(3))
    );
}

#[tokio::test]
async fn task_by_unknown_id_is_null_and_bad_ids_are_rejected() {
    let app = TestApp::new().await;
    let data = app
        .data(r#"{ task(id: "987654") { id } }"#, json!({}))
        .await;
    assert_eq!(data["task"], json!(null));

    for bad in ["abc", "0", "-3", "1.5", "", "99999999999999999999999"] {
        let response = app
            .gql(
                "query($id: ID!) { task(id: $id) { id } }",
                json!({ "id": bad }),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{bad}");
        assert_eq!(error_field(&response), "id", "{bad}");
    }
}

#[tokio::test]
async fn create_validates_every_field_and_stores_nothing_when_invalid() {
    let app = TestApp::new().await;
    let long_prompt = "x".repeat(100_001);
    let long_model = "m".repeat(101);
    let cases = [
        (json!({ "prompt": "", "model": "m" }), "prompt"),
        (json!({ "prompt": "   ", "model": "m" }), "prompt"),
        (json!({ "prompt": long_prompt, "model": "m" }), "prompt"),
        (json!({ "prompt": "nul\u{0}byte", "model": "m" }), "prompt"),
        (json!({ "prompt": "p", "model": "" }), "model"),
        (json!({ "prompt": "p", "model": long_model }), "model"),
        (json!({ "prompt": "p", "model": "gpt 4" }), "model"),
        (json!({ "prompt": "p", "model": "gpt;drop" }), "model"),
        (
            json!({ "prompt": "p", "model": "m", "priority": 0 }),
            "priority",
        ),
        (
            json!({ "prompt": "p", "model": "m", "priority": 11 }),
            "priority",
        ),
        (
            json!({ "prompt": "p", "model": "m", "maxAttempts": 0 }),
            "maxAttempts",
        ),
        (
            json!({ "prompt": "p", "model": "m", "maxAttempts": 21 }),
            "maxAttempts",
        ),
    ];
    for (input, field) in cases {
        let response = app
            .gql(
                "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }",
                json!({ "input": input }),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{input}");
        assert_eq!(error_field(&response), field, "{input}");
        let message = response["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains(field),
            "message names the field: {message}"
        );
    }
    let count = app.data("{ tasks { totalCount } }", json!({})).await;
    assert_eq!(count["tasks"]["totalCount"], 0, "nothing was stored");

    // The limits themselves are accepted.
    let at_limits = app
        .create(json!({ "prompt": "é".repeat(100_000), "model": "m".repeat(100), "priority": 10, "maxAttempts": 20 }))
        .await;
    assert_eq!(at_limits["priority"], 10);
    let low = app
        .create(json!({ "prompt": "p", "model": "org/model-1.5:q4_K", "priority": 1, "maxAttempts": 1 }))
        .await;
    assert_eq!(low["model"], "org/model-1.5:q4_K");
}

#[tokio::test]
async fn update_changes_only_the_given_fields() {
    let app = TestApp::new().await;
    let created = app
        .create(json!({ "prompt": "before", "model": "m1", "priority": 2 }))
        .await;
    let data = app
        .data(
            &format!("mutation($id: ID!, $input: UpdateTaskInput!) {{ updateTask(id: $id, input: $input) {{ {TASK_FIELDS} }} }}"),
            json!({ "id": created["id"], "input": { "prompt": "after", "priority": 9 } }),
        )
        .await;
    let updated = &data["updateTask"];
    assert_eq!(updated["prompt"], "after");
    assert_eq!(updated["priority"], 9);
    assert_eq!(updated["model"], "m1");
    assert_eq!(updated["maxAttempts"], 3);
    let before =
        chrono::DateTime::parse_from_rfc3339(created["updatedAt"].as_str().unwrap()).unwrap();
    let after =
        chrono::DateTime::parse_from_rfc3339(updated["updatedAt"].as_str().unwrap()).unwrap();
    assert!(
        after > before,
        "updatedAt moves on every change: {before} -> {after}"
    );
    assert_eq!(updated["createdAt"], created["createdAt"]);

    let data = app
        .data(
            "mutation($id: ID!) { updateTask(id: $id, input: { model: \"m2\", maxAttempts: 7 }) { model maxAttempts prompt } }",
            json!({ "id": created["id"] }),
        )
        .await;
    assert_eq!(
        data["updateTask"],
        json!({ "model": "m2", "maxAttempts": 7, "prompt": "after" })
    );
}

#[tokio::test]
async fn update_errors() {
    let app = TestApp::new().await;
    let created = app.create(json!({ "prompt": "p", "model": "m" })).await;
    let update = "mutation($id: ID!, $input: UpdateTaskInput!) { updateTask(id: $id, input: $input) { id } }";

    let missing = app
        .gql(
            update,
            json!({ "id": "424242", "input": { "prompt": "x" } }),
        )
        .await;
    assert_eq!(error_code(&missing), "NOT_FOUND");

    let bad_id = app
        .gql(update, json!({ "id": "x", "input": { "prompt": "x" } }))
        .await;
    assert_eq!(error_code(&bad_id), "BAD_USER_INPUT");

    let empty = app
        .gql(update, json!({ "id": created["id"], "input": {} }))
        .await;
    assert_eq!(error_code(&empty), "BAD_USER_INPUT");
    assert_eq!(error_field(&empty), "input");

    for (input, field) in [
        (json!({ "prompt": "" }), "prompt"),
        (json!({ "model": "bad model" }), "model"),
        (json!({ "priority": 42 }), "priority"),
        (json!({ "maxAttempts": -1 }), "maxAttempts"),
    ] {
        let response = app
            .gql(update, json!({ "id": created["id"], "input": input }))
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{input}");
        assert_eq!(error_field(&response), field, "{input}");
    }

    // Once a worker holds the task, it can no longer be changed.
    for status in ["running", "succeeded", "failed", "cancelled"] {
        set_status(&app, &created["id"], status).await;
        let response = app
            .gql(
                update,
                json!({ "id": created["id"], "input": { "prompt": "x" } }),
            )
            .await;
        assert_eq!(error_code(&response), "CONFLICT", "{status}");
    }
    let unchanged = app
        .data(
            "query($id: ID!) { task(id: $id) { prompt } }",
            json!({ "id": created["id"] }),
        )
        .await;
    assert_eq!(unchanged["task"]["prompt"], "p");
}

#[tokio::test]
async fn delete_returns_the_id_and_refuses_running_tasks() {
    let app = TestApp::new().await;
    let delete = "mutation($id: ID!) { deleteTask(id: $id) }";
    let pending = app.create(json!({ "prompt": "p", "model": "m" })).await;
    let data = app.data(delete, json!({ "id": pending["id"] })).await;
    assert_eq!(data["deleteTask"], pending["id"]);
    let gone = app
        .data(
            "query($id: ID!) { task(id: $id) { id } }",
            json!({ "id": pending["id"] }),
        )
        .await;
    assert_eq!(gone["task"], json!(null));

    let again = app.gql(delete, json!({ "id": pending["id"] })).await;
    assert_eq!(error_code(&again), "NOT_FOUND");
    let bad = app.gql(delete, json!({ "id": "nope" })).await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT");

    let running = app.create(json!({ "prompt": "p", "model": "m" })).await;
    set_status(&app, &running["id"], "running").await;
    let refused = app.gql(delete, json!({ "id": running["id"] })).await;
    assert_eq!(error_code(&refused), "CONFLICT");
    let still_there = app
        .data(
            "query($id: ID!) { task(id: $id) { status } }",
            json!({ "id": running["id"] }),
        )
        .await;
    assert_eq!(still_there["task"]["status"], "RUNNING");

    for status in ["succeeded", "failed", "cancelled"] {
        let task = app.create(json!({ "prompt": "p", "model": "m" })).await;
        set_status(&app, &task["id"], status).await;
        let data = app.data(delete, json!({ "id": task["id"] })).await;
        assert_eq!(
            data["deleteTask"], task["id"],
            "{status} tasks can be deleted"
        );
    }
}

#[tokio::test]
async fn the_database_holds_the_rules_too() {
    let app = TestApp::new().await;
    let client = app.db.client().await;
    for (sql, constraint) in [
        (
            "INSERT INTO tasks (prompt, model) VALUES ('', 'm')",
            "tasks_prompt_not_empty",
        ),
        (
            "INSERT INTO tasks (prompt, model) VALUES ('p', 'bad model')",
            "tasks_model_format",
        ),
        (
            "INSERT INTO tasks (prompt, model, priority) VALUES ('p', 'm', 11)",
            "tasks_priority_range",
        ),
        (
            "INSERT INTO tasks (prompt, model, max_attempts) VALUES ('p', 'm', 0)",
            "tasks_max_attempts_range",
        ),
        (
            "INSERT INTO tasks (prompt, model, attempts, max_attempts) VALUES ('p', 'm', 4, 3)",
            "tasks_attempts_within_max",
        ),
        (
            "INSERT INTO tasks (prompt, model) VALUES (repeat('x', 100001), 'm')",
            "tasks_prompt_length",
        ),
    ] {
        let error = client.batch_execute(sql).await.expect_err(sql);
        let db_error = error.as_db_error().expect("a database error");
        assert_eq!(db_error.constraint(), Some(constraint), "{sql}");
    }
}

#[tokio::test]
async fn a_check_violation_the_api_missed_is_still_a_user_error() {
    // attempts <= max_attempts can only be checked by the database: lowering
    // maxAttempts below the attempts already made must be refused, not a 500.
    let app = TestApp::new().await;
    let task = app
        .create(json!({ "prompt": "p", "model": "m", "maxAttempts": 5 }))
        .await;
    let client = app.db.client().await;
    let id: i64 = task["id"].as_str().unwrap().parse().unwrap();
    client
        .execute("UPDATE tasks SET attempts = 4 WHERE id = $1", &[&id])
        .await
        .unwrap();
    let response = app
        .gql(
            "mutation($id: ID!) { updateTask(id: $id, input: { maxAttempts: 2 }) { id } }",
            json!({ "id": task["id"] }),
        )
        .await;
    assert_eq!(error_code(&response), "BAD_USER_INPUT");
    assert_eq!(error_field(&response), "maxAttempts");
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains("tasks_"),
        "no constraint names leak: {message}"
    );
}

/// Puts a task in a state the API cannot (yet) put it in.
pub async fn set_status(app: &TestApp, id: &serde_json::Value, status: &str) {
    let client = app.db.client().await;
    let id: i64 = id
        .as_str()
        .expect("id is a string")
        .parse()
        .expect("numeric id");
    client
        .execute(
            &format!(
                "UPDATE tasks SET status = '{status}',
                    worker_id = CASE WHEN '{status}' = 'running' THEN 'test-worker' END
                 WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .expect("set status");
}
