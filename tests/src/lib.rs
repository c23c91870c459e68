//! See tests/ in this crate: end-to-end tests of the whole application.
