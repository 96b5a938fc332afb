mod crd;
mod llm;
mod manifests;
mod observe;
mod sandbox;
mod session;
mod store;
