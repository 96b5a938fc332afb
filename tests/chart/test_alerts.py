"""The chart's alert rules: `alerts.rules` becomes the controller's --alert-rules file (values ->
ConfigMap -> mounted file -> OPSLAB_ALERT_RULES), checked by values.schema.json, and only with the
intake on."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from conftest import FULLNAME, ROOT, container_env, find, manifests, one, render

KUBE_VERSION = kubernetes_validate.latest_version()
INTAKE = {"enabled": True, "token": {"existingSecret": "opslab-alerts"}}
# The compose demo's own rules: what the chart carries must be what a rules file holds.
DEMO_RULES = yaml.safe_load((ROOT / "docker" / "demo" / "alert-rules.yaml").read_text())


def pod(deployment):
    return deployment["spec"]["template"]


def test_chart_alert_rules_are_off_without_rules(chart):
    objects = manifests(render(chart, {"alerts": INTAKE}))
    assert find(objects, "ConfigMap") == []
    deployment = one(objects, "Deployment")
    assert "OPSLAB_ALERT_RULES" not in container_env(deployment)
    assert "alert-rules" not in [v["name"] for v in pod(deployment)["spec"]["volumes"]]
    assert "checksum/alert-rules" not in (pod(deployment)["metadata"].get("annotations") or {})


def test_chart_alert_rules_reach_the_controller_as_its_rules_file(chart):
    objects = manifests(render(chart, {"alerts": {**INTAKE, "rules": DEMO_RULES}}))
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    config = one(objects, "ConfigMap", f"{FULLNAME}-alert-rules")
    assert yaml.safe_load(config["data"]["alert-rules.yaml"]) == DEMO_RULES
    deployment = one(objects, "Deployment")
    env = container_env(deployment)
    assert env["OPSLAB_ALERT_RULES"]["value"] == "/etc/opslab/alerts/alert-rules.yaml"
    controller = pod(deployment)["spec"]["containers"][0]
    mount = next(m for m in controller["volumeMounts"] if m["name"] == "alert-rules")
    assert mount == {"name": "alert-rules", "mountPath": "/etc/opslab/alerts", "readOnly": True}
    volume = next(v for v in pod(deployment)["spec"]["volumes"] if v["name"] == "alert-rules")
    assert volume["configMap"] == {
        "name": f"{FULLNAME}-alert-rules",
        "items": [{"key": "alert-rules.yaml", "path": "alert-rules.yaml"}],
    }


def test_chart_a_change_of_rules_rolls_the_pods(chart):
    def checksum(rules):
        deployment = one(manifests(render(chart, {"alerts": {**INTAKE, "rules": rules}})), "Deployment")
        return pod(deployment)["metadata"]["annotations"]["checksum/alert-rules"]

    changed = {**DEMO_RULES, "namespace": "ops"}
    assert checksum(DEMO_RULES) == checksum(DEMO_RULES)
    assert checksum(DEMO_RULES) != checksum(changed)


def test_chart_alert_rules_need_the_intake(chart):
    with pytest.raises(helm.HelmRenderError, match="alerts.rules is set but alerts.enabled is false"):
        render(chart, {"alerts": {"rules": DEMO_RULES}})


def test_chart_alert_rules_are_checked(chart):
    for rules, message in (
        ({"rules": [{"mtach": {"a": "b"}}]}, "additional properties"),
        ({"namespace": "Not_A_Label"}, "/alerts/rules/namespace"),
        ({"rules": []}, "/alerts/rules/rules"),
        ({"rules": [{"severity": "urgent"}]}, "/alerts/rules/rules/0/severity"),
        ({"rules": [{"networks": ["a b"]}]}, "/alerts/rules/rules/0/networks/0"),
        ({"rules": [{"nameLabel": "alert-name"}]}, "/alerts/rules/rules/0/nameLabel"),
    ):
        with pytest.raises(helm.HelmValuesError, match=message):
            render(chart, {"alerts": {**INTAKE, "rules": rules}})


def test_chart_readme_points_alertmanager_at_the_service_the_chart_makes(chart):
    """The chart README's AlertmanagerConfig and receiver, for a release `opslab` in `opslab`, name
    the Service and port the chart renders there, and the token's Secret of the values it shows."""
    readme = (ROOT / "charts" / "opslab" / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```yaml\n")[1:]]
    documents = [yaml.safe_load(block) for block in blocks]
    config = next(d for d in documents if d.get("kind") == "AlertmanagerConfig")
    receiver = next(d for d in documents if "receivers" in d and "apiVersion" not in d)
    values = next(d for d in documents if "alerts" in d)
    rendered = chart.render(values, name="opslab", namespace="opslab", is_install=True)
    service = one(manifests(rendered), "Service")
    port = service["spec"]["ports"][0]["port"]
    url = f"http://{service['metadata']['name']}.opslab.svc:{port}/api/v1/alerts"
    webhook = config["spec"]["receivers"][0]["webhookConfigs"][0]
    assert webhook["url"] == url
    assert webhook["httpConfig"]["authorization"]["credentials"] == {
        "name": values["alerts"]["token"]["existingSecret"],
        "key": "token",
    }
    assert receiver["receivers"][0]["webhook_configs"][0]["url"] == url
    # And the install notes say the same.
    assert url in rendered["opslab/templates/NOTES.txt"]
