pub mod alertmanager;
pub mod browser;
pub mod controller;
pub mod docker;
pub mod fake_llm;
pub mod kube_api;
pub mod sandboxes;
pub mod store;
