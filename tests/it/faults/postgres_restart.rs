//! PostgreSQL restarted under load: `taskrunner serve` (API and workers)
//! must answer every request promptly while the database is away, recover
//! on its own when it returns (API, readiness, LISTEN), and lose or repeat
//! no task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{install_success_audit, status_counts, successes_per_task, wait_until_all_final};
use crate::cluster::PrivateCluster;
use crate::fake_provider::FakeProvider;
use crate::process::{Launch, ProviderConfig};

/// `--db-timeout-seconds`.
const DB_TIMEOUT: Duration = Duration::from_secs(2);
/// Every answer must come within the database timeout plus this.
const MARGIN: Duration = Duration::from_secs(3);
/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(3);
/// By when, after the database is back, the API must work again.
const RECOVERY: Duration = Duration::from_secs(10);
/// With polling once a minute, a task picked up sooner than this was
/// announced by a notification: LISTEN works.
const PICKUP: Duration = Duration::from_secs(5);

/// What one request got.
#[derive(Debug, Clone)]
enum Answer {
    /// createTask answered with the new task's id.
    Created(i64),
    /// A GraphQL error coded SERVICE_UNAVAILABLE.
    Unavailable,
    /// Anything else that was answered (the body).
    Other(String),
    /// No answer within the deadline, or no HTTP exchange at all.
    Unanswered(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Created(id) => write!(f, "created task {id}"),
            Answer::Unavailable => f.write_str("SERVICE_UNAVAILABLE"),
            Answer::Other(body) => write!(f, "unexpected answer: {body}"),
            Answer::Unanswered(why) => write!(f, "no answer: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Exchange {
    sent: Instant,
    answered: Instant,
    answer: Answer,
}

/// A `/readyz` probe's result: the HTTP status, or why there was none.
#[derive(Debug, Clone)]
struct Probe {
    sent: Instant,
    status: Result<u16, String>,
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(address: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(DB_TIMEOUT + MARGIN)
                .build()
                .expect("HTTP client"),
            base: format!("http://{address}"),
        }
    }

    async fn create(&self, prompt: &str) -> Answer {
        let body = json!({
            "query": "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }",
            "variables": { "input": { "prompt": prompt, "model": "fake-small" } },
        });
        let response = match self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Answer::Unanswered(error.to_string()),
        };
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return Answer::Unanswered(error.to_string()),
        };
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            return Answer::Other(text);
        };
        if let Some(id) = json["data"]["createTask"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
        {
            Answer::Created(id)
        } else if json["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE" {
            Answer::Unavailable
        } else {
            Answer::Other(text)
        }
    }

    async fn ready(&self) -> Result<u16, String> {
        self.http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .map(|response| response.status().as_u16())
            .map_err(|error| error.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_and_heals_itself() {
    let began = Instant::now();
    let fake = FakeProvider::start().await;
    let providers = ProviderConfig::for_fake(&fake);
    let cluster = PrivateCluster::start().await;
    let server = Launch::serve()
        .database(&cluster.url("taskrunner"))
        .providers(&providers)
        .args([
            "--workers",
            "16",
            "--poll-interval-ms",
            "60000",
            "--db-timeout-seconds",
            &DB_TIMEOUT.as_secs().to_string(),
        ])
        .spawn();
    let api = Api::new(&server.address().await);
    // The server has created and migrated its database by now.
    install_success_audit(&cluster.client("taskrunner").await.expect("connect")).await;

    let exchanges = Arc::new(Mutex::new(Vec::<Exchange>::new()));
    let probes = Arc::new(Mutex::new(Vec::<Probe>::new()));
    let stop_load = CancellationToken::new();
    let next_prompt = Arc::new(AtomicU64::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..2 {
        load.spawn(create_tasks(
            api.clone(),
            Arc::clone(&next_prompt),
            Arc::clone(&exchanges),
            stop_load.clone(),
        ));
    }
    load.spawn(probe_readiness(
        api.clone(),
        Arc::clone(&probes),
        stop_load.clone(),
    ));

    // Load flows before the fault.
    let warm = Instant::now() + Duration::from_secs(30);
    while created_since(&exchanges, began) < 20 {
        assert!(Instant::now() < warm, "tasks are created before the fault");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The fault: a fast shutdown (sessions ended), down for a while, back.
    let stopping = Instant::now();
    cluster.stop().await;
    let down = Instant::now();
    tokio::time::sleep(OUTAGE).await; // the outage itself
    let starting = Instant::now();
    cluster.start_again().await;
    let up = Instant::now();
    let db = cluster.client("taskrunner").await.expect("reconnect");

    // Back to work within RECOVERY, with no restart of taskrunner.
    let recovered = loop {
        let created = created_since(&exchanges, up) > 0;
        let ready = probes
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.sent >= up && p.status == Ok(200));
        if created && ready {
            break up.elapsed();
        }
        assert!(
            up.elapsed() < RECOVERY,
            "not recovered within {RECOVERY:?} of the database's return (a create succeeded: {created}, /readyz 200: {ready}); server log:\n{}",
            server.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The worker's LISTEN session is back within RECOVERY too (seen from
    // the server's side: a session whose last statement was the LISTEN).
    let listening_again = loop {
        let sessions: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%taskrunner_task_due%'",
                &[],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0);
        if sessions > 0 {
            break up.elapsed();
        }
        assert!(
            up.elapsed() < RECOVERY,
            "no LISTEN session within {RECOVERY:?} of the database's return; server log:\n{}",
            server.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Some more load after recovery, then stop it.
    let after = Instant::now();
    while created_since(&exchanges, after) < 20 {
        assert!(
            after.elapsed() < Duration::from_secs(30),
            "load flows again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_load.cancel();
    while load.join_next().await.is_some() {}
    let exchanges = exchanges.lock().unwrap().clone();
    let probes = probes.lock().unwrap().clone();

    // Every answer came in time, and was either data or SERVICE_UNAVAILABLE.
    let at = |t: Instant| t.saturating_duration_since(stopping).as_secs_f64();
    let bad: Vec<String> = exchanges
        .iter()
        .filter(|e| matches!(e.answer, Answer::Other(_) | Answer::Unanswered(_)))
        .map(|e| {
            format!(
                "sent at {:+.2} s (stop at 0, down {:+.2}, start {:+.2}, up {:+.2}), {:.2} s: {}",
                at(e.sent),
                at(down),
                at(starting),
                at(up),
                (e.answered - e.sent).as_secs_f64(),
                e.answer
            )
        })
        .collect();
    let in_outage = |e: &&Exchange| e.sent >= down && e.answered <= starting;
    let outage_answers: Vec<&Exchange> = exchanges.iter().filter(in_outage).collect();
    let unavailable = exchanges
        .iter()
        .filter(|e| matches!(e.answer, Answer::Unavailable))
        .count();
    let created: Vec<i64> = exchanges
        .iter()
        .filter_map(|e| match e.answer {
            Answer::Created(id) => Some(id),
            _ => None,
        })
        .collect();
    let slowest = exchanges
        .iter()
        .map(|e| e.answered - e.sent)
        .max()
        .unwrap_or_default();
    let readiness_503 = probes
        .iter()
        .filter(|p| p.sent >= stopping && p.status == Ok(503))
        .count();
    let readiness_bad: Vec<&Probe> = probes
        .iter()
        .filter(|p| !matches!(p.status, Ok(200 | 503)))
        .collect();

    // LISTEN works: with polling once a minute, only a notification can
    // start a new task within seconds, once the queue is idle.
    wait_until_all_final(&db, Duration::from_secs(60)).await;
    let probe = match api.create("listen-probe").await {
        Answer::Created(id) => id,
        other => panic!("createTask after recovery: {other:?}"),
    };
    let pickup_deadline = Instant::now() + Duration::from_secs(70);
    let pickup = loop {
        let seconds: Option<f64> = db
            .query_one(
                "SELECT EXTRACT(EPOCH FROM started_at - created_at)::float8 FROM tasks WHERE id = $1",
                &[&probe],
            )
            .await
            .expect("read the probe task")
            .get(0);
        if let Some(seconds) = seconds {
            break Duration::from_secs_f64(seconds.max(0.0));
        }
        assert!(
            Instant::now() < pickup_deadline,
            "the task created after recovery was not started within 70 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_until_all_final(&db, Duration::from_secs(30)).await;

    let listener_warnings = server
        .lines()
        .iter()
        .filter(|line| line.contains("task notification") || line.contains("cannot listen"))
        .count();
    println!(
        "postgres restart: {} creates ({} acknowledged, {unavailable} SERVICE_UNAVAILABLE, {} answered during the outage), \
         slowest answer {:.2} s, /readyz 503 x{readiness_503}, recovered {:.2} s after the database, \
         LISTEN back after {:.2} s, new task started {:.2} s after creation, {listener_warnings} listener warnings, test {:.1} s",
        exchanges.len(),
        created.len(),
        outage_answers.len(),
        slowest.as_secs_f64(),
        recovered.as_secs_f64(),
        listening_again.as_secs_f64(),
        pickup.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );

    assert!(
        bad.is_empty(),
        "answers that were late, missing, or neither data nor SERVICE_UNAVAILABLE (limit {:?}):\n{}",
        DB_TIMEOUT + MARGIN,
        bad.join("\n")
    );
    assert!(
        !outage_answers.is_empty(),
        "requests were answered while the database was down"
    );
    assert!(
        outage_answers
            .iter()
            .all(|e| matches!(e.answer, Answer::Unavailable)),
        "while the database was down, creates failed: {outage_answers:?}"
    );
    assert!(
        readiness_bad.is_empty(),
        "/readyz answered neither 200 nor 503 in time: {readiness_bad:?}"
    );
    assert!(readiness_503 > 0, "/readyz said 503 during the outage");
    assert!(
        pickup <= PICKUP,
        "a task created after recovery waited {pickup:?} to start (LISTEN not re-established; polling is once a minute)"
    );

    // Nothing lost, nothing finished twice, nothing left running.
    let statuses: Vec<(i64, String)> = db
        .query(
            "SELECT id, status::text FROM tasks WHERE id = ANY($1)",
            &[&created],
        )
        .await
        .expect("read acknowledged tasks")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        statuses.len(),
        created.len(),
        "every acknowledged task exists"
    );
    let not_succeeded: Vec<_> = statuses.iter().filter(|(_, s)| s != "succeeded").collect();
    assert!(
        not_succeeded.is_empty(),
        "acknowledged tasks that did not succeed: {not_succeeded:?}"
    );
    let all = status_counts(&db).await;
    assert!(
        all.iter().all(|(status, _)| status == "succeeded"),
        "every task (acknowledged or not) SUCCEEDED: {all:?}"
    );
    let total: i64 = all.iter().map(|(_, n)| n).sum();
    let successes = successes_per_task(&db).await;
    let twice: Vec<_> = successes.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks finished more than once: {twice:?}");
    assert_eq!(
        successes.len() as i64,
        total,
        "each task recorded SUCCEEDED exactly once"
    );
}

/// Tasks acknowledged for requests sent at or after `since`.
fn created_since(exchanges: &Mutex<Vec<Exchange>>, since: Instant) -> usize {
    exchanges
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.sent >= since && matches!(e.answer, Answer::Created(_)))
        .count()
}

/// Creates tasks one after another, about twenty a second, recording each
/// answer, until stopped.
async fn create_tasks(
    api: Api,
    next_prompt: Arc<AtomicU64>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let n = next_prompt.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let answer = api.create(&format!("slow:30:restart-{n}")).await;
        exchanges.lock().unwrap().push(Exchange {
            sent,
            answered: Instant::now(),
            answer,
        });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Asks `/readyz` ten times a second until stopped.
async fn probe_readiness(api: Api, probes: Arc<Mutex<Vec<Probe>>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let sent = Instant::now();
        let status = api.ready().await;
        probes.lock().unwrap().push(Probe { sent, status });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = stop.cancelled() => {}
        }
    }
}
