//! The MCP surface: the same tasks as the GraphQL API, as tools an AI
//! assistant can call (Model Context Protocol, through the `rmcp` SDK).
//!
//! - `server`: the handler, what it tells a client about itself;
//! - `tools`: the tools, each over an operation of [`crate::service`];
//! - `args`: the tools' arguments and their JSON Schemas;
//! - `results`: what the tools answer, and how errors become tool errors;
//! - `wait`: `wait_for_task`, on the event backbone, with progress notifications;
//! - `transport`: stdio (`taskrunner mcp`) and streamable HTTP (`/mcp`).

mod args;
mod results;
mod server;
mod tools;
pub mod transport;
mod wait;

pub use server::TaskRunnerMcp;
pub use transport::{DEFAULT_ALLOWED_HOSTS, HttpSettings, http_service, serve_stdio};
