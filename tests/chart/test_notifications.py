"""The chart's notification values: receiver URLs come only from Secrets (as environment variables
or a mounted receivers file), the settings reach the controller's flags, and what is rendered is
valid for Kubernetes."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest

from conftest import container_env, manifests, one, render

KUBE_VERSION = kubernetes_validate.latest_version()

ALL_RECEIVERS = {
    "notifications": {
        "slack": {"existingSecret": "opslab-notify", "key": "slack-url"},
        "webhook": {"existingSecret": "opslab-notify", "key": "webhook-url"},
        "receivers": {"existingSecret": "opslab-receivers", "key": "receivers.yaml"},
        "onStart": True,
        "timeoutSeconds": 5,
        "attempts": 3,
        "consoleUrl": "https://opslab.example.com",
    }
}


def controller(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_chart_notifications_are_off_by_default(chart):
    deployment = one(manifests(render(chart)), "Deployment")
    env = container_env(deployment)
    for name in ("OPSLAB_NOTIFY_SLACK_URL", "OPSLAB_NOTIFY_WEBHOOK_URL", "OPSLAB_NOTIFY_RECEIVERS"):
        assert name not in env
    assert "OPSLAB_NOTIFY_ON_START" not in env
    volumes = [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]]
    assert "notify-receivers" not in volumes


def test_chart_receiver_urls_come_only_from_secrets(chart):
    objects = manifests(render(chart, ALL_RECEIVERS))
    deployment = one(objects, "Deployment")
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    env = container_env(deployment)
    assert env["OPSLAB_NOTIFY_SLACK_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "opslab-notify", "key": "slack-url"}
    }
    assert env["OPSLAB_NOTIFY_WEBHOOK_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "opslab-notify", "key": "webhook-url"}
    }
    # The receivers file: the Secret's key mounted read-only where the flag points.
    assert env["OPSLAB_NOTIFY_RECEIVERS"]["value"] == "/etc/opslab/notify/receivers.yaml"
    mount = next(m for m in controller(deployment)["volumeMounts"] if m["name"] == "notify-receivers")
    assert mount == {"name": "notify-receivers", "mountPath": "/etc/opslab/notify", "readOnly": True}
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "notify-receivers"
    )
    assert volume["secret"]["secretName"] == "opslab-receivers"
    assert volume["secret"]["items"] == [{"key": "receivers.yaml", "path": "receivers.yaml"}]
    assert volume["secret"]["defaultMode"] == 0o440
    # The other settings reach the controller.
    assert env["OPSLAB_NOTIFY_ON_START"]["value"] == "true"
    assert env["OPSLAB_NOTIFY_TIMEOUT_SECONDS"]["value"] == "5"
    assert env["OPSLAB_NOTIFY_ATTEMPTS"]["value"] == "3"
    assert env["OPSLAB_CONSOLE_URL"]["value"] == "https://opslab.example.com"


def test_chart_values_have_no_place_for_a_receiver_url(chart):
    for where in (
        {"slack": {"existingSecret": "s", "key": "k", "url": "https://hooks.slack.com/services/x"}},
        {"webhookUrl": "https://example.com/hook"},
        {"receivers": {"existingSecret": "s", "key": "k", "inline": "receivers: []"}},
    ):
        with pytest.raises(helm.HelmValuesError, match="additional properties"):
            render(chart, {"notifications": where})


def test_chart_notification_values_are_checked(chart):
    for values, message in (
        ({"notifications": {"attempts": 0}}, "/notifications/attempts"),
        ({"notifications": {"timeoutSeconds": "10"}}, "/notifications/timeoutSeconds"),
        ({"notifications": {"consoleUrl": "opslab.example.com"}}, "/notifications/consoleUrl"),
        ({"notifications": {"slack": {"existingSecret": "Not A Name", "key": "k"}}}, "/notifications/slack"),
    ):
        with pytest.raises(helm.HelmValuesError, match=message):
            render(chart, values)
