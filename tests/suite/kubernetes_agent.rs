//! The agent sees Kubernetes in Kubernetes mode: against a real API server listening on a test
//! network's gateway (which the sandbox joins, and nothing beyond it), a session's kubectl works
//! with a token of the agent's own ServiceAccount, bound to the `view` ClusterRole as the chart
//! binds it; the token is never stored, logged or sent to the model, and the API server refuses it
//! as soon as the session is over (long before the ten minutes a requested token lasts at least).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use opslab::incident::Phase;
use serde_json::{Value, json};

use crate::support::controller::{Controller, scripted};
use crate::support::docker::{self, TestNetwork};
use crate::support::fake_llm::Turn;
use crate::support::kube_api::{KubeApi, wait_for_incident};

const AGENT: &str = "opslab-agent";
const WAIT: Duration = Duration::from_secs(120);

/// The agent's account bound to `view`'s rules, as the chart binds it (`view` itself is aggregated
/// by the controller manager, which this test does not run: its source role holds the same
/// rules); a pod for it to see (no kubelet runs it: it stays Pending).
async fn agent_account_and_a_pod(api: &KubeApi) {
    let accounts: Api<ServiceAccount> = Api::namespaced(api.client.clone(), "default");
    for name in [AGENT, "default"] {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(api.client.clone());
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": AGENT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:aggregate-to-view"},
        "subjects": [{"kind": "ServiceAccount", "name": AGENT, "namespace": "default"}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-7f9c4"},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "web", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// The token in the session's kubeconfig, read from its sandbox while it runs.
async fn token_in_sandbox(session: &str, controller: &Controller) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(container) = docker::sandbox_of(session).first() {
            let output = std::process::Command::new("docker")
                .args([
                    "exec",
                    container,
                    "cat",
                    opslab::session::kube_access::KUBECONFIG_PATH,
                ])
                .output()
                .unwrap();
            if output.status.success() {
                let config: Value = serde_json::from_slice(&output.stdout)
                    .expect("the sandbox's kubeconfig is JSON");
                return config["users"][0]["user"]["token"]
                    .as_str()
                    .expect("a token in the kubeconfig")
                    .to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no kubeconfig in the sandbox:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pods of `default` as the holder of `token` sees them.
async fn agent_client(api: &KubeApi, token: &str) -> Api<Pod> {
    let path = api.kubeconfig_with_token("agent.kubeconfig", token);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Api::namespaced(kube::Client::try_from(config).unwrap(), "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_a_sessions_kubectl_sees_the_cluster_with_its_own_read_only_account() {
    docker::require_sandbox_image();
    let network = TestNetwork::create("kube-agent");
    let api = KubeApi::start_on(network.gateway()).await;
    agent_account_and_a_pod(&api).await;
    let (llm, controller) = scripted(
        vec![
            Turn::shell("kubectl get pods -A", "what runs in the cluster"),
            Turn::shell("kubectl auth can-i delete pods", "may I delete pods?"),
            Turn::shell("kubectl auth can-i list pods -A", "may I list them?"),
            Turn::shell("cat ~/.kube/config; sleep 5", "how kubectl is set up"),
            Turn::report("resolved", "looked at the cluster"),
        ],
        |options| {
            api.controller_mode()(options)
                .arg("--agent-service-account", AGENT)
                .arg("--session-timeout-seconds", 900)
        },
    )
    .await;
    api.create_incident(
        "look-around",
        json!({"title": "web is slow", "environment": {"networks": [network.name]}}),
    )
    .await;
    let logs = || api.beside(controller.logs());
    let started = wait_for_incident(
        &api.incidents(),
        "look-around",
        "a session",
        WAIT,
        logs,
        |i| i.status.as_ref().is_some_and(|s| s.session_id.is_some()),
    )
    .await;
    let session = started.status.unwrap().session_id.unwrap();
    let token = token_in_sandbox(&session, &controller).await;
    assert!(
        token.len() > 100,
        "a service-account token (a JWT): {token}"
    );
    wait_for_incident(
        &api.incidents(),
        "look-around",
        "Resolved",
        WAIT,
        logs,
        |i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Resolved)
        },
    )
    .await;

    // The session is over: the Secret its token was bound to is gone, and the API server refuses
    // the token (within its token cache's 10 s), though it was minted for 15 minutes.
    let secrets: Api<Secret> = Api::namespaced(api.client.clone(), "default");
    let binding = opslab::session::kube_access::binding_name(&session);
    let agent = agent_client(&api, &token).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match agent.list(&Default::default()).await {
            Err(kube::Error::Api(status)) if status.code == 401 => break,
            answer => assert!(
                Instant::now() < deadline,
                "the ended session's token still works: {:?}\nits Secret: {:?}\n{}",
                answer.map(|pods| pods.items.len()),
                secrets.get_opt(&binding).await,
                logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(secrets.get_opt(&binding).await.unwrap().is_none());

    let outputs: Vec<(Value, String)> = controller
        .events(&session)
        .into_iter()
        .filter(|event| event["kind"] == "command_finished")
        .map(|event| {
            (
                event["exit_code"].clone(),
                event["output"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(outputs.len(), 4, "{outputs:#?}\n{}", controller.logs());
    assert_eq!(outputs[0].0, json!(0), "kubectl get pods -A: {outputs:#?}");
    assert!(
        outputs[0].1.contains("default") && outputs[0].1.contains("web-7f9c4"),
        "{outputs:#?}"
    );
    assert_eq!(
        (outputs[1].0.clone(), outputs[1].1.trim()),
        (json!(1), "no"),
        "the agent's account may not delete pods"
    );
    assert_eq!(
        (outputs[2].0.clone(), outputs[2].1.trim()),
        (json!(0), "yes")
    );
    assert!(
        outputs[3].1.contains("[REDACTED") && outputs[3].1.contains(AGENT),
        "the kubeconfig shown, its token redacted: {}",
        outputs[3].1
    );

    // Never stored, logged or sent to the model.
    for file in ["opslab.db", "opslab.db-wal"] {
        let bytes = std::fs::read(controller.dir.path().join(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&token),
            "the token is in {file}"
        );
    }
    assert!(!controller.logs().contains(&token), "the token is logged");
    assert!(
        llm.requests()
            .iter()
            .all(|request| !request.to_string().contains(&token)),
        "the token was sent to the model"
    );
    let system = llm.requests()[0]["system"].to_string();
    assert!(system.contains("kubectl"), "the agent is told: {system}");
}
