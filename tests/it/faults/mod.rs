//! Fault injection: real `taskrunner` processes, a private PostgreSQL and a
//! TCP proxy, hit by the faults production sees (a worker SIGKILLed, the
//! database restarted, the network to it cut or gone silent).
//!
//! What they prove: no single fault can stop the queue, starve it, lose a
//! task, or start a second attempt of a task whose worker is alive.

mod crash_storm;
mod harness_smoke;
mod postgres_restart;
mod shutdown;

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Records, in the test's database, every update that makes a task
/// SUCCEEDED (or rewrites a success), so that a task finished twice shows
/// up as two rows, whoever wrote them.
pub async fn install_success_audit(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE task_success_audit (
                 task_id   BIGINT      NOT NULL,
                 attempts  INTEGER     NOT NULL,
                 worker_id TEXT,
                 at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
             );
             CREATE FUNCTION audit_task_success() RETURNS trigger
             LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO task_success_audit (task_id, attempts, worker_id)
                 VALUES (NEW.id, NEW.attempts, OLD.worker_id);
                 RETURN NULL;
             END;
             $$;
             CREATE TRIGGER audit_task_success
                 AFTER UPDATE ON tasks
                 FOR EACH ROW WHEN (NEW.status = 'succeeded' AND (
                     OLD.status <> 'succeeded'
                     OR NEW.result IS DISTINCT FROM OLD.result
                     OR NEW.finished_at IS DISTINCT FROM OLD.finished_at))
                 EXECUTE FUNCTION audit_task_success();",
        )
        .await
        .expect("install the success audit");
}

/// How many times each task was recorded SUCCEEDED.
pub async fn successes_per_task(client: &tokio_postgres::Client) -> HashMap<i64, i64> {
    client
        .query(
            "SELECT task_id, count(*) FROM task_success_audit GROUP BY task_id",
            &[],
        )
        .await
        .expect("read the success audit")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Tasks not yet in a final state.
pub async fn unfinished(client: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')",
            &[],
        )
        .await?
        .get(0))
}

/// Waits until no task is PENDING or RUNNING; fails after `within`.
pub async fn wait_until_all_final(client: &tokio_postgres::Client, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = unfinished(client).await.expect("count unfinished tasks");
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{left} tasks still PENDING or RUNNING after {within:?}: {:?}",
                status_counts(client).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Task statuses and how many tasks have each, in status order.
pub async fn status_counts(client: &tokio_postgres::Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT status::text, count(*) FROM tasks GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("count tasks by status")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}
