//! taskrunner: an async AI task runner. Tasks (a prompt, a model, a priority)
//! are created over GraphQL, stored in PostgreSQL, and run in the background.
//!
//! The binary is a thin shell over this library; see `ARCHITECTURE.md` for how
//! the parts fit together.

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod graphql;
pub mod healthcheck;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod output;
pub mod providers;
pub mod queue;
pub mod server;
pub mod service;
pub mod tasks;
pub mod telemetry;
pub mod tenants;

pub use app::AppState;
