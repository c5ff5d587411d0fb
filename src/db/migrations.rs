//! The embedded migrations, applied at start-up under an advisory lock so
//! that instances starting together take turns instead of racing.

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// Every migration under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The advisory lock key that serialises migration runs ("taskrunr" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7461_736b_7275_6e72;

/// Applies every pending migration and returns the versions applied.
pub async fn run_pending(conn: AsyncPgConnection) -> anyhow::Result<Vec<String>> {
    // Diesel's migration harness is synchronous: run it on a blocking thread.
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .context("could not take the migration lock")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        // Released by the session ending too; unlock now so others need not wait for that.
        let unlocked = conn
            .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .context("could not release the migration lock");
        let applied = applied?;
        unlocked?;
        Ok(applied)
    })
    .await
    .context("the migration task stopped unexpectedly")?
}

/// Reverts every applied migration, newest first (for tests and operators
/// who want an empty database back).
pub async fn revert_all(conn: AsyncPgConnection) -> anyhow::Result<Vec<String>> {
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        conn.revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| anyhow::anyhow!("reverting migrations failed: {e}"))
    })
    .await
    .context("the migration task stopped unexpectedly")?
}

/// The embedded migrations not yet applied to the database `conn` is on, by
/// version: a small read of `__diesel_schema_migrations` (every one is
/// pending when the table is missing).
pub async fn pending(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<String>> {
    use diesel::migration::MigrationSource;
    use diesel::sql_types::{Bool, Text};
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = Bool)]
        exists: bool,
    }
    #[derive(diesel::QueryableByName)]
    struct Applied {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let table: Exists =
        diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS exists")
            .get_result(conn)
            .await?;
    let applied: Vec<Applied> = if table.exists {
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load(conn)
            .await?
    } else {
        Vec::new()
    };
    let applied: std::collections::HashSet<String> =
        applied.into_iter().map(|row| row.version).collect();
    let embedded = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))?;
    Ok(embedded
        .iter()
        .map(|migration| migration.name().version().to_string())
        .filter(|version| !applied.contains(version))
        .collect())
}
