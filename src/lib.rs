//! opslab: an autonomous incident responder. Incident resources are reconciled into audited LLM agent
//! sessions that run shell commands in Docker sandboxes.

pub mod audit;
pub mod incident;
pub mod llm;
pub mod sandbox;
