//! The tools `tools/list` shows, and the JSON Schemas of their arguments.

use std::collections::BTreeSet;

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
            "create_tasks",
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
        ("idempotency_key", "string"),
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
    assert_eq!(create["properties"].as_object().map(|p| p.len()), Some(10));

    let create_many = schema("create_tasks");
    assert_eq!(create_many["additionalProperties"], false);
    assert_eq!(
        names(&create_many["required"]),
        BTreeSet::from(["inputs".into()])
    );
    assert_eq!(types(&create_many["properties"]["inputs"]), ["array"]);
    // Each input is `create_task`'s arguments.
    let item = create_many["properties"]["inputs"]["items"]["$ref"]
        .as_str()
        .and_then(|reference| reference.strip_prefix("#/$defs/"))
        .expect("inputs' items refer to a definition");
    let each = &create_many["$defs"][item];
    assert_eq!(each["additionalProperties"], false);
    assert_eq!(each["properties"], create["properties"]);
    assert_eq!(each["required"], create["required"]);

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
