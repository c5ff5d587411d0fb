//! Integration tests, against a real PostgreSQL (see `harness`).

mod binary;
mod fake_provider;
mod harness;
mod http;
mod limits;
mod migrations;
mod pagination;
mod process;
mod providers_openai;
mod queue;
mod schema_file;
mod tasks_api;
mod temp_dir;
