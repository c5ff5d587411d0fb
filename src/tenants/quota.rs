//! A tenant's quotas: how many tasks it may have PENDING, and how many it may
//! create a minute.
//!
//! A tenant without limits costs one primary-key lookup ([`is_limited`]),
//! no lock and no transaction. A tenant with limits has its row locked (FOR UPDATE) by the check, which the
//! caller runs in the transaction that inserts the tasks: creates of one
//! limited tenant take turns, on every API node, so that the pending count
//! one of them reads already includes what the others inserted.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::tenants;
use crate::error::ApiError;

/// How long a tenant at its `max_pending` is told to wait: tasks leave
/// PENDING as workers take them, which cannot be foreseen from here.
pub const MAX_PENDING_RETRY_SECONDS: u64 = 5;

/// The window `creates_per_minute` counts over, and the burst it allows: a
/// whole minute's creates at once.
const WINDOW: TimeDelta = TimeDelta::minutes(1);

/// Whether `tenant` has a quota: one primary-key lookup, no lock. Creates
/// of a tenant without one need no transaction and no [`admit_creates`].
/// A limit set meanwhile applies from the next create.
pub async fn is_limited(conn: &mut AsyncPgConnection, tenant: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        tenants::table.filter(tenants::name.eq(tenant)).filter(
            tenants::max_pending
                .is_not_null()
                .or(tenants::creates_per_minute.is_not_null()),
        ),
    ))
    .get_result(conn)
    .await
}

/// How long a tenant read as having no quota is taken at its word.
const UNLIMITED_FOR: Duration = Duration::from_secs(1);
/// The most tenants remembered as having no quota.
const MAX_REMEMBERED: usize = 10_000;

/// The tenants read as having no quota in the last second, so that their
/// creates cost no lookup at all; a limit set meanwhile applies within a
/// second on every process. A tenant with a quota is always read afresh
/// (its check locks its row anyway).
#[derive(Debug, Default)]
pub struct LimitCache {
    unlimited: Mutex<HashMap<String, Instant>>,
}

impl LimitCache {
    /// Whether `tenant` has a quota: [`is_limited`], remembered for a second
    /// when it has none.
    pub async fn is_limited(
        &self,
        conn: &mut AsyncPgConnection,
        tenant: &str,
    ) -> QueryResult<bool> {
        let fresh = |read: &Instant| read.elapsed() < UNLIMITED_FOR;
        if self.remembered().get(tenant).is_some_and(fresh) {
            return Ok(false);
        }
        let limited = is_limited(conn, tenant).await?;
        let mut remembered = self.remembered();
        if limited {
            remembered.remove(tenant);
        } else {
            if remembered.len() >= MAX_REMEMBERED {
                remembered.retain(|_, read| fresh(read));
                if remembered.len() >= MAX_REMEMBERED {
                    remembered.clear();
                }
            }
            remembered.insert(tenant.to_owned(), Instant::now());
        }
        Ok(limited)
    }

    fn remembered(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.unlimited
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A limited tenant's row: max_pending, creates_per_minute, creates_due_at,
/// and the database's clock.
type LimitsRow = (
    Option<i32>,
    Option<i32>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

/// Admits `count` new tasks of `tenant`, or refuses them RATE_LIMITED when
/// they would take it over one of its quotas.
///
/// Run it in the transaction that then inserts the tasks: for a limited
/// tenant it holds the tenant's row locked until that transaction ends, and
/// it moves the tenant's rate schedule on, which a rollback undoes.
pub async fn admit_creates(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    count: i64,
) -> Result<(), ApiError> {
    let limits: Option<LimitsRow> = tenants::table
        .filter(tenants::name.eq(tenant))
        .filter(
            tenants::max_pending
                .is_not_null()
                .or(tenants::creates_per_minute.is_not_null()),
        )
        .select((
            tenants::max_pending,
            tenants::creates_per_minute,
            tenants::creates_due_at,
            diesel::dsl::now.into_sql::<Timestamptz>(),
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((max_pending, creates_per_minute, due_at, now_at)) = limits else {
        return Ok(());
    };
    let next_due = match creates_per_minute {
        Some(limit) => Some(
            admit_rate(limit, due_at, now_at, count).map_err(|retry_after_seconds| {
                ApiError::RateLimited {
                    message: format!(
                        "tenant {tenant} may create {limit} tasks a minute; try again in {retry_after_seconds} s"
                    ),
                    retry_after_seconds,
                }
            })?,
        ),
        None => None,
    };
    if let Some(max_pending) = max_pending {
        let pending = count_pending(conn, tenant, max_pending).await?;
        if pending.saturating_add(count) > i64::from(max_pending) {
            return Err(ApiError::RateLimited {
                message: format!(
                    "tenant {tenant} may have {max_pending} tasks pending and has {pending}"
                ),
                retry_after_seconds: MAX_PENDING_RETRY_SECONDS,
            });
        }
    }
    if let Some(next_due) = next_due {
        diesel::update(tenants::table.filter(tenants::name.eq(tenant)))
            .set(tenants::creates_due_at.eq(next_due))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The tenant's PENDING tasks, counted up to `max_pending` at most, so that
/// the count costs no more than the limit however long the backlog.
async fn count_pending(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    max_pending: i32,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Counted {
        #[diesel(sql_type = BigInt)]
        pending: i64,
    }
    let counted: Counted = diesel::sql_query(
        "SELECT count(*) AS pending FROM (SELECT 1 FROM tasks \
         WHERE tenant = $1 AND status = 'pending' LIMIT $2) AS counted",
    )
    .bind::<Text, _>(tenant)
    .bind::<Integer, _>(max_pending)
    .get_result(conn)
    .await?;
    Ok(counted.pending)
}

/// The creates-per-minute limit as a generic cell rate: each create is due
/// `60 s / limit` after the one before, and a create may come up to a minute
/// early, so a tenant idle for a minute may create `limit` at once.
///
/// `due_at` is when the tenant's next create would be on schedule (none
/// yet: now). Returns the new `due_at` once `count` creates are admitted at
/// `now`, or the whole seconds to wait until they would be.
pub fn admit_rate(
    limit: i32,
    due_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    count: i64,
) -> Result<DateTime<Utc>, u64> {
    let limit = i64::from(limit.max(1));
    if count > limit {
        // More than a minute's worth at once is never admitted; waiting a
        // whole window is the best the tenant can do.
        return Err(WINDOW.num_seconds().unsigned_abs());
    }
    let step = TimeDelta::microseconds(WINDOW.num_microseconds().unwrap_or(60_000_000) / limit);
    let start = due_at.map_or(now, |due_at| due_at.max(now));
    // count ≤ limit, so this is at most a minute.
    let next_due = start + step * i32::try_from(count.max(0)).unwrap_or(i32::MAX);
    let early = next_due - now - WINDOW;
    if early <= TimeDelta::zero() {
        return Ok(next_due);
    }
    let micros = early.num_microseconds().unwrap_or(i64::MAX).unsigned_abs();
    Err(micros.div_ceil(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::microseconds((seconds * 1e6) as i64)
    }

    #[test]
    fn a_fresh_tenant_may_create_a_minutes_worth_at_once_and_no_more() {
        let now = at(1000.0);
        let mut due = None;
        for n in 1..=60 {
            let next = admit_rate(60, due, now, 1).unwrap_or_else(|_| panic!("create {n}"));
            due = Some(next);
        }
        assert_eq!(due, Some(at(1060.0)));
        assert_eq!(admit_rate(60, due, now, 1), Err(1));
    }

    #[test]
    fn a_refused_create_is_admitted_once_its_wait_has_passed() {
        // Ten a minute: one every 6 s. Full up to 1060 s at 1000 s.
        let due = Some(at(1060.0));
        assert_eq!(admit_rate(10, due, at(1000.0), 1), Err(6));
        assert_eq!(admit_rate(10, due, at(1005.5), 1), Err(1));
        assert_eq!(admit_rate(10, due, at(1006.0), 1), Ok(at(1066.0)));
        // Three at once need three steps' room.
        assert_eq!(admit_rate(10, due, at(1012.0), 3), Err(6));
        assert_eq!(admit_rate(10, due, at(1018.0), 3), Ok(at(1078.0)));
    }

    #[test]
    fn a_schedule_in_the_past_counts_from_now() {
        assert_eq!(admit_rate(2, Some(at(10.0)), at(500.0), 2), Ok(at(560.0)));
        assert_eq!(admit_rate(2, Some(at(560.0)), at(500.0), 1), Err(30));
    }

    #[test]
    fn more_than_the_limit_at_once_is_refused_for_a_window() {
        assert_eq!(admit_rate(5, None, at(0.0), 6), Err(60));
        assert_eq!(admit_rate(5, None, at(0.0), 5), Ok(at(60.0)));
    }
}
