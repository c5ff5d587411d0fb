//! The principal a request acts as: a tenant and a role.

use crate::error::ApiError;
use crate::tasks::Scope;

/// The tenant every deployment has, and the one tasks belong to when
/// tokens are off.
pub const DEFAULT_TENANT: &str = "default";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads and changes every tenant's tasks.
    Admin,
    /// Reads and changes its own tenant's tasks.
    Member,
    /// Reads its own tenant's tasks.
    Reader,
}

impl Role {
    /// The name stored and typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Reader => "reader",
        }
    }

    /// The role stored as `name`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }
}

/// Who a request acts as. Every operation of `service` takes one: it decides
/// the [`Scope`] of every read and write, the tenant new tasks belong to, and
/// whether the request may change anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    tenant: String,
    role: Role,
    /// The API token it authenticated with; `None` for the operator (tokens
    /// off, or a local `taskrunner mcp --tenant`).
    token_id: Option<i64>,
}

impl Principal {
    /// A principal authenticated by token `token_id`.
    pub fn token(tenant: impl Into<String>, role: Role, token_id: i64) -> Self {
        Principal {
            tenant: tenant.into(),
            role,
            token_id: Some(token_id),
        }
    }

    /// The operator when tokens are off: an admin whose new tasks go to
    /// `default`.
    pub fn operator() -> Self {
        Principal {
            tenant: DEFAULT_TENANT.to_owned(),
            role: Role::Admin,
            token_id: None,
        }
    }

    /// A local process acting for one tenant (`taskrunner mcp --tenant`).
    pub fn local(tenant: impl Into<String>, role: Role) -> Self {
        Principal {
            tenant: tenant.into(),
            role,
            token_id: None,
        }
    }

    /// The tenant its new tasks belong to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// What it may do.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The token it authenticated with, if any.
    pub fn token_id(&self) -> Option<i64> {
        self.token_id
    }

    /// The tasks it may see and touch: all of them for an admin, its own
    /// tenant's otherwise.
    pub fn scope(&self) -> Scope {
        match self.role {
            Role::Admin => Scope::All,
            Role::Member | Role::Reader => Scope::Tenant(self.tenant.clone()),
        }
    }

    /// FORBIDDEN unless it may change tasks.
    pub fn check_may_write(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Member => Ok(()),
            Role::Reader => Err(ApiError::Forbidden(
                "this token is a reader's: it may read tasks, not change them",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_readers_see_their_own_tenant_and_admins_all() {
        assert_eq!(Principal::operator().scope(), Scope::All);
        assert_eq!(
            Principal::token("acme", Role::Member, 1).scope(),
            Scope::Tenant("acme".to_owned())
        );
        assert_eq!(
            Principal::token("acme", Role::Reader, 1).scope(),
            Scope::Tenant("acme".to_owned())
        );
        assert_eq!(Principal::token("acme", Role::Admin, 1).scope(), Scope::All);
    }

    #[test]
    fn only_readers_may_not_write() {
        assert!(
            Principal::token("a", Role::Reader, 1)
                .check_may_write()
                .is_err()
        );
        assert!(
            Principal::token("a", Role::Member, 1)
                .check_may_write()
                .is_ok()
        );
        assert!(Principal::operator().check_may_write().is_ok());
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Admin, Role::Member, Role::Reader] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("owner"), None);
    }
}
