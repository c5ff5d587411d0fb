//! Tenants: who tasks belong to, and the quotas each may be given.

mod quota;
pub mod settings;

pub use quota::{LimitCache, MAX_PENDING_RETRY_SECONDS, admit_creates, admit_rate, is_limited};
