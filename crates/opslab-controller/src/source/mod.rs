//! Where Incidents come from and where their status goes.

pub mod files;
pub mod kubernetes;
pub mod manifest;
pub mod requests;
