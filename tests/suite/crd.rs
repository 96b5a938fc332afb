//! The committed CRD and examples stay in step with the Rust types.

use kube::CustomResourceExt;
use opslab::incident::Incident;
use opslab::source::manifest;

#[test]
fn crd_committed_file_is_current() {
    let generated = serde_saphyr::to_string(&Incident::crd()).expect("the CRD serialises");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/incident.yaml"))
            .expect("crds/incident.yaml exists");
    assert!(
        generated == committed,
        "crds/incident.yaml is stale: regenerate it with `cargo run -- crd > crds/incident.yaml`"
    );
}

#[test]
fn crd_examples_are_valid_incidents() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let parsed = manifest::parse(&std::fs::read(&path).unwrap());
        assert!(
            parsed.errors.is_empty(),
            "{}: {:?}",
            path.display(),
            parsed.errors
        );
        seen += parsed.incidents.len();
    }
    assert!(
        seen >= 3,
        "expected at least 3 example Incidents, found {seen}"
    );
}
