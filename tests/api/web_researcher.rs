//! Browser and HTTP tests of the researcher pages.
