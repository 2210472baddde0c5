//! Browser and HTTP tests of the steward pages.
