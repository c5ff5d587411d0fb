//! Setting and listing tenants and their quotas, for `taskrunner tenant`.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::tenants;

/// A change to one quota: leave it as it is, clear it, or set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// No limit (`none` on the command line).
    Unlimited,
    /// At most this many (at least 1).
    At(i32),
}

impl Limit {
    /// The column's value: NULL for no limit.
    pub fn value(self) -> Option<i32> {
        match self {
            Limit::Unlimited => None,
            Limit::At(n) => Some(n),
        }
    }
}

/// Parses a limit from the command line: a whole number from 1, or `none`.
pub fn parse_limit(text: &str) -> Result<Limit, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit::Unlimited);
    }
    match text.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(Limit::At(n)),
        _ => Err(format!(
            "{text:?} is not a limit: give a whole number from 1, or `none` for no limit"
        )),
    }
}

/// A tenant as `taskrunner tenant list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct TenantRow {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Integer>)]
    pub max_pending: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub creates_per_minute: Option<i32>,
    /// Its PENDING tasks now.
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
}

/// Creates `name` if it is missing, and sets the limits given (`None`
/// leaves a limit as it is; a new tenant starts without limits).
pub async fn set(
    conn: &mut AsyncPgConnection,
    name: &str,
    max_pending: Option<Limit>,
    creates_per_minute: Option<Limit>,
) -> QueryResult<()> {
    diesel::insert_into(tenants::table)
        .values(tenants::name.eq(name))
        .on_conflict(tenants::name)
        .do_nothing()
        .execute(conn)
        .await?;
    if let Some(limit) = max_pending {
        diesel::update(tenants::table.filter(tenants::name.eq(name)))
            .set((
                tenants::max_pending.eq(limit.value()),
                tenants::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
    }
    if let Some(limit) = creates_per_minute {
        // A new rate starts from a clean schedule.
        diesel::update(tenants::table.filter(tenants::name.eq(name)))
            .set((
                tenants::creates_per_minute.eq(limit.value()),
                tenants::creates_due_at.eq(None::<chrono::DateTime<chrono::Utc>>),
                tenants::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Every tenant by name, with its limits and its PENDING tasks.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<TenantRow>> {
    diesel::sql_query(
        "SELECT t.name, t.max_pending, t.creates_per_minute, \
           (SELECT count(*) FROM tasks WHERE tasks.tenant = t.name AND tasks.status = 'pending') AS pending \
         FROM tenants t ORDER BY t.name",
    )
    .load(conn)
    .await
}
