//! Browser and HTTP tests of the admin pages.
