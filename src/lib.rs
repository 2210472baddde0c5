//! Custodian: a governed research data registry for medical imaging.
//!
//! Data flows ingest → de-identification → catalog → discovery → access →
//! extracts; `audit`, `auth`, `storage` and `db` are services shared by all.

/// Access governance: projects, applications, review, grants.
pub mod access;
/// Annotations with provenance: labels, geometry, masks, DICOM SEG/RTSTRUCT links.
pub mod annotations;
/// Application state, router and serving.
pub mod app;
/// The hash-chained audit log.
pub mod audit;
/// Authentication (JWT, JWKS, API tokens) and roles.
pub mod auth;
/// The imaging catalog as uploaders and stewards read it.
pub mod catalog;
/// Command-line interface.
pub mod cli;
/// Settings from defaults, file, environment and flags.
pub mod config;
/// PostgreSQL: pool, embedded cluster, migrations.
pub mod db;
/// De-identification at the door: PS3.15 profile, keyed pseudonyms, date shifts.
pub mod deid;
/// Demo users, sites and cohorts for a first look.
pub mod demo;
/// The data dictionary: discoverable fields, units, coverage.
pub mod dictionary;
/// Discovery: counts under disclosure control.
pub mod discovery;
/// The one API error type and its JSON body.
pub mod error;
/// `custodian fetch`: a release downloaded in parallel, resumed, verified.
pub mod fetch;
/// HTTP routers, one per area.
pub mod http;
/// Ingest: uploads, STOW-RS and C-STORE into the catalog.
pub mod ingest;
/// Background jobs: a PostgreSQL queue claimed under leases.
pub mod jobs;
/// E-mail notifications: the outbox delivered by SMTP.
pub mod mail;
/// Prometheus metrics.
pub mod metrics;
/// The OpenAPI contract.
pub mod openapi;
/// Open cohorts for challenges: public releases, splits, scoring.
pub mod opencohort;
/// Sites and cohorts.
pub mod registry;
/// Releases: re-pseudonymized DICOM, tables, signed manifests.
pub mod release;
/// Scoring of challenge submissions: label and mask metrics with bootstrap intervals.
pub mod scoring;
/// Secrets generated into the data dir.
pub mod secrets;
/// Object storage and its keys.
pub mod storage;
/// Logging setup.
pub mod telemetry;
/// The shared vocabulary: code systems, diagnosis codes, variants, annotation kinds, sex.
pub mod vocabulary;
/// The web interface: server-rendered pages over the same services, sessions, CSRF.
pub mod web;
