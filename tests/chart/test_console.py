"""The chart's web console values: the console is reached only through the Service, its token comes
from a Secret, and enabling it without one refuses to render (the controller listens on the pod's
address, where the console is off without a token)."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest

from conftest import FULLNAME, NAMESPACE, container_env, find, manifests, one, render

KUBE_VERSION = kubernetes_validate.latest_version()

CONSOLE = {"console": {"enabled": True, "token": {"existingSecret": "opslab-console"}}}


def test_chart_console_is_off_by_default(chart):
    rendered = render(chart)
    env = container_env(one(manifests(rendered), "Deployment"))
    assert "OPSLAB_CONSOLE_TOKEN" not in env
    # Nothing opens it without a token: no insecure flag either.
    assert "OPSLAB_CONSOLE_INSECURE" not in env
    assert "/ui/" not in rendered["opslab/templates/NOTES.txt"]


def test_chart_console_token_comes_from_its_secret(chart):
    rendered = render(chart, CONSOLE)
    objects = manifests(rendered)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    env = container_env(one(objects, "Deployment"))
    assert env["OPSLAB_CONSOLE_TOKEN"] == {
        "name": "OPSLAB_CONSOLE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "opslab-console", "key": "token"}},
    }
    assert "OPSLAB_CONSOLE_INSECURE" not in env
    # A key of the operator's choosing.
    values = {"console": {"enabled": True, "token": {"existingSecret": "s", "key": "console.token"}}}
    env = container_env(one(manifests(render(chart, values)), "Deployment"))
    assert env["OPSLAB_CONSOLE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "s",
        "key": "console.token",
    }


def test_chart_console_is_exposed_only_through_the_service(chart):
    objects = manifests(render(chart, CONSOLE))
    # The console shares the controller's port: no Ingress, no other Service, nothing on the host.
    assert find(objects, "Ingress") == []
    service = one(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert not pod.get("hostNetwork")
    assert all("hostPort" not in p for p in pod["containers"][0]["ports"])


def test_chart_refuses_the_console_without_a_token(chart):
    with pytest.raises(helm.HelmRenderError, match="console.enabled needs console.token.existingSecret"):
        render(chart, {"console": {"enabled": True}})


def test_chart_console_values_are_checked(chart):
    for values, message in (
        ({"console": {"enabled": "yes"}}, "/console/enabled"),
        ({"console": {"token": {"existingSecret": "Not A Name"}}}, "/console/token"),
        ({"console": {"token": "a-token-in-the-values"}}, "/console/token"),
        ({"console": {"insecure": True}}, "additional properties"),
    ):
        with pytest.raises(helm.HelmValuesError, match=message):
            render(chart, values)


def test_chart_notes_say_how_to_reach_the_console(chart):
    notes = render(chart, CONSOLE)["opslab/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME}-metrics 8080" in notes
    assert "http://localhost:8080/ui/" in notes
    assert (
        f"kubectl -n {NAMESPACE} get secret opslab-console -o jsonpath='{{.data.token}}' | base64 -d"
        in notes
    )
    values = {"console": {"enabled": True, "token": {"existingSecret": "s", "key": "console.token"}}}
    notes = render(chart, values)["opslab/templates/NOTES.txt"]
    assert r"jsonpath='{.data.console\.token}'" in notes
