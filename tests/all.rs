//! All integration tests, in one binary (one link, one process to share fixtures).

mod suite;
mod support;
