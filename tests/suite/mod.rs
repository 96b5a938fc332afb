mod crd;
mod llm;
mod manifests;
mod observe;
mod proxy;
mod sandbox;
mod session;
mod store;
