//! Tenants' quotas: creates a minute and tasks pending, set in the database
//! and through `taskrunner tenant set`, checked by createTask.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use taskrunner::auth::{Principal, Role};

use crate::harness::{TestApp, error_code};
use crate::process::Launch;

const CREATE: &str =
    "mutation($input: CreateTaskInput!) { createTask(input: $input) { id status } }";

async fn create_as(app: &TestApp, tenant: &str) -> Value {
    app.gql_as(
        &Principal::local(tenant, Role::Member),
        CREATE,
        json!({ "input": { "prompt": "p", "model": "m" } }),
    )
    .await
}

fn retry_after(response: &Value) -> u64 {
    response["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("retryAfterSeconds in {response:#}"))
}

async fn sql(app: &TestApp, statement: &str) {
    app.db
        .client()
        .await
        .batch_execute(statement)
        .await
        .expect("statement runs");
}

async fn pending_of(app: &TestApp, tenant: &str) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM tasks WHERE tenant = $1 AND status = 'pending'",
            &[&tenant],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn over_creates_per_minute_is_rate_limited_until_the_schedule_allows() {
    let app = TestApp::new().await;
    sql(
        &app,
        "INSERT INTO tenants (name, creates_per_minute) VALUES ('r', 3)",
    )
    .await;

    for n in 1..=3 {
        let response = create_as(&app, "r").await;
        assert!(response.get("errors").is_none(), "create {n}: {response:#}");
    }
    let refused = create_as(&app, "r").await;
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused:#}");
    let wait = retry_after(&refused);
    // Three a minute: the next is due 20 s after the first.
    assert!((1..=20).contains(&wait), "waits {wait} s");
    assert_eq!(
        pending_of(&app, "r").await,
        3,
        "the refused create made nothing"
    );
    // Another tenant is not held back.
    let other = create_as(&app, "default").await;
    assert!(other.get("errors").is_none(), "{other:#}");

    // A minute passes.
    sql(
        &app,
        "UPDATE tenants SET creates_due_at = creates_due_at - interval '60 seconds' WHERE name = 'r'",
    )
    .await;
    let admitted = create_as(&app, "r").await;
    assert!(admitted.get("errors").is_none(), "{admitted:#}");
    assert_eq!(pending_of(&app, "r").await, 4);
}

#[tokio::test]
async fn max_pending_set_by_the_binary_refuses_creates_until_a_task_leaves_pending() {
    let app = TestApp::new().await;
    let mut set = Launch::command_line(["tenant", "set", "p", "--max-pending", "2"])
        .database(&app.db.url)
        .spawn();
    let exited = set
        .wait_for_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("tenant set ends; its log:\n{}", set.tail(30)));
    assert!(exited.status.success(), "{}", set.tail(30));
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT max_pending, creates_per_minute FROM tenants WHERE name = 'p'",
            &[],
        )
        .await
        .expect("the tenant exists");
    assert_eq!(row.get::<_, Option<i32>>(0), Some(2));
    assert_eq!(row.get::<_, Option<i32>>(1), None);

    let first = create_as(&app, "p").await;
    let id = first["data"]["createTask"]["id"].clone();
    assert!(first.get("errors").is_none(), "{first:#}");
    let second = create_as(&app, "p").await;
    assert!(second.get("errors").is_none(), "{second:#}");
    let refused = create_as(&app, "p").await;
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused:#}");
    assert_eq!(
        retry_after(&refused),
        taskrunner::tenants::MAX_PENDING_RETRY_SECONDS
    );

    let cancelled = app
        .gql_as(
            &Principal::local("p", Role::Member),
            "mutation($id: ID!) { cancelTask(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        cancelled["data"]["cancelTask"]["status"], "CANCELLED",
        "{cancelled:#}"
    );
    let admitted = create_as(&app, "p").await;
    assert!(admitted.get("errors").is_none(), "{admitted:#}");

    // `none` clears the limit.
    sql(
        &app,
        "UPDATE tenants SET max_pending = NULL WHERE name = 'p'",
    )
    .await;
    let unlimited = create_as(&app, "p").await;
    assert!(unlimited.get("errors").is_none(), "{unlimited:#}");
}

#[tokio::test]
async fn tenant_set_none_clears_a_limit_and_list_shows_pending() {
    let app = TestApp::new().await;
    sql(
        &app,
        "INSERT INTO tenants (name, max_pending, creates_per_minute) VALUES ('n', 7, 9)",
    )
    .await;
    create_as(&app, "n").await;
    let mut set = Launch::command_line(["tenant", "set", "n", "--creates-per-minute", "none"])
        .database(&app.db.url)
        .spawn();
    let exited = set
        .wait_for_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("tenant set ends; its log:\n{}", set.tail(30)));
    assert!(exited.status.success(), "{}", set.tail(30));
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT max_pending, creates_per_minute FROM tenants WHERE name = 'n'",
            &[],
        )
        .await
        .expect("the tenant exists");
    assert_eq!(row.get::<_, Option<i32>>(0), Some(7), "left as it was");
    assert_eq!(row.get::<_, Option<i32>>(1), None, "cleared");

    let (mut command, _dir) = Launch::command_line(["tenant", "list"])
        .database(&app.db.url)
        .into_command();
    let output = command.output().await.expect("tenant list runs");
    assert!(output.status.success());
    let listed = String::from_utf8_lossy(&output.stdout);
    let line = listed
        .lines()
        .find(|line| line.starts_with("n "))
        .unwrap_or_else(|| panic!("n listed:\n{listed}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words, ["n", "7", "none", "1"], "{listed}");

    let bad = Launch::command_line(["tenant", "set", "n", "--max-pending", "0"])
        .database(&app.db.url)
        .into_command()
        .0
        .output()
        .await
        .expect("runs");
    assert!(!bad.status.success(), "0 is not a limit");
}

#[tokio::test]
async fn concurrent_creates_never_take_a_tenant_over_max_pending() {
    let app = TestApp::new().await;
    sql(
        &app,
        "INSERT INTO tenants (name, max_pending) VALUES ('race', 5)",
    )
    .await;
    let responses = join_all((0..20).map(|_| create_as(&app, "race"))).await;
    let created = responses
        .iter()
        .filter(|response| response.get("errors").is_none())
        .count();
    for response in &responses {
        if response.get("errors").is_some() {
            assert_eq!(error_code(response), "RATE_LIMITED", "{response:#}");
        }
    }
    assert_eq!(created, 5);
    assert_eq!(pending_of(&app, "race").await, 5);
}

#[tokio::test]
async fn a_limit_set_while_a_tenant_creates_applies_within_a_second() {
    let app = TestApp::new().await;
    // Read as unlimited, and remembered so for a second.
    let first = create_as(&app, "late").await;
    assert!(first.get("errors").is_none(), "{first:#}");
    sql(
        &app,
        "INSERT INTO tenants (name, max_pending) VALUES ('late', 1)
         ON CONFLICT (name) DO UPDATE SET max_pending = 1",
    )
    .await;
    let set = std::time::Instant::now();
    loop {
        let response = create_as(&app, "late").await;
        if response.get("errors").is_some() {
            assert_eq!(error_code(&response), "RATE_LIMITED", "{response:#}");
            break;
        }
        assert!(
            set.elapsed() < Duration::from_secs(2),
            "the limit was not applied within a second (and a margin)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From then on every create is refused.
    assert_eq!(error_code(&create_as(&app, "late").await), "RATE_LIMITED");
}
