//! Bearer tokens to principals, for every process that serves the API.
//!
//! A verdict (a principal, or why the token is refused) is cached for
//! [`VERDICT_TTL`]: a token revoked on any process stops working on every
//! other within that time plus one lookup, with nothing to deliver (a NOTIFY
//! that was missed while a LISTEN connection was down would leave a revoked
//! token working until the next restart). At a request rate of hundreds a
//! second per token the cache still turns nearly every request into a map
//! lookup.
//!
//! Unknown tokens are cached the same way, and lookups that miss the cache
//! take one of [`CONCURRENT_LOOKUPS`] places, so a flood of made-up tokens
//! costs at most that many pooled connections, never the pool. Strings that
//! are not shaped like a secret never reach the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::auth::Principal;
use crate::auth::secret::{self, SecretHash};
use crate::auth::store::{self, FoundToken};
use crate::db::DbPool;
use crate::error::ApiError;

/// How long a verdict on a token is trusted before the database is asked
/// again: the bound on how long a revoked token keeps working.
pub const VERDICT_TTL: Duration = Duration::from_millis(500);

/// Most verdicts kept; past it the stale ones are dropped, then all.
const MAX_CACHED: usize = 10_000;

/// Most database lookups of tokens at once, per process.
const CONCURRENT_LOOKUPS: usize = 2;

/// How long a request waits for a place to look its token up.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// How often a token's `last_used_at` is written, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Whether `serve` asks for tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every API request needs `Authorization: Bearer <token>`.
    Tokens,
    /// No tokens: every request acts as the operator (an admin whose tasks go
    /// to the `default` tenant).
    Off,
}

/// Why a token was refused, as the client is told.
const MISSING: &str = "a bearer token is required (Authorization: Bearer trk_…)";
const MALFORMED: &str = "the credentials are not `Bearer <token>` with a token this server issues";
const UNKNOWN: &str = "the token is not known";
const EXPIRED: &str = "the token has expired";
const REVOKED: &str = "the token was revoked";

/// Checks bearer tokens against `api_tokens`. Cheap to clone; clones share
/// the cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    pool: DbPool,
    verdicts: Mutex<HashMap<SecretHash, Cached>>,
    lookups: Semaphore,
    /// When each token's `last_used_at` was last written by this process.
    touched: Mutex<HashMap<i64, Instant>>,
}

#[derive(Clone)]
struct Cached {
    verdict: Result<Principal, &'static str>,
    at: Instant,
}

impl Authenticator {
    /// An authenticator looking tokens up on `pool`.
    pub fn new(pool: DbPool) -> Self {
        Authenticator {
            inner: Arc::new(Inner {
                pool,
                verdicts: Mutex::new(HashMap::new()),
                lookups: Semaphore::new(CONCURRENT_LOOKUPS),
                touched: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The principal of an `Authorization` value (`None`: no header):
    /// UNAUTHENTICATED if it is missing, malformed, unknown, expired or
    /// revoked; SERVICE_UNAVAILABLE if the database cannot say.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let Some(authorization) = authorization else {
            return Err(ApiError::Unauthenticated(MISSING));
        };
        let secret = bearer_token(authorization).ok_or(ApiError::Unauthenticated(MALFORMED))?;
        if !secret::is_well_formed(secret) {
            return Err(ApiError::Unauthenticated(MALFORMED));
        }
        let hash = secret::hash(secret);
        let verdict = match self.cached(&hash) {
            Some(verdict) => verdict,
            None => self.look_up(hash).await?,
        };
        let principal = verdict.map_err(ApiError::Unauthenticated)?;
        if let Some(id) = principal.token_id() {
            self.touch(id);
        }
        Ok(principal)
    }

    fn cached(&self, hash: &SecretHash) -> Option<Result<Principal, &'static str>> {
        let verdicts = self
            .inner
            .verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        verdicts
            .get(hash)
            .filter(|cached| cached.at.elapsed() < VERDICT_TTL)
            .map(|cached| cached.verdict.clone())
    }

    /// Asks the database, within the process's few lookup places, and caches
    /// the verdict.
    async fn look_up(&self, hash: SecretHash) -> Result<Result<Principal, &'static str>, ApiError> {
        let _place = tokio::time::timeout(LOOKUP_WAIT, self.inner.lookups.acquire())
            .await
            .map_err(|_| ApiError::ServiceUnavailable)?
            .map_err(|_| ApiError::ServiceUnavailable)?;
        // Another request may have looked the same token up meanwhile.
        if let Some(verdict) = self.cached(&hash) {
            return Ok(verdict);
        }
        let mut conn = self.inner.pool.get().await?;
        let found = store::find_by_hash(&mut conn, &hash).await?;
        drop(conn);
        let verdict = judge(found, &hash);
        self.remember(hash, verdict.clone());
        Ok(verdict)
    }

    fn remember(&self, hash: SecretHash, verdict: Result<Principal, &'static str>) {
        let mut verdicts = self
            .inner
            .verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if verdicts.len() >= MAX_CACHED {
            verdicts.retain(|_, cached| cached.at.elapsed() < VERDICT_TTL);
            if verdicts.len() >= MAX_CACHED {
                verdicts.clear();
            }
        }
        verdicts.insert(
            hash,
            Cached {
                verdict,
                at: Instant::now(),
            },
        );
    }

    /// Writes token `id`'s `last_used_at`, off the request's path, unless
    /// this process did so less than a minute ago.
    fn touch(&self, id: i64) {
        {
            let mut touched = self
                .inner
                .touched
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if touched
                .get(&id)
                .is_some_and(|at| at.elapsed() < TOUCH_EVERY)
            {
                return;
            }
            if touched.len() >= MAX_CACHED {
                touched.retain(|_, at| at.elapsed() < TOUCH_EVERY);
            }
            touched.insert(id, Instant::now());
        }
        let pool = self.inner.pool.clone();
        tokio::spawn(async move {
            let touched = match pool.get().await {
                Ok(mut conn) => store::touch_token(&mut conn, id)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = touched {
                tracing::warn!(token = id, %error, "could not record when a token was last used");
            }
        });
    }
}

/// The verdict on what the lookup of `hash` found.
fn judge(found: Option<FoundToken>, hash: &SecretHash) -> Result<Principal, &'static str> {
    let token = found.ok_or(UNKNOWN)?;
    // The lookup was by this hash; compare again in constant time, so that
    // nothing about a stored hash can be learned from timing.
    if !bool::from(token.secret_hash.as_slice().ct_eq(hash.as_slice())) {
        return Err(UNKNOWN);
    }
    if token.revoked {
        return Err(REVOKED);
    }
    if token.expired {
        return Err(EXPIRED);
    }
    Ok(Principal::token(token.tenant, token.role, token.id))
}

/// The token of `Bearer <token>` (the scheme in any case, as RFC 7235 has it).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer_token("Bearer trk_x"), Some("trk_x"));
        assert_eq!(bearer_token("bearer  trk_x "), Some("trk_x"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("trk_x"), None);
    }
}
