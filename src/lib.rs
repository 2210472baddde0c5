//! Custodian: a governed research data registry for medical imaging.
//!
//! Data flows ingest → de-identification → catalog → discovery → access →
//! extracts; `audit`, `auth`, `storage` and `db` are services shared by all.

/// Settings from defaults, file, environment and flags.
pub mod config;
/// The one API error type and its JSON body.
pub mod error;
/// Logging setup.
pub mod telemetry;
/// Prometheus metrics.
pub mod metrics;
/// PostgreSQL: pool, embedded cluster, migrations.
pub mod db;
/// Object storage and its keys.
pub mod storage;
/// Authentication (JWT, JWKS, API tokens) and roles.
pub mod auth;
/// The hash-chained audit log.
pub mod audit;
/// Sites and cohorts.
pub mod registry;
/// HTTP routers, one per area.
pub mod http;
/// The OpenAPI contract.
pub mod openapi;
/// Application state, router and serving.
pub mod app;
/// Command-line interface.
pub mod cli;
/// Demo users, sites and cohorts for a first look.
pub mod demo;
