//! Integration tests, against a real PostgreSQL (see `harness`).

mod binary;
mod cluster;
mod fake_provider;
mod faults;
mod graphiql;
mod harness;
mod hostile;
mod http;
mod limits;
mod mcp;
mod metrics;
mod migrations;
mod pagination;
mod process;
mod providers_openai;
mod providers_routing;
mod proxy;
mod queue;
mod queue_guarantees;
mod schema_file;
mod streaming;
mod subscriptions;
mod tasks_api;
mod temp_dir;
