//! Each tool over HTTP: its schema, its answers beside the GraphQL API's,
//! tool errors with GraphQL's codes and messages, and protocol errors for
//! calls that do not fit.

use std::collections::BTreeSet;

use rmcp::model::ErrorCode;
use rmcp::service::ServiceError;
use serde_json::{Value, json};

use super::connect;
use crate::harness::TestApp;

/// The JSON types a property of a schema allows.
fn types(property: &Value) -> Vec<String> {
    match &property["type"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn names(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn tools_are_listed_with_their_input_schemas() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let tools = client.service.list_all_tools().await.expect("tools/list");
    let listed: BTreeSet<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(
        listed,
        BTreeSet::from([
            "cancel_task",
            "create_task",
            "get_task",
            "list_models",
            "list_tasks",
            "retry_task",
            "task_stats",
            "wait_for_task",
        ])
    );
    let schema = |name: &str| -> Value {
        let tool = tools.iter().find(|tool| tool.name == name).expect("listed");
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 40),
            "{name} says what it does"
        );
        Value::Object(tool.input_schema.as_ref().clone())
    };

    let create = schema("create_task");
    assert_eq!(create["type"], "object");
    assert_eq!(create["additionalProperties"], false);
    assert_eq!(
        names(&create["required"]),
        BTreeSet::from(["model".into(), "prompt".into()])
    );
    for (argument, kind) in [
        ("prompt", "string"),
        ("model", "string"),
        ("priority", "integer"),
        ("system", "string"),
        ("temperature", "number"),
        ("max_tokens", "integer"),
        ("run_at", "string"),
        ("timeout_seconds", "integer"),
        ("max_attempts", "integer"),
    ] {
        let property = &create["properties"][argument];
        assert!(
            types(property).iter().any(|t| t == kind),
            "{argument}: {property}"
        );
        assert!(
            property["description"].is_string(),
            "{argument} is described"
        );
    }
    assert_eq!(create["properties"]["run_at"]["format"], "date-time");
    assert_eq!(create["properties"].as_object().map(|p| p.len()), Some(9));

    for name in ["get_task", "cancel_task", "retry_task"] {
        let by_id = schema(name);
        assert_eq!(
            names(&by_id["required"]),
            BTreeSet::from(["id".into()]),
            "{name}"
        );
        assert_eq!(types(&by_id["properties"]["id"]), ["string"], "{name}");
    }

    let list = schema("list_tasks");
    assert!(list.get("required").is_none_or(|r| names(r).is_empty()));
    let statuses: BTreeSet<String> = list["$defs"]["TaskStatus"]["oneOf"]
        .as_array()
        .expect("the statuses")
        .iter()
        .filter_map(|status| status["const"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        statuses,
        ["CANCELLED", "FAILED", "PENDING", "RUNNING", "SUCCEEDED"]
            .map(String::from)
            .into()
    );
    for (argument, kind) in [
        ("model", "string"),
        ("first", "integer"),
        ("after", "string"),
    ] {
        assert!(
            types(&list["properties"][argument])
                .iter()
                .any(|t| t == kind),
            "{argument}"
        );
    }

    let wait = schema("wait_for_task");
    assert_eq!(names(&wait["required"]), BTreeSet::from(["id".into()]));
    assert!(
        types(&wait["properties"]["timeout_seconds"])
            .iter()
            .any(|t| t == "integer")
    );

    for name in ["list_models", "task_stats"] {
        assert_eq!(
            schema(name)["properties"],
            json!({}),
            "{name} takes nothing"
        );
    }
    for tool in &tools {
        let read_only = tool
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false);
        let reader = [
            "get_task",
            "list_tasks",
            "wait_for_task",
            "list_models",
            "task_stats",
        ]
        .contains(&tool.name.as_ref());
        assert_eq!(read_only, reader, "{}", tool.name);
    }
}

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

#[tokio::test]
async fn broken_rules_are_tool_errors_with_the_graphql_codes_and_messages() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let bad = client
        .tool_error(
            "create_task",
            json!({ "prompt": "p", "model": "echo", "priority": 11 }),
        )
        .await;
    assert_eq!(
        bad,
        json!({ "code": "BAD_USER_INPUT", "field": "priority",
                "message": "invalid priority: must be between 1 and 10, got 11" })
    );
    let graphql = app
        .gql(
            r#"mutation { createTask(input: { prompt: "p", model: "echo", priority: 11 }) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(graphql["errors"][0]["message"], bad["message"]);
    assert_eq!(graphql["errors"][0]["extensions"]["code"], bad["code"]);

    // Fields are named as the tool's arguments are.
    let cases = [
        (
            "create_task",
            json!({ "prompt": "p", "model": "echo", "max_attempts": 0 }),
            "max_attempts",
        ),
        (
            "create_task",
            json!({ "prompt": "  ", "model": "echo" }),
            "prompt",
        ),
        (
            "create_task",
            json!({ "prompt": "p", "model": "no spaces" }),
            "model",
        ),
        (
            "create_task",
            json!({ "prompt": "p", "model": "echo", "temperature": 2.5 }),
            "temperature",
        ),
        (
            "create_task",
            json!({ "prompt": "p", "model": "echo", "run_at": "0000-06-01T00:00:00Z" }),
            "run_at",
        ),
        ("get_task", json!({ "id": "abc" }), "id"),
        ("cancel_task", json!({ "id": "-4" }), "id"),
        ("list_tasks", json!({ "first": 101 }), "first"),
        ("list_tasks", json!({ "after": "not-a-cursor" }), "after"),
        ("list_tasks", json!({ "model": "a\u{0}b" }), "model"),
        (
            "wait_for_task",
            json!({ "id": "1", "timeout_seconds": 601 }),
            "timeout_seconds",
        ),
        (
            "wait_for_task",
            json!({ "id": "1", "timeout_seconds": -1 }),
            "timeout_seconds",
        ),
    ];
    for (tool, arguments, field) in cases {
        let error = client.tool_error(tool, arguments.clone()).await;
        assert_eq!(
            error["code"], "BAD_USER_INPUT",
            "{tool} {arguments}: {error}"
        );
        assert_eq!(error["field"], field, "{tool} {arguments}: {error}");
        let message = error["message"].as_str().expect("a message");
        assert!(
            message.starts_with(&format!("invalid {field}: ")),
            "{message}"
        );
    }

    let missing = client
        .tool_error("get_task", json!({ "id": "999999" }))
        .await;
    assert_eq!(
        missing,
        json!({ "code": "NOT_FOUND", "message": "no task has id 999999" })
    );
    let created = client
        .ok("create_task", json!({ "prompt": "p", "model": "echo" }))
        .await;
    let id = created["id"].clone();
    let conflict = client.tool_error("retry_task", json!({ "id": id })).await;
    let id_text = id.as_str().expect("id");
    assert_eq!(
        conflict,
        json!({ "code": "CONFLICT",
                "message": format!("task {id_text} is PENDING; only FAILED or CANCELLED tasks can be retried") })
    );
    client.ok("cancel_task", json!({ "id": id })).await;
    let again = client.tool_error("cancel_task", json!({ "id": id })).await;
    assert_eq!(again["code"], "CONFLICT");

    // Nothing broken was stored.
    let stats = client.ok("task_stats", json!({})).await;
    assert_eq!(
        (stats["pending"].clone(), stats["cancelled"].clone()),
        (json!(0), json!(1))
    );
}

#[tokio::test]
async fn calls_that_do_not_fit_a_schema_are_protocol_errors() {
    let app = TestApp::new().await;
    let (_served, client) = connect(&app).await;
    let cases = [
        ("no_such_tool", json!({})),
        ("get_task", json!({ "id": 5 })),
        ("get_task", json!({})),
        ("create_task", json!({ "model": "echo" })),
        (
            "create_task",
            json!({ "prompt": "p", "model": "echo", "max_token": 5 }),
        ),
        (
            "create_task",
            json!({ "prompt": "p", "model": "echo", "priority": "high" }),
        ),
        ("list_tasks", json!({ "status": "DONE" })),
        (
            "wait_for_task",
            json!({ "id": "1", "timeout_seconds": 1.5 }),
        ),
    ];
    for (tool, arguments) in cases {
        match client.try_call(tool, arguments.clone()).await {
            Err(ServiceError::McpError(error)) => {
                assert_eq!(
                    error.code,
                    ErrorCode::INVALID_PARAMS,
                    "{tool} {arguments}: {error:?}"
                );
            }
            other => panic!("{tool} {arguments}: expected a protocol error, got {other:?}"),
        }
    }
    let stats = client.ok("task_stats", json!({})).await;
    assert_eq!(stats["pending"], 0, "nothing was created");
}
