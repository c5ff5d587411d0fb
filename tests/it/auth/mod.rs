//! API tokens: the `token` commands and two `serve` processes (binary.rs),
//! and every surface's checks against the real router with tokens on
//! (surfaces.rs).

mod binary;
mod surfaces;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use taskrunner::auth::Role;
use taskrunner::auth::secret::Secret;
use taskrunner::auth::store::{self, NewToken};

use crate::harness::TestDb;

/// How long anything here may take before it counts as broken.
const WITHIN: Duration = Duration::from_secs(30);

/// Stores a token for `tenant` (made if new) directly, and returns its id
/// and secret.
async fn mint(db: &TestDb, tenant: &str, role: Role) -> (i64, String) {
    let pool = db.pool();
    let mut conn = pool.get().await.expect("a connection");
    let secret = Secret::generate().expect("random bytes");
    store::ensure_tenant(&mut conn, tenant)
        .await
        .expect("tenant");
    let token = store::create_token(
        &mut conn,
        NewToken {
            tenant,
            role: role.as_str(),
            name: None,
            prefix: secret.shown_prefix(),
            secret_hash: &secret.hash(),
            expires_at: None,
        },
        None,
    )
    .await
    .expect("token stored");
    (token.id, secret.expose().to_owned())
}

/// POSTs a GraphQL request to `address` with `authorization` (if any);
/// returns the status, the `WWW-Authenticate` header and the body.
async fn post_graphql(
    address: &str,
    authorization: Option<&str>,
    query: &str,
) -> (StatusCode, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .json(&serde_json::json!({ "query": query }));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("a JSON body");
    (status, challenge, body)
}

/// Asserts a 401 with the bearer challenge and an UNAUTHENTICATED error.
fn assert_unauthenticated(answer: &(StatusCode, Option<String>, Value), what: &str) {
    let (status, challenge, body) = answer;
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{what}: {body}"
    );
}
