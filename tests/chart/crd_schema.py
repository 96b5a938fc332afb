"""The Incident CRD's openAPIV3Schema as a JSON Schema, so that manifests can be checked the way
the API server checks them, without a cluster.

Kubernetes' structural schemas are OpenAPI v3 with extensions; the translation:
- `nullable: true` lets the value be null;
- an object with `properties` refuses unknown fields (kubectl applies with strict field validation
  by default), unless `x-kubernetes-preserve-unknown-fields: true`;
- `x-kubernetes-int-or-string: true` takes an integer or a string;
- `x-kubernetes-list-type: set` wants unique items;
- `default` is what the server fills in, not a constraint: left to JSON Schema, which ignores it;
- the server's own rules for apiVersion, kind and metadata are added at the top;
- `x-kubernetes-validations` (CEL rules) and the other list and map types are not translated: a
  schema that uses them is refused here rather than checked partially.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

# The kinds of node whose meaning the translation keeps; anything else stops it.
UNTRANSLATED = {
    "x-kubernetes-validations",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-map-type",
}

# DNS-1123 subdomain (object names) and label (namespaces), as the API server checks them.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class UntranslatableSchema(Exception):
    pass


def translate(node: dict[str, Any], path: str = "") -> dict[str, Any]:
    """One OpenAPI v3 schema node (and its children) as JSON Schema."""
    untranslated = sorted(UNTRANSLATED & node.keys())
    if untranslated:
        raise UntranslatableSchema(f"{path or '/'}: {', '.join(untranslated)} not translated")
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out["uniqueItems"] = True
    elif list_type not in (None, "atomic"):
        raise UntranslatableSchema(f"{path}: x-kubernetes-list-type {list_type} is not translated")
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        out["properties"] = {
            name: translate(child, f"{path}/{name}") for name, child in node["properties"].items()
        }
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = translate(node["additionalProperties"], f"{path}/*")
    if isinstance(node.get("items"), dict):
        out["items"] = translate(node["items"], f"{path}/[]")
    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator in node:
            out[combinator] = [translate(s, f"{path}/{combinator}") for s in node[combinator]]
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def incident_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The JSON Schema of a served version of the CRD, with the server's rules for the envelope."""
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = translate(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["properties"] = {
        "apiVersion": {"const": f"{group}/{version}"},
        "kind": {"const": kind},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
                "namespace": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        **schema["properties"],
    }
    schema["required"] = ["apiVersion", "kind", "metadata", *schema.get("required", [])]
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def errors(schema: dict[str, Any], document: Any) -> list[str]:
    """Every violation, as `/json/path: message`, sorted; empty when the document is valid."""
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(
        f"/{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    )
