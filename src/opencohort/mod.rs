//! Open cohorts for challenges: versioned public releases, their splits and scoring.
//!
//! - [`curate`]: challenge settings, subjects under consent, the split, readiness;
//! - [`splits`]: the subject-level split engine and its leakage check;
//! - [`publish`]: versions built by the release job, public landing and downloads;
//! - [`challenge`]: teams, submissions scored against the hidden labels, the leaderboard;
//! - [`statistics`]: downloads per version and split, for organizers.

pub mod challenge;
pub mod curate;
pub mod publish;
pub mod splits;
pub mod statistics;
