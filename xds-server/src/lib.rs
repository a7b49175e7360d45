//! Weir's control server: it reads the routing policy operators edit and
//! serves Envoy its configuration. See the repository's README for how to run
//! it; `weir --help` lists the commands.

pub mod admin;
pub mod api;
pub mod cli;
pub mod controller;
pub mod dashboard;
pub mod health;
pub mod http_client;
pub mod limits;
pub mod metrics_store;
pub mod otlp;
pub mod policy_source;
pub mod replication;
pub mod resources;
pub mod serve;
pub mod serving;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod timeline;
pub mod tls;
mod token;
pub mod xds;
