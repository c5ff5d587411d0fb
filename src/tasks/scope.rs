//! Which tasks a caller may see and touch.
//!
//! Every function of `tasks::store` that reads or changes tasks for a client
//! takes a [`Scope`], and there is no default: a query cannot be written
//! without deciding whose tasks it is about. The store adds the condition to
//! the statement itself, so a task outside the scope is never read, and a
//! change to one finds nothing (NOT_FOUND, the same as a missing id).

use crate::tasks::Task;

/// The tasks a request may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's (an admin, or tokens off).
    All,
    /// One tenant's only.
    Tenant(String),
}

impl Scope {
    /// Whether `task` lies within the scope.
    pub fn contains(&self, task: &Task) -> bool {
        self.allows(&task.tenant)
    }

    /// Whether a task of tenant `tenant` lies within the scope.
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(own) => own == tenant,
        }
    }

    /// The one tenant the scope is narrowed to, if it is.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(tenant) => Some(tenant),
        }
    }
}
