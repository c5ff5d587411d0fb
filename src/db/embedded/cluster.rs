//! One process's use of the private cluster: start it (making it first if
//! need be) or join the one running; on leaving, stop it unless another
//! process still uses it.
//!
//! Files in the data directory coordinate processes. `cluster.lock` is held
//! exclusively while a process starts, joins, leaves or stops the cluster.
//! Each process using the cluster holds a lock on a file of its own in
//! `users/`; one leaving counts the files still locked, and stops the cluster
//! if there are none. File locks die with their process, so a killed
//! taskrunner leaves no phantom user: the next process to look clears its file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::layout::{self, Layout, PORT};
use super::runner::Runner;

/// The database taskrunner uses in the private cluster.
const DATABASE: &str = "taskrunner";
/// How long to wait for another process to finish starting or stopping the cluster.
const LOCK_WAIT: Duration = Duration::from_secs(180);
/// How long `initdb` may take.
const INITDB_DEADLINE: Duration = Duration::from_secs(300);
/// How long `pg_ctl` may wait for the server to start or stop (its `-t`), and
/// how long taskrunner waits for `pg_ctl` itself.
const PG_CTL_WAIT: &str = "60";
const PG_CTL_DEADLINE: Duration = Duration::from_secs(90);
/// The settings taskrunner owns, rewritten before every start.
const SETTINGS_FILE: &str = "taskrunner.conf";

/// This process's use of the private cluster. Release it when the process is
/// done with the database ([`ClusterUse::release`]); dropping it releases it
/// too, blocking the thread.
#[derive(Debug)]
pub struct ClusterUse {
    layout: Layout,
    runner: Runner,
    /// This process's file in `users/`, and the open file holding its lock.
    registration: Option<(PathBuf, File)>,
}

impl ClusterUse {
    /// Starts the cluster in `layout` (making it if there is none) or joins
    /// the one running there. Returns the use and the URL to connect with.
    pub(super) async fn attach(layout: Layout, runner: Runner) -> anyhow::Result<(Self, String)> {
        let decision = lock_exclusive(&layout.cluster_lock()).await?;
        let registration = register(&layout.users())?;
        let cluster = ClusterUse {
            layout,
            runner,
            registration: Some(registration),
        };
        let started = cluster.start_or_join().await;
        drop(decision);
        match started {
            Ok(url) => Ok((cluster, url)),
            Err(error) => {
                cluster.release().await;
                Err(error)
            }
        }
    }

    /// Leaves the cluster; stops it (`pg_ctl stop -m fast`, bounded) if no
    /// other process uses it, else leaves it running for them.
    pub async fn release(mut self) {
        let decision = match lock_exclusive(&self.layout.cluster_lock()).await {
            Ok(decision) => decision,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "leaving the embedded PostgreSQL running");
                self.registration = None;
                return;
            }
        };
        let others = self.leave();
        if others == 0 {
            let socket_dir = self.socket_dir_in_use();
            let mut stop = tokio::process::Command::from(self.stop_command());
            stop.kill_on_drop(true);
            let stopped = tokio::time::timeout(PG_CTL_DEADLINE, stop.output()).await;
            let stopped = match stopped {
                Ok(output) => output.map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::anyhow!("pg_ctl stop took over {PG_CTL_DEADLINE:?}")),
            };
            self.report_stop(stopped, socket_dir);
        } else {
            tracing::info!(
                data_dir = %self.layout.root.display(),
                others,
                "left the embedded PostgreSQL running for {others} other taskrunner process(es)"
            );
        }
        drop(decision);
    }

    async fn start_or_join(&self) -> anyhow::Result<String> {
        let pgdata = self.layout.pgdata();
        if self.is_running().await? {
            let pid_file = std::fs::read_to_string(pgdata.join("postmaster.pid"))
                .context("could not read postmaster.pid")?;
            let (socket_dir, port) = layout::listening_at(&pid_file)
                .context("postmaster.pid names no socket directory")?;
            let others = self.live_others();
            let data_dir = self.layout.root.display();
            if others == 0 {
                tracing::info!(
                    data_dir = %data_dir,
                    socket = %socket_dir.display(),
                    "reusing the embedded PostgreSQL left running by a process that did not stop it"
                );
            } else {
                tracing::info!(
                    data_dir = %data_dir,
                    socket = %socket_dir.display(),
                    others,
                    "joined the embedded PostgreSQL already running for {others} other process(es)"
                );
            }
            return Ok(layout::socket_url(&socket_dir, port, DATABASE));
        }
        if !pgdata.join("PG_VERSION").is_file() {
            if pgdata.exists() {
                bail!(
                    "{} exists but holds no PostgreSQL cluster (no PG_VERSION); move it \
                     away or choose another --data-dir",
                    pgdata.display()
                );
            }
            self.create().await?;
        }
        let socket_dir = self.layout.socket_dir(&std::env::temp_dir());
        self.prepare_socket_dir(&socket_dir)?;
        self.write_settings(&socket_dir)?;
        let log = self.layout.log();
        let args = [
            "start".as_ref(),
            "-D".as_ref(),
            pgdata.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            PG_CTL_WAIT.as_ref(),
            "-s".as_ref(),
        ];
        let root = &self.layout.root;
        if let Err(error) = self
            .runner
            .run("pg_ctl", &args, root, PG_CTL_DEADLINE)
            .await
        {
            bail!(
                "{error:#}\nthe server's log ({}) ends:\n{}",
                log.display(),
                log_tail(&log)
            );
        }
        tracing::info!(
            data_dir = %root.display(),
            socket = %socket_dir.display(),
            log = %log.display(),
            "started the embedded PostgreSQL (no TCP port: a Unix socket only)"
        );
        Ok(layout::socket_url(&socket_dir, PORT, DATABASE))
    }

    /// Whether a server runs on the cluster (`pg_ctl status`: 0 running, 3 not).
    async fn is_running(&self) -> anyhow::Result<bool> {
        let pgdata = self.layout.pgdata();
        if !pgdata.join("postmaster.pid").exists() {
            return Ok(false);
        }
        let args = ["status".as_ref(), "-D".as_ref(), pgdata.as_os_str()];
        let output = self
            .runner
            .output("pg_ctl", &args, &self.layout.root, PG_CTL_DEADLINE)
            .await?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => bail!(
                "pg_ctl status failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }

    /// Makes the cluster: `initdb` in the staging directory, then renames it.
    async fn create(&self) -> anyhow::Result<()> {
        let staging = self.layout.staging();
        if staging.exists() {
            tracing::warn!(
                path = %staging.display(),
                "removing a half-made cluster left by an interrupted first start"
            );
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("could not remove {}", staging.display()))?;
        }
        tracing::info!(
            data_dir = %self.layout.root.display(),
            bindir = %self.runner.bindir.display(),
            "creating the embedded PostgreSQL cluster (initdb)"
        );
        let args = [
            "-D".as_ref(),
            staging.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            // Only the owner reaches the socket (its directory is private);
            // there is no TCP port to reach.
            "--auth-local=trust".as_ref(),
            "--auth-host=reject".as_ref(),
            "--encoding=UTF8".as_ref(),
            "--locale=C".as_ref(),
            "--no-instructions".as_ref(),
        ];
        self.runner
            .run("initdb", &args, &self.layout.root, INITDB_DEADLINE)
            .await?;
        let conf = staging.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .with_context(|| format!("could not open {}", conf.display()))?;
        writeln!(
            file,
            "\n# Where the server listens is taskrunner's to set, before every start.\n\
             include_if_exists = '{SETTINGS_FILE}'"
        )?;
        let pgdata = self.layout.pgdata();
        std::fs::rename(&staging, &pgdata)
            .with_context(|| format!("could not move the new cluster to {}", pgdata.display()))?;
        tracing::info!(pgdata = %pgdata.display(), "created the embedded PostgreSQL cluster");
        Ok(())
    }

    /// Makes the socket directory, private to the cluster's owner, or checks
    /// the one there is: another user's directory could take connections
    /// meant for this cluster (trusted, without a password).
    fn prepare_socket_dir(&self, dir: &Path) -> anyhow::Result<()> {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => self.give_to_owner(dir)?,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error).with_context(|| format!("could not create {}", dir.display()));
            }
        }
        let owner = std::fs::metadata(self.layout.pgdata())?.uid();
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() || meta.uid() != owner || meta.mode() & 0o077 != 0 {
            bail!(
                "the socket directory {} is not a private directory of the cluster's owner \
                 (uid {owner}); remove it and start again",
                dir.display()
            );
        }
        Ok(())
    }

    /// Writes the settings taskrunner owns: no TCP, the socket and who may use it.
    fn write_settings(&self, socket_dir: &Path) -> anyhow::Result<()> {
        let path = self.layout.pgdata().join(SETTINGS_FILE);
        let text = format!(
            "# Written by taskrunner before every start; changes here are lost.\n\
             listen_addresses = ''\n\
             port = {PORT}\n\
             unix_socket_directories = '{}'\n\
             unix_socket_permissions = 0700\n",
            socket_dir.display()
        );
        std::fs::write(&path, text)
            .with_context(|| format!("could not write {}", path.display()))?;
        self.give_to_owner(&path)
    }

    fn give_to_owner(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(ids) = self.runner.run_as {
            std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid)).with_context(|| {
                format!("could not give {} to the cluster's owner", path.display())
            })?;
        }
        Ok(())
    }

    /// Drops this process's registration; returns how many other processes
    /// still use the cluster. Call with `cluster.lock` held.
    fn leave(&mut self) -> usize {
        if let Some((path, file)) = self.registration.take() {
            drop(file);
            let _gone = std::fs::remove_file(path);
        }
        self.live_others()
    }

    /// The processes using the cluster other than this one, clearing the
    /// files of processes that are gone. Call with `cluster.lock` held.
    fn live_others(&self) -> usize {
        let mine = self.registration.as_ref().map(|(path, _)| path.as_path());
        let entries = std::fs::read_dir(self.layout.users()).into_iter().flatten();
        entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| Some(path.as_path()) != mine)
            .filter(|path| {
                let Ok(file) = File::open(path) else {
                    return false;
                };
                match file.try_lock() {
                    Ok(()) => {
                        drop(file);
                        let _gone = std::fs::remove_file(path);
                        false
                    }
                    Err(_) => true,
                }
            })
            .count()
    }

    fn stop_command(&self) -> std::process::Command {
        let mut command = self.runner.command("pg_ctl", &self.layout.root);
        command
            .args(["stop", "-D"])
            .arg(self.layout.pgdata())
            .args(["-m", "fast", "-w", "-t", PG_CTL_WAIT]);
        command
    }

    /// The socket directory of the running server, from its postmaster.pid.
    fn socket_dir_in_use(&self) -> Option<PathBuf> {
        let pid_file = std::fs::read_to_string(self.layout.pgdata().join("postmaster.pid")).ok()?;
        layout::listening_at(&pid_file).map(|(dir, _)| dir)
    }

    /// Logs how the stop went; after a stop, removes a socket directory made
    /// outside the data directory (an empty one: the server removed its socket).
    fn report_stop(
        &self,
        stopped: anyhow::Result<std::process::Output>,
        socket_dir: Option<PathBuf>,
    ) {
        let data_dir = self.layout.root.display();
        match stopped {
            Ok(output) if output.status.success() => {
                tracing::info!(data_dir = %data_dir, "stopped the embedded PostgreSQL");
                if let Some(dir) = socket_dir.filter(|dir| !dir.starts_with(&self.layout.root)) {
                    let _removed = std::fs::remove_dir(dir);
                }
            }
            // Exit status 3: no server was running; nothing to stop.
            Ok(output) if output.status.code() == Some(3) => {}
            Ok(output) => tracing::warn!(
                data_dir = %data_dir,
                "could not stop the embedded PostgreSQL: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => tracing::warn!(
                data_dir = %data_dir,
                "could not stop the embedded PostgreSQL: {error:#}"
            ),
        }
    }
}

impl Drop for ClusterUse {
    /// A use not released (a panic, an early return) is released here,
    /// blocking: the cluster must not outlive its last process for nothing.
    fn drop(&mut self) {
        if self.registration.is_none() {
            return;
        }
        let Ok(lock) = open_lock_file(&self.layout.cluster_lock()) else {
            return;
        };
        if lock.lock().is_err() {
            return;
        }
        if self.leave() == 0 {
            let socket_dir = self.socket_dir_in_use();
            let stopped = self.stop_command().output().map_err(anyhow::Error::from);
            self.report_stop(stopped, socket_dir);
        }
    }
}

/// Takes `path`'s lock exclusively, waiting up to [`LOCK_WAIT`] for another
/// process to let it go. The lock lasts as long as the returned file.
async fn lock_exclusive(path: &Path) -> anyhow::Result<File> {
    let file = open_lock_file(path)?;
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                if !said {
                    tracing::info!(
                        "waiting for another taskrunner to finish starting or stopping the embedded PostgreSQL"
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(TryLockError::WouldBlock) => bail!(
                "another process held {} for over {LOCK_WAIT:?}",
                path.display()
            ),
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("could not lock {}", path.display()));
            }
        }
    }
}

fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("could not open {}", path.display()))
}

/// Creates and locks this process's file in `users`.
fn register(users: &Path) -> anyhow::Result<(PathBuf, File)> {
    std::fs::create_dir_all(users)
        .with_context(|| format!("could not create {}", users.display()))?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let path = users.join(format!("{}-{suffix}", std::process::id()));
    let file =
        File::create_new(&path).with_context(|| format!("could not create {}", path.display()))?;
    file.try_lock()
        .map_err(|error| anyhow::anyhow!("could not lock {}: {error}", path.display()))?;
    Ok((path, file))
}

/// The last lines of the server's log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
