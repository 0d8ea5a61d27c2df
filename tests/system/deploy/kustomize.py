"""A small, strict kustomize renderer for the subset deploy/k8s uses.

Supported: ``resources`` (files and directories), ``namespace``, ``images``
(newName/newTag) and ``patches`` given as strategic-merge files whose target is
the patch's own kind and name. Anything else in a kustomization raises
:class:`Unsupported`, so a new feature in the manifests fails the tests instead of
being ignored. When ``kubectl`` is installed, tests compare this renderer with
``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
)
# Lists that strategic merge patches merge item by item, keyed by "name".
NAMED_LISTS = frozenset({"containers", "initContainers", "env", "volumes", "volumeMounts"})


class Unsupported(Exception):
    """The kustomization uses something this renderer does not implement."""


def load_docs(path: Path) -> list[Doc]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise TypeError(f"{path}: a document is not a mapping")
    return docs


def render(directory: Path) -> list[Doc]:
    """The objects the kustomization in ``directory`` produces."""
    kust = load_docs(directory / "kustomization.yaml")[0]
    extra = set(kust) - SUPPORTED_FIELDS
    if extra:
        raise Unsupported(f"{directory}: unsupported kustomization fields {sorted(extra)}")
    docs: list[Doc] = []
    for entry in kust.get("resources", []):
        target = directory / entry
        docs.extend(render(target) if target.is_dir() else load_docs(target))
    for patch in kust.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{directory}: only file patches are supported, got {sorted(patch)}")
        for pdoc in load_docs(directory / patch["path"]):
            _merge(_find(docs, pdoc["kind"], pdoc["metadata"]["name"]), pdoc)
    for image in kust.get("images", []):
        _set_image(docs, image)
    namespace = kust.get("namespace")
    if namespace:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = namespace
    return docs


def _find(docs: list[Doc], kind: str, name: str) -> Doc:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(hits) != 1:
        raise ValueError(f"patch target {kind}/{name}: {len(hits)} matches")
    return hits[0]


def _merge(target: Doc, patch: Doc) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            if "$patch" in value:
                raise Unsupported("$patch directives are not supported")
            _merge(target[key], value)
        elif key in NAMED_LISTS and isinstance(value, list) and isinstance(target.get(key), list):
            # Like kustomize: the patch's items first (merged), then the untouched originals.
            by_name = {item["name"]: item for item in target[key]}
            merged: list[Any] = []
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                    merged.append(by_name[item["name"]])
                else:
                    merged.append(copy.deepcopy(item))
            patched = {item["name"] for item in value}
            target[key] = merged + [item for item in target[key] if item["name"] not in patched]
        else:
            target[key] = copy.deepcopy(value)


def pod_templates(doc: Doc) -> list[Doc]:
    """The pod spec(s) inside a workload object (none for other kinds)."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _set_image(docs: list[Doc], image: dict[str, str]) -> None:
    for d in docs:
        for pod in pod_templates(d):
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                name, _, _tag = c["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    tag = image.get("newTag")
                    c["image"] = f"{new}:{tag}" if tag else new
