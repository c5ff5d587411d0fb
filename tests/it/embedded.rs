//! The private PostgreSQL cluster, end to end through the real binary: with
//! DATABASE_URL unset and nothing at the default address (PGHOST and PGPORT
//! point at a port nobody listens on), `serve` and `migrate` make a cluster
//! in a data directory of the test's own, share it, stop it, and recover
//! one a killed process left behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{free_port, postgres_bindir, running_as_root};
use crate::harness::{TestDb, server_url};
use crate::process::{Launch, Process};
use crate::temp_dir::TempDir;

/// How long a start (initdb included) or a stop may take on a busy machine.
const START: Duration = Duration::from_secs(120);

/// A data directory of the test's own; a cluster left running in it (by a
/// failed test) is stopped when it is dropped.
struct DataDir {
    path: PathBuf,
    /// A port nobody listens on: the "default address" of these tests.
    silent_port: String,
    _dir: TempDir,
}

impl DataDir {
    fn new() -> DataDir {
        DataDir::under("data")
    }

    /// A data directory at `relative` under a temporary directory.
    fn under(relative: &str) -> DataDir {
        let dir = TempDir::new("embedded");
        DataDir {
            path: dir.path().join(relative),
            silent_port: free_port().to_string(),
            _dir: dir,
        }
    }

    /// `launch` on this data directory, with nothing at the default address.
    fn launch(&self, launch: Launch) -> Launch {
        launch
            .args(["--data-dir".to_owned(), self.path.to_string_lossy().into()])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", &self.silent_port)
    }

    fn pgdata(&self) -> PathBuf {
        self.path.join("postgres")
    }

    /// The postmaster's pid, while its postmaster.pid exists.
    fn postmaster(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pgdata().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.postmaster().is_none() {
            return;
        }
        let pg_ctl = postgres_bindir().join("pg_ctl");
        let mut command = if running_as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = command
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.pgdata())
            .output();
    }
}

fn is_alive(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Waits until `condition` holds, failing after `within`.
async fn wait_until(what: &str, within: Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `process` logged a message containing `text`.
fn logged(process: &Process, text: &str) -> bool {
    process
        .events()
        .iter()
        .any(|event| event["message"].as_str().is_some_and(|m| m.contains(text)))
}

async fn wait_for_message(process: &Process, text: &str) -> Value {
    process
        .wait_for_event(
            text,
            |event| event["message"].as_str().is_some_and(|m| m.contains(text)),
            START,
        )
        .await
}

/// SIGTERM, then a clean exit within the deadline.
async fn stop(process: &mut Process) {
    process.terminate();
    let exited = process
        .wait_for_exit(START)
        .await
        .unwrap_or_else(|| panic!("exits after SIGTERM; its log:\n{}", process.tail(30)));
    assert!(
        exited.status.success(),
        "{}; its log:\n{}",
        exited.status,
        process.tail(30)
    );
}

/// Runs `launch` to its end and returns whether it succeeded, with the process.
async fn run_to_end(launch: Launch) -> (bool, Process) {
    let mut process = launch.spawn();
    let exited = process
        .wait_for_exit(START)
        .await
        .unwrap_or_else(|| panic!("ends; its log:\n{}", process.tail(30)));
    process.wait_for_log_end(START).await;
    (exited.status.success(), process)
}

async fn graphql(address: &str, query: &str, variables: Value) -> Value {
    crate::process::graphql(&reqwest::Client::new(), address, query, variables).await
}

/// Creates an echo task and waits for it to succeed; returns its id.
async fn run_echo_task(address: &str, prompt: &str) -> String {
    let created = graphql(
        address,
        "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }",
        json!({ "input": { "prompt": prompt, "model": "echo" } }),
    )
    .await;
    let id = created["data"]["createTask"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a task: {created}"))
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let task = read_task(address, &id).await;
        if task["status"] == "SUCCEEDED" {
            assert_eq!(task["result"], prompt);
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task ran: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_task(address: &str, id: &str) -> Value {
    let read = graphql(
        address,
        "query($id: ID!) { task(id: $id) { status result } }",
        json!({ "id": id }),
    )
    .await;
    read["data"]["task"].clone()
}

#[tokio::test]
async fn a_first_run_makes_the_cluster_and_a_second_reuses_it() {
    let data = DataDir::new();
    let mut first = data.launch(Launch::serve()).spawn();
    let address = first.address().await;
    assert!(logged(&first, "creating the embedded PostgreSQL cluster"));
    let started = wait_for_message(&first, "started the embedded PostgreSQL").await;
    assert_eq!(started["socket"], json!(data.path.join("run")));
    assert!(data.pgdata().join("PG_VERSION").is_file());
    let id = run_echo_task(&address, "kept across runs").await;
    let postmaster = data.postmaster().expect("a running postmaster");
    assert!(is_alive(postmaster));

    stop(&mut first).await;
    assert!(logged(&first, "stopped the embedded PostgreSQL"));
    assert!(data.postmaster().is_none(), "postmaster.pid is gone");
    // pg_ctl returns once postmaster.pid is gone, a moment before the exit.
    wait_until("the postmaster exits", START, || !is_alive(postmaster)).await;

    let mut second = data.launch(Launch::serve()).spawn();
    let address = second.address().await;
    assert!(logged(&second, "started the embedded PostgreSQL"));
    assert!(
        !logged(&second, "creating the embedded PostgreSQL cluster"),
        "no second initdb"
    );
    assert_eq!(
        read_task(&address, &id).await,
        json!({ "status": "SUCCEEDED", "result": "kept across runs" })
    );
    stop(&mut second).await;
    assert!(data.postmaster().is_none());
}

#[tokio::test]
async fn two_processes_share_one_cluster_and_the_last_stops_it() {
    let data = DataDir::new();
    let mut first = data.launch(Launch::serve()).spawn();
    let first_address = first.address().await;
    let mut second = data.launch(Launch::serve()).spawn();
    let second_address = second.address().await;
    let joined = wait_for_message(&second, "joined the embedded PostgreSQL").await;
    assert_eq!(joined["others"], 1);
    let postmaster = data.postmaster().expect("a running postmaster");
    run_echo_task(&first_address, "from the first").await;

    stop(&mut first).await;
    let left = first
        .events()
        .into_iter()
        .find(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.contains("left the embedded"))
        })
        .unwrap_or_else(|| panic!("the first left it running; its log:\n{}", first.tail(20)));
    assert_eq!(left["others"], 1);
    assert_eq!(data.postmaster(), Some(postmaster), "still the same server");
    run_echo_task(&second_address, "after the first stopped").await;

    stop(&mut second).await;
    assert!(logged(&second, "stopped the embedded PostgreSQL"));
    assert!(data.postmaster().is_none());
    wait_until("the postmaster exits", START, || !is_alive(postmaster)).await;
}

#[tokio::test]
async fn a_cluster_left_by_killed_processes_is_recovered() {
    let data = DataDir::new();
    let mut first = data.launch(Launch::serve()).spawn();
    let address = first.address().await;
    let id = run_echo_task(&address, "before the kill").await;
    first.kill().await;
    let postmaster = data.postmaster().expect("the cluster outlives a SIGKILL");
    assert!(is_alive(postmaster));

    // The next process finds the server running with nobody using it.
    let mut second = data.launch(Launch::serve()).spawn();
    let address = second.address().await;
    assert!(logged(
        &second,
        "reusing the embedded PostgreSQL left running"
    ));
    assert_eq!(read_task(&address, &id).await["status"], "SUCCEEDED");
    second.kill().await;

    // Now the postmaster dies too, leaving its postmaster.pid behind.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &postmaster.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    wait_until("the postmaster is gone", START, || !is_alive(postmaster)).await;
    assert_eq!(
        data.postmaster(),
        Some(postmaster),
        "a stale postmaster.pid"
    );

    let mut third = data.launch(Launch::serve()).spawn();
    let address = third.address().await;
    assert!(logged(&third, "started the embedded PostgreSQL"));
    assert_eq!(read_task(&address, &id).await["status"], "SUCCEEDED");
    run_echo_task(&address, "after the recovery").await;
    stop(&mut third).await;
    assert!(data.postmaster().is_none());
}

#[tokio::test]
async fn migrate_on_an_empty_data_dir_creates_migrates_and_stops() {
    let data = DataDir::new();
    let (succeeded, process) = run_to_end(data.launch(Launch::migrate())).await;
    assert!(succeeded, "{}", process.tail(30));
    for step in [
        "creating the embedded PostgreSQL cluster",
        "started the embedded PostgreSQL",
        "applied migrations",
        "stopped the embedded PostgreSQL",
    ] {
        assert!(
            logged(&process, step),
            "logs {step:?}:\n{}",
            process.tail(30)
        );
    }
    assert!(data.pgdata().join("PG_VERSION").is_file());
    assert!(data.postmaster().is_none(), "stopped");
    assert!(
        !data.path.join("postgres.initdb").exists(),
        "no half-made cluster"
    );

    // An initdb killed half-way leaves its staging directory, never a
    // cluster where one is expected: the next start makes a new one.
    std::fs::rename(data.pgdata(), data.path.join("postgres.initdb")).unwrap();
    let (succeeded, process) = run_to_end(data.launch(Launch::migrate())).await;
    assert!(succeeded, "{}", process.tail(30));
    assert!(logged(&process, "removing a half-made cluster"));
    assert!(logged(&process, "created the embedded PostgreSQL cluster"));
    assert!(!data.path.join("postgres.initdb").exists());
    assert!(data.postmaster().is_none(), "stopped");
}

#[tokio::test]
async fn a_socket_path_too_long_for_the_data_dir_goes_elsewhere_and_is_found() {
    let data = DataDir::under(&format!("{}/data", "deep".repeat(20)));
    let mut server = data.launch(Launch::serve()).spawn();
    let address = server.address().await;
    let started = wait_for_message(&server, "started the embedded PostgreSQL").await;
    let socket = started["socket"]
        .as_str()
        .expect("a socket directory")
        .to_owned();
    assert!(
        !socket.starts_with(&*data.path.to_string_lossy()),
        "{socket} is outside the data directory"
    );
    assert!(Path::new(&socket).join(".s.PGSQL.5432").exists());

    // Another process finds the socket through the running server.
    let (succeeded, migrate) = run_to_end(data.launch(Launch::migrate())).await;
    assert!(succeeded, "{}", migrate.tail(30));
    let joined = migrate
        .events()
        .into_iter()
        .find(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.contains("joined"))
        })
        .unwrap_or_else(|| {
            panic!(
                "it joined; its log:
{}",
                migrate.tail(20)
            )
        });
    assert_eq!(joined["socket"], socket.as_str());
    assert!(logged(&migrate, "left the embedded PostgreSQL running"));
    run_echo_task(&address, "through a short socket path").await;
    stop(&mut server).await;
    assert!(data.postmaster().is_none());
    assert!(
        !Path::new(&socket).exists(),
        "the socket directory is removed"
    );
}

#[tokio::test]
async fn auto_uses_a_server_that_answers_and_never_stays_off_the_cluster() {
    // A server answers at the default address: it is used, no cluster made.
    let db = TestDb::named_fresh();
    let server: tokio_postgres::Config = server_url().parse().expect("the test server's URL");
    let Some(tokio_postgres::config::Host::Tcp(host)) = server.get_hosts().first() else {
        panic!("the test server is reached over TCP");
    };
    let port = server.get_ports().first().copied().unwrap_or(5432);
    let data = DataDir::new();
    let mut launch = data
        .launch(Launch::migrate())
        .env("PGHOST", host)
        .env("PGPORT", &port.to_string())
        .env("PGDATABASE", &db.name)
        .env("PGUSER", server.get_user().unwrap_or("postgres"));
    if let Some(password) = server.get_password() {
        launch = launch.env("PGPASSWORD", &String::from_utf8_lossy(password));
    }
    let (succeeded, process) = run_to_end(launch).await;
    assert!(succeeded, "{}", process.tail(30));
    assert!(logged(
        &process,
        "using the PostgreSQL server at the default address"
    ));
    assert!(!data.path.exists(), "no data directory made");
    let migrated = db
        .client()
        .await
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .expect("the server's database was migrated");
    assert_eq!(migrated.get::<_, i64>(0), 0);

    // `never` with nothing at the default address: today's error, no cluster.
    let (succeeded, process) = run_to_end(data.launch(Launch::migrate()).args([
        "--embedded-postgres",
        "never",
        "--db-connect-attempts",
        "1",
    ]))
    .await;
    assert!(!succeeded);
    assert!(
        process
            .lines()
            .iter()
            .any(|line| line.contains("could not connect to PostgreSQL")),
        "{}",
        process.tail(10)
    );
    assert!(!data.path.exists(), "no data directory made");
}

#[tokio::test]
async fn without_server_programs_the_error_says_what_to_install() {
    let data = DataDir::new();
    let empty = TempDir::new("no-postgres");
    let (succeeded, process) = run_to_end(
        data.launch(Launch::migrate())
            .args(["--embedded-postgres", "always", "--postgres-bin-dir"])
            .args([empty.path().to_string_lossy()]),
    )
    .await;
    assert!(!succeeded);
    let error = process
        .lines()
        .into_iter()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("an error line:\n{}", process.tail(10)));
    assert!(error.contains("apt install postgresql"), "{error}");
    assert!(error.contains("DATABASE_URL"), "{error}");
    assert!(!data.path.exists(), "no data directory made");
}

#[tokio::test]
async fn a_data_dir_the_cluster_owner_cannot_reach_is_refused_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let private = TempDir::new("private");
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = private.path().join("data");
    let silent_port = free_port().to_string();
    let (succeeded, process) = run_to_end(
        Launch::migrate()
            .args(["--data-dir".to_owned(), data.to_string_lossy().into()])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", &silent_port),
    )
    .await;
    if running_as_root() {
        // PostgreSQL runs as `postgres`, which cannot pass the private directory.
        assert!(!succeeded);
        assert!(
            process
                .lines()
                .iter()
                .any(|line| line.contains("cannot write to the data directory")
                    && line.contains("--data-dir")),
            "{}",
            process.tail(10)
        );
    } else {
        // The owner of the private directory runs PostgreSQL itself.
        assert!(succeeded, "{}", process.tail(30));
        assert!(!is_running_in(&data));
    }
}

fn is_running_in(data: &Path) -> bool {
    data.join("postgres").join("postmaster.pid").exists()
}
