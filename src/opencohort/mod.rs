//! Open cohorts for challenges: versioned public releases, their splits and scoring.

pub mod curate;
pub mod splits;
