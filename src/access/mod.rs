//! Access governance: researcher profiles, projects and members, versioned
//! applications with a consent check against each cohort's DUO terms,
//! committee review (assignments, recusal, declarations of interest, votes
//! with a quorum per cohort tier, threaded comments), and versioned grants
//! checked on every request.

pub mod applications;
pub mod closure;
pub mod consent;
pub mod db;
pub mod dua;
pub mod duties;
pub mod grants;
pub mod projects;
pub mod publications;
pub mod renewals;
pub mod review;
pub mod review_comments;
pub mod scope;
pub mod snapshot;
pub mod standing;
pub mod state;
pub mod withdrawal;
