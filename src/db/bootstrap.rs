//! Start-up: reach the PostgreSQL server (with bounded retries), create the
//! database when it does not exist yet, and apply pending migrations.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio_postgres::error::SqlState;

use crate::config::DatabaseArgs;
use crate::db::connect::{ConnectError, ConnectOptions};
use crate::db::migrations;

/// Makes the database ready to serve: reachable, existing and migrated.
/// Returns the migrations it applied.
pub async fn prepare_database(args: &DatabaseArgs) -> anyhow::Result<Vec<String>> {
    let options = ConnectOptions::parse(&args.database_url).with_context(|| {
        format!(
            "DATABASE_URL {} cannot be used",
            redact_url(&args.database_url)
        )
    })?;
    let config = options.config();
    let name = config
        .get_dbname()
        .map(str::to_owned)
        .or_else(|| config.get_user().map(str::to_owned))
        .context("DATABASE_URL names no database")?;

    wait_for_server(args, &options, &name).await?;

    let conn = options
        .establish(args.timeout())
        .await
        .with_context(|| format!("could not connect to {}", redact_url(&args.database_url)))?;
    let applied = migrations::run_pending(conn).await?;
    if applied.is_empty() {
        tracing::info!(database = %name, "database schema is up to date");
    } else {
        tracing::info!(database = %name, migrations = ?applied, "applied migrations");
    }
    Ok(applied)
}

/// Connects until the server answers, creating the database if it is missing.
async fn wait_for_server(
    args: &DatabaseArgs,
    options: &ConnectOptions,
    name: &str,
) -> anyhow::Result<()> {
    let mut delays = super::retry_delays(Duration::from_millis(500), Duration::from_secs(5));
    for attempt in 1..=args.db_connect_attempts {
        match probe(options, args.timeout()).await {
            Ok(()) => return Ok(()),
            Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                create_database(options, name, args.timeout()).await?;
                return Ok(());
            }
            Err(error) if is_transient(&error) && attempt < args.db_connect_attempts => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(
                    server = %redact_url(&args.database_url),
                    attempt,
                    of = args.db_connect_attempts,
                    error = %error,
                    "database not reachable yet; retrying in {delay:?}"
                );
                tokio::time::sleep(delay).await;
            }
            Err(error @ ConnectError::TlsRefused(_)) => {
                bail!(
                    "could not connect to PostgreSQL at {}: {error}",
                    redact_url(&args.database_url)
                );
            }
            Err(error) => {
                bail!(
                    "could not connect to PostgreSQL at {}: {}\n\
                     Is the server running? Start a local one (for example \
                     `pg_ctlcluster 15 main start`, or `docker run -p 5432:5432 \
                     -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`), or point \
                     DATABASE_URL at yours.",
                    redact_url(&args.database_url),
                    crate::error::error_chain(&error)
                );
            }
        }
    }
    bail!(
        "could not connect to PostgreSQL at {}",
        redact_url(&args.database_url)
    )
}

/// Opens and closes one connection.
async fn probe(options: &ConnectOptions, timeout: Duration) -> Result<(), ConnectError> {
    let (client, connection) = options.connect(timeout).await?;
    let driver = tokio::spawn(connection);
    drop(client);
    let _closed = driver.await;
    Ok(())
}

/// Creates the database `name`, tolerating another instance doing the same.
async fn create_database(
    options: &ConnectOptions,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (client, connection) = options
        .with_database("postgres")
        .connect(timeout)
        .await
        .context("database does not exist, and the `postgres` database could not be reached to create it")?;
    let driver = tokio::spawn(connection);
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let created = client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await;
    drop(client);
    let _closed = driver.await;
    match created {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        Err(error)
            if error.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || error.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(error) if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => bail!(
            "database {name:?} does not exist and this role may not create it; \
             create it first (for example `createdb {name}`)"
        ),
        Err(error) => Err(error).with_context(|| format!("could not create database {name:?}")),
    }
}

/// Whether waiting might help: the server is down, starting up, or full.
/// A refusal by TLS settings is not: the server will answer the same.
fn is_transient(error: &ConnectError) -> bool {
    match error {
        ConnectError::TlsRefused(_) => false,
        ConnectError::TimedOut => true,
        ConnectError::Postgres(error) => match error.code() {
            None => true,
            Some(code) => [
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
            ]
            .contains(code),
        },
    }
}

/// The connection URL with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // Query parameters may carry a password too; they are left out.
        let rest = rest.split('?').next().unwrap_or(rest);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{path}");
        }
        return format!("{scheme}://{rest}");
    }
    // key=value form: hide the value of `password=`.
    url.split_whitespace()
        .map(|pair| {
            if pair.starts_with("password=") {
                "password=***"
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5432/tasks"),
            "postgres://app:***@db.internal:5432/tasks"
        );
        assert_eq!(
            redact_url("postgres://postgres@localhost/taskrunner"),
            "postgres://postgres@localhost/taskrunner"
        );
        assert_eq!(
            redact_url("host=db user=app password=s3cret dbname=tasks"),
            "host=db user=app password=*** dbname=tasks"
        );
    }
}
