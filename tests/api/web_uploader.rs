//! Browser and HTTP tests of the uploader pages.
