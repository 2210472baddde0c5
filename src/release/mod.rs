//! Releases (extracts): what an approved project receives, built from its
//! grant's scope in the project's own pseudonyms, with a signed manifest.
//!
//! - [`dicom`]: stored instances re-pseudonymized for one project;
//! - [`annotations`]: the annotations of the granted kinds, with their provenance;
//! - [`archive`]: a release as one ZIP archive, streamed;
//! - [`dicomweb`]: the index of a release's instances, DICOMweb searches and metadata;
//! - [`tables`]: granted fields as CSV and Parquet, with their dictionary;
//! - [`build`]: the job that writes a release from its grant's scope;
//! - [`extracts`]: asking for a release, its state, the rules of every download;
//! - [`downloaders`]: who a download is recorded for (anonymous visitors by a daily keyed hash);
//! - [`limits`]: a project's download rate and concurrency on a node;
//! - [`manifest`]: the file list with sizes and SHA-256, signed (Ed25519);
//! - [`drs`]: a release as GA4GH DRS objects;
//! - [`presign`]: short-lived presigned S3 URLs to release files, audited.

pub mod annotations;
pub mod archive;
pub mod build;
pub mod dicom;
pub mod dicomweb;
pub mod downloaders;
pub mod drs;
pub mod extracts;
pub mod limits;
pub mod manifest;
pub mod presign;
pub mod tables;
