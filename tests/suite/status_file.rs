//! The status file carries the Incident's identity and status, not a copy of its manifest: a secret
//! pasted into a ticket is not repeated there.

use std::time::Duration;

use opslab::incident::Phase;

use crate::support::controller::{Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_file_does_not_repeat_a_secret_from_the_ticket() {
    docker::require_sandbox_image();
    let secret = "sk-ant-api03-PASTEDINTICKET0123456789abcdefXYZ";
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![Turn::report("resolved", "the key was rotated")],
    )
    .await;
    let controller =
        Controller::start(Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"));
    let extra = format!("  description: \"the old key {secret} fails since this morning\"\n");
    controller.write_manifest(
        "pasted.yaml",
        &manifest("pasted", "the API key stopped working", &extra).replace(
            "metadata:\n",
            &format!("metadata:\n  annotations:\n    ticket: \"{secret}\"\n"),
        ),
    );
    let incident = controller.wait_for_phase("pasted", Phase::Resolved, Duration::from_secs(120));
    let text = std::fs::read_to_string(controller.status_file("pasted")).unwrap();
    assert!(!text.contains("PASTEDINTICKET"), "{text}");
    assert_eq!(incident.metadata.name.as_deref(), Some("pasted"));
    assert_eq!(incident.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(incident.metadata.generation, Some(1));
    assert!(incident.metadata.uid.is_some());
    let status = incident.status.unwrap();
    assert_eq!(status.report.unwrap().summary, "the key was rotated");
    assert!(status.session_id.is_some());
    // The model was told the ticket as filed: the status file leaves out only its copy.
    assert!(
        serde_json::to_string(&llm.requests())
            .unwrap()
            .contains("the old key"),
        "the ticket reached the model"
    );
}
