//! Running PostgreSQL's programs as the cluster's owner. PostgreSQL refuses to
//! run as root, so a taskrunner running as root runs them as `postgres`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A user to run as: user and group ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Runs the cluster's programs from one directory, as one user.
#[derive(Debug, Clone)]
pub(super) struct Runner {
    pub bindir: PathBuf,
    /// Whom to run as, when that is not this process's user.
    pub run_as: Option<Ids>,
}

impl Runner {
    /// `program` of the cluster's directory, ready to run as its owner in `dir`.
    pub fn command(&self, program: &str, dir: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(self.bindir.join(program));
        self.prepare(&mut command, dir);
        command
    }

    /// Sets the user, working directory and environment of `command`. It
    /// runs in a process group of its own, so a Ctrl-C at the terminal
    /// reaches taskrunner alone, which then stops the cluster in order.
    pub fn prepare(&self, command: &mut std::process::Command, dir: &Path) {
        if let Some(Ids { uid, gid }) = self.run_as {
            command.uid(uid).gid(gid);
        }
        // libpq's variables would point the programs elsewhere.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                command.env_remove(name);
            }
        }
        command
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null());
    }

    /// Runs `program` with `args` to its end, at most `deadline`, and returns
    /// its output; an error if it could not run, took too long or failed.
    pub async fn run(
        &self,
        program: &str,
        args: &[&std::ffi::OsStr],
        dir: &Path,
        deadline: Duration,
    ) -> anyhow::Result<Output> {
        let output = self.output(program, args, dir, deadline).await?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output)
    }

    /// Runs `program` to its end, at most `deadline`, whatever its exit status.
    pub async fn output(
        &self,
        program: &str,
        args: &[&std::ffi::OsStr],
        dir: &Path,
        deadline: Duration,
    ) -> anyhow::Result<Output> {
        let mut command = tokio::process::Command::from(self.command(program, dir));
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tokio::time::timeout(deadline, command.output())
            .await
            .map_err(|_| anyhow::anyhow!("{program} took over {deadline:?}"))?
            .with_context(|| format!("could not run {}", self.bindir.join(program).display()))
    }
}

/// The ids of this process's user.
pub(super) fn current_user() -> anyhow::Result<Ids> {
    ids_of(None)
}

/// The ids of the user named `name`, if there is one.
pub(super) fn user_named(name: &str) -> anyhow::Result<Option<Ids>> {
    let known = std::process::Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("could not run `id`")?;
    if !known.success() {
        return Ok(None);
    }
    ids_of(Some(name)).map(Some)
}

/// `id -u` and `id -g`, for `name` or for this process. `id` asks the
/// system's user database (NSS), which /etc/passwd alone would not.
fn ids_of(name: Option<&str>) -> anyhow::Result<Ids> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let mut command = std::process::Command::new("id");
        command.arg(flag).args(name);
        let output = command.output().context("could not run `id`")?;
        if !output.status.success() {
            bail!(
                "`id {flag}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .with_context(|| format!("`id {flag}` printed no number"))
    };
    Ok(Ids {
        uid: id("-u")?,
        gid: id("-g")?,
    })
}
