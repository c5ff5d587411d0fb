//! Each tool's answers, beside the GraphQL API's for the same tasks.

use serde_json::{Value, json};

use super::connect;
use crate::harness::TestApp;

#[tokio::test]
async fn every_tool_answers_as_the_graphql_api_does() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let created = client
        .ok(
            "create_task",
            json!({
                "prompt": "hello", "model": "echo", "priority": 7, "system": "be brief",
                "temperature": 0.5, "max_tokens": 64, "timeout_seconds": 30,
                "max_attempts": 2, "run_at": "2030-01-01T00:00:00Z"
            }),
        )
        .await;
    assert_eq!(created["status"], "PENDING");
    assert_eq!(
        (created["priority"].clone(), created["max_attempts"].clone()),
        (json!(7), json!(2))
    );
    assert_eq!(created["system"], "be brief");
    assert_eq!(created["temperature"], 0.5);
    assert_eq!(created["run_at"], "2030-01-01T00:00:00Z");
    let id = created["id"].as_str().expect("ids are strings").to_owned();

    // The same id names the same task in the GraphQL API.
    let task = app
        .data(
            "query($id: ID!) { task(id: $id) { id prompt model priority maxTokens timeoutSeconds status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        task["task"],
        json!({ "id": id, "prompt": "hello", "model": "echo", "priority": 7,
                "maxTokens": 64, "timeoutSeconds": 30, "status": "PENDING" })
    );
    assert_eq!(client.ok("get_task", json!({ "id": id })).await, created);

    let cancelled = client.ok("cancel_task", json!({ "id": id })).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["error"], "cancelled before it ran");
    let retried = client.ok("retry_task", json!({ "id": id })).await;
    assert_eq!(retried["status"], "PENDING");
    assert_eq!(retried["error"], Value::Null);

    let models = client.ok("list_models", json!({})).await;
    let graphql_models = app.data("{ models { name provider } }", json!({})).await;
    assert_eq!(models["models"], graphql_models["models"]);
    assert!(!models["models"].as_array().expect("a list").is_empty());

    client
        .ok("create_task", json!({ "prompt": "two", "model": "echo" }))
        .await;
    let stats = client.ok("task_stats", json!({})).await;
    let graphql_stats = app
        .data(
            "{ taskStats { pending running succeeded failed cancelled oldestPendingAgeSeconds } }",
            json!({}),
        )
        .await;
    let graphql_stats = &graphql_stats["taskStats"];
    assert_eq!(stats["pending"], 2);
    for (tool_name, graphql_name) in [
        ("pending", "pending"),
        ("running", "running"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
    ] {
        assert_eq!(stats[tool_name], graphql_stats[graphql_name], "{tool_name}");
    }
    assert!(stats["oldest_pending_age_seconds"].is_number());
}

#[tokio::test]
async fn list_tasks_pages_newest_first_with_the_graphql_cursors() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let mut ids = Vec::new();
    for (prompt, model) in [("1", "a"), ("2", "a"), ("3", "b"), ("4", "a"), ("5", "b")] {
        let task = app
            .create(json!({ "prompt": prompt, "model": model }))
            .await;
        ids.push(task["id"].as_str().expect("id").to_owned());
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let page = client
            .ok("list_tasks", json!({ "first": 2, "after": after }))
            .await;
        pages += 1;
        for task in page["tasks"].as_array().expect("tasks") {
            seen.push(task["id"].as_str().expect("id").to_owned());
        }
        if page["next_cursor"].is_null() {
            break;
        }
        after = page["next_cursor"].clone();
        assert!(pages < 5, "paging ends");
    }
    assert_eq!(seen, ids, "every task once, newest first");
    assert_eq!(pages, 3);

    // A cursor the GraphQL API gave out continues the same list.
    let graphql = app
        .data("{ tasks(first: 2) { pageInfo { endCursor } } }", json!({}))
        .await;
    let cursor = &graphql["tasks"]["pageInfo"]["endCursor"];
    let page = client
        .ok("list_tasks", json!({ "first": 2, "after": cursor }))
        .await;
    let second: Vec<&str> = page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|task| task["id"].as_str())
        .collect();
    assert_eq!(second, [ids[2].as_str(), ids[3].as_str()]);

    let by_model = client.ok("list_tasks", json!({ "model": "b" })).await;
    assert_eq!(by_model["tasks"].as_array().map(Vec::len), Some(2));
    client.ok("cancel_task", json!({ "id": ids[0] })).await;
    let by_status = client
        .ok("list_tasks", json!({ "status": "CANCELLED" }))
        .await;
    assert_eq!(by_status["tasks"][0]["id"], ids[0].as_str());
    assert_eq!(by_status["tasks"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_status["next_cursor"], Value::Null);
}
