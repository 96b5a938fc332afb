mod crd;
mod llm;
mod manifests;
mod sandbox;
mod session;
mod store;
