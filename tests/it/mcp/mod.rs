//! The MCP server through rmcp's own client: over streamable HTTP against
//! the real router (in-process, or the `serve` binary), and over stdio
//! against the real `taskrunner mcp` binary.

mod client;
mod errors;
mod over_http;
mod over_stdio;
mod schemas;
mod tools;
mod wait;

use std::time::Duration;

pub use client::Client;

use crate::harness::{Served, TestApp};

/// How long anything in these tests may take before it counts as broken.
pub const WITHIN: Duration = Duration::from_secs(30);

/// The URL of the MCP endpoint of a served application.
pub fn mcp_url(address: &str) -> String {
    format!("http://{address}/mcp")
}

/// `app` served on a port, and a client of its MCP endpoint.
pub async fn connect(app: &TestApp) -> (Served, Client) {
    let served = app.serve().await;
    let client = Client::http(&mcp_url(&served.address)).await;
    (served, client)
}
