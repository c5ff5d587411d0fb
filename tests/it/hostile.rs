//! Hostile input: ten thousand generated requests, seeded and reproducible,
//! through the real HTTP router in-process, against a database holding a few
//! tasks. Every response must come from a server that did not panic (no 5xx
//! but 503), give every GraphQL error a code, and leak nothing of the server's
//! insides; afterwards the server still answers and no task was lost or
//! changed except by a mutation that meant to.
//!
//! The run is reproducible: `HOSTILE_SEED=<n>` replays another seed,
//! `HOSTILE_REQUESTS=<n>` sends more or fewer requests.

mod documents;
mod generator;
mod requests;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures_util::StreamExt as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::harness::TestApp;

use generator::{Case, Document, Generator, Track};

/// What no response may contain: SQL, driver and runtime names, panic and
/// source locations. SQL keywords are matched in capitals (as our statements
/// spell them), the rest in any case.
const LEAKS_EXACT: &[&str] = &[
    "SELECT ",
    "INSERT ",
    "UPDATE tasks",
    "DELETE FROM",
    " WHERE ",
];
const LEAKS_ANY_CASE: &[&str] = &[
    "relation \"",
    "column \"",
    "constraint \"",
    "diesel",
    "postgres",
    "tokio",
    "deadpool",
    "sqlstate",
    "panicked",
    "stack backtrace",
    "src/",
    ".rs:",
    "canceling statement",
    "timestamp out of range",
    "connection refused",
];

/// Panics, naming the word, if `text` leaks anything of the server's insides.
pub(crate) fn assert_no_internals(text: &str) {
    if let Some(word) = leak_in(text) {
        panic!("the response leaks {word:?}: {text}");
    }
}

fn leak_in(text: &str) -> Option<&'static str> {
    if let Some(word) = LEAKS_EXACT.iter().find(|word| text.contains(*word)) {
        return Some(word);
    }
    let lower = text.to_lowercase();
    LEAKS_ANY_CASE
        .iter()
        .find(|word| lower.contains(*word))
        .copied()
}

const DEFAULT_SEED: u64 = 0x7a5c_2026_0000_0001;
const DEFAULT_REQUESTS: usize = 10_000;

/// Tasks every run starts with: read by the requests, changed by none.
const ORIGINALS: usize = 5;
/// Tasks made for the mutations to change and delete.
const SACRIFICES: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_requests_break_nothing() {
    let seed = env_number("HOSTILE_SEED").unwrap_or(DEFAULT_SEED);
    let requests = env_number("HOSTILE_REQUESTS").map_or(DEFAULT_REQUESTS, |n| n as usize);
    let app = TestApp::new().await;
    let mut originals = Vec::new();
    for i in 0..ORIGINALS {
        let task = app
            .create(json!({ "prompt": format!("original {i}"), "model": "m", "priority": 1 + i }))
            .await;
        originals.push(id_of(&task["id"]));
    }
    let mut writable = Vec::new();
    for i in 0..SACRIFICES {
        let task = app
            .create(json!({ "prompt": format!("sacrifice {i}"), "model": "m" }))
            .await;
        writable.push(id_of(&task["id"]));
    }
    let before = rows_of(&app, &originals).await;
    let cursors = real_cursors(&app).await;

    let router = app.router();
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
        readable: originals.iter().chain(&writable).copied().collect(),
        writable: writable.clone(),
        cursors,
        doc: Document::default(),
        messy: true,
    };
    let mut live: BTreeSet<i64> = originals.iter().chain(&writable).copied().collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&'static str, (usize, f64)> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();

    // Generated in order, sent a few at a time (what the generator makes
    // never depends on an answer, so the run stays reproducible), judged in order.
    let mut answers = futures_util::stream::iter(0..requests)
        .map(|index| {
            let case = generator.case();
            let router = router.clone();
            async move { (index, send(router, case).await) }
        })
        .buffered(IN_FLIGHT);
    while let Some((index, answer)) = answers.next().await {
        let entry = by_kind.entry(answer.kind).or_default();
        entry.0 += 1;
        entry.1 += answer.seconds;
        match answer.verdict {
            Ok((class, json)) => {
                *outcomes.entry(class).or_default() += 1;
                if let Some(json) = json {
                    learn(&answer.track, &json, &mut live);
                }
            }
            Err(problem) => failures.push(format!(
                "request {index} ({}): {problem}\n  sent: {}\n  got: {}",
                answer.kind, answer.sent, answer.got
            )),
        }
    }
    drop(answers);

    let mut summary = format!("hostile: seed {seed:#x}, {requests} requests;");
    for (class, n) in &outcomes {
        let _ = write!(summary, " {class}: {n};");
    }
    println!("{summary}");
    let mut kinds = String::from("hostile: requests and seconds by kind:");
    for (kind, (n, seconds)) in &by_kind {
        let _ = write!(kinds, " {kind} {n} ({seconds:.1} s);");
    }
    println!("{kinds}");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests went wrong (seed {seed:#x}); the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The server still answers a plain query…
    let data = app
        .data(
            "{ tasks(first: 100) { totalCount nodes { id } } }",
            json!({}),
        )
        .await;
    let listed: BTreeSet<i64> = data["tasks"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| id_of(&node["id"]))
        .collect();
    assert!(originals.iter().all(|id| listed.contains(id)) || live.len() > 100);
    // …the tasks it started with are as they were…
    assert_eq!(
        rows_of(&app, &originals).await,
        before,
        "an original task changed"
    );
    // …and the table holds exactly what the successful mutations left.
    let stored: BTreeSet<i64> = app
        .db
        .client()
        .await
        .query("SELECT id FROM tasks", &[])
        .await
        .expect("ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, live, "tasks appeared or vanished unseen");
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn id_of(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a task id: {value}"))
}

/// Every column of the given tasks, as JSON rows in id order.
async fn rows_of(app: &TestApp, ids: &[i64]) -> Vec<String> {
    app.db
        .client()
        .await
        .query(
            "SELECT to_jsonb(t)::text FROM tasks t WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await
        .expect("rows")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Cursors the API issued, for requests that reuse them (with the right
/// ordering or the wrong one).
async fn real_cursors(app: &TestApp) -> Vec<String> {
    let mut cursors = Vec::new();
    for field in ["CREATED_AT", "UPDATED_AT", "PRIORITY"] {
        let data = app
            .data(
                "query($o: TaskOrder) { tasks(first: 5, orderBy: $o) { edges { cursor } } }",
                json!({ "o": { "field": field } }),
            )
            .await;
        for edge in data["tasks"]["edges"].as_array().expect("edges") {
            cursors.push(edge["cursor"].as_str().expect("cursor").to_owned());
        }
    }
    cursors
}

/// Requests sent at once: enough to keep both the server and PostgreSQL busy.
const IN_FLIGHT: usize = 4;

/// What came of one request.
struct Answer {
    kind: &'static str,
    track: Track,
    /// The request, shortened, for reports.
    sent: String,
    /// The response, shortened, for reports.
    got: String,
    /// Its class ("200 BAD_USER_INPUT", "413", …) and its JSON, or what is wrong.
    verdict: Result<(String, Option<Value>), String>,
    seconds: f64,
}

/// Sends `case` through `router` and judges the response.
async fn send(router: axum::Router, case: Case) -> Answer {
    let summary = case.summary();
    // Only GraphQL answers are held to GraphQL's shape (not /healthz's,
    // nor a HEAD request's, which has no body).
    let graphql = case.request.uri().path() == "/graphql" && case.request.method() != Method::HEAD;
    // Keep the body, to show it if the answer is wrong.
    let (parts, body) = case.request.into_parts();
    let sent = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("a body");
    let request = Request::from_parts(parts, Body::from(sent.clone()));
    let started = std::time::Instant::now();
    let response = router
        .oneshot(request)
        .await
        .expect("the router always answers");
    let status = response.status();
    let has_request_id = response.headers().contains_key("x-request-id");
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .expect("a body");
    let seconds = started.elapsed().as_secs_f64();
    let verdict = judge(status, has_request_id, graphql, &content_type, &body);
    let (sent, got) = if verdict.is_err() {
        (
            format!("{summary}: {}", clip(&String::from_utf8_lossy(&sent), 2000)),
            format!("{status} {}", clip(&String::from_utf8_lossy(&body), 400)),
        )
    } else {
        (String::new(), String::new())
    };
    Answer {
        kind: case.kind,
        track: case.track,
        sent,
        got,
        verdict,
        seconds,
    }
}

/// Records what a tracked mutation did, from its answer.
fn learn(track: &Track, json: &Value, live: &mut BTreeSet<i64>) {
    match track {
        Track::Nothing => {}
        Track::Create(alias) => {
            let created = &json["data"][alias];
            if !created.is_null() {
                let id: i64 = created["id"]
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .unwrap_or_else(|| panic!("a created task without its id: {created}"));
                assert!(live.insert(id), "created id {id} was already live");
            }
        }
        Track::Delete(alias) => {
            if let Some(id) = json["data"][alias].as_str() {
                let id: i64 = id.parse().expect("deleted id");
                assert!(live.remove(&id), "deleted id {id} was not live");
            }
        }
    }
}

/// Checks one response; gives its class ("200 BAD_USER_INPUT", "413", …) and
/// its JSON, if any, or what is wrong with it.
fn judge(
    status: StatusCode,
    has_request_id: bool,
    graphql: bool,
    content_type: &str,
    body: &[u8],
) -> Result<(String, Option<Value>), String> {
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        return Err(format!("status {status}"));
    }
    if !has_request_id {
        return Err("no x-request-id header".to_owned());
    }
    let text = String::from_utf8_lossy(body);
    if let Some(word) = leak_in(&text) {
        return Err(format!("leaks {word:?}"));
    }
    let json_type = content_type.starts_with("application/json")
        || content_type.starts_with("application/graphql-response+json");
    if !graphql || !json_type {
        return Ok((status.as_u16().to_string(), None));
    }
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| format!("JSON content type, body not JSON: {e}"))?;
    let mut first_code = None;
    if let Some(errors) = json.get("errors") {
        let errors = errors
            .as_array()
            .ok_or_else(|| "`errors` is not a list".to_owned())?;
        if errors.is_empty() {
            return Err("`errors` is empty".to_owned());
        }
        for error in errors {
            let Some(code) = error["extensions"]["code"].as_str() else {
                return Err(format!("an error without a code: {error}"));
            };
            if code == "INTERNAL_SERVER_ERROR" {
                return Err(format!("an internal error for client input: {error}"));
            }
            if error["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("an error without a message: {error}"));
            }
            first_code.get_or_insert(code.to_owned());
        }
    } else if json.get("data").is_none() {
        return Err("neither `data` nor `errors`".to_owned());
    }
    let class = match first_code {
        Some(code) => format!("{} {code}", status.as_u16()),
        None => format!("{} data", status.as_u16()),
    };
    Ok((class, Some(json)))
}

/// `text`, or its first and last `max / 2` bytes when it is longer.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut head = max / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - max / 2;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} … {} ({} bytes)",
        &text[..head],
        &text[tail..],
        text.len()
    )
}
