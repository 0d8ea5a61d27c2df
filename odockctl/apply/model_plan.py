"""A model's part of the plan: which update-mask paths differ from the file, and the
message that creates or updates it."""

from __future__ import annotations

from odock.v1 import models_pb2
from odockctl import protos
from odockctl.apply.deployments import DeploymentSpec, compared
from odockctl.apply.spec import ModelSpec
from odockctl.commands.models import duration_ms
from odockctl.pricing_units import current_key
from odockctl.protos import optional_int
from odockctl.values import CAPABILITIES


def _capabilities(current: models_pb2.Model) -> tuple[str, ...]:
    return tuple(n for n in CAPABILITIES if getattr(current.capabilities, n))


def _plain(current: models_pb2.Model) -> bool:
    """Whether the model is what a file without ``deployments:`` describes: one plain deployment."""
    return len(current.deployments) <= 1 and all(
        (d.name, d.weight or 1, d.priority, d.proxy_url, d.ca_bundle) == ("default", 1, 0, "", "")
        for d in current.deployments
    )


def _upstream_diff(current: models_pb2.Model, spec: ModelSpec) -> dict[str, bool]:
    if not spec.deployments and _plain(current):  # as before deployments existed
        return {
            "upstream_slug": current.upstream_slug != spec.upstream_slug,
            "base_url": current.base_url.rstrip("/") != spec.base_url.rstrip("/"),
            "timeout": duration_ms(current.timeout) != spec.timeout_ms,
            "credential": current.credential != spec.credential,
        }
    # The whole list; a file without deployments: makes the model one plain deployment again.
    wanted = [d.compared() for d in _deployments(spec)]
    return {"deployments": [compared(d) for d in current.deployments] != wanted}


def _deployments(spec: ModelSpec) -> tuple[DeploymentSpec, ...]:
    if spec.deployments:
        return spec.deployments
    only = DeploymentSpec(
        name="default", base_url=spec.base_url, credential=spec.credential,
        upstream_slug=spec.upstream_slug, timeout_ms=spec.timeout_ms,
    )  # fmt: skip
    return (only,)


def model_diff(current: models_pb2.Model, spec: ModelSpec) -> list[str]:
    """Model fields (update-mask paths) that differ from the file."""
    p = current.pricing
    checks = {
        "family": current.family != spec.family,
        **_upstream_diff(current, spec),
        "fallbacks": list(current.fallbacks) != list(spec.fallbacks),
        "pricing": (
            p.input_per_mtok_micros,
            p.output_per_mtok_micros,
            optional_int(p, "cached_input_per_mtok_micros"),
            *current_key(p),
        )
        != (spec.input_micros, spec.output_micros, spec.cached_input_micros, *spec.units.key()),
        "enabled": (current.enabled if current.HasField("enabled") else True) != spec.enabled,
        "openai_compatible": current.openai_compatible != spec.openai_compatible,
        "context_window": current.context_window != spec.context_window,
        "max_output_tokens": current.max_output_tokens != spec.max_output_tokens,
        "capabilities": _capabilities(current) != spec.capabilities,
    }
    return [path for path, differs in checks.items() if differs]


def model_proto(org_id: str, spec: ModelSpec, *, collapse: bool = False) -> models_pb2.Model:
    """The model as the file wants it (every field: the update mask picks). Without
    ``deployments:`` in the file no deployment is sent (the top-level fields are the one), unless
    ``collapse``: a model that has several becomes that one again."""
    model = models_pb2.Model(
        org_id=org_id,
        name=spec.name,
        family=protos.family(spec.family),
        upstream_slug=spec.upstream_slug,
        base_url=spec.base_url,
        credential=spec.credential,
        enabled=spec.enabled,
        openai_compatible=spec.openai_compatible,
        context_window=spec.context_window,
        max_output_tokens=spec.max_output_tokens,
    )
    model.timeout.FromMilliseconds(spec.timeout_ms)
    model.pricing.input_per_mtok_micros = spec.input_micros
    model.pricing.output_per_mtok_micros = spec.output_micros
    if spec.cached_input_micros is not None:
        model.pricing.cached_input_per_mtok_micros = spec.cached_input_micros
    spec.units.fill(model.pricing)
    for name in spec.capabilities:
        setattr(model.capabilities, name, True)
    if spec.deployments or collapse:
        model.deployments.extend(d.proto() for d in _deployments(spec))
    model.fallbacks.extend(spec.fallbacks)
    return model
