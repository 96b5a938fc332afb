//! The Helm chart against a real API server (tests/support/kube_api.rs): every object the chart
//! renders (the real Helm engine, through the chart tests' Python package) is accepted by a
//! server-side dry run, and the controller running with a token of the chart's ServiceAccount,
//! bound by the chart's RBAC and nothing else, does its whole job: watches, finalizer, status,
//! Events, and the agent's token. With `watchNamespaces`, the same with the per-namespace Roles
//! only: the watched namespaces' Incidents are worked, another namespace's are never touched.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use opslab::incident::{Incident, Phase};
use serde_json::{Value, json};

use crate::support::controller::{Controller, Options};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};
use crate::support::kube_api::{KubeApi, wait_for_incident};

const RELEASE: &str = "ops";
const NAMESPACE: &str = "opslab-system";
const FULLNAME: &str = "ops-opslab";

/// The chart's objects as `helm install ops charts/opslab -n opslab-system` renders them with
/// `values`.
fn rendered_chart(values: &Value) -> Vec<Value> {
    let script = format!(
        "import json, yaml, helm_python as helm\n\
         chart = helm.Chart.load('{root}/charts/opslab')\n\
         out = chart.render(json.loads({values:?}), name='{RELEASE}', namespace='{NAMESPACE}', \
                            is_install=True)\n\
         print(json.dumps([d for p, t in out.items() if not p.endswith('NOTES.txt') \
                           for d in yaml.safe_load_all(t) if d]))\n",
        root = env!("CARGO_MANIFEST_DIR"),
        values = values.to_string(),
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

/// The object's API on this server, from discovery, in its namespace.
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
        // The release's namespace, unless the object names its own (a watched namespace's Role).
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(NAMESPACE),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    }
}

/// Makes `namespaces` (with the `default` ServiceAccount the controller manager would make, which
/// the chart's test Pod needs).
async fn create_namespaces(api: &KubeApi, namespaces: &[&str]) {
    let all: Api<Namespace> = Api::all(api.client.clone());
    for namespace in namespaces {
        all.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
        let accounts: Api<ServiceAccount> = Api::namespaced(api.client.clone(), namespace);
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
            )
            .await
            .unwrap();
    }
}

/// Every object, dry-run on the server (what `kubectl apply --dry-run=server` does); then the
/// accounts and the RBAC for real (no kubelet runs the Deployment here: the test runs it).
async fn apply_chart(api: &KubeApi, objects: &[Value]) {
    let discovery = Discovery::new(api.client.clone()).run().await.unwrap();
    let manager = PatchParams::apply("opslab-chart-test").force();
    for object in objects {
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
}

/// A kubeconfig with a token of the chart's ServiceAccount, as the controller's pod would have.
async fn controller_kubeconfig(api: &KubeApi) -> std::path::PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(api.client.clone(), NAMESPACE);
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
    api.kubeconfig_with_token("controller.kubeconfig", &token)
}

/// The controller as the chart's Deployment runs it, with `env` beside what it sets.
fn start_controller(
    llm: &FakeLlm,
    kubeconfig: &std::path::Path,
    env: &[(&str, &str)],
) -> Controller {
    let agent = format!("{FULLNAME}-agent");
    let mut all = vec![
        ("POD_NAMESPACE", NAMESPACE),
        ("OPSLAB_AGENT_SERVICE_ACCOUNT", agent.as_str()),
        ("OPSLAB_AGENT_SERVICE_ACCOUNT_NAMESPACE", NAMESPACE),
    ];
    all.extend_from_slice(env);
    Controller::start_with_env(
        Options::new("anthropic", llm.base_url())
            .arg("--summary-model", "off")
            .arg("--source", "kube")
            .arg("--kubeconfig", kubeconfig.display()),
        &all,
    )
}

/// Creates the Incident `name` in `namespace`.
async fn create_incident_in(api: &KubeApi, namespace: &str, name: &str) {
    let incidents: Api<Incident> = Api::namespaced(api.client.clone(), namespace);
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "opslab.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"title": format!("trouble in {namespace}")},
    }))
    .unwrap();
    incidents
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();
}

/// Nothing the controller refused or was refused.
fn assert_no_refusal(controller: &Controller) {
    let log = controller.logs();
    for refused in [
        "forbidden",
        "Forbidden",
        "no Kubernetes access",
        "could not delete",
    ] {
        assert!(!log.contains(refused), "{refused}:\n{log}");
    }
}

/// The reasons of the Events in `namespace`.
async fn event_reasons(api: &KubeApi, namespace: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(api.client.clone(), namespace);
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|event| event.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_the_charts_objects_are_accepted_and_its_rbac_lets_the_controller_work() {
    docker::require_sandbox_image();
    let objects = rendered_chart(&json!({}));
    let api = KubeApi::start().await;
    create_namespaces(&api, &[NAMESPACE]).await;
    apply_chart(&api, &objects).await;
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

    let kubeconfig = controller_kubeconfig(&api).await;
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("echo looking", "look"),
            Turn::report("resolved", "done with the chart's rights"),
        ],
    )
    .await;
    let controller = start_controller(&llm, &kubeconfig, &[]);
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
    assert_no_refusal(&controller);
    let reasons = event_reasons(&api, "default").await;
    assert!(
        reasons.contains(&"SessionStarted".to_string()),
        "{reasons:?}"
    );
}

/// `watchNamespaces: [team-a, team-b]`: the chart makes no ClusterRole, only a Role in each; the
/// controller, with those rights only, works the Incidents of both namespaces (finalizer, status,
/// Events, the agent's token) and never touches the one in a third namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_with_watch_namespaces_the_roles_suffice_and_other_namespaces_are_untouched() {
    docker::require_sandbox_image();
    let objects = rendered_chart(&json!({"watchNamespaces": ["team-a", "team-b"]}));
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(
        !kinds.contains(&"ClusterRole") && !kinds.contains(&"ClusterRoleBinding"),
        "{kinds:?}"
    );
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let watched = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|env| env["name"] == "OPSLAB_WATCH_NAMESPACES")
        .expect("the Deployment names the watched namespaces")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let api = KubeApi::start().await;
    create_namespaces(&api, &[NAMESPACE, "team-a", "team-b", "team-c"]).await;
    apply_chart(&api, &objects).await;

    let kubeconfig = controller_kubeconfig(&api).await;
    // One report per session: whichever starts first takes the first.
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::report("resolved", "done in my namespace"),
            Turn::report("resolved", "done in my namespace"),
        ],
    )
    .await;
    let controller = start_controller(
        &llm,
        &kubeconfig,
        &[("OPSLAB_WATCH_NAMESPACES", watched.as_str())],
    );
    super::kubernetes_api::wait_for_http(&controller, "/readyz", "ready", |status, _| {
        status == 200
    })
    .await;
    for namespace in ["team-c", "team-a", "team-b"] {
        create_incident_in(&api, namespace, "outage").await;
    }
    for namespace in ["team-a", "team-b"] {
        let incidents: Api<Incident> = Api::namespaced(api.client.clone(), namespace);
        let resolved = wait_for_incident(
            &incidents,
            "outage",
            &format!("Resolved in {namespace}"),
            Duration::from_secs(120),
            || api.beside(controller.logs()),
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
        let reasons = event_reasons(&api, namespace).await;
        assert!(
            reasons.contains(&"SessionStarted".to_string()),
            "{namespace}: {reasons:?}"
        );
    }
    assert_no_refusal(&controller);

    // Never touched: no finalizer, no status, no Event, no session.
    let untouched = Api::<Incident>::namespaced(api.client.clone(), "team-c")
        .get("outage")
        .await
        .unwrap();
    assert_eq!(untouched.metadata.finalizers, None, "{untouched:#?}");
    assert!(untouched.status.is_none(), "{untouched:#?}");
    assert_eq!(event_reasons(&api, "team-c").await, Vec::<String>::new());
    assert_eq!(llm.requests().len(), 2, "two sessions, none for team-c");
    let listed = controller.cli(&["sessions"]);
    assert!(!listed.contains("team-c"), "{listed}");
}
