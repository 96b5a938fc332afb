"""What a platform team expects of a chart, rendered with the real Helm engine: the Docker socket
checked before the controller starts, labels, image digests, extra arguments, volumes and
constraints, a PodDisruptionBudget, a NetworkPolicy, ServiceMonitor relabelings, and a
PrometheusRule whose expressions promtool checks and evaluates."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

from conftest import FULLNAME, NAMESPACE, container_env, find, manifests, one, render

KUBE_VERSION = kubernetes_validate.latest_version()

EVERYTHING = {
    "image": {"digest": "sha256:" + "a" * 64},
    "commonLabels": {"team": "sre", "cost-center": "ops"},
    "extraArgs": ["--max-turns", "60"],
    "extraEnv": [{"name": "OPSLAB_SESSION_TIMEOUT_SECONDS", "value": "1200"}],
    "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "ops"}},
        }
    ],
    "containerSecurityContext": {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "Localhost", "localhostProfile": "opslab.json"},
    },
    "serviceMonitor": {
        "enabled": True,
        "relabelings": [{"targetLabel": "cluster", "replacement": "prod-eu"}],
        "metricRelabelings": [
            {"sourceLabels": ["__name__"], "regex": "opslab_docker_.*", "action": "drop"}
        ],
    },
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    "grafanaDashboard": {"enabled": False},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
}


def validate_strictly(obj: dict[str, Any]) -> None:
    if obj["apiVersion"] == "monitoring.coreos.com/v1":
        model = {"ServiceMonitor": ServiceMonitor, "PrometheusRule": PrometheusRule}[obj["kind"]]
        model.model_validate(obj, extra="forbid")
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def pod_spec(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def test_platform_values_render_valid_manifests(chart):
    objects = manifests(render(chart, EVERYTHING))
    for obj in objects:
        validate_strictly(obj)
    kinds = {o["kind"] for o in objects}
    assert {"PodDisruptionBudget", "NetworkPolicy", "PrometheusRule", "ServiceMonitor"} <= kinds
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["team"] == "sre" and labels["cost-center"] == "ops", obj["kind"]
    pod = pod_spec(objects)
    assert pod["topologySpreadConstraints"] == EVERYTHING["topologySpreadConstraints"]
    controller = pod["containers"][0]
    assert controller["image"] == "opslab@sha256:" + "a" * 64
    assert controller["args"] == ["controller", "--max-turns", "60"]
    assert container_env(one(objects, "Deployment"))["OPSLAB_SESSION_TIMEOUT_SECONDS"] == {
        "name": "OPSLAB_SESSION_TIMEOUT_SECONDS",
        "value": "1200",
    }
    assert {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in controller[
        "volumeMounts"
    ]
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in pod["volumes"]
    assert controller["securityContext"] == EVERYTHING["containerSecurityContext"]
    assert pod["initContainers"][0]["securityContext"] == EVERYTHING["containerSecurityContext"]
    assert one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]["team"] == "sre"
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["relabelings"] == EVERYTHING["serviceMonitor"]["relabelings"]
    assert endpoint["metricRelabelings"] == EVERYTHING["serviceMonitor"]["metricRelabelings"]


def test_platform_features_are_off_by_default(chart):
    objects = manifests(render(chart))
    for kind in ["PodDisruptionBudget", "NetworkPolicy", "PrometheusRule", "ConfigMap"]:
        assert find(objects, kind) == [], kind
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "opslab:0.1.0"
    )


def test_platform_docker_socket_is_checked_before_the_controller_starts(chart):
    values = {"sandbox": {"dockerSocket": "/run/docker/engine.sock"}}
    pod = pod_spec(manifests(render(chart, values)))
    (check,) = pod["initContainers"]
    assert check["name"] == "check-docker-socket"
    assert check["terminationMessagePolicy"] == "FallbackToLogsOnError"
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The socket's folder, read-only: a missing socket is never made on the node as a directory.
    assert volumes["docker-socket-dir"]["hostPath"] == {"path": "/run/docker", "type": "Directory"}
    assert check["volumeMounts"] == [
        {"name": "docker-socket-dir", "mountPath": "/node-docker", "readOnly": True}
    ]
    # The controller's own mount is not type-checked (a failed check hangs the pod).
    assert volumes["docker-socket"]["hostPath"] == {"path": "/run/docker/engine.sock"}
    script, *args = check["command"][2:]
    assert args == [
        "check-docker-socket",
        "/node-docker/engine.sock",
        "/run/docker/engine.sock",
        "$(NODE_NAME)",
    ]
    # The script, run as the init container runs it: silent with a socket, a clear error without.
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to run the check's script")
    folder = Path(tempfile.mkdtemp())
    missing = subprocess.run(
        ["bash", "-c", script, "check-docker-socket", str(folder / "engine.sock"),
         "/run/docker/engine.sock", "node-7"],
        capture_output=True, text=True,
    )
    assert missing.returncode == 1
    assert "no Docker Engine socket at /run/docker/engine.sock on node node-7" in missing.stderr
    assert "containerd-only" in missing.stderr
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "engine.sock"))
    try:
        present = subprocess.run(
            ["bash", "-c", script, "check-docker-socket", str(folder / "engine.sock"), "x", "y"],
            capture_output=True, text=True,
        )
        assert (present.returncode, present.stderr) == (0, "")
    finally:
        server.close()
        shutil.rmtree(folder)


def test_platform_pod_disruption_budget(chart):
    pdb = one(manifests(render(chart, {"podDisruptionBudget": {"enabled": True}})),
              "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "opslab",
        "app.kubernetes.io/instance": "ops",
    }
    values = {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": None}}
    pdb = one(manifests(render(chart, values)), "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": pdb["spec"]["selector"]}
    with pytest.raises(helm.HelmRenderError, match="minAvailable or maxUnavailable, not both"):
        render(chart, {"podDisruptionBudget": {"enabled": True, "minAvailable": 1}})


def test_platform_network_policy_opens_only_the_http_port(chart):
    policy = one(manifests(render(chart, {"networkPolicy": {"enabled": True}})), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    egress = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]
    policy = one(
        manifests(render(chart, {"networkPolicy": {"enabled": True, "egress": egress}})),
        "NetworkPolicy",
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == egress


def rules_file(chart, tmp_path: Path, annotations: bool = True) -> Path:
    rule = one(manifests(render(chart, {"prometheusRule": {"enabled": True}})), "PrometheusRule")
    groups = rule["spec"]["groups"]
    if not annotations:
        # promtool test rules compares annotations too; what is tested is when and with which
        # labels an alert fires (check rules, above, checks the annotations' templates).
        for group in groups:
            for each in group["rules"]:
                each.pop("annotations", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is needed (Debian's prometheus package; .ci/run installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True)


def test_platform_prometheus_rules_pass_promtool_check(chart, tmp_path):
    result = promtool("check", "rules", str(rules_file(chart, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout, result.stdout


JOB = f'job="{FULLNAME}-metrics", namespace="{NAMESPACE}"'

# Series as the controller exports them (tests/suite/observe.rs checks the names and labels),
# with the labels Prometheus adds when it scrapes the metrics Service.
RULE_TESTS = textwrap.dedent(
    f"""
    rule_files: [rules.yaml]
    evaluation_interval: 1m
    tests:
      - interval: 1m
        input_series:
          - series: 'up{{{JOB}, pod="ops-opslab-1"}}'
            values: '1x10 0x20'
          - series: 'opslab_sessions_total{{{JOB}, pod="ops-opslab-1", phase="Failed", reason="ModelApiFailed"}}'
            values: '0 0 1 2 3 4 4 4 4 4 4'
          - series: 'opslab_sessions_total{{{JOB}, pod="ops-opslab-1", phase="Resolved", reason="Reported"}}'
            values: '0+1x30'
          - series: 'opslab_sessions_total{{{JOB}, pod="ops-opslab-1", phase="Unresolved", reason="TurnBudgetExhausted"}}'
            values: '0 0 0 1 1 1 1 1 1 1 1'
          - series: 'opslab_llm_requests_total{{{JOB}, pod="ops-opslab-1", provider="anthropic", model="m", status="200"}}'
            values: '0+10x40'
          - series: 'opslab_llm_requests_total{{{JOB}, pod="ops-opslab-1", provider="anthropic", model="m", status="529"}}'
            values: '0+10x40'
          - series: 'opslab_store_errors_total{{{JOB}, pod="ops-opslab-1"}}'
            values: '0 0 0 0 0 2 2 2 2 2 2'
        alert_rule_test:
          - eval_time: 10m
            alertname: OpslabSessionsFailing
            exp_alerts:
              - exp_labels: {{severity: warning, namespace: {NAMESPACE}, reason: ModelApiFailed}}
          - eval_time: 10m
            alertname: OpslabBudgetExhausted
            exp_alerts:
              - exp_labels: {{severity: info, namespace: {NAMESPACE}, reason: TurnBudgetExhausted}}
          - eval_time: 10m
            alertname: OpslabAuditStoreErrors
            exp_alerts:
              - exp_labels: {{severity: critical, namespace: {NAMESPACE}, pod: ops-opslab-1}}
          - eval_time: 25m
            alertname: OpslabModelApiErrors
            exp_alerts:
              - exp_labels: {{severity: warning, namespace: {NAMESPACE}, provider: anthropic}}
          - eval_time: 9m
            alertname: OpslabControllerNotReady
            exp_alerts: []
          - eval_time: 20m
            alertname: OpslabControllerNotReady
            exp_alerts:
              - exp_labels: {{severity: critical}}
          - eval_time: 40m
            alertname: OpslabAuditStoreErrors
            exp_alerts: []
    """
)


def test_platform_prometheus_rules_fire_on_what_they_watch(chart, tmp_path):
    rules_file(chart, tmp_path, annotations=False)
    tests = tmp_path / "tests.yaml"
    tests.write_text(RULE_TESTS)
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_platform_prometheus_rule_thresholds_and_labels_are_values(chart, tmp_path):
    values = {
        "prometheusRule": {
            "enabled": True,
            "alertLabels": {"team": "sre"},
            "failedSessions": 7,
            "modelErrorRatio": 0.5,
        }
    }
    rule = one(manifests(render(chart, values)), "PrometheusRule")
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert all(r["labels"]["team"] == "sre" for r in rules.values())
    assert rules["OpslabSessionsFailing"]["expr"].endswith(">= 7")
    assert "> 0.5" in rules["OpslabModelApiErrors"]["expr"]


def test_platform_grafana_dashboard_is_a_configmap_for_the_sidecar(chart):
    values = {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "SRE"}}}
    config_map = one(manifests(render(chart, values)), "ConfigMap")
    validate_strictly(config_map)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "SRE"}
    dashboard = json.loads(config_map["data"]["opslab.json"])
    assert dashboard["uid"] == "opslab-controller"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10 and all("opslab_" in e for e in exprs)
    # Every query parses as PromQL (promtool checks an expression as a rule's).
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel{i}", "expr": e.replace("$job", ".+")}
        for i, e in enumerate(exprs)
    ]}]}
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
        result = promtool("check", "rules", str(folder / "rules.yaml"))
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        shutil.rmtree(folder)


def test_platform_notes_state_the_docker_requirement_and_the_agents_account(chart):
    notes = render(chart)["opslab/templates/NOTES.txt"]
    assert "needs a node with a Docker Engine" in notes
    assert f"kubectl -n {NAMESPACE} rollout status deploy/{FULLNAME}" in notes
    assert f"ServiceAccount {NAMESPACE}/{FULLNAME}-agent (ClusterRole view)" in notes
    notes = render(chart, {"agentAccess": {"enabled": False}})["opslab/templates/NOTES.txt"]
    assert "-agent" not in notes


def test_platform_incident_selector_reaches_the_controller(chart):
    env = container_env(one(manifests(render(chart)), "Deployment"))
    assert "OPSLAB_INCIDENT_SELECTOR" not in env
    values = {"incidentSelector": "team=sre,tier!=test"}
    env = container_env(one(manifests(render(chart, values)), "Deployment"))
    assert env["OPSLAB_INCIDENT_SELECTOR"]["value"] == "team=sre,tier!=test"
    with pytest.raises(helm.HelmValuesError, match="incidentSelector"):
        render(chart, {"incidentSelector": "team in (a,b)"})


def test_platform_helm_test_asks_the_service_for_readyz(chart):
    objects = manifests(render(chart))
    (pod,) = [o for o in find(objects, "Pod") if o["metadata"]["name"] == f"{FULLNAME}-test-readyz"]
    validate_strictly(pod)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    script, _, host, port = container["command"][2:]
    assert (host, port) == (f"{FULLNAME}-metrics.{NAMESPACE}.svc", "8080")
    # The script against a local server, as the pod runs it: 200 passes, 503 fails.
    class Answer(http.server.BaseHTTPRequestHandler):
        code = 200

        def do_GET(self):  # noqa: N802 (the stdlib's name)
            assert self.path == "/readyz"
            self.send_response(Answer.code)
            self.end_headers()
            self.wfile.write(b"ready\n" if Answer.code == 200 else b"not ready\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_address[1])
        def run():
            return subprocess.run(
                ["bash", "-c", script, "readyz", "127.0.0.1", port], capture_output=True, text=True
            )

        assert run().returncode == 0
        Answer.code = 503
        failed = run()
        assert failed.returncode == 1 and "503" in failed.stdout, failed
    finally:
        server.shutdown()


def test_platform_chart_readme_is_generated_from_values():
    script = Path(__file__).resolve().parents[2] / "scripts" / "chart-readme"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    readme = (script.parents[1] / "charts" / "opslab" / "README.md").read_text()
    values = yaml.safe_load((script.parents[1] / "charts" / "opslab" / "values.yaml").read_text())
    # Every top-level value has its rows, with its defaults.
    for key in values:
        assert f"| `{key}" in readme, key
    assert '| `agentAccess.clusterRole` | `"view"` |' in readme
    assert "kubectl apply --server-side" in readme and "Docker Engine" in readme
