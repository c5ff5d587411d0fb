//! `taskrunner token create | list | revoke`: what they print. The secret of
//! a new token goes to stdout alone on a line (for scripts); everything else
//! a person reads goes to stderr.

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;

use crate::auth::Role;
use crate::auth::secret::Secret;
use crate::auth::store::{self, NewToken, TokenRow};
use crate::config::TokenCreateArgs;
use crate::tasks::validation::check_tenant_name;

/// Longest token label (the table's CHECK constraint says the same).
const MAX_NAME_CHARS: usize = 200;

/// `token create`: stores a new token and prints its secret once.
pub async fn create(conn: &mut AsyncPgConnection, args: TokenCreateArgs) -> anyhow::Result<()> {
    let tenant = check_tenant_name("--tenant", args.tenant)
        .map_err(|invalid| anyhow::anyhow!("--tenant {}", invalid.message))?;
    if let Some(name) = &args.name
        && !(1..=MAX_NAME_CHARS).contains(&name.chars().count())
    {
        anyhow::bail!("--name must be 1 to {MAX_NAME_CHARS} characters");
    }
    let role = Role::from(args.role);
    let secret = Secret::generate().context("the operating system gave no random bytes")?;
    let hash = secret.hash();
    store::ensure_tenant(conn, &tenant)
        .await
        .context("could not create the tenant")?;
    let token = store::create_token(
        conn,
        NewToken {
            tenant: &tenant,
            role: role.as_str(),
            name: args.name.as_deref(),
            prefix: secret.shown_prefix(),
            secret_hash: &hash,
            expires_at: None,
        },
        args.expires_in_days,
    )
    .await
    .context("could not store the token")?;
    eprintln!(
        "token {} ({}, {} of tenant {}{}): its secret follows, shown this once",
        token.id,
        token.prefix,
        token.role,
        token.tenant,
        token
            .expires_at
            .map(|at| format!(", expires {}", timestamp(at)))
            .unwrap_or_default(),
    );
    println!("{}", secret.expose());
    Ok(())
}

/// `token list`: every token, without secrets, one a line.
pub async fn list(conn: &mut AsyncPgConnection) -> anyhow::Result<()> {
    let tokens = store::list_tokens(conn)
        .await
        .context("could not read the tokens")?;
    println!(
        "{:>6}  {:<12}  {:<20}  {:<6}  {:<20}  {:<20}  {:<20}  {:<20}  {:<20}",
        "ID", "PREFIX", "TENANT", "ROLE", "NAME", "CREATED", "LAST USED", "EXPIRES", "REVOKED"
    );
    for token in &tokens {
        println!("{}", line(token));
    }
    Ok(())
}

/// `token revoke ID`.
pub async fn revoke(conn: &mut AsyncPgConnection, id: i64) -> anyhow::Result<()> {
    match store::revoke_token(conn, id)
        .await
        .context("could not revoke the token")?
    {
        Some(token) => {
            eprintln!(
                "token {} ({}) revoked; every server refuses it within a second",
                token.id, token.prefix
            );
            Ok(())
        }
        None => anyhow::bail!("no token has id {id} (`taskrunner token list` shows them)"),
    }
}

fn line(token: &TokenRow) -> String {
    let optional = |at: Option<DateTime<Utc>>| at.map(timestamp).unwrap_or_else(|| "-".into());
    format!(
        "{:>6}  {:<12}  {:<20}  {:<6}  {:<20}  {:<20}  {:<20}  {:<20}  {:<20}",
        token.id,
        token.prefix,
        token.tenant,
        token.role,
        token.name.as_deref().unwrap_or("-"),
        timestamp(token.created_at),
        optional(token.last_used_at),
        optional(token.expires_at),
        optional(token.revoked_at),
    )
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}
