//! Broken rules as tool errors with the GraphQL API's codes and messages;
//! calls that do not fit a tool's schema as protocol errors.

use rmcp::model::ErrorCode;
use rmcp::service::ServiceError;
use serde_json::json;

use super::connect;
use crate::harness::TestApp;

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
