"""The apply file's schema: parse and validate the whole document into
frozen specs before anything talks to the control plane.

Top level: ``version: 1`` (optional) and ``orgs: [...]``; each org holds its
``credentials``, ``models`` and ``keys``. See deploy/examples/gateway.yaml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from odock import baseurl
from odock.v1 import common_pb2
from odockctl.apply.deployments import (
    DEFAULT_TIMEOUT_MS,
    DeploymentSpec,
    Upstream,
    check_fallback_targets,
    deployed,
    parse_fallbacks,
    parse_timeout,
)
from odockctl.apply.fields import Fields, Node
from odockctl.pricing_units import PRICING_KEYS, UnitPrices, unit_prices
from odockctl.values import (
    CAPABILITIES,
    ValueProblem,
    check_base_url,
    check_model_name,
    check_name,
    parse_capabilities,
    parse_count,
    parse_family,
    parse_outage_policy,
    parse_timestamp,
    parse_usd,
)

DEFAULT_TIER = "custom"
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
MODEL_KEYS = ("name", "family", "upstream_slug", "base_url", "timeout", "credential", "pricing", "enabled",
              "openai_compatible", "context_window", "max_output_tokens", "capabilities", "deployments",
              "fallbacks")  # fmt: skip
ROTATE_POLICIES = ("on_change", "never", "always")
MAX_CONTEXT_WINDOW = 10**8  # the control plane's bounds (control_plane/validation.py)
MAX_OUTPUT_TOKENS = 10**7


@dataclass(frozen=True)
class LimitsSpec:
    """Org limit overrides; None = inherit the tier's."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_quota: int | None = None
    monthly_spend_cap_micros: int | None = None


@dataclass(frozen=True)
class KeyLimitsSpec:
    """Per-key limits; None = only the org's limits apply."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget_micros: int | None = None


@dataclass(frozen=True)
class CredentialSpec:
    """A provider key whose secret comes from an environment variable."""

    name: str
    family: int
    secret_env: str
    rotate: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class ModelSpec:
    """A model as the file wants it."""

    name: str
    family: int
    upstream_slug: str
    base_url: str
    timeout_ms: int
    credential: str
    input_micros: int
    output_micros: int
    cached_input_micros: int | None
    enabled: bool
    # The registry (docs/openai-compatibility.md); absent in the file: the defaults below.
    openai_compatible: bool = False
    context_window: int = 0
    max_output_tokens: int = 0
    capabilities: tuple[str, ...] = ()
    # Issue 14: empty = the top-level fields above are the model's one deployment (as before
    # deployments existed); else the whole list, the fields above repeating the first's.
    deployments: tuple[DeploymentSpec, ...] = ()
    fallbacks: tuple[str, ...] = ()
    units: UnitPrices = field(default_factory=UnitPrices)  # issue 15: audio-second, character prices, batch %


@dataclass(frozen=True)
class KeySpec:
    """A virtual key, identified by name."""

    name: str
    all_models: bool
    models: tuple[str, ...]
    expire_time: datetime | None
    limits: KeyLimitsSpec
    labels: Mapping[str, str]
    revoked: bool = False


@dataclass(frozen=True)
class OrgSpec:
    """An org and everything the file declares in it."""

    name: str
    path: str
    tier: str
    limits: LimitsSpec
    outage_policy: int
    default_models: Mapping[str, str]
    labels: Mapping[str, str]
    credentials: tuple[CredentialSpec, ...]
    models: tuple[ModelSpec, ...]
    keys: tuple[KeySpec, ...]


@dataclass(frozen=True)
class ApplySpec:
    """The whole validated file."""

    source: str
    orgs: tuple[OrgSpec, ...]


def _opt(fields: Fields, key: str, parser: object) -> int | None:
    return fields.child(key).parse(parser) if fields.has(key) else None  # type: ignore[arg-type]


def _family(node: Node) -> int:
    node.expect(str)
    return node.parse(parse_family)


def _text(node: Node) -> str:
    value = node.expect(str)
    if not value.strip() or value != value.strip():
        raise node.fail("must be non-empty without surrounding whitespace")
    return value


def _labels(node: Node) -> dict[str, str]:
    values = node.string_map()
    for key, value in values.items():
        where = Node(value, f"{node.path}.{key}", node.source)
        if not LABEL_KEY_RE.fullmatch(key):
            raise where.fail(
                "label key must be 1-63 characters of A-Z, a-z, 0-9, '._/-' starting alphanumeric"
            )
        if len(value) > 256 or not value.isprintable():
            raise where.fail("label value must be at most 256 printable characters")
    return values


def _unique(node: Node, names: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise Node(None, f"{node.path}[{i}].name", node.source).fail(f"duplicate {what} name {name!r}")
        seen.add(name)


def _limits(node: Node) -> LimitsSpec:
    if node.value is None:
        return LimitsSpec()
    f = node.mapping(("requests_per_minute", "tokens_per_minute", "monthly_token_quota", "monthly_spend_cap"))
    return LimitsSpec(
        requests_per_minute=_opt(f, "requests_per_minute", parse_count),
        tokens_per_minute=_opt(f, "tokens_per_minute", parse_count),
        monthly_token_quota=_opt(f, "monthly_token_quota", parse_count),
        monthly_spend_cap_micros=_opt(f, "monthly_spend_cap", parse_usd),
    )


def _credential(node: Node, environ: Mapping[str, str]) -> CredentialSpec:
    f = node.mapping(("name", "family", "secret_env", "rotate"), required=("name", "family", "secret_env"))
    env_node = f.child("secret_env")
    var = env_node.expect(str)
    secret = environ.get(var, "").strip()
    if not secret:
        raise env_node.fail(f"environment variable {var} is not set or empty")
    rotate = f.child("rotate").expect(str) if f.has("rotate") else "on_change"
    if rotate not in ROTATE_POLICIES:
        raise f.child("rotate").fail(f"expected one of {', '.join(ROTATE_POLICIES)}, got {rotate!r}")
    return CredentialSpec(
        name=f.child("name").parse(lambda v: check_name(v, "credential")),
        family=_family(f.child("family")),
        secret_env=var,
        rotate=rotate,
        secret=secret,
    )


def _model(node: Node, credentials: dict[str, CredentialSpec], environ: Mapping[str, str]) -> ModelSpec:
    f = node.mapping(MODEL_KEYS, required=("name",))
    name = f.child("name").parse(check_model_name)
    upstream = (
        deployed(f, name, {c.name: c.family for c in credentials.values()}, environ)
        if f.has("deployments")
        else _upstream(f, name, credentials)
    )
    pricing_node = f.child("pricing")
    prices = (
        pricing_node.mapping(PRICING_KEYS) if pricing_node.value is not None else None
    )
    return ModelSpec(
        name=name,
        family=upstream.family,
        upstream_slug=upstream.upstream_slug,
        base_url=upstream.base_url,
        timeout_ms=upstream.timeout_ms,
        credential=upstream.credential,
        input_micros=(_opt(prices, "input", parse_usd) or 0) if prices else 0,
        output_micros=(_opt(prices, "output", parse_usd) or 0) if prices else 0,
        cached_input_micros=_opt(prices, "cached_input", parse_usd) if prices else None,
        enabled=f.child("enabled").expect(bool) if f.has("enabled") else True,
        openai_compatible=f.child("openai_compatible").expect(bool) if f.has("openai_compatible") else False,
        context_window=_tokens(f, "context_window", MAX_CONTEXT_WINDOW),
        max_output_tokens=_tokens(f, "max_output_tokens", MAX_OUTPUT_TOKENS),
        capabilities=(
            tuple(f.child("capabilities").parse(_capability_list)) if f.has("capabilities") else ()
        ),
        deployments=upstream.deployments,
        fallbacks=parse_fallbacks(f.child("fallbacks"), name) if f.has("fallbacks") else (),
        units=unit_prices(prices),
    )


def _upstream(f: Fields, name: str, credentials: dict[str, CredentialSpec]) -> Upstream:
    """A model given by its top-level fields (one deployment), as before deployments existed."""
    for key in ("base_url", "credential"):
        if not f.has(key):
            raise f.child(key).fail("required field missing")
    cred_node = f.child("credential")
    cred = credentials.get(cred_node.expect(str))
    if cred is None:
        raise cred_node.fail(f"credential {cred_node.value!r} is not declared in this org's credentials")
    family = _family(f.child("family")) if f.has("family") else cred.family
    if family != cred.family:
        raise f.child("family").fail(f"does not match the family of credential {cred.name!r}")
    timeout_ms = parse_timeout(f.child("timeout")) if f.has("timeout") else DEFAULT_TIMEOUT_MS
    base_url = f.child("base_url").parse(check_base_url)
    problem = baseurl.convention_problem(base_url, family)  # the control plane's own check, so --dry-run
    if problem is not None:  # and the whole-file check catch it too
        raise f.child("base_url").fail(problem)
    upstream_slug = _text(f.child("upstream_slug")) if f.has("upstream_slug") else name
    return Upstream(family, upstream_slug, base_url, timeout_ms, cred.name)


def _tokens(f: Fields, key: str, maximum: int) -> int:
    """A model's token figure: a whole number in [0, maximum] (the control plane's bounds); absent: 0."""
    if not f.has(key):
        return 0
    node = f.child(key)
    value = node.parse(lambda v: parse_count(v if isinstance(v, int) else str(v)))
    if value > maximum:
        raise node.fail(f"must be at most {maximum}")
    return value


def _capability_list(value: object) -> list[str]:
    if not isinstance(value, list):
        raise ValueProblem(f"expected a list such as [tools, vision] ({', '.join(CAPABILITIES)})")
    return parse_capabilities(value)


def _expiry(node: Node) -> datetime:
    value = node.value
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, datetime) and value.tzinfo is None:
        # YAML timestamps without an offset are UTC by the YAML spec.
        value = value.replace(tzinfo=UTC)
    if not isinstance(value, (str, datetime)):
        raise node.fail("expected an RFC 3339 timestamp such as 2026-12-31T00:00:00Z")
    return node.parse(parse_timestamp)


def _key(node: Node, models: set[str]) -> KeySpec:
    f = node.mapping(
        ("name", "all_models", "models", "expires", "limits", "labels", "revoked"), required=("name",)
    )
    all_models = f.child("all_models").expect(bool) if f.has("all_models") else False
    names: list[str] = []
    if f.has("models"):
        for item in f.child("models").items():
            if item.expect(str) not in models:
                raise item.fail(f"model {item.value!r} is not declared in this org's models")
            names.append(item.value)
    revoked = f.child("revoked").expect(bool) if f.has("revoked") else False
    if all_models and names or (not all_models and not names and not revoked):
        # A revoked key needs no scope: the file only has to name it.
        raise node.fail("give exactly one of all_models: true or a non-empty models list")
    lim = f.child("limits")
    lf = (
        lim.mapping(("requests_per_minute", "tokens_per_minute", "budget")) if lim.value is not None else None
    )
    return KeySpec(
        name=f.child("name").parse(lambda v: check_name(v, "key")),
        all_models=all_models,
        models=tuple(names),
        expire_time=_expiry(f.child("expires")) if f.has("expires") else None,
        limits=KeyLimitsSpec(
            requests_per_minute=_opt(lf, "requests_per_minute", parse_count) if lf else None,
            tokens_per_minute=_opt(lf, "tokens_per_minute", parse_count) if lf else None,
            budget_micros=_opt(lf, "budget", parse_usd) if lf else None,
        ),
        labels=_labels(f.child("labels")) if f.has("labels") else {},
        revoked=revoked,
    )


def _list(f: Fields, key: str) -> list[Node]:
    return list(f.child(key).items()) if f.has(key) else []


def _org(node: Node, environ: Mapping[str, str]) -> OrgSpec:
    f = node.mapping(
        (
            "name",
            "tier",
            "limits",
            "outage_policy",
            "default_models",
            "labels",
            "credentials",
            "models",
            "keys",
        ),
        required=("name",),
    )
    creds = [_credential(n, environ) for n in _list(f, "credentials")]
    _unique(f.child("credentials"), [c.name for c in creds], "credential")
    by_name = {c.name: c for c in creds}
    models = [_model(n, by_name, environ) for n in _list(f, "models")]
    _unique(f.child("models"), [m.name for m in models], "model")
    model_names = {m.name for m in models}
    check_fallback_targets(f.child("models"), [m.fallbacks for m in models], model_names)
    keys = [_key(n, model_names) for n in _list(f, "keys")]
    _unique(f.child("keys"), [k.name for k in keys], "key")
    defaults = f.child("default_models").string_map() if f.has("default_models") else {}
    for endpoint, model in defaults.items():
        where = Node(model, f"{node.path}.default_models.{endpoint}", node.source)
        if not endpoint.startswith("/"):
            raise where.fail("endpoint must be a path such as /v1/embeddings")
        if model not in model_names:
            raise where.fail(f"model {model!r} is not declared in this org's models")
    return OrgSpec(
        name=f.child("name").parse(lambda v: check_name(v, "org")),
        path=node.path,
        tier=_text(f.child("tier")) if f.has("tier") else DEFAULT_TIER,
        limits=_limits(f.child("limits")),
        outage_policy=(
            f.child("outage_policy").parse(lambda v: parse_outage_policy(str(v)))
            if f.has("outage_policy")
            else common_pb2.OUTAGE_POLICY_FAIL_OPEN
        ),
        default_models=defaults,
        labels=_labels(f.child("labels")) if f.has("labels") else {},
        credentials=tuple(creds),
        models=tuple(models),
        keys=tuple(keys),
    )


def parse_spec(document: object, source: str, environ: Mapping[str, str]) -> ApplySpec:
    """Validate a loaded YAML document completely; the first problem is raised."""
    root = Node(document, "", source)
    if document is None:
        raise root.fail("the file is empty")
    f = root.mapping(("version", "orgs"), required=("orgs",))
    if f.has("version") and f.child("version").value != 1:
        raise f.child("version").fail(f"unsupported version {f.child('version').value!r} (expected 1)")
    orgs = [_org(n, environ) for n in f.child("orgs").items()]
    _unique(f.child("orgs"), [o.name for o in orgs], "org")
    return ApplySpec(source=source, orgs=tuple(orgs))
