//! Which server a process uses, and a private PostgreSQL cluster for a
//! machine that has PostgreSQL installed but no server set up.
//!
//! With DATABASE_URL set, that is the server. Without it, the default address
//! is libpq's (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, else
//! postgres@localhost:5432/taskrunner). In `auto` mode one quick connection
//! decides: any answer from a server, even a refusal, means use it; no answer
//! means run a cluster of taskrunner's own in the data directory. That
//! cluster listens on a Unix socket only, is made on first use and reused
//! later, is shared by every process started on the same directory, and is
//! stopped when the last of them stops.

mod binaries;
mod cluster;
mod layout;
mod runner;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_postgres::NoTls;

pub use cluster::ClusterUse;

use crate::config::{DatabaseArgs, EmbeddedPostgres};
use crate::db::redact_url;
use layout::Layout;
use runner::Runner;

/// Decides which server this process uses and sets `args.database_url` to
/// it: DATABASE_URL if set, else the default address or the private cluster
/// (started or joined), as `--embedded-postgres` says. A returned
/// [`ClusterUse`] is released with [`release`] once the process is done with
/// the database (its pools and listeners closed).
pub async fn resolve(args: &mut DatabaseArgs) -> anyhow::Result<Option<ClusterUse>> {
    let mode = args.embedded_postgres;
    if let Some(url) = &args.configured_url {
        if mode == EmbeddedPostgres::Always {
            bail!(
                "--embedded-postgres is `always` (TASKRUNNER_EMBEDDED_POSTGRES) but DATABASE_URL \
                 is set too: unset DATABASE_URL to use the private cluster, or choose `auto` \
                 or `never` to use DATABASE_URL"
            );
        }
        args.database_url = url.clone();
        return Ok(None);
    }
    let default = default_url(|name| std::env::var(name).ok())?;
    let why = match mode {
        EmbeddedPostgres::Never => {
            args.database_url = default;
            return Ok(None);
        }
        EmbeddedPostgres::Always => "--embedded-postgres is `always`".to_owned(),
        EmbeddedPostgres::Auto => match answers(&default, args.timeout()).await {
            Ok(()) => {
                tracing::info!(
                    server = %redact_url(&default),
                    "DATABASE_URL is not set; using the PostgreSQL server at the default address"
                );
                args.database_url = default;
                return Ok(None);
            }
            Err(silence) => {
                let why = format!(
                    "DATABASE_URL is not set and no PostgreSQL answers at {}",
                    redact_url(&default)
                );
                tracing::info!(reason = %silence, "{why}; using a private cluster");
                why
            }
        },
    };
    let (cluster, url) = start(args)
        .await
        .with_context(|| format!("could not run a private PostgreSQL ({why})"))?;
    args.database_url = url;
    Ok(Some(cluster))
}

/// Releases this process's use of the cluster, if it has one.
pub async fn release(cluster: Option<ClusterUse>) {
    if let Some(cluster) = cluster {
        cluster.release().await;
    }
}

/// Finds the programs, makes the data directory, and starts or joins the
/// cluster in it.
async fn start(args: &DatabaseArgs) -> anyhow::Result<(ClusterUse, String)> {
    let root = std::path::absolute(&args.data_dir).with_context(|| {
        format!(
            "--data-dir {} is not a usable path",
            args.data_dir.display()
        )
    })?;
    layout::check_data_dir(&root)?;
    let made_by = std::fs::read_to_string(root.join("postgres").join("PG_VERSION"))
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let candidates = binaries::Sources::of_this_machine().candidates();
    let bindir = binaries::choose(
        args.postgres_bin_dir.as_deref(),
        &candidates,
        made_by,
        binaries::version_of,
    )?;
    let created = !root.exists();
    std::fs::create_dir_all(&root)
        .with_context(|| format!("could not create the data directory {}", root.display()))?;
    let root = root.canonicalize()?;
    if created {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
    }
    let run_as = cluster_owner(&root, created)?;
    cluster::ClusterUse::attach(Layout { root }, Runner { bindir, run_as }).await
}

/// Whom the cluster's programs run as: this process's user, or `postgres`
/// when this process runs as root (PostgreSQL refuses to). A directory made
/// just now is given to `postgres`; one that was there must be writable by it.
fn cluster_owner(root: &Path, created: bool) -> anyhow::Result<Option<runner::Ids>> {
    if runner::current_user()?.uid != 0 {
        return Ok(None);
    }
    let Some(postgres) = runner::user_named("postgres")? else {
        bail!(
            "taskrunner runs as root, and PostgreSQL will not; there is no `postgres` user \
             to run it as. Create one (`useradd --system postgres`), run taskrunner as \
             another user, or set DATABASE_URL"
        );
    };
    if created {
        std::os::unix::fs::chown(root, Some(postgres.uid), Some(postgres.gid))
            .with_context(|| format!("could not give {} to user postgres", root.display()))?;
    }
    let writable = std::process::Command::new("test")
        .arg("-w")
        .arg(root)
        .current_dir("/")
        .uid(postgres.uid)
        .gid(postgres.gid)
        .status()
        .context("could not run `test`")?;
    if !writable.success() {
        bail!(
            "taskrunner runs as root, so PostgreSQL runs as user `postgres`, which cannot \
             write to the data directory {} (it, or a directory above it, is not open to \
             that user, as /root is not). Choose a --data-dir it can reach (for example \
             under /var/lib), run taskrunner as another user, or set DATABASE_URL",
            root.display()
        );
    }
    Ok(Some(postgres))
}

/// libpq's default server: PGHOST, PGPORT, PGUSER, PGDATABASE and PGPASSWORD
/// (read through `env`), else postgres@localhost:5432/taskrunner.
fn default_url(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    let port = match var("PGPORT") {
        Some(port) => port
            .trim()
            .parse::<u16>()
            .ok()
            .with_context(|| format!("PGPORT {port:?} is not a port number"))?,
        None => 5432,
    };
    let hosts = var("PGHOST").unwrap_or_else(|| "localhost".to_owned());
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|host| format!("{}:{port}", layout::percent_encode(host.trim())))
        .collect();
    let user = layout::percent_encode(&var("PGUSER").unwrap_or_else(|| "postgres".to_owned()));
    let password = var("PGPASSWORD")
        .map(|password| format!(":{}", layout::percent_encode(&password)))
        .unwrap_or_default();
    let database =
        layout::percent_encode(&var("PGDATABASE").unwrap_or_else(|| "taskrunner".to_owned()));
    Ok(format!(
        "postgres://{user}{password}@{}/{database}",
        hosts.join(",")
    ))
}

/// Whether a PostgreSQL server answers at `url`: a connection, or any error
/// the server sends (a wrong password, a missing database, a refusal without
/// TLS, a server starting up) means yes; otherwise, why not.
async fn answers(url: &str, timeout: Duration) -> Result<(), String> {
    let config: tokio_postgres::Config = url.parse().map_err(|error| format!("{error}"))?;
    match tokio::time::timeout(timeout, config.connect(NoTls)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Ok((client, connection))) => {
            let driver = tokio::spawn(connection);
            drop(client);
            let _closed = driver.await;
            Ok(())
        }
        Ok(Err(error)) if error.as_db_error().is_some() => Ok(()),
        Ok(Err(error)) => Err(crate::error::error_chain(&error)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn url_with(vars: &[(&str, &str)]) -> anyhow::Result<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        default_url(|name| vars.get(name).cloned())
    }

    #[test]
    fn without_libpq_variables_the_default_is_the_documented_one() {
        assert_eq!(url_with(&[]).unwrap(), crate::config::DEFAULT_DATABASE_URL);
    }

    #[test]
    fn libpq_variables_set_the_default_address() {
        let url = url_with(&[
            ("PGHOST", "/var/run/postgresql"),
            ("PGPORT", "5433"),
            ("PGUSER", "ana"),
            ("PGDATABASE", "tasks"),
            ("PGPASSWORD", "p@ss"),
        ])
        .unwrap();
        assert_eq!(
            url,
            "postgres://ana:p%40ss@%2Fvar%2Frun%2Fpostgresql:5433/tasks"
        );
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(config.get_user(), Some("ana"));
        assert_eq!(config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(config.get_dbname(), Some("tasks"));
        let url = url_with(&[("PGHOST", "db1,db2"), ("PGPORT", "6000")]).unwrap();
        assert_eq!(url, "postgres://postgres@db1:6000,db2:6000/taskrunner");
        let error = url_with(&[("PGPORT", "fifty")]).unwrap_err();
        assert!(error.to_string().contains("PGPORT"), "{error}");
    }

    #[tokio::test]
    async fn always_with_database_url_is_refused() {
        let mut args = DatabaseArgs::new("postgres://postgres@localhost/x");
        args.embedded_postgres = EmbeddedPostgres::Always;
        let error = resolve(&mut args).await.unwrap_err().to_string();
        assert!(error.contains("DATABASE_URL is set too"), "{error}");
    }

    #[tokio::test]
    async fn a_set_database_url_is_used_as_it_is() {
        let mut args = DatabaseArgs::new("postgres://postgres@127.0.0.1:1/x");
        args.database_url = String::new();
        assert!(resolve(&mut args).await.unwrap().is_none());
        assert_eq!(args.database_url, "postgres://postgres@127.0.0.1:1/x");
    }
}
