"""Shared fixtures of the chart and CRD tests: paths, the loaded chart, rendering with the real
Helm engine (helm-python-sdk embeds it as a shared library; nothing is fetched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "opslab"
CRD_FILE = ROOT / "crds" / "incident.yaml"
EXAMPLES_DIR = ROOT / "examples"
BAD_INCIDENTS_DIR = Path(__file__).resolve().parent / "bad-incidents"

RELEASE = "ops"
NAMESPACE = "opslab-system"
# The release's full name: "<release>-<chart>".
FULLNAME = "ops-opslab"


@pytest.fixture(scope="session")
def chart() -> helm.Chart:
    loaded = helm.Chart.load(CHART_DIR)
    yield loaded
    loaded.close()


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    """Renders as `helm install ops charts/opslab -n opslab-system` would, values checked against
    values.schema.json. Returns template path -> rendered text."""
    return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in the rendered templates (NOTES.txt is text, not an object)."""
    objects = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The controller container's environment, by name (a duplicate name is a bug)."""
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e["name"]: e for e in env}
