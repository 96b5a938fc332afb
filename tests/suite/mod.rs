mod crd;
mod llm;
mod store;
