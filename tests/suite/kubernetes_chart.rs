//! The Helm chart against a real API server (tests/support/kube_api.rs): every object the chart
//! renders (the real Helm engine, through the chart tests' Python package) is accepted by a
//! server-side dry run, and the controller running with a token of the chart's ServiceAccount,
//! bound by the chart's RBAC and nothing else, does its whole job: watches, finalizer, status,
//! Events, and the agent's token.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use opslab::incident::Phase;
use serde_json::{Value, json};

use crate::support::controller::{Controller, Options};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};
use crate::support::kube_api::{KubeApi, wait_for_incident};

const RELEASE: &str = "ops";
const NAMESPACE: &str = "opslab-system";
const FULLNAME: &str = "ops-opslab";

/// The chart's objects as `helm install ops charts/opslab -n opslab-system` renders them.
fn rendered_chart() -> Vec<Value> {
    let script = format!(
        "import json, yaml, helm_python as helm\n\
         chart = helm.Chart.load('{root}/charts/opslab')\n\
         out = chart.render({{}}, name='{RELEASE}', namespace='{NAMESPACE}', is_install=True)\n\
         print(json.dumps([d for p, t in out.items() if not p.endswith('NOTES.txt') \
                           for d in yaml.safe_load_all(t) if d]))\n",
        root = env!("CARGO_MANIFEST_DIR")
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the chart could not be rendered (the chart tests' packages are needed: python3 -m pip \
         install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The object's API on this server, from discovery.
fn api_for(discovery: &Discovery, client: &kube::Client, object: &Value) -> Api<DynamicObject> {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", object["apiVersion"].as_str().unwrap()),
    };
    let kind = object["kind"].as_str().unwrap();
    let (resource, capabilities): (ApiResource, ApiCapabilities) = discovery
        .groups()
        .filter(|found| found.name() == group)
        .find_map(|found| {
            found
                .versioned_resources(version)
                .into_iter()
                .find(|(resource, _)| resource.kind == kind)
        })
        .unwrap_or_else(|| panic!("the server does not serve {group}/{version} {kind}"));
    match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), NAMESPACE, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_the_charts_objects_are_accepted_and_its_rbac_lets_the_controller_work() {
    docker::require_sandbox_image();
    let objects = rendered_chart();
    let api = KubeApi::start().await;
    let namespaces: Api<Namespace> = Api::all(api.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap(),
        )
        .await
        .unwrap();
    // What the controller manager makes in every namespace, which the test's Pod needs.
    let accounts: Api<ServiceAccount> = Api::namespaced(api.client.clone(), NAMESPACE);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await
        .unwrap();
    let discovery = Discovery::new(api.client.clone()).run().await.unwrap();

    // Every object, dry-run on the server (what `kubectl apply --dry-run=server` does); then the
    // accounts and the RBAC for real (no kubelet runs the Deployment here: the test runs it).
    let manager = PatchParams::apply("opslab-chart-test").force();
    for object in &objects {
        let name = object["metadata"]["name"].as_str().unwrap();
        let kind = object["kind"].as_str().unwrap();
        let target = api_for(&discovery, &api.client, object);
        target
            .patch(name, &manager.clone().dry_run(), &Patch::Apply(object))
            .await
            .unwrap_or_else(|error| panic!("{kind} {name} refused: {error}"));
        if matches!(
            kind,
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        ) {
            target
                .patch(name, &manager, &Patch::Apply(object))
                .await
                .unwrap_or_else(|error| panic!("{kind} {name} refused: {error}"));
        }
    }
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "ClusterRole",
        "ServiceAccount",
        "Service",
        "Pod",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // The controller, with a token of the chart's ServiceAccount, as its pod would have.
    let token = accounts
        .create_token_request(
            FULLNAME,
            &PostParams::default(),
            &serde_json::from_value::<TokenRequest>(json!({"spec": {"expirationSeconds": 3600}}))
                .unwrap(),
        )
        .await
        .unwrap()
        .status
        .and_then(|status| status.token)
        .unwrap();
    let kubeconfig = api.kubeconfig_with_token("controller.kubeconfig", &token);
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("echo looking", "look"),
            Turn::report("resolved", "done with the chart's rights"),
        ],
    )
    .await;
    let controller = Controller::start_with_env(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--source", "kube")
            .arg("--kubeconfig", kubeconfig.display()),
        // What the chart's Deployment sets.
        &[
            ("POD_NAMESPACE", NAMESPACE),
            ("OPSLAB_AGENT_SERVICE_ACCOUNT", &format!("{FULLNAME}-agent")),
            ("OPSLAB_AGENT_SERVICE_ACCOUNT_NAMESPACE", NAMESPACE),
        ],
    );
    api.create_incident("rbac", json!({"title": "does the chart's RBAC suffice?"}))
        .await;
    let logs = || api.beside(controller.logs());
    let resolved = wait_for_incident(
        &api.incidents(),
        "rbac",
        "Resolved",
        Duration::from_secs(120),
        logs,
        |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Resolved)
        },
    )
    .await;
    assert_eq!(
        resolved.metadata.finalizers.as_deref(),
        Some(&[opslab::source::kubernetes::FINALIZER.to_string()][..])
    );
    let log = controller.logs();
    for refused in ["forbidden", "Forbidden", "no Kubernetes access"] {
        assert!(!log.contains(refused), "{refused}:\n{log}");
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(api.client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|event| event.reason)
        .collect();
    assert!(
        reasons.contains(&"SessionStarted".to_string()),
        "{reasons:?}"
    );
}
