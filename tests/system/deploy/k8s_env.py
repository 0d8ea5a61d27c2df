"""Resolve a Kubernetes container's environment the way the kubelet would, offline.

Plain values are copied; ``secretKeyRef`` and ``*_FILE`` paths into mounted
Secret volumes must name a Secret (and key) that the rendered set contains;
their values come from :class:`DummySecrets` (or, for one chosen key, from the
Secret object itself) and file variables point at files written under ``tmp``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tests.system.deploy.envcheck import DummySecrets
from tests.system.deploy.kustomize import Doc


@dataclass
class ResolvedEnv:
    """The environment a container would see, and where each secret came from."""

    env: dict[str, str] = field(default_factory=dict)
    secret_refs: dict[str, tuple[str, str]] = field(default_factory=dict)  # var -> (secret, key)


def secret_value(objects: list[Doc], name: str, key: str) -> str:
    """The value of ``key`` in the Secret ``name`` (AssertionError when either is missing)."""
    hits = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"Secret {name!r}: {len(hits)} objects"
    secret = hits[0]
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    if key in secret.get("data", {}):
        return base64.b64decode(secret["data"][key]).decode("utf-8")
    raise AssertionError(f"Secret {name!r} has no key {key!r}")


def _file_source(pod: Doc, container: Doc, path: str) -> tuple[str, str]:
    """(secret name, key) of a file path inside a mounted Secret or projected volume."""
    target = PurePosixPath(path)
    for mount in container.get("volumeMounts", []):
        mount_path = PurePosixPath(mount["mountPath"])
        if mount_path not in target.parents:
            continue
        rel = str(target.relative_to(mount_path))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        sources: list[dict[str, Any]] = []
        if "secret" in volume:
            sources = [{"secret": {"name": volume["secret"]["secretName"], **volume["secret"]}}]
        elif "projected" in volume:
            sources = volume["projected"]["sources"]
        for src in sources:
            sec = src.get("secret")
            if sec is None:
                continue
            for item in sec.get("items", []):
                if item["path"] == rel:
                    return sec["name"], item["key"]
        raise AssertionError(f"{path}: no Secret item at {rel!r} in volume {volume['name']!r}")
    raise AssertionError(f"{path}: not inside any volume mount of container {container['name']!r}")


def resolve(
    objects: list[Doc],
    pod: Doc,
    container: Doc,
    dummies: DummySecrets,
    tmp: Path,
    *,
    real_key: tuple[str, str] | None = None,
) -> ResolvedEnv:
    """The container's environment; ``real_key`` = (secret, key) taken from the manifests as is."""
    assert "envFrom" not in container, "envFrom is not used (variables stay visible in the manifest)"
    out = ResolvedEnv()

    def value_of(secret: str, key: str) -> str:
        actual = secret_value(objects, secret, key)  # asserts the Secret and key exist
        return actual if real_key == (secret, key) else dummies.for_key(key, tmp)

    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            value = str(item["value"])
            if name.endswith("_FILE") and value.startswith("/run/secrets/"):
                secret, key = _file_source(pod, container, value)
                out.secret_refs[name] = (secret, key)
                path = tmp / f"{secret}--{key}"
                path.write_text(value_of(secret, key) + "\n", encoding="utf-8")
                value = str(path)
            out.env[name] = value
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            out.secret_refs[name] = (ref["name"], ref["key"])
            out.env[name] = value_of(ref["name"], ref["key"])
        elif "fieldRef" in source:
            out.env[name] = "odock-pod-" + source["fieldRef"]["fieldPath"].replace(".", "-")
        else:
            raise AssertionError(f"{name}: unsupported valueFrom {sorted(source)}")
    return out
