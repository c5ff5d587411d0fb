//! Keyset pagination: forward and backward across many pages, with every
//! ordering, every filter, ties in the sort key, and rows inserted meanwhile.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::harness::{TestApp, error_code, error_field};

const LIST: &str = r#"
query($first: Int, $after: String, $last: Int, $before: String, $filter: TaskFilter, $orderBy: TaskOrder) {
  tasks(first: $first, after: $after, last: $last, before: $before, filter: $filter, orderBy: $orderBy) {
    edges { cursor node { id } }
    nodes { id }
    pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
    totalCount
  }
}"#;

/// A row as the test sees it, to work out the expected order in Rust.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    model: String,
    priority: i16,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// 157 tasks with many ties: created_at repeats in threes, updated_at in
/// fives, priority cycles 1..10; two models; every status.
async fn seed(app: &TestApp) -> Vec<Row> {
    let client = app.db.client().await;
    client
        .batch_execute(
            "INSERT INTO tasks (prompt, model, priority, status, created_at, updated_at, worker_id)
             SELECT 'prompt ' || g,
                    CASE WHEN g % 3 = 0 THEN 'llama3.1:8b' ELSE 'gpt-4o' END,
                    (g * 7 % 10) + 1,
                    (ARRAY['pending','running','succeeded','failed','cancelled'])[g % 5 + 1]::task_status,
                    timestamptz '2026-01-01 00:00:00+00' + (g / 3) * interval '1 minute',
                    timestamptz '2026-02-01 00:00:00+00' - (g / 5) * interval '1 second' + interval '0.000001 second' * (g % 2),
                    CASE WHEN g % 5 = 1 THEN 'seed-worker' END
             FROM generate_series(1, 157) AS g",
        )
        .await
        .expect("seed");
    client
        .query(
            "SELECT id, model, priority, status::text, (extract(epoch FROM created_at) * 1000000)::bigint, (extract(epoch FROM updated_at) * 1000000)::bigint FROM tasks",
            &[],
        )
        .await
        .expect("read back")
        .iter()
        .map(|row| Row {
            id: row.get(0),
            model: row.get(1),
            priority: row.get(2),
            status: row.get(3),
            created_at: micros(row.get(4)),
            updated_at: micros(row.get(5)),
        })
        .collect()
}

fn micros(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(value).expect("a timestamp in range")
}

fn expected(rows: &[Row], field: &str, direction: &str, keep: &dyn Fn(&Row) -> bool) -> Vec<i64> {
    let mut rows: Vec<&Row> = rows.iter().filter(|row| keep(row)).collect();
    rows.sort_by_key(|row| {
        let key = match field {
            "CREATED_AT" => row.created_at.timestamp_micros(),
            "UPDATED_AT" => row.updated_at.timestamp_micros(),
            _ => i64::from(row.priority),
        };
        (key, row.id)
    });
    if direction == "DESC" {
        rows.reverse();
    }
    rows.iter().map(|row| row.id).collect()
}

fn ids(page: &Value) -> Vec<i64> {
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| {
            edge["node"]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("numeric")
        })
        .collect()
}

/// Walks the whole list forward, checking pageInfo on every page.
async fn walk_forward(app: &TestApp, size: i64, filter: &Value, order: &Value) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut after = Value::Null;
    for page_number in 0.. {
        let data = app
            .data(
                LIST,
                json!({ "first": size, "after": after, "filter": filter, "orderBy": order }),
            )
            .await;
        let page = &data["tasks"];
        let page_ids = ids(page);
        let nodes: Vec<i64> = page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(nodes, page_ids, "nodes and edges agree");
        let info = &page["pageInfo"];
        assert_eq!(
            info["hasPreviousPage"],
            json!(page_number > 0),
            "page {page_number}"
        );
        if !page_ids.is_empty() {
            assert_eq!(info["startCursor"], page["edges"][0]["cursor"]);
            assert_eq!(
                info["endCursor"],
                page["edges"][page_ids.len() - 1]["cursor"]
            );
        }
        seen.extend(page_ids);
        if info["hasNextPage"] == json!(false) {
            break;
        }
        assert_eq!(
            page["edges"].as_array().unwrap().len() as i64,
            size,
            "only the last page is short"
        );
        after = info["endCursor"].clone();
    }
    seen
}

/// Walks the whole list backward from the end, checking pageInfo on every page.
async fn walk_backward(app: &TestApp, size: i64, filter: &Value, order: &Value) -> Vec<i64> {
    let mut pages = Vec::new();
    let mut before = Value::Null;
    for page_number in 0.. {
        let data = app
            .data(
                LIST,
                json!({ "last": size, "before": before, "filter": filter, "orderBy": order }),
            )
            .await;
        let page = &data["tasks"];
        let info = &page["pageInfo"];
        assert_eq!(
            info["hasNextPage"],
            json!(page_number > 0),
            "page {page_number} from the end"
        );
        pages.push(ids(page));
        if info["hasPreviousPage"] == json!(false) {
            break;
        }
        before = info["startCursor"].clone();
    }
    pages.into_iter().rev().flatten().collect()
}

#[tokio::test]
async fn every_ordering_and_filter_pages_exactly_both_ways() {
    let app = TestApp::new().await;
    let rows = seed(&app).await;
    type Keep = Box<dyn Fn(&Row) -> bool>;
    let filters: Vec<(Value, Keep)> = vec![
        (json!(null), Box::new(|_| true)),
        (
            json!({ "status": ["PENDING", "FAILED"] }),
            Box::new(|r| r.status == "pending" || r.status == "failed"),
        ),
        (
            json!({ "model": "llama3.1:8b" }),
            Box::new(|r| r.model == "llama3.1:8b"),
        ),
        (
            json!({ "minPriority": 4, "maxPriority": 7 }),
            Box::new(|r| (4..=7).contains(&r.priority)),
        ),
        (
            json!({ "createdAfter": "2026-01-01T00:10:00Z", "createdBefore": "2026-01-01T00:40:00Z" }),
            Box::new(|r| {
                let after: DateTime<Utc> = "2026-01-01T00:10:00Z".parse().unwrap();
                let before: DateTime<Utc> = "2026-01-01T00:40:00Z".parse().unwrap();
                r.created_at > after && r.created_at < before
            }),
        ),
        (
            json!({ "status": ["SUCCEEDED"], "model": "gpt-4o", "minPriority": 2 }),
            Box::new(|r| r.status == "succeeded" && r.model == "gpt-4o" && r.priority >= 2),
        ),
    ];
    for field in ["CREATED_AT", "UPDATED_AT", "PRIORITY"] {
        for direction in ["ASC", "DESC"] {
            let order = json!({ "field": field, "direction": direction });
            for (filter, keep) in &filters {
                let want = expected(&rows, field, direction, keep.as_ref());
                assert!(!want.is_empty(), "filter {filter} matches something");
                let context = format!("{field} {direction} {filter}");
                for size in [7, 20] {
                    assert_eq!(
                        walk_forward(&app, size, filter, &order).await,
                        want,
                        "forward {size} {context}"
                    );
                }
                assert_eq!(
                    walk_backward(&app, 9, filter, &order).await,
                    want,
                    "backward {context}"
                );
                let total = app
                    .data(
                        LIST,
                        json!({ "first": 1, "filter": filter, "orderBy": order }),
                    )
                    .await;
                assert_eq!(total["tasks"]["totalCount"], json!(want.len()), "{context}");
            }
        }
    }
}

#[tokio::test]
async fn default_order_is_newest_first_with_twenty_per_page() {
    let app = TestApp::new().await;
    let rows = seed(&app).await;
    let data = app.data(LIST, json!({})).await;
    let want: Vec<i64> = expected(&rows, "CREATED_AT", "DESC", &|_| true)
        .into_iter()
        .take(20)
        .collect();
    assert_eq!(ids(&data["tasks"]), want);
    assert_eq!(data["tasks"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(data["tasks"]["pageInfo"]["hasPreviousPage"], false);

    let full = app.data(LIST, json!({ "first": 100 })).await;
    assert_eq!(ids(&full["tasks"]).len(), 100);
    let none = app.data(LIST, json!({ "first": 0 })).await;
    assert_eq!(ids(&none["tasks"]).len(), 0);
    assert_eq!(none["tasks"]["pageInfo"]["hasNextPage"], true);
}

#[tokio::test]
async fn a_range_between_two_cursors_and_page_info_on_both_sides() {
    let app = TestApp::new().await;
    let rows = seed(&app).await;
    let order = json!({ "field": "PRIORITY", "direction": "ASC" });
    let want = expected(&rows, "PRIORITY", "ASC", &|_| true);
    let first = app
        .data(LIST, json!({ "first": 30, "orderBy": order }))
        .await;
    let edges = first["tasks"]["edges"].as_array().unwrap().clone();
    let (after, before) = (edges[4]["cursor"].clone(), edges[25]["cursor"].clone());

    let forward = app
        .data(
            LIST,
            json!({ "first": 10, "after": after, "before": before, "orderBy": order }),
        )
        .await;
    assert_eq!(ids(&forward["tasks"]), want[5..15].to_vec());
    assert_eq!(forward["tasks"]["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(forward["tasks"]["pageInfo"]["hasNextPage"], true);

    let whole = app
        .data(
            LIST,
            json!({ "first": 100, "after": after, "before": before, "orderBy": order }),
        )
        .await;
    assert_eq!(ids(&whole["tasks"]), want[5..25].to_vec());
    assert_eq!(
        whole["tasks"]["pageInfo"]["hasNextPage"], true,
        "rows lie beyond `before`"
    );

    let backward = app
        .data(
            LIST,
            json!({ "last": 10, "after": after, "before": before, "orderBy": order }),
        )
        .await;
    assert_eq!(ids(&backward["tasks"]), want[15..25].to_vec());
    assert_eq!(backward["tasks"]["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(backward["tasks"]["pageInfo"]["hasNextPage"], true);

    // `before` alone pages backward from it.
    let before_only = app
        .data(
            LIST,
            json!({ "before": edges[3]["cursor"], "orderBy": order }),
        )
        .await;
    assert_eq!(ids(&before_only["tasks"]), want[0..3].to_vec());
    assert_eq!(before_only["tasks"]["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(before_only["tasks"]["pageInfo"]["hasNextPage"], true);
}

#[tokio::test]
async fn a_deleted_cursor_row_still_marks_the_position() {
    let app = TestApp::new().await;
    let rows = seed(&app).await;
    let want = expected(&rows, "CREATED_AT", "DESC", &|_| true);
    let page = app.data(LIST, json!({ "first": 10 })).await;
    let cursor = page["tasks"]["pageInfo"]["endCursor"].clone();
    app.data(
        "mutation($id: ID!) { deleteTask(id: $id) }",
        json!({ "id": want[9].to_string() }),
    )
    .await;
    let next = app
        .data(LIST, json!({ "first": 10, "after": cursor }))
        .await;
    assert_eq!(ids(&next["tasks"]), want[10..20].to_vec());
    assert_eq!(next["tasks"]["pageInfo"]["hasPreviousPage"], true);
}

#[tokio::test]
async fn paging_stays_exact_while_tasks_are_inserted() {
    let app = TestApp::new().await;
    let rows = seed(&app).await;
    let original: HashSet<i64> = rows.iter().map(|r| r.id).collect();

    for direction in ["ASC", "DESC"] {
        let order = json!({ "field": "CREATED_AT", "direction": direction });
        let inserter = {
            let pool = app.state.pool().clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    let Ok(mut conn) = pool.get().await else {
                        continue;
                    };
                    let new_task = taskrunner::tasks::validation::TaskFields {
                        prompt: Some(format!("concurrent {i}")),
                        model: Some("m".into()),
                        ..Default::default()
                    }
                    .into_new_task("default")
                    .expect("valid task");
                    taskrunner::tasks::store::insert(&mut conn, &new_task)
                        .await
                        .expect("insert");
                    tokio::task::yield_now().await;
                }
            })
        };
        let seen = walk_forward(&app, 10, &json!(null), &order).await;
        inserter.await.expect("inserter");

        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "no row twice ({direction})");
        assert!(original.is_subset(&unique), "no row skipped ({direction})");
    }
}

#[tokio::test]
async fn paging_arguments_are_checked() {
    let app = TestApp::new().await;
    seed(&app).await;
    let priority_cursor = app
        .data(
            LIST,
            json!({ "first": 1, "orderBy": { "field": "PRIORITY" } }),
        )
        .await["tasks"]["pageInfo"]["endCursor"]
        .clone();
    let cases = [
        (json!({ "first": 101 }), "first"),
        (json!({ "first": -1 }), "first"),
        (json!({ "last": 1000 }), "last"),
        (json!({ "first": 5, "last": 5 }), "last"),
        (json!({ "after": "not-a-cursor" }), "after"),
        (json!({ "before": "djI6Yzox" }), "before"),
        (json!({ "after": priority_cursor }), "after"),
        (
            json!({ "filter": { "minPriority": 0 } }),
            "filter.minPriority",
        ),
        (
            json!({ "filter": { "maxPriority": 70000 } }),
            "filter.maxPriority",
        ),
    ];
    for (variables, field) in cases {
        let response = app.gql(LIST, variables.clone()).await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{variables}");
        assert_eq!(error_field(&response), field, "{variables}");
    }
}
