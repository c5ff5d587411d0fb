//! The domain: what a task is, the states it moves through, the rules its
//! fields follow, and the queries that store and list tasks.

pub mod batch;
pub mod listing;
mod model;
mod scope;
mod status;
pub mod store;
pub mod validation;

pub use model::{NewTask, Task, TaskChanges};
pub use scope::Scope;
pub use status::TaskStatus;
