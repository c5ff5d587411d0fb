//! Tenants cannot reach each other's tasks: every query, mutation,
//! subscription and MCP tool, as another tenant, answers for a task of
//! tenant A exactly as it answers for an id no task has.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use taskrunner::auth::{Principal, Role};
use tokio::net::TcpListener;

use crate::harness::{TestApp, error_code};
use crate::mcp::{Client, mcp_url};

/// How long a subscription may take to answer before it counts as broken.
const WITHIN: Duration = Duration::from_secs(20);

pub fn member(tenant: &str) -> Principal {
    Principal::token(tenant, Role::Member, 1)
}

pub fn reader(tenant: &str) -> Principal {
    Principal::token(tenant, Role::Reader, 2)
}

pub fn admin(tenant: &str) -> Principal {
    Principal::token(tenant, Role::Admin, 3)
}

/// Creates a task as `principal` and returns its id.
pub async fn create_as(app: &TestApp, principal: &Principal, prompt: &str) -> String {
    let response = app
        .gql_as(
            principal,
            "mutation($input: CreateTaskInput!) { createTask(input: $input) { id tenant } }",
            json!({ "input": { "prompt": prompt, "model": "m" } }),
        )
        .await;
    assert!(response.get("errors").is_none(), "{response:#}");
    assert_eq!(
        response["data"]["createTask"]["tenant"],
        principal.tenant(),
        "a task belongs to its creator's tenant"
    );
    response["data"]["createTask"]["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// `response` with the task id `id` written as `<id>`, so that answers about
/// two ids can be compared.
fn anonymous(response: &Value, id: &str) -> String {
    response
        .to_string()
        .replace(&format!("id {id}"), "id <id>")
        .replace(&format!("\"{id}\""), "\"<id>\"")
}

/// Every operation that names one task, with the variables it takes.
const BY_ID: [(&str, &str); 8] = [
    ("task", "query($id: ID!) { task(id: $id) { id tenant } }"),
    (
        "updateTask",
        "mutation($id: ID!) { updateTask(id: $id, input: { priority: 9 }) { id } }",
    ),
    (
        "cancelTask",
        "mutation($id: ID!) { cancelTask(id: $id) { id } }",
    ),
    (
        "retryTask",
        "mutation($id: ID!) { retryTask(id: $id) { id } }",
    ),
    ("deleteTask", "mutation($id: ID!) { deleteTask(id: $id) }"),
    (
        "taskUpdated",
        "subscription($id: ID!) { taskUpdated(id: $id) { id status } }",
    ),
    (
        "taskOutput",
        "subscription($id: ID!) { taskOutput(id: $id) { taskId text done } }",
    ),
    (
        "partialResult",
        "query($id: ID!) { task(id: $id) { partialResult } }",
    ),
];

/// The first answer of `query` as `principal`: a query or mutation's one
/// answer, a subscription's first.
async fn first_answer(app: &TestApp, principal: &Principal, query: &str, id: &str) -> Value {
    if !query.starts_with("subscription") {
        return app.gql_as(principal, query, json!({ "id": id })).await;
    }
    let request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(json!({ "id": id })))
        .data(principal.clone());
    let mut stream = app.schema.execute_stream(request, None);
    let response = tokio::time::timeout(WITHIN, stream.next())
        .await
        .expect("an answer in time")
        .expect("an answer");
    serde_json::to_value(response).expect("JSON")
}

#[tokio::test]
async fn another_tenants_task_is_answered_as_a_missing_one_by_every_operation() {
    let app = TestApp::new().await;
    let (a, b) = (member("a"), member("b"));
    let theirs = create_as(&app, &a, "a's secret").await;
    let before = app
        .gql_as(
            &a,
            "query($id: ID!) { task(id: $id) { status priority updatedAt } }",
            json!({ "id": theirs }),
        )
        .await;
    let missing = (theirs.parse::<i64>().expect("numeric") + 1_000_000).to_string();

    for (name, query) in BY_ID {
        let other = first_answer(&app, &b, query, &theirs).await;
        let none = first_answer(&app, &b, query, &missing).await;
        assert_eq!(
            anonymous(&other, &theirs),
            anonymous(&none, &missing),
            "{name}: another tenant's task must look missing"
        );
        assert!(
            !other.to_string().contains("a's secret"),
            "{name} leaked: {other}"
        );
        if name != "task" && name != "partialResult" {
            assert_eq!(error_code(&other), "NOT_FOUND", "{name}: {other}");
        }
    }

    // Nothing B tried changed A's task, and A still reaches it.
    let after = app
        .gql_as(
            &a,
            "query($id: ID!) { task(id: $id) { status priority updatedAt } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_eq!(before, after);
    assert_eq!(after["data"]["task"]["status"], "PENDING");
}

#[tokio::test]
async fn lists_counts_and_stats_hold_only_the_tenants_own_tasks() {
    let app = TestApp::new().await;
    let (a, b) = (member("a"), member("b"));
    for n in 0..3 {
        create_as(&app, &a, &format!("a{n}")).await;
    }
    let own = create_as(&app, &b, "b0").await;
    const LIST: &str = "query($filter: TaskFilter) { tasks(first: 100, filter: $filter) { totalCount nodes { id tenant } } }";

    let listed = app.gql_as(&b, LIST, json!({})).await;
    assert_eq!(listed["data"]["tasks"]["totalCount"], 1, "{listed}");
    assert_eq!(listed["data"]["tasks"]["nodes"][0]["id"], own);
    // Naming another tenant in the filter does not widen the scope.
    let asked = app
        .gql_as(&b, LIST, json!({ "filter": { "tenant": "a" } }))
        .await;
    assert_eq!(asked["data"]["tasks"]["totalCount"], 0, "{asked}");

    // An admin sees all, and may filter by tenant.
    let all = app.gql_as(&admin("ops"), LIST, json!({})).await;
    assert_eq!(all["data"]["tasks"]["totalCount"], 4, "{all}");
    let only_a = app
        .gql_as(&admin("ops"), LIST, json!({ "filter": { "tenant": "a" } }))
        .await;
    assert_eq!(only_a["data"]["tasks"]["totalCount"], 3, "{only_a}");
    let bad = app
        .gql_as(
            &admin("ops"),
            LIST,
            json!({ "filter": { "tenant": "Not A Tenant" } }),
        )
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");

    // Cancel one of A's: finished counts are per tenant too.
    let a_task = app.gql_as(&a, LIST, json!({})).await["data"]["tasks"]["nodes"][0]["id"].clone();
    let cancelled = app
        .gql_as(
            &a,
            "mutation($id: ID!) { cancelTask(id: $id) { status } }",
            json!({ "id": a_task }),
        )
        .await;
    assert_eq!(cancelled["data"]["cancelTask"]["status"], "CANCELLED");
    const STATS: &str = "{ taskStats { pending cancelled } }";
    let stats_b = app.gql_as(&b, STATS, json!({})).await;
    assert_eq!(
        stats_b["data"]["taskStats"],
        json!({ "pending": 1, "cancelled": 0 })
    );
    let stats_a = app.gql_as(&a, STATS, json!({})).await;
    assert_eq!(
        stats_a["data"]["taskStats"],
        json!({ "pending": 2, "cancelled": 1 })
    );
    let stats_all = app.gql_as(&admin("ops"), STATS, json!({})).await;
    assert_eq!(
        stats_all["data"]["taskStats"],
        json!({ "pending": 3, "cancelled": 1 })
    );
}

#[tokio::test]
async fn a_cursor_from_one_tenant_pages_only_the_others_own_tasks() {
    let app = TestApp::new().await;
    let (a, b) = (member("a"), member("b"));
    let mut b_ids = Vec::new();
    for n in 0..3 {
        b_ids.push(create_as(&app, &b, &format!("b{n}")).await);
        create_as(&app, &a, &format!("a{n}")).await;
    }
    const PAGE: &str =
        "query($after: String) { tasks(first: 100, after: $after) { nodes { id tenant } } }";
    let a_page = app
        .gql_as(
            &a,
            "{ tasks(first: 1) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await;
    let cursor = a_page["data"]["tasks"]["pageInfo"]["endCursor"].clone();
    let paged = app.gql_as(&b, PAGE, json!({ "after": cursor })).await;
    let nodes = paged["data"]["tasks"]["nodes"].as_array().expect("nodes");
    assert!(!nodes.is_empty(), "{paged}");
    assert!(
        nodes.iter().all(|node| node["tenant"] == "b"),
        "a cursor carries no right to another tenant's tasks: {paged}"
    );
}

#[tokio::test]
async fn readers_read_their_tenant_and_change_nothing() {
    let app = TestApp::new().await;
    let id = create_as(&app, &member("a"), "p").await;
    let reading = app
        .gql_as(
            &reader("a"),
            "query($id: ID!) { task(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(reading["data"]["task"]["id"], id);
    for (name, query) in BY_ID.iter().filter(|(_, q)| q.starts_with("mutation")) {
        let refused = app.gql_as(&reader("a"), query, json!({ "id": id })).await;
        assert_eq!(error_code(&refused), "FORBIDDEN", "{name}: {refused}");
    }
    let create = app
        .gql_as(
            &reader("a"),
            "mutation { createTask(input: { prompt: \"p\", model: \"m\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&create), "FORBIDDEN", "{create}");
}

#[tokio::test]
async fn task_events_carry_only_the_subscribers_tenant() {
    let app = TestApp::new().await;
    let _served = app.serve().await; // the event backbone's listener
    let (a, b) = (member("a"), member("b"));
    let request =
        async_graphql::Request::new("subscription { taskEvents { type task { id tenant } } }")
            .data(b.clone());
    let mut events = app.schema.execute_stream(request, None);
    // The hub only reports changes made after the subscription starts;
    // create until B's own event arrives, with A's created first each time.
    let mut b_ids = Vec::new();
    let seen = tokio::time::timeout(WITHIN, async {
        loop {
            create_as(&app, &a, "a").await;
            b_ids.push(create_as(&app, &b, "b").await);
            tokio::select! {
                event = events.next() => return event.expect("an event"),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("an event in time");
    let seen = serde_json::to_value(seen).expect("JSON");
    assert_eq!(seen["data"]["taskEvents"]["task"]["tenant"], "b", "{seen}");
    // Everything after is B's too.
    for _ in 0..3 {
        create_as(&app, &a, "a").await;
        create_as(&app, &b, "b").await;
    }
    for _ in 0..3 {
        let event = tokio::time::timeout(WITHIN, events.next())
            .await
            .expect("an event in time")
            .expect("an event");
        let event = serde_json::to_value(event).expect("JSON");
        assert_eq!(
            event["data"]["taskEvents"]["task"]["tenant"], "b",
            "{event}"
        );
    }
}

/// `app` served with `/mcp` acting as `principal`, and an MCP client of it.
async fn mcp_as(app: &TestApp, principal: Principal) -> (tokio::task::JoinHandle<()>, Client) {
    let options = taskrunner::http::HttpOptions {
        mcp: taskrunner::mcp::HttpSettings {
            fallback: Some(principal),
            ..Default::default()
        },
        ..Default::default()
    };
    let router = taskrunner::http::router_with(app.state.clone(), options);
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = socket.local_addr().expect("bound").to_string();
    let server = tokio::spawn(async move {
        let _ = axum::serve(socket, router).await;
    });
    (server, Client::http(&mcp_url(&address)).await)
}

#[tokio::test]
async fn mcp_tools_answer_for_another_tenants_task_as_for_a_missing_one() {
    let app = TestApp::new().await;
    let theirs = create_as(&app, &member("a"), "a's secret").await;
    let own = create_as(&app, &member("b"), "b's").await;
    let missing = (theirs.parse::<i64>().expect("numeric") + 1_000_000).to_string();
    let (server, client) = mcp_as(&app, member("b")).await;

    for tool in ["get_task", "cancel_task", "retry_task", "wait_for_task"] {
        let mut arguments = json!({ "id": theirs });
        let mut missing_arguments = json!({ "id": missing });
        if tool == "wait_for_task" {
            arguments["timeout_seconds"] = json!(0);
            missing_arguments["timeout_seconds"] = json!(0);
        }
        let other = client.tool_error(tool, arguments).await;
        let none = client.tool_error(tool, missing_arguments).await;
        assert_eq!(other["code"], "NOT_FOUND", "{tool}: {other}");
        assert_eq!(
            anonymous(&other, &theirs),
            anonymous(&none, &missing),
            "{tool}: another tenant's task must look missing"
        );
    }
    let listed = client.ok("list_tasks", json!({})).await;
    let ids: Vec<&Value> = listed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|task| &task["id"])
        .collect();
    assert_eq!(ids, [&json!(own)], "{listed}");
    let stats = client.ok("task_stats", json!({})).await;
    assert_eq!(stats["pending"], 1, "{stats}");
    let created = client
        .ok("create_task", json!({ "prompt": "p", "model": "m" }))
        .await;
    assert_eq!(created["tenant"], "b", "{created}");
    server.abort();
}

/// Every task object anywhere in `value` (anything with a `tenant`).
fn tenants_in(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(tenant)) = map.get("tenant") {
                found.push(tenant.clone());
            }
            map.values().for_each(|v| tenants_in(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| tenants_in(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn ten_thousand_random_operations_by_four_tenants_never_cross() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let app = TestApp::new().await;
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let names = ["t0", "t1", "t2", "t3"];
    let callers: Vec<Principal> = names
        .iter()
        .enumerate()
        .map(|(n, name)| if n == 3 { reader(name) } else { member(name) })
        .collect();
    // Every id ever created, with its tenant: callers pick ids of any tenant.
    let mut owners: Vec<(String, &str)> = Vec::new();
    for (n, caller) in callers.iter().enumerate() {
        let writer = member(names[n]);
        for k in 0..5 {
            owners.push((
                create_as(&app, &writer, &format!("{}-{k}", caller.tenant())).await,
                names[n],
            ));
        }
    }
    const TASK: &str = "query($id: ID!) { task(id: $id) { id tenant prompt } }";
    const LIST: &str = "query($filter: TaskFilter, $after: String) { tasks(first: 25, after: $after, filter: $filter) { totalCount nodes { id tenant prompt } pageInfo { endCursor } } }";
    const STATS: &str = "{ taskStats { pending running succeeded failed cancelled } }";
    let mut counts = [0usize; 9];
    let mut cursors: Vec<Value> = vec![Value::Null];
    for op in 0..10_000 {
        let who = rng.random_range(0..callers.len());
        let caller = &callers[who];
        let own = names[who];
        let (id, owner) = owners[rng.random_range(0..owners.len())].clone();
        let kind = rng.random_range(0..9);
        counts[kind] += 1;
        let response = match kind {
            0 => {
                let prompt = format!("{own}-op{op}");
                let response = app
                    .gql_as(
                        caller,
                        "mutation($input: CreateTaskInput!) { createTask(input: $input) { id tenant prompt } }",
                        json!({ "input": { "prompt": prompt, "model": "m" } }),
                    )
                    .await;
                if let Some(id) = response["data"]["createTask"]["id"].as_str() {
                    owners.push((id.to_owned(), own));
                }
                response
            }
            1 | 2 => app.gql_as(caller, TASK, json!({ "id": id })).await,
            3 => {
                let filter = if rng.random_bool(0.5) {
                    json!({ "tenant": names[rng.random_range(0..names.len())] })
                } else {
                    json!({ "status": ["PENDING", "CANCELLED"] })
                };
                let after = cursors[rng.random_range(0..cursors.len())].clone();
                let response = app
                    .gql_as(caller, LIST, json!({ "filter": filter, "after": after }))
                    .await;
                let cursor = &response["data"]["tasks"]["pageInfo"]["endCursor"];
                if cursor.is_string() && cursors.len() < 200 {
                    cursors.push(cursor.clone());
                }
                response
            }
            4 => app.gql_as(caller, STATS, json!({})).await,
            5 => {
                app.gql_as(caller, "mutation($id: ID!) { cancelTask(id: $id) { id tenant prompt } }", json!({ "id": id }))
                    .await
            }
            6 => {
                app.gql_as(caller, "mutation($id: ID!) { retryTask(id: $id) { id tenant prompt } }", json!({ "id": id }))
                    .await
            }
            7 => {
                app.gql_as(
                    caller,
                    "mutation($id: ID!) { updateTask(id: $id, input: { priority: 7 }) { id tenant prompt } }",
                    json!({ "id": id }),
                )
                .await
            }
            _ => {
                app.gql_as(caller, "mutation($id: ID!) { deleteTask(id: $id) }", json!({ "id": id }))
                    .await
            }
        };
        let context = || {
            format!(
                "op {op} (seed {seed}): {} on {id} of {owner}: {response}",
                caller.tenant()
            )
        };
        // No task of another tenant, anywhere in the answer.
        let mut seen = Vec::new();
        tenants_in(&response, &mut seen);
        assert!(seen.iter().all(|tenant| tenant == own), "{}", context());
        let text = response.to_string();
        for other in names.iter().filter(|name| **name != own) {
            assert!(!text.contains(&format!("\"{other}-")), "{}", context());
        }
        // Another tenant's task is NOT_FOUND (or null), never CONFLICT or
        // FORBIDDEN for it specifically: readers are refused before lookup.
        if owner != own && (1..=2).contains(&kind) {
            assert!(response["data"]["task"].is_null(), "{}", context());
        }
        if owner != own && (5..=8).contains(&kind) {
            let code = error_code(&response);
            let expected = if caller.role() == Role::Reader {
                "FORBIDDEN"
            } else {
                "NOT_FOUND"
            };
            assert_eq!(code, expected, "{}", context());
        }
    }
    assert!(
        counts.iter().all(|&n| n > 500),
        "every kind ran: {counts:?}"
    );
}
