//! Migrations: applied once, idempotent, reversible; start-up creates a
//! missing database; instances starting together do not race.

use std::process::Stdio;

use taskrunner::db::{self, migrations};
use tokio::process::Command;

use crate::harness::{TestDb, server_url, with_database};

/// What a migration can create in a database, as sorted text.
async fn catalog(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT 'table ' || relname || ' ' || relkind::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND relname <> '__diesel_schema_migrations'
                AND relname NOT LIKE '__diesel_schema_migrations%'
             UNION ALL
             SELECT 'type ' || typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname = 'public' AND typname NOT LIKE '%diesel%' AND typname NOT LIKE '\\_%'
             UNION ALL
             SELECT 'function ' || proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public'
             UNION ALL
             SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
             ORDER BY 1",
            &[],
        )
        .await
        .expect("catalog");
    rows.iter().map(|row| row.get(0)).collect()
}

async fn connect(db: &TestDb) -> diesel_async::AsyncPgConnection {
    db::establish(&db.url, std::time::Duration::from_secs(10))
        .await
        .expect("connect")
}

#[tokio::test]
async fn migrations_apply_once_and_down_reverses_up() {
    let db = TestDb::empty().await;
    let before = catalog(&db).await;

    let applied = migrations::run_pending(connect(&db).await).await.unwrap();
    assert!(!applied.is_empty(), "a fresh database gets every migration");
    let migrated = catalog(&db).await;
    for expected in [
        "table tasks r",
        "type task_status",
        "trigger tasks_touch_updated_at",
        "table tasks_pending_due_idx i",
        "table workers r",
    ] {
        assert!(
            migrated.contains(&expected.to_owned()),
            "{expected} in {migrated:#?}"
        );
    }

    let again = migrations::run_pending(connect(&db).await).await.unwrap();
    assert!(
        again.is_empty(),
        "applying twice applies nothing the second time: {again:?}"
    );

    let reverted = migrations::revert_all(connect(&db).await).await.unwrap();
    assert_eq!(reverted.len(), applied.len());
    assert_eq!(catalog(&db).await, before, "down.sql leaves nothing behind");

    let reapplied = migrations::run_pending(connect(&db).await).await.unwrap();
    assert_eq!(reapplied, applied, "and up.sql applies cleanly again");
    assert_eq!(catalog(&db).await, migrated);
}

#[tokio::test]
async fn start_up_creates_a_missing_database_and_migrates_it() {
    let db = TestDb::named_fresh();
    let applied = db::prepare_database(&db.args()).await.expect("prepare");
    assert!(!applied.is_empty());
    let client = db.client().await;
    let row = client
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    // A second start finds it ready.
    assert!(db::prepare_database(&db.args()).await.unwrap().is_empty());
}

#[tokio::test]
async fn two_instances_starting_at_once_do_not_race() {
    let db = TestDb::named_fresh();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_taskrunner"))
            .arg("migrate")
            .env("DATABASE_URL", &db.url)
            .env("TASKRUNNER_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    let (first, second) = tokio::join!(start(), start());
    for output in [first.unwrap(), second.unwrap()] {
        assert!(
            output.status.success(),
            "both instances start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let client = db.client().await;
    let rows = client
        .query("SELECT version FROM __diesel_schema_migrations", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        migrations_on_disk(),
        "each migration recorded once"
    );
}

fn migrations_on_disk() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count()
}

#[tokio::test]
async fn an_unreachable_server_fails_start_up_with_a_clear_message() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut args = TestDb::named_fresh().args();
    args.database_url = format!("postgres://app:hunter2@127.0.0.1:{port}/tasks");
    args.db_connect_attempts = 2;
    let error = format!("{:#}", db::prepare_database(&args).await.unwrap_err());
    assert!(
        error.contains(&format!("postgres://app:***@127.0.0.1:{port}/tasks")),
        "{error}"
    );
    assert!(
        !error.contains("hunter2"),
        "the password never shows: {error}"
    );
    assert!(error.contains("Is the server running?"), "{error}");
}

#[test]
fn with_database_swaps_only_the_name() {
    assert_eq!(
        with_database("postgres://u@h:1/a?sslmode=disable", "b"),
        "postgres://u@h:1/b?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "b"), "postgres://u@h/b");
    assert!(server_url().ends_with("/postgres"));
}

#[tokio::test]
async fn existing_tasks_and_their_counts_move_to_the_default_tenant() {
    use diesel::Connection;
    use diesel_async::AsyncPgConnection;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_migrations::MigrationHarness;

    const TENANTS: &str = "20261211000000";
    let db = TestDb::empty().await;
    let url = db.url.clone();
    // The schema as it was before tenants.
    tokio::task::spawn_blocking(move || {
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).expect("connect");
        loop {
            let pending = conn
                .pending_migrations(migrations::MIGRATIONS)
                .expect("pending");
            let Some(next) = pending.first() else { break };
            if next.name().version().to_string().as_str() >= TENANTS {
                break;
            }
            conn.run_migration(next.as_ref()).expect("migrate");
        }
    })
    .await
    .expect("migrated up to tenants");
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO tasks (prompt, model) VALUES ('one', 'm'), ('two', 'm'), ('three', 'm');
             UPDATE tasks SET status = 'cancelled', finished_at = now(), error = 'stop'
             WHERE prompt = 'three';",
        )
        .await
        .expect("tasks from before");

    migrations::run_pending(connect(&db).await)
        .await
        .expect("the rest");

    let rows = client
        .query("SELECT DISTINCT tenant FROM tasks", &[])
        .await
        .expect("tenants");
    let tenants: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(tenants, ["default"]);
    let mut conn = connect(&db).await;
    let scope = taskrunner::tasks::Scope::Tenant("default".to_owned());
    let stats = taskrunner::tasks::store::stats(&mut conn, &scope)
        .await
        .expect("stats");
    use taskrunner::tasks::TaskStatus;
    assert_eq!(stats.count(TaskStatus::Pending), 2);
    assert_eq!(stats.count(TaskStatus::Cancelled), 1);
}
