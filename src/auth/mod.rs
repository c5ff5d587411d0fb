//! Who is asking: the principal a request acts as, and the tenant and role
//! that decide what it may see and do.

mod principal;

pub use principal::{Principal, Role};
