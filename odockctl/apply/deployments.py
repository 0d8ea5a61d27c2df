"""A model's ``deployments:`` and ``fallbacks:`` in an apply file (issue 14).

Each deployment is a mapping with the proto's keys (``name``, ``base_url``, ``credential``,
``upstream_slug``, ``timeout``, ``weight``, ``priority``, ``proxy_url``, ``ca_bundle``), plus
``proxy_url_env`` (the proxy URL read from that environment variable, for one with a password).
A model with ``deployments:`` gives no top-level ``base_url``/``credential``/``upstream_slug``/
``timeout``: its first deployment is those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from odock import baseurl
from odock.proxyurl import mask_proxy
from odock.v1 import models_pb2
from odockctl import deployments
from odockctl.apply.fields import Fields, Node
from odockctl.values import check_base_url, check_model_name, parse_duration_ms, parse_family

DEFAULT_TIMEOUT_MS = 60_000
MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 3_600_000
KEYS = ("name", "base_url", "credential", "upstream_slug", "timeout", "weight", "priority",
        "proxy_url", "proxy_url_env", "ca_bundle")  # fmt: skip
TOP_LEVEL = ("base_url", "credential", "upstream_slug", "timeout")


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as the file wants it."""

    name: str
    base_url: str
    credential: str
    upstream_slug: str
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    weight: int = 1
    priority: int = 0
    proxy_url: str = field(default="", repr=False)  # may hold a password
    ca_bundle: str = ""

    def compared(self) -> tuple[object, ...]:
        """What must match the control plane's copy (which shows a proxy password masked)."""
        return (self.name, self.base_url.rstrip("/"), self.credential, self.upstream_slug, self.timeout_ms,
                self.weight, self.priority, mask_proxy(self.proxy_url), self.ca_bundle)  # fmt: skip

    def proto(self) -> models_pb2.Deployment:
        out = models_pb2.Deployment(
            name=self.name, base_url=self.base_url, credential=self.credential,
            upstream_slug=self.upstream_slug, weight=self.weight, priority=self.priority,
            proxy_url=self.proxy_url, ca_bundle=self.ca_bundle,
        )  # fmt: skip
        out.timeout.FromMilliseconds(self.timeout_ms)
        return out


def compared(d: models_pb2.Deployment) -> tuple[object, ...]:
    """The control plane's deployment in DeploymentSpec.compared's terms."""
    ms = d.timeout.seconds * 1000 + d.timeout.nanos // 1_000_000
    return (d.name, d.base_url.rstrip("/"), d.credential, d.upstream_slug, ms or DEFAULT_TIMEOUT_MS,
            d.weight or 1, d.priority, d.proxy_url, d.ca_bundle)  # fmt: skip


def parse_timeout(node: Node) -> int:
    value: int = node.parse(lambda v: parse_duration_ms(str(v)))
    if not MIN_TIMEOUT_MS <= value <= MAX_TIMEOUT_MS:
        raise node.fail("must be between 100ms and 3600s")
    return value


def parse_deployments(
    node: Node, model_name: str, family: int, credentials: Mapping[str, int], environ: Mapping[str, str]
) -> tuple[DeploymentSpec, ...]:
    """``deployments:`` (1..16 mappings); credentials maps declared credential names to families."""
    items = list(node.items())
    if not items:
        raise node.fail("give at least one deployment (or leave deployments out)")
    if len(items) > deployments.MAX_DEPLOYMENTS:
        raise node.fail(f"at most {deployments.MAX_DEPLOYMENTS} deployments")
    out: list[DeploymentSpec] = []
    for i, item in enumerate(items):
        spec = _one(item, i, model_name, family, credentials, environ)
        if spec.name in {d.name for d in out}:
            raise item.fail(f"duplicate deployment name {spec.name!r}")
        out.append(spec)
    return tuple(out)


def _one(
    node: Node, index: int, model_name: str, family: int, credentials: Mapping[str, int],
    environ: Mapping[str, str],
) -> DeploymentSpec:  # fmt: skip
    f = node.mapping(KEYS, required=("base_url", "credential"))
    name = f.child("name").parse(deployments.check_name) if f.has("name") else _default_name(index)
    cred_node = f.child("credential")
    cred = cred_node.expect(str)
    if cred not in credentials:
        raise cred_node.fail(f"credential {cred!r} is not declared in this org's credentials")
    if credentials[cred] != family:
        raise cred_node.fail("is not of the model's family")
    base_url = f.child("base_url").parse(check_base_url)
    problem = baseurl.convention_problem(base_url, family)
    if problem is not None:
        raise f.child("base_url").fail(problem)
    return DeploymentSpec(
        name=name,
        base_url=base_url,
        credential=cred,
        upstream_slug=_slug(f, model_name),
        timeout_ms=parse_timeout(f.child("timeout")) if f.has("timeout") else DEFAULT_TIMEOUT_MS,
        weight=_bounded(f, "weight", deployments.MAX_WEIGHT) or 1,
        priority=_bounded(f, "priority", deployments.MAX_PRIORITY),
        proxy_url=_proxy(f, environ),
        ca_bundle=_ca_bundle(f.child("ca_bundle")) if f.has("ca_bundle") else "",
    )


def _ca_bundle(node: Node) -> str:
    return node.parse(deployments.check_ca_bundle) if isinstance(node.expect(str), str) else ""


def _default_name(index: int) -> str:
    return "default" if index == 0 else f"d{index + 1}"


def _slug(f: Fields, model_name: str) -> str:
    if not f.has("upstream_slug"):
        return model_name
    node = f.child("upstream_slug")
    value = node.expect(str)
    if not value.strip() or value != value.strip():
        raise node.fail("must be non-empty without surrounding whitespace")
    return value


def _bounded(f: Fields, key: str, maximum: int) -> int:
    if not f.has(key):
        return 0
    return f.child(key).parse(lambda v: deployments.check_bounded(v, key, maximum))


def _proxy(f: Fields, environ: Mapping[str, str]) -> str:
    if f.has("proxy_url") and f.has("proxy_url_env"):
        raise f.child("proxy_url_env").fail("give proxy_url or proxy_url_env, not both")
    if f.has("proxy_url_env"):
        env_node = f.child("proxy_url_env")
        var = env_node.expect(str)
        value = environ.get(var, "").strip()
        if not value:
            raise env_node.fail(f"environment variable {var} is not set or empty")
        try:
            return deployments.check_proxy_url(value)
        except ValueError as exc:  # ValueProblem; the message never repeats the URL
            raise env_node.fail(f"environment variable {var}: {exc}") from None
    if f.has("proxy_url"):
        return f.child("proxy_url").parse(lambda v: deployments.check_proxy_url(str(v)))
    return ""


def parse_fallbacks(node: Node, model_name: str) -> tuple[str, ...]:
    """``fallbacks:`` (0..5 model names, not the model itself, no duplicates)."""
    names: list[str] = []
    for item in node.items():
        name = item.parse(check_model_name)
        if name == model_name:
            raise item.fail("a model cannot be its own fallback")
        if name in names:
            raise item.fail(f"{name!r} is listed twice")
        names.append(name)
    if len(names) > deployments.MAX_FALLBACKS:
        raise node.fail(f"at most {deployments.MAX_FALLBACKS} fallback models")
    return tuple(names)


def first_credential_family(f: Fields, credentials: Mapping[str, int]) -> int | None:
    """The family of the first deployment's credential, when the file declares it (else None)."""
    items = f.child("deployments").value
    if isinstance(items, list) and items and isinstance(items[0], dict):
        cred = items[0].get("credential")
        if isinstance(cred, str):
            return credentials.get(cred)
    return None


@dataclass(frozen=True)
class Upstream:
    """Where a model's requests go, as its spec's top-level fields say it."""

    family: int
    upstream_slug: str
    base_url: str
    timeout_ms: int
    credential: str
    deployments: tuple[DeploymentSpec, ...] = ()


def deployed(f: Fields, name: str, families: Mapping[str, int], environ: Mapping[str, str]) -> Upstream:
    """A model given by ``deployments:``; its first one stands for the top-level fields."""
    for key in TOP_LEVEL:
        if f.has(key):
            raise f.child(key).fail("give it in each deployment (this model has deployments:)")
    if f.has("family"):
        family_node = f.child("family")
        family_node.expect(str)
        family: int | None = family_node.parse(parse_family)
    else:
        family = first_credential_family(f, families)
    if family is None:  # say what is wrong with the first deployment, else ask for the family
        items = list(f.child("deployments").items())
        if not items:
            raise f.child("deployments").fail("give at least one deployment (or leave deployments out)")
        cred = items[0].mapping(KEYS, required=("base_url", "credential")).child("credential")
        raise cred.fail(f"credential {cred.value!r} is not declared in this org's credentials")
    deps = parse_deployments(f.child("deployments"), name, family, families, environ)
    first = deps[0]
    return Upstream(family, first.upstream_slug, first.base_url, first.timeout_ms, first.credential, deps)


def check_fallback_targets(models: Node, fallbacks: Sequence[tuple[str, ...]], declared: set[str]) -> None:
    """Every fallback names a model the file declares in the same org."""
    for i, names in enumerate(fallbacks):
        for j, target in enumerate(names):
            if target not in declared:
                where = Node(target, f"{models.path}[{i}].fallbacks[{j}]", models.source)
                raise where.fail(f"model {target!r} is not declared in this org's models")
