//! Browser and HTTP tests of the organizer pages.
