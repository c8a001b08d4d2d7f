"""KubeRay's CRD schemas (openAPIV3Schema of RayCluster and RayJob, ray.io/v1), cut down to the
fields clusters/kuberay.yaml writes, so that tests can validate the manifests offline.

The CRDs are 2.3 MB (every Pod field, twice); the cut keeps, at every level the manifests reach,
every field name the CRD knows (an unknown or misspelt one is refused, as kubectl's strict field
validation refuses it) and the full schema of the fields the manifests set; what they do not set
is left open. Regenerate after changing clusters/kuberay.yaml (tests say when), from a checkout
of github.com/ray-project/kuberay:

    python -m tests.kuberay_schema ~/src/kuberay v1.7.0
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "clusters" / "kuberay.yaml"
VENDORED = Path(__file__).parent / "golden" / "kuberay_crds.json"
CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
ITEMS, VALUES = "[]", "{}"  # a used tree's key for a list's elements, for a map's values


def used(value: Any) -> Any:
    """The field names ``value`` sets, as a tree: {name: subtree}; lists merge their elements
    under ITEMS. A leaf is None."""
    if isinstance(value, dict):
        return {key: used(sub) for key, sub in value.items()}
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        for element in value:
            merged = merge(merged, {ITEMS: used(element)})
        return merged
    return None


def merge(a: Any, b: Any) -> Any:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return a if b is None else b
    return {key: merge(a.get(key), b.get(key)) for key in {**a, **b}}


def cut(schema: dict[str, Any], tree: Any) -> dict[str, Any]:
    """``schema`` with descriptions dropped and, below each object, the fields ``tree`` does
    not use left open ({}); objects that are not maps refuse unknown fields."""
    out = {k: v for k, v in schema.items() if k not in ("description", "properties", "items")}
    names = tree if isinstance(tree, dict) else {}
    if "properties" in schema:
        out["properties"] = {
            name: cut(sub, names[name]) if name in names else {}
            for name, sub in schema["properties"].items()
        }
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):  # a map: every value alike
        values: Any = None
        for sub in names.values():
            values = merge(values, sub)
        out["additionalProperties"] = cut(schema["additionalProperties"], values)
    if "items" in schema:
        out["items"] = cut(schema["items"], names.get(ITEMS))
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [cut(sub, tree) for sub in out[key]]
    return out


def uncut(schema: Any, value: Any, path: str = "") -> list[str]:
    """The paths where the manifests set an object or a list that ``schema`` leaves open: the
    vendored cut is older than the manifests (regenerate it)."""
    if not isinstance(schema, dict):
        return []
    if isinstance(value, dict | list) and value and not schema:
        return [path]
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            inner = properties.get(key, extra if isinstance(extra, dict) else None)
            found += uncut(inner, sub, f"{path}.{key}")
    elif isinstance(value, list):
        for i, element in enumerate(value):
            found += uncut(schema.get("items"), element, f"{path}[{i}]")
    return found


def manifests() -> dict[str, dict[str, Any]]:
    """clusters/kuberay.yaml's documents by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFESTS.read_text())}


def crd_schema(text: str, version: str = "v1") -> dict[str, Any]:
    crd = yaml.safe_load(text)
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return dict(served["schema"]["openAPIV3Schema"])


def regenerate(checkout: Path, tag: str) -> None:
    docs = manifests()
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", f"{tag}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    schemas: dict[str, Any] = {
        "$comment": f"github.com/ray-project/kuberay {tag} ({commit}),"
        " ray-operator/config/crd/bases, cut by tests/kuberay_schema.py",
    }
    for kind, name in CRDS.items():
        text = subprocess.run(
            ["git", "-C", str(checkout), "show", f"{tag}:ray-operator/config/crd/bases/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        schemas[kind] = cut(crd_schema(text), used(docs[kind]))
    VENDORED.write_text(json.dumps(schemas, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    regenerate(Path(sys.argv[1]).expanduser(), sys.argv[2])
