//! The `api_tokens` table's queries (and the one on `tenants` a new token
//! needs). Each is one short statement on a connection the caller holds.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Interval, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::auth::Role;
use crate::auth::secret::SecretHash;
use crate::db::schema::{api_tokens, tenants};

/// A token as stored: everything but the secret, which is never kept.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens, check_for_backend(diesel::pg::Pg))]
pub struct TokenRow {
    pub id: i64,
    pub tenant: String,
    pub role: String,
    pub name: Option<String>,
    /// The start of the secret, for telling tokens apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = api_tokens)]
pub struct NewToken<'a> {
    pub tenant: &'a str,
    pub role: &'a str,
    pub name: Option<&'a str>,
    pub prefix: &'a str,
    pub secret_hash: &'a [u8],
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token found by its hash, as verification needs it.
#[derive(Debug, Clone)]
pub struct FoundToken {
    pub id: i64,
    pub tenant: String,
    pub role: Role,
    pub secret_hash: Vec<u8>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Whether its expiry has passed, by the database's clock.
    pub expired: bool,
}

/// Creates tenant `name` unless it exists (a name checked by the caller).
pub async fn ensure_tenant(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<()> {
    diesel::insert_into(tenants::table)
        .values(tenants::name.eq(name))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
        .map(drop)
}

/// Whether tenant `name` exists.
pub async fn tenant_exists(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        tenants::table.filter(tenants::name.eq(name)),
    ))
    .get_result(conn)
    .await
}

/// Stores `token`, expiring `expires_in_days` days from now (the database's
/// clock) if given, and returns it.
pub async fn create_token(
    conn: &mut AsyncPgConnection,
    token: NewToken<'_>,
    expires_in_days: Option<u32>,
) -> QueryResult<TokenRow> {
    let row: TokenRow = diesel::insert_into(api_tokens::table)
        .values(&token)
        .returning(TokenRow::as_returning())
        .get_result(conn)
        .await?;
    let Some(days) = expires_in_days else {
        return Ok(row);
    };
    diesel::update(api_tokens::table.find(row.id))
        .set(
            api_tokens::expires_at.eq(diesel::dsl::sql::<Nullable<Timestamptz>>("now() + ")
                .bind::<Interval, _>(days_interval(days))),
        )
        .returning(TokenRow::as_returning())
        .get_result(conn)
        .await
}

/// `days` days as an interval (at most `i32::MAX`, which no caller reaches).
fn days_interval(days: u32) -> diesel::data_types::PgInterval {
    diesel::data_types::PgInterval::from_days(i32::try_from(days).unwrap_or(i32::MAX))
}

/// Every token, oldest first.
pub async fn list_tokens(conn: &mut AsyncPgConnection) -> QueryResult<Vec<TokenRow>> {
    api_tokens::table
        .select(TokenRow::as_select())
        .order(api_tokens::id)
        .load(conn)
        .await
}

/// Revokes token `id`; `None` if no token has that id. Revoking a revoked
/// token keeps its first revocation time.
pub async fn revoke_token(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<TokenRow>> {
    diesel::update(api_tokens::table.find(id))
        .set(
            api_tokens::revoked_at.eq(diesel::dsl::sql::<Nullable<Timestamptz>>(
                "coalesce(revoked_at, now())",
            )),
        )
        .returning(TokenRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// The token whose secret hashes to `hash`, if any; whether it may still be
/// used is decided by the database's clock.
pub async fn find_by_hash(
    conn: &mut AsyncPgConnection,
    hash: &SecretHash,
) -> QueryResult<Option<FoundToken>> {
    let expired = diesel::dsl::sql::<Bool>("coalesce(expires_at <= now(), false)");
    let found: Option<(i64, String, String, Vec<u8>, bool, bool)> = api_tokens::table
        .filter(api_tokens::secret_hash.eq(hash.as_slice()))
        .select((
            api_tokens::id,
            api_tokens::tenant,
            api_tokens::role,
            api_tokens::secret_hash,
            api_tokens::revoked_at.is_not_null(),
            expired,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(
        found.and_then(|(id, tenant, role, secret_hash, revoked, expired)| {
            // The CHECK constraint allows only the three roles.
            Some(FoundToken {
                id,
                tenant,
                role: Role::parse(&role)?,
                secret_hash,
                revoked,
                expired,
            })
        }),
    )
}

/// Records that token `id` was used now.
pub async fn touch_token(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<()> {
    diesel::update(api_tokens::table.find(id))
        .set(api_tokens::last_used_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
        .map(drop)
}
