//! See the module documentation of [`crate::release`].
