//! The real `taskrunner` binary as a child process: start `serve` or `worker`
//! with JSON logs, read what it logs, wait for a log event, learn the address
//! `serve` listens on, send it SIGKILL or SIGTERM, and time its exit.
//!
//! Each child runs in an empty working directory of its own with the
//! taskrunner and OpenAI variables of the test's environment removed, so
//! neither a `.env`, a `taskrunner.toml` nor the developer's shell can change
//! what a test runs.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::fake_provider::FakeProvider;
use crate::temp_dir::TempDir;

/// What to start: a command line and environment for the binary.
pub struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// `taskrunner serve` on any free port of 127.0.0.1.
    pub fn serve() -> Launch {
        Launch::serve_on("127.0.0.1:0")
    }

    /// `taskrunner serve --bind <bind>`.
    pub fn serve_on(bind: &str) -> Launch {
        Launch::command("serve").args(["--bind", bind])
    }

    /// `taskrunner worker`, serving its health checks and metrics on any
    /// free port of 127.0.0.1 (so workers started together never collide).
    pub fn worker() -> Launch {
        Launch::command("worker").args(["--metrics-bind", "127.0.0.1:0"])
    }

    /// `taskrunner mcp`, which speaks MCP on its stdin and stdout.
    pub fn mcp() -> Launch {
        Launch::command("mcp")
    }

    /// `taskrunner healthcheck`, which asks a server once and exits.
    pub fn healthcheck() -> Launch {
        Launch::command("healthcheck")
    }

    /// `taskrunner migrate`, which exits once the schema is up to date.
    pub fn migrate() -> Launch {
        Launch::command("migrate")
    }

    /// `taskrunner token`, which creates, lists or revokes tokens and exits
    /// (the action and its options follow, as `args`).
    pub fn token() -> Launch {
        Launch::command("token")
    }

    /// Any command line (after the program name), logging as the others do.
    pub fn command_line<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Launch {
        let mut args = args.into_iter().map(Into::into);
        let name: String = args.next().unwrap_or_default();
        let mut launch = Launch::command(&name);
        launch.args.splice(1..1, args);
        launch
    }

    fn command(name: &str) -> Launch {
        Launch {
            args: vec![name.to_owned(), "--log-format".into(), "json".into()],
            env: vec![("RUST_LOG".into(), "info".into())],
        }
    }

    /// Adds command-line arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The database to use (`DATABASE_URL`).
    pub fn database(self, url: &str) -> Launch {
        self.env("DATABASE_URL", url)
    }

    /// The provider configuration file to read (`--config`).
    pub fn providers(self, config: &ProviderConfig) -> Launch {
        let path = config.path.to_string_lossy().into_owned();
        self.args(["--config".to_owned(), path])
    }

    /// The command to run, in an empty working directory of its own (kept
    /// while the returned directory lives), its standard streams left to the
    /// caller: an MCP client speaks on them.
    pub fn into_command(self) -> (Command, TempDir) {
        let workdir = TempDir::new("proc");
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskrunner"));
        command
            .args(&self.args)
            .current_dir(workdir.path())
            .kill_on_drop(true);
        for (name, _) in std::env::vars() {
            if name.starts_with("TASKRUNNER_")
                || name.starts_with("OPENAI_")
                || name == "DATABASE_URL"
                || name == "RUST_LOG"
            {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        (command, workdir)
    }

    /// Starts the process; it is killed if the returned value is dropped.
    pub fn spawn(self) -> Process {
        let label = self.args[0].clone();
        let (mut command, workdir) = self.into_command();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the taskrunner binary");
        let pid = child.id().expect("a freshly started child has a pid");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (progress, _) = watch::channel(LogProgress {
            lines: 0,
            closed: false,
        });
        let reader_lines = Arc::clone(&lines);
        let reader_progress = progress.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let count = {
                    let mut lines = reader_lines.lock().unwrap_or_else(|e| e.into_inner());
                    lines.push(line);
                    lines.len()
                };
                reader_progress.send_modify(|p| p.lines = count);
            }
            reader_progress.send_modify(|p| p.closed = true);
        });
        Process {
            child,
            pid,
            label,
            lines,
            progress,
            signalled_at: None,
            _workdir: workdir,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LogProgress {
    lines: usize,
    /// stderr reached its end: the process exited (or closed it).
    closed: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    pub status: ExitStatus,
    /// From the last signal sent (or from the start of the wait, if none
    /// was) to the exit.
    pub took: Duration,
}

/// A running `taskrunner` child process.
pub struct Process {
    child: Child,
    pid: u32,
    label: String,
    lines: Arc<Mutex<Vec<String>>>,
    progress: watch::Sender<LogProgress>,
    signalled_at: Option<Instant>,
    _workdir: TempDir,
}

impl Process {
    /// Every line logged so far (stderr), JSON or not.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every JSON log event so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The last `n` log lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for a JSON log event that `matches`, and returns it. Fails if
    /// none comes within `within` or the process ends first.
    pub async fn wait_for_event(
        &self,
        what: &str,
        matches: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let mut progress = self.progress.subscribe();
        let mut seen = 0;
        loop {
            let LogProgress { closed, .. } = *progress.borrow_and_update();
            let lines = self.lines();
            if let Some(event) = lines[seen..]
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|event| matches(event))
            {
                return event;
            }
            seen = lines.len();
            assert!(
                !closed,
                "taskrunner {} (pid {}) ended before logging {what}; its log:\n{}",
                self.label,
                self.pid,
                self.tail(40)
            );
            if tokio::time::timeout_at(deadline, progress.changed())
                .await
                .is_err()
            {
                panic!(
                    "taskrunner {} (pid {}) did not log {what} within {within:?}; its log:\n{}",
                    self.label,
                    self.pid,
                    self.tail(40)
                );
            }
        }
    }

    /// Waits up to `within` for stderr to reach its end (the process has
    /// exited), so that every line it logged has been read.
    pub async fn wait_for_log_end(&self, within: Duration) {
        let mut progress = self.progress.subscribe();
        let ended = tokio::time::timeout(within, progress.wait_for(|p| p.closed)).await;
        assert!(
            matches!(ended, Ok(Ok(_))),
            "taskrunner {} (pid {}) kept its stderr open for {within:?}",
            self.label,
            self.pid
        );
    }

    /// The address `serve` listens on (from its "listening" event), or a
    /// worker serves its health checks and metrics on.
    pub async fn address(&self) -> String {
        let event = self
            .wait_for_event(
                "the address it listens on",
                |event| event["address"].is_string(),
                Duration::from_secs(60),
            )
            .await;
        event["address"]
            .as_str()
            .expect("address is a string")
            .to_owned()
    }

    /// Sends SIGKILL: no goodbye, no cleanup. Returns once it is reaped.
    pub async fn kill(&mut self) {
        self.signalled_at = Some(Instant::now());
        // tokio's kill sends SIGKILL and reaps the child.
        if let Err(error) = self.child.kill().await {
            panic!("could not SIGKILL pid {}: {error}", self.pid);
        }
    }

    /// Sends SIGTERM, asking for a graceful shutdown.
    pub fn terminate(&mut self) {
        self.signal("-TERM");
    }

    fn signal(&mut self, signal: &str) {
        self.signalled_at = Some(Instant::now());
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }

    /// Waits up to `within` for the process to exit; `None` if it is still
    /// running then (it is left running: kill it or drop it).
    pub async fn wait_for_exit(&mut self, within: Duration) -> Option<Exited> {
        let started = self.signalled_at.unwrap_or_else(Instant::now);
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Some(Exited {
                status,
                took: started.elapsed(),
            }),
            Ok(Err(error)) => panic!("could not wait for pid {}: {error}", self.pid),
            Err(_) => None,
        }
    }
}

/// Sends one GraphQL request to `serve` at `address` and returns the answer.
pub async fn graphql(
    client: &reqwest::Client,
    address: &str,
    query: &str,
    variables: Value,
) -> Value {
    client
        .post(format!("http://{address}/graphql"))
        .json(&serde_json::json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON")
}

/// A `taskrunner.toml` in a directory of its own, pointing every model name
/// at a fake provider.
pub struct ProviderConfig {
    path: PathBuf,
    _dir: TempDir,
}

impl ProviderConfig {
    /// One OpenAI-compatible provider, the fake, serving every model name.
    pub fn for_fake(fake: &FakeProvider) -> ProviderConfig {
        let dir = TempDir::new("config");
        let path = dir.path().join("taskrunner.toml");
        let toml = format!(
            "[[provider]]\nname = \"fake\"\nbase_url = \"{}\"\nmodel_prefixes = [\"\"]\ndiscover_models = false\ntimeout_seconds = 60\n",
            fake.base_url
        );
        std::fs::write(&path, toml).expect("write taskrunner.toml");
        ProviderConfig { path, _dir: dir }
    }
}
