//! Discovery: what the registry holds, as counts that protect the people
//! counted (small-cell suppression and rounding).

pub mod disclosure;
