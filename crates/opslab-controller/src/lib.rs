//! opslab: an autonomous incident responder. Incident resources are reconciled into audited LLM agent
//! sessions that run shell commands in Docker sandboxes.

pub mod alerts;
pub mod audit;
pub mod config;
pub mod console;
pub mod cost;
mod error;
pub mod incident;
pub mod kube_client;
pub mod label_selector;
pub mod llm;
pub mod metrics;
pub mod notify;
pub mod presentation;
pub mod reconcile;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod source;
pub mod telemetry;
pub mod view;

pub use error::{Error, Result};

use std::fmt;

use crate::incident::Incident;

/// An Incident's namespace and name: how people and sources refer to it.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(incident: &Incident) -> std::result::Result<ObjectKey, incident::MissingMetadata> {
        let name = incident
            .metadata
            .name
            .clone()
            .ok_or(incident::MissingMetadata("name"))?;
        let namespace = incident
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| incident::DEFAULT_NAMESPACE.to_string());
        Ok(ObjectKey { namespace, name })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
