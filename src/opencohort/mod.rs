//! Open cohorts for challenges: versioned public releases, their splits and scoring.

pub mod splits;
