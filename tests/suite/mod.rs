mod crd;
mod store;
