"""The Helm chart, rendered and linted by the real Helm engine, its manifests validated strictly
against Kubernetes' schemas, and the properties that matter asserted on the rendered objects."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

import crd_schema
from conftest import (
    CHART_DIR,
    CRD_FILE,
    FULLNAME,
    NAMESPACE,
    ROOT,
    container_env,
    find,
    manifests,
    one,
    render,
)

# The newest Kubernetes version whose schemas kubernetes-validate ships.
KUBE_VERSION = kubernetes_validate.latest_version()
# The Incident's schema in the CRD, to check the manifest the notes show.
INCIDENT_SCHEMA = crd_schema.incident_schema(yaml.safe_load(CRD_FILE.read_text()), "v1alpha1")
LINT_ERROR = 3  # helm-python-sdk's severity for an error-level lint message

POSTGRES = {
    "replicas": 1,
    "store": {"type": "postgres", "postgres": {"existingSecret": "opslab-pg"}},
}
LEADER_2 = {
    "replicas": 2,
    "store": {"type": "postgres", "postgres": {"existingSecret": "opslab-pg"}},
}
SERVICE_MONITOR = {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}
OPENAI_LOCAL = {
    "llm": {
        "provider": "openai",
        "baseUrl": "http://vllm.models:8000/v1",
        "model": "qwen3",
        "apiKey": {"existingSecret": "", "key": "api-key"},
    }
}
NON_ROOT = {
    "podSecurityContext": {
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "supplementalGroups": [999],
    }
}

COMBINATIONS = {
    "defaults": {},
    "postgres": POSTGRES,
    "leader-election-2-replicas": LEADER_2,
    "service-monitor": SERVICE_MONITOR,
    "openai-local-no-key": OPENAI_LOCAL,
    "non-root": NON_ROOT,
    "full-docker-access": {"sandbox": {"dockerAccess": "full"}},
    "console": {"console": {"enabled": True, "token": {"existingSecret": "opslab-console"}}},
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
}


def lint_errors(values: dict[str, Any]) -> list[str]:
    report = helm.lint(CHART_DIR, values, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0")
    return report["errors"] + [
        f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= LINT_ERROR
    ]


def validate_strictly(obj: dict[str, Any]) -> None:
    """Kubernetes' schemas for built-in kinds (unknown fields refused); the Prometheus Operator's
    types for the ServiceMonitor, which kubernetes-validate does not know."""
    if obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == "ServiceMonitor":
        ServiceMonitor.model_validate(obj, extra="forbid")
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_chart_lints_without_errors(values):
    assert lint_errors(values) == []


@pytest.mark.parametrize("values", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_chart_renders_manifests_valid_for_current_kubernetes(chart, values):
    objects = manifests(render(chart, values))
    assert one(objects, "Deployment")
    for obj in objects:
        validate_strictly(obj)


def test_chart_lint_reports_errors_it_finds():
    # The lint check above can fail: values the schema refuses come back as error-level messages.
    # (Helm's lint mode turns a template's `fail` into an info message; rendering, as install
    # does, is where those are tested.)
    assert any("/replicas" in e for e in lint_errors({"replicas": "two"}))


def test_chart_strict_validation_refuses_unknown_fields(chart):
    deployment = one(manifests(render(chart)), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strictly(deployment)
    monitor = one(manifests(render(chart, SERVICE_MONITOR)), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(Exception, match="intervall"):
        validate_strictly(monitor)


def test_chart_crd_is_the_generated_crd():
    chart_crd = CHART_DIR / "crds" / "incident.yaml"
    assert chart_crd.read_bytes() == CRD_FILE.read_bytes(), (
        "charts/opslab/crds/incident.yaml differs from crds/incident.yaml: "
        "cp crds/incident.yaml charts/opslab/crds/incident.yaml"
    )


def test_chart_app_version_is_the_controller_version():
    # scripts/build-images tags the controller image with the package version; the chart's default
    # image tag is its appVersion.
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    chart = yaml.safe_load((ROOT / "charts/opslab/Chart.yaml").read_text())
    assert chart["appVersion"] == version


def test_chart_crd_is_loaded_and_valid(chart):
    crds = chart.crds
    assert [c["filename"] for c in crds] == ["opslab/crds/incident.yaml"]
    crd = yaml.safe_load(crds[0]["data"])
    assert crd["metadata"]["name"] == "incidents.opslab.dev"
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


def rbac_rules(obj: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(apiGroup, resource, verb, resourceNames) for every grant of a Role or ClusterRole."""
    return {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in obj["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


EXPECTED_CLUSTER_RULES = {
    ("opslab.dev", "incidents", "get", ()),
    ("opslab.dev", "incidents", "list", ()),
    ("opslab.dev", "incidents", "watch", ()),
    ("opslab.dev", "incidents", "patch", ()),
    ("opslab.dev", "incidents/status", "patch", ()),
    ("opslab.dev", "incidents/finalizers", "update", ()),
    ("events.k8s.io", "events", "create", ()),
    ("events.k8s.io", "events", "patch", ()),
}


AGENT = f"{FULLNAME}-agent"
AGENT_TOKEN_ROLE = f"{FULLNAME}-agent-token"
# A session's token is bound to an empty Secret made for it and deleted when it ends (never read).
SESSION_SECRET_RULES = {("", "secrets", "create", ()), ("", "secrets", "delete", ())}
AGENT_TOKEN_RULES = {("", "serviceaccounts/token", "create", (AGENT,))} | SESSION_SECRET_RULES


def test_chart_rbac_is_least_privilege_without_leader_election(chart):
    objects = manifests(render(chart))
    assert rbac_rules(one(objects, "ClusterRole", FULLNAME)) == EXPECTED_CLUSTER_RULES
    # The only Role: tokens of the agent's own account.
    assert [r["metadata"]["name"] for r in find(objects, "Role")] == [AGENT_TOKEN_ROLE]
    objects = manifests(render(chart, {"agentAccess": {"enabled": False}}))
    assert find(objects, "Role") == [] and find(objects, "RoleBinding") == []
    binding = one(objects, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"]["name"] == FULLNAME
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    env = container_env(one(objects, "Deployment"))
    assert "OPSLAB_LEADER_ELECTION" not in env and "OPSLAB_LEASE_NAME" not in env


def test_chart_agent_gets_its_own_account_with_view_and_the_controller_only_its_tokens(chart):
    objects = manifests(render(chart))
    account = one(objects, "ServiceAccount", AGENT)
    assert account["metadata"]["namespace"] == NAMESPACE
    assert account["automountServiceAccountToken"] is False
    binding = one(objects, "ClusterRoleBinding", AGENT)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "view",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": AGENT, "namespace": NAMESPACE}]
    role = one(objects, "Role", AGENT_TOKEN_ROLE)
    assert rbac_rules(role) == AGENT_TOKEN_RULES
    role_binding = one(objects, "RoleBinding", AGENT_TOKEN_ROLE)
    assert role_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    env = container_env(one(objects, "Deployment"))
    assert env["OPSLAB_AGENT_SERVICE_ACCOUNT"]["value"] == AGENT
    assert env["OPSLAB_AGENT_SERVICE_ACCOUNT_NAMESPACE"]["value"] == NAMESPACE
    assert "OPSLAB_AGENT_KUBE_SERVER" not in env

    # Another role, a name and a server of one's own; or no role bound here at all.
    values = {
        "agentAccess": {
            "clusterRole": "edit",
            "serviceAccount": {"name": "sre-bot"},
            "server": "https://10.96.0.1:443",
        }
    }
    objects = manifests(render(chart, values))
    assert one(objects, "ClusterRoleBinding", "sre-bot")["roleRef"]["name"] == "edit"
    assert rbac_rules(one(objects, "Role", AGENT_TOKEN_ROLE)) == {
        ("", "serviceaccounts/token", "create", ("sre-bot",)),
        *SESSION_SECRET_RULES,
    }
    env = container_env(one(objects, "Deployment"))
    assert env["OPSLAB_AGENT_KUBE_SERVER"]["value"] == "https://10.96.0.1:443"
    objects = manifests(render(chart, {"agentAccess": {"clusterRole": ""}}))
    assert find(objects, "ClusterRoleBinding", AGENT) == []
    assert one(objects, "ServiceAccount", AGENT)

    # Off: no account, no grant, no flag.
    objects = manifests(render(chart, {"agentAccess": {"enabled": False}}))
    assert find(objects, "ServiceAccount", AGENT) == []
    assert "OPSLAB_AGENT_SERVICE_ACCOUNT" not in container_env(one(objects, "Deployment"))
    with pytest.raises(helm.HelmValuesError, match="agentAccess/server"):
        render(chart, {"agentAccess": {"server": "kubernetes.default.svc"}})


def test_chart_watch_namespaces_grants_roles_there_and_nothing_cluster_wide(chart):
    values = {"watchNamespaces": ["team-a", "team-b"], "alerts": {"enabled": True,
              "token": {"existingSecret": "opslab-alerts"}}, "leaderElection": {"enabled": True}}
    objects = manifests(render(chart, values))
    # Nothing cluster-wide: neither the controller's rules nor the agent's binding.
    assert find(objects, "ClusterRole") == [] and find(objects, "ClusterRoleBinding") == []
    for namespace in ["team-a", "team-b"]:
        [role] = [r for r in find(objects, "Role", FULLNAME)
                  if r["metadata"]["namespace"] == namespace]
        assert rbac_rules(role) == EXPECTED_CLUSTER_RULES | {
            ("opslab.dev", "incidents", "create", ())
        }
        [binding] = [b for b in find(objects, "RoleBinding", FULLNAME)
                     if b["metadata"]["namespace"] == namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
        [agent] = [b for b in find(objects, "RoleBinding", AGENT)
                   if b["metadata"]["namespace"] == namespace]
        assert agent["roleRef"]["kind"] == "ClusterRole" and agent["roleRef"]["name"] == "view"
        assert agent["subjects"] == [{"kind": "ServiceAccount", "name": AGENT, "namespace": NAMESPACE}]
    assert len(find(objects, "Role", FULLNAME)) == 2
    # The Lease and the agent's tokens stay in the release's namespace.
    for name in [f"{FULLNAME}-leader-election", AGENT_TOKEN_ROLE]:
        assert one(objects, "Role", name)["metadata"]["namespace"] == NAMESPACE
    assert rbac_rules(one(objects, "Role", AGENT_TOKEN_ROLE)) == AGENT_TOKEN_RULES
    env = container_env(one(objects, "Deployment"))
    assert env["OPSLAB_WATCH_NAMESPACES"]["value"] == "team-a,team-b"
    notes = render(chart, values)["opslab/templates/NOTES.txt"]
    assert "Incidents in the namespaces team-a, team-b" in notes

    # Unset: every namespace, through the ClusterRole; no flag.
    objects = manifests(render(chart))
    assert "OPSLAB_WATCH_NAMESPACES" not in container_env(one(objects, "Deployment"))
    assert find(objects, "Role", FULLNAME) == []
    for bad in [["Team-A"], ["a", "a"], ["a.b"], "team-a"]:
        with pytest.raises(helm.HelmValuesError, match="watchNamespaces"):
            render(chart, {"watchNamespaces": bad})


def test_chart_alert_intake_gains_create_and_its_token_from_a_secret(chart):
    objects = manifests(render(chart))
    assert "OPSLAB_ALERTS_TOKEN" not in container_env(one(objects, "Deployment"))
    values = {"alerts": {"enabled": True, "token": {"existingSecret": "opslab-alerts"}}}
    objects = manifests(render(chart, values))
    assert rbac_rules(one(objects, "ClusterRole", FULLNAME)) == EXPECTED_CLUSTER_RULES | {
        ("opslab.dev", "incidents", "create", ())
    }
    env = container_env(one(objects, "Deployment"))
    assert env["OPSLAB_ALERTS_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "opslab-alerts", "key": "token"}
    }
    with pytest.raises(helm.HelmRenderError, match="alerts.token.existingSecret"):
        render(chart, {"alerts": {"enabled": True}})


@pytest.mark.parametrize(
    "values",
    [LEADER_2, {"leaderElection": {"enabled": True}}],
    ids=["two-replicas", "forced-with-one"],
)
def test_chart_leader_election_grants_only_its_lease(chart, values):
    objects = manifests(render(chart, values))
    assert rbac_rules(one(objects, "ClusterRole", FULLNAME)) == EXPECTED_CLUSTER_RULES
    role = one(objects, "Role", f"{FULLNAME}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rbac_rules(role) == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", (FULLNAME,)),
        ("coordination.k8s.io", "leases", "patch", (FULLNAME,)),
    }
    binding = one(objects, "RoleBinding", f"{FULLNAME}-leader-election")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    env = container_env(one(objects, "Deployment"))
    assert env["OPSLAB_LEADER_ELECTION"]["value"] == "true"
    assert env["OPSLAB_LEASE_NAME"]["value"] == FULLNAME
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_chart_refuses_several_replicas_on_sqlite(chart):
    with pytest.raises(helm.HelmRenderError, match=r"replicas: 2 needs store.type: postgres"):
        render(chart, {"replicas": 2})


def test_chart_postgres_url_comes_only_from_a_secret(chart):
    rendered = render(chart, LEADER_2)
    objects = manifests(rendered)
    env = container_env(one(objects, "Deployment"))
    assert env["OPSLAB_STORE"] == {
        "name": "OPSLAB_STORE",
        "valueFrom": {"secretKeyRef": {"name": "opslab-pg", "key": "url"}},
    }
    assert "OPSLAB_STORE" in env["OPSLAB_SECRET_ENV"]["value"].split(",")
    assert find(objects, "PersistentVolumeClaim") == []
    assert "postgres://" not in "".join(rendered.values())
    # The values have no place for the URL itself.
    for where in ({"url": "postgres://u:pw@db/opslab"}, {"password": "pw"}):
        with pytest.raises(helm.HelmValuesError, match="additional properties"):
            render(
                chart,
                {"store": {"type": "postgres", "postgres": {"existingSecret": "pg", **where}}},
            )
    with pytest.raises(helm.HelmRenderError, match="store.postgres.existingSecret"):
        render(chart, {"store": {"type": "postgres"}})


def test_chart_sqlite_store_is_on_a_kept_claim(chart):
    objects = manifests(render(chart))
    claim = one(objects, "PersistentVolumeClaim", f"{FULLNAME}-store")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert {
        "name": "store",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    } in pod["volumes"]
    assert {"name": "store", "mountPath": "/var/lib/opslab"} in pod["containers"][0]["volumeMounts"]
    assert container_env(deployment)["OPSLAB_STORE"]["value"] == "/var/lib/opslab/opslab.db"
    existing = manifests(
        render(chart, {"store": {"sqlite": {"persistence": {"existingClaim": "mine"}}}})
    )
    assert find(existing, "PersistentVolumeClaim") == []
    assert {"name": "store", "persistentVolumeClaim": {"claimName": "mine"}} in one(
        existing, "Deployment"
    )["spec"]["template"]["spec"]["volumes"]


def grace_period(chart, values) -> int:
    deployment = one(manifests(render(chart, values)), "Deployment")
    return deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_chart_grace_period_outlasts_the_command_timeout(chart):
    assert grace_period(chart, {}) > 120
    assert grace_period(chart, {"sandbox": {"commandTimeoutSeconds": 600}}) > 600
    assert grace_period(chart, {"terminationGracePeriodSeconds": 200}) == 200
    env = container_env(
        one(manifests(render(chart, {"sandbox": {"commandTimeoutSeconds": 600}})), "Deployment")
    )
    assert env["OPSLAB_COMMAND_TIMEOUT_SECONDS"]["value"] == "600"
    with pytest.raises(helm.HelmRenderError, match="must be above sandbox.commandTimeoutSeconds"):
        render(chart, {"terminationGracePeriodSeconds": 120})


def test_chart_controller_runs_in_kube_mode_with_probes_and_a_locked_down_container(chart):
    deployment = one(manifests(render(chart)), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "opslab:0.1.0"
    assert container["args"] == ["controller"]
    env = container_env(deployment)
    assert env["OPSLAB_SOURCE"]["value"] == "kube"
    assert env["OPSLAB_LISTEN"]["value"] == "0.0.0.0:8080"
    assert env["OPSLAB_INSTANCE"]["value"] == FULLNAME
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == FULLNAME


def test_chart_security_context_is_configurable(chart):
    pod = one(manifests(render(chart, NON_ROOT)), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "runAsNonRoot": True,
        "fsGroup": 65532,
        "supplementalGroups": [999],
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def mounts_and_volumes(deployment):
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    return mounts, volumes


def test_chart_sandbox_reaches_the_nodes_docker_engine_at_the_same_paths(chart):
    values = {
        "sandbox": {"dockerSocket": "/run/docker.sock", "proxySocketDir": "/var/run/opslab-proxy"}
    }
    deployment = one(manifests(render(chart, values)), "Deployment")
    mounts, volumes = mounts_and_volumes(deployment)
    # Checked by the init container first (tests/chart/test_platform.py), not by the kubelet.
    assert volumes["docker-socket"]["hostPath"] == {"path": "/run/docker.sock"}
    assert mounts["docker-socket"] == "/run/docker.sock"
    assert volumes["proxy-sockets"]["hostPath"] == {
        "path": "/var/run/opslab-proxy",
        "type": "DirectoryOrCreate",
    }
    assert mounts["proxy-sockets"] == "/var/run/opslab-proxy"
    env = container_env(deployment)
    assert env["OPSLAB_DOCKER_SOCKET"]["value"] == "/run/docker.sock"
    assert "DOCKER_HOST" not in env, "the controller's Docker client uses OPSLAB_DOCKER_SOCKET"
    assert env["OPSLAB_DOCKER_ACCESS"]["value"] == "guarded"
    assert env["OPSLAB_PROXY_SOCKET_DIR"]["value"] == "/var/run/opslab-proxy"
    # Without the proxy, no proxy directory on the node is mounted.
    full = one(manifests(render(chart, {"sandbox": {"dockerAccess": "full"}})), "Deployment")
    mounts, volumes = mounts_and_volumes(full)
    assert "proxy-sockets" not in mounts and "proxy-sockets" not in volumes
    assert container_env(full)["OPSLAB_DOCKER_ACCESS"]["value"] == "full"


def test_chart_model_key_comes_from_a_secret(chart):
    env = container_env(one(manifests(render(chart)), "Deployment"))
    assert env["ANTHROPIC_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "opslab-llm", "key": "api-key"}
    }
    assert env["OPSLAB_PROVIDER"]["value"] == "anthropic"
    openai = container_env(one(manifests(render(chart, OPENAI_LOCAL)), "Deployment"))
    assert "OPENAI_API_KEY" not in openai and "ANTHROPIC_API_KEY" not in openai
    assert openai["OPENAI_BASE_URL"]["value"] == "http://vllm.models:8000/v1"
    assert openai["OPSLAB_MODEL"]["value"] == "qwen3"
    with pytest.raises(helm.HelmValuesError, match="additional properties"):
        render(
            chart, {"llm": {"apiKey": {"existingSecret": "x", "key": "k", "value": "sk-ant-123"}}}
        )
    with pytest.raises(helm.HelmRenderError, match="llm.apiKey.existingSecret"):
        render(chart, {"llm": {"apiKey": {"existingSecret": "", "key": "api-key"}}})


def test_chart_metrics_service_and_service_monitor(chart):
    objects = manifests(render(chart, SERVICE_MONITOR))
    service = one(objects, "Service", f"{FULLNAME}-metrics")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(objects, "ServiceMonitor", FULLNAME)
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert find(manifests(render(chart)), "ServiceMonitor") == []


def notes_manifest(notes: str) -> dict[str, Any]:
    """The Incident manifest NOTES.txt shows: the indented block from `apiVersion:` to a blank line."""
    lines = notes.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().startswith("apiVersion:")]
    assert len(starts) == 1, "NOTES.txt should show one Incident manifest"
    start = starts[0]
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return yaml.safe_load(textwrap.dedent("\n".join(lines[start:end])))


def test_chart_notes_say_how_to_file_and_watch_an_incident(chart):
    notes = render(chart)["opslab/templates/NOTES.txt"]
    incident = notes_manifest(notes)
    assert incident["kind"] == "Incident"
    assert crd_schema.errors(INCIDENT_SCHEMA, incident) == []
    # No Docker network or container can be known to exist in a cluster: each is a placeholder,
    # marked as the user's to fill in.
    environment = incident["spec"]["environment"]
    names = environment["networks"] + environment["targets"]
    assert environment["networks"] and environment["targets"]
    assert all(re.fullmatch(r"<[a-z-]+>", name) for name in names), names
    assert "replace each <…>" in notes
    name = incident["metadata"]["name"]
    for line in (
        "kubectl apply -f incident.yaml",
        "kubectl get inc -w",
        f"kubectl describe inc {name}",
        f"kubectl delete inc {name}",
    ):
        assert line in notes
    # Every other file it applies is one it tells the user to write.
    assert re.findall(r"kubectl apply -f (\S+)", notes) == ["incident.yaml"]


def test_chart_sandboxes_reach_the_internet_only_when_asked(chart):
    def internet(values=None):
        deployment = one(manifests(render(chart, values or {})), "Deployment")
        return container_env(deployment)["OPSLAB_SANDBOX_INTERNET"]["value"]

    assert internet() == "off"
    assert internet({"sandbox": {"internet": True}}) == "on"
    with pytest.raises(helm.HelmValuesError, match="/sandbox/internet"):
        render(chart, {"sandbox": {"internet": "off"}})


def test_chart_spare_sandboxes_can_be_sized_or_turned_off(chart):
    def spares(values):
        deployment = one(manifests(render(chart, values)), "Deployment")
        return container_env(deployment)["OPSLAB_SANDBOX_SPARES"]["value"]

    assert spares({}) == "1"
    assert spares({"sandbox": {"spares": 0}}) == "0"
    assert spares({"sandbox": {"spares": 3}}) == "3"


def test_chart_values_schema_refuses_misspelt_and_mistyped_keys(chart):
    for values, message in (
        ({"replica": 2}, "additional properties 'replica'"),
        ({"store": {"type": "mysql"}}, "/store/type"),
        ({"sandbox": {"dockerAccess": "some"}}, "/sandbox/dockerAccess"),
        ({"sandbox": {"dockerSocket": "docker.sock"}}, "/sandbox/dockerSocket"),
        ({"sandbox": {"spares": -1}}, "/sandbox/spares"),
        (
            {"llm": {"provider": "gemini", "apiKey": {"existingSecret": "", "key": "k"}}},
            "/llm/provider",
        ),
    ):
        with pytest.raises(helm.HelmValuesError, match=message):
            render(chart, values)
