//! Who is asking: the principal a request acts as, and the tenant and role
//! that decide what it may see and do; API tokens, their secrets, and the
//! authenticator that turns a bearer token into a principal.

mod authenticator;
pub mod commands;
mod principal;
pub mod secret;
pub mod store;

pub use authenticator::{AuthMode, Authenticator};
pub use principal::{DEFAULT_TENANT, Principal, Role};
