//! A crash storm: worker processes SIGKILLed one after another, mid-call,
//! while they drain ten thousand tasks. Nothing may be lost, nothing
//! finished twice, and a provider may see a task again only when a worker
//! holding it was lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{install_success_audit, status_counts, successes_per_task, unfinished};
use crate::fake_provider::FakeProvider;
use crate::harness::TestDb;
use crate::process::{Launch, Process, ProviderConfig};

const TASKS: i64 = 10_000;
const PROCESSES: usize = 4;
/// Tasks in flight per process.
const SLOTS: &str = "8";
/// Short, so that a killed worker's tasks move on quickly.
const LEASE_SECONDS: &str = "2";
/// The most a task may be attempted: a task whose worker is killed several
/// times must not run out of attempts, since spending them is the retry
/// policy's business, not what this test is about.
const MAX_ATTEMPTS: i32 = 20;
/// Overridden by `TASKRUNNER_FAULT_SEED` to replay a storm.
const DEFAULT_SEED: u64 = 20_261_129;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_worker_crashes_loses_nothing_and_finishes_each_task_once() {
    let began = Instant::now();
    let fake = FakeProvider::start().await;
    let providers = ProviderConfig::for_fake(&fake);
    let db = TestDb::migrated().await;
    let client = db.client().await;
    install_success_audit(&client).await;
    // Unique prompts (the fake counts calls per prompt) that answer after
    // 20 to 120 ms, so that kills land mid-call.
    client
        .batch_execute(&format!(
            "INSERT INTO tasks (prompt, model, max_attempts)
             SELECT 'slow:' || (20 + (g * 37) % 101) || ':storm-' || g, 'fake-small', {MAX_ATTEMPTS}
             FROM generate_series(1, {TASKS}) AS g"
        ))
        .await
        .expect("insert the tasks");

    let seed = std::env::var("TASKRUNNER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = StdRng::seed_from_u64(seed);
    let launch = || {
        Launch::worker()
            .database(&db.url)
            .providers(&providers)
            .args(["--workers", SLOTS, "--lease-seconds", LEASE_SECONDS])
            .spawn()
    };
    let mut workers: Vec<Process> = (0..PROCESSES).map(|_| launch()).collect();

    let storm_began = Instant::now();
    let deadline = storm_began + Duration::from_secs(240);
    let mut kills = 0;
    loop {
        let pause = Duration::from_millis(rng.random_range(1000..=3000));
        if all_final_within(&client, pause).await {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "the queue did not drain within 240 s ({kills} kills): {:?}",
                status_counts(&client).await
            );
        }
        let victim = rng.random_range(0..PROCESSES);
        workers[victim].kill().await;
        workers[victim] = launch();
        kills += 1;
    }
    let storm = storm_began.elapsed();
    drop(workers);

    let statuses = status_counts(&client).await;
    assert_eq!(
        statuses,
        vec![("succeeded".to_owned(), TASKS)],
        "every task SUCCEEDED, none PENDING, RUNNING or FAILED"
    );

    let successes = successes_per_task(&client).await;
    let repeated: Vec<_> = successes.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "tasks recorded SUCCEEDED more than once (task, times): {repeated:?}"
    );
    assert_eq!(
        successes.len() as i64,
        TASKS,
        "each task recorded SUCCEEDED exactly once"
    );

    let mut calls: HashMap<String, i64> = HashMap::new();
    for call in fake.calls() {
        *calls.entry(call.prompt).or_default() += 1;
    }
    let tasks: Vec<(i64, String, i32)> = client
        .query("SELECT id, prompt, attempts FROM tasks ORDER BY id", &[])
        .await
        .expect("read the tasks")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let calls_of = |prompt: &str| calls.get(prompt).copied().unwrap_or(0);
    let over: Vec<_> = tasks
        .iter()
        .filter(|(_, prompt, attempts)| calls_of(prompt) > i64::from(*attempts))
        .map(|(id, prompt, attempts)| (id, calls_of(prompt), attempts))
        .collect();
    assert!(
        over.is_empty(),
        "provider calls exceed attempts (task, calls, attempts): {:?}",
        &over[..over.len().min(20)]
    );
    let uncalled = tasks.iter().filter(|(_, p, _)| calls_of(p) == 0).count();
    assert_eq!(
        uncalled, 0,
        "every SUCCEEDED task was answered by the provider"
    );
    let called_again = tasks.iter().filter(|(_, p, _)| calls_of(p) > 1).count();
    println!(
        "crash storm (seed {seed}): {kills} kills, {called_again} of {TASKS} tasks called more than once, \
         storm {:.1} s, test {:.1} s",
        storm.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        kills >= 3,
        "only {kills} kills before the queue drained: the storm is too short to test anything"
    );

    // A second call is allowed only for an attempt that ended by losing its
    // worker; the queue counts those in `lost_attempts`.
    let lost: HashMap<i64, i64> = client
        .query("SELECT id, lost_attempts::bigint FROM tasks", &[])
        .await
        .unwrap_or_else(|error| {
            panic!(
                "cannot read tasks.lost_attempts (does the column exist?): {}",
                error
                    .as_db_error()
                    .map_or_else(|| error.to_string(), |e| e.message().to_owned())
            )
        })
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let unexplained: Vec<_> = tasks
        .iter()
        .filter(|(id, prompt, _)| calls_of(prompt) - 1 > lost.get(id).copied().unwrap_or(0))
        .map(|(id, prompt, _)| (id, calls_of(prompt), lost.get(id).copied()))
        .collect();
    assert!(
        unexplained.is_empty(),
        "tasks called again although no worker holding them was lost (task, calls, lost_attempts): {:?}",
        &unexplained[..unexplained.len().min(20)]
    );
}

/// Whether every task is final, waiting up to `within` for it.
async fn all_final_within(client: &tokio_postgres::Client, within: Duration) -> bool {
    let until = Instant::now() + within;
    loop {
        if unfinished(client).await.expect("count unfinished tasks") == 0 {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
