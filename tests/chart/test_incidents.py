"""Every example Incident is valid against the CRD's openAPIV3Schema, and bad ones are refused
for the reason they state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import BAD_INCIDENTS_DIR, CRD_FILE, EXAMPLES_DIR
from crd_schema import UntranslatableSchema, errors, incident_schema, translate

CRD = yaml.safe_load(CRD_FILE.read_text())
SCHEMA = incident_schema(CRD, "v1alpha1")

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
BAD = sorted(BAD_INCIDENTS_DIR.glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_incident_examples_exist():
    assert len(EXAMPLES) >= 2 and sum(len(documents(p)) for p in EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_incident_example_is_valid(path):
    for document in documents(path):
        assert errors(SCHEMA, document) == [], f"{path.name}: {document['metadata']['name']}"


def expected_rejection(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# rejected: (.+)", first)
    assert match, f"{path.name}: the first line must say `# rejected: /path: message`"
    return match.group(1)


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_incident_bad_manifest_is_rejected_for_its_reason(path):
    assert len(BAD) >= 10
    (document,) = documents(path)
    found = errors(SCHEMA, document)
    expected = expected_rejection(path)
    # Each bad manifest has one defect, so exactly one error, the one it states.
    assert len(found) == 1 and found[0].startswith(expected), f"expected {expected!r}, got {found}"


def valid_incident() -> dict:
    return documents(EXAMPLES_DIR / "redis-down.yaml")[0]


def test_incident_limits_of_strings():
    incident = valid_incident()
    incident["spec"]["title"] = "x" * 512
    assert errors(SCHEMA, incident) == []
    incident["spec"]["title"] = "x" * 513
    assert errors(SCHEMA, incident) == ["/spec/title: '" + "x" * 513 + "' is too long"]


def test_incident_status_written_by_the_controller_is_checked_too():
    # A status in a manifest is not the user's: the API server drops it on create (the status
    # subresource; tests/suite/kubernetes_api.rs shows it on a real server), so such a manifest is
    # no bad Incident. What the schema checks is the status written to /status.
    incident = valid_incident()
    incident["status"] = {"phase": "Resolved", "report": {"outcome": "resolved", "summary": "ok"}}
    assert errors(SCHEMA, incident) == []
    incident["status"]["report"]["outcome"] = "fixed"
    (error,) = errors(SCHEMA, incident)
    assert error.startswith("/status/report/outcome: 'fixed' is not one of"), error


def test_incident_nullable_fields_take_null():
    incident = valid_incident()
    incident["spec"]["agent"] = {"maxTurns": None, "model": None}
    incident["status"] = {"phase": "Pending", "sessionId": None, "lastCommand": None}
    assert errors(SCHEMA, incident) == []
    incident["spec"]["title"] = None  # not nullable
    assert errors(SCHEMA, incident) == ["/spec/title: None is not of type 'string'"]


def test_incident_translation_of_kubernetes_extensions():
    node = {
        "type": "object",
        "properties": {
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "port": {"x-kubernetes-int-or-string": True},
            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        },
    }
    schema = translate(node)
    assert errors(schema, {"free": {"anything": 1}, "port": "http", "tags": ["a", "b"]}) == []
    assert errors(schema, {"port": 8080}) == []
    assert errors(schema, {"port": 1.5}) != []
    assert errors(schema, {"tags": ["a", "a"]}) == ["/tags: ['a', 'a'] has non-unique elements"]
    assert errors(schema, {"other": 1}) != []
    with pytest.raises(UntranslatableSchema, match="x-kubernetes-validations"):
        translate({"type": "string", "x-kubernetes-validations": [{"rule": "self != ''"}]})


def test_incident_kubectl_columns_are_the_documented_ones():
    # README and NOTES.txt describe `kubectl get inc` by these columns.
    (version,) = CRD["spec"]["versions"]
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Phase", ".status.phase"),
        ("Severity", ".spec.severity"),
        ("Commands", ".status.commands"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert CRD["spec"]["names"]["shortNames"] == ["inc"]
