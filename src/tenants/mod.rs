//! Tenants: who tasks belong to, and the quotas each may be given.

mod quota;

pub use quota::admit_creates;
