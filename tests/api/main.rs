//! API tests: one binary, real PostgreSQL, real object stores.

mod access;
mod annotations;
mod api_tokens;
mod audit;
mod auth_jwt;
mod catalog;
mod cli;
mod cohorts;
mod cstore;
mod deid;
mod demo;
mod dicom_gen;
mod discovery;
mod embedded;
mod errors;
mod helpers;
mod imports;
mod jobs;
mod openapi;
mod ops;
mod projects;
mod real_files;
mod s3_server;
mod storage_s3;
mod stow;
mod uploads;
