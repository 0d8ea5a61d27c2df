"""odockctl model create|get|list|update|delete."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from odock.v1 import models_pb2
from odockctl import deployments
from odockctl.commands.common import add_command, add_group, usd_or_none
from odockctl.context import Context, parsed
from odockctl.errors import UsageError
from odockctl.output import timestamp_text, usd
from odockctl.pricing_units import parse_percent, parse_usd_per_second, units_text
from odockctl.protos import clear, has
from odockctl.values import (
    CAPABILITIES,
    ValueProblem,
    check_base_url,
    families,
    family_name,
    format_duration_ms,
    parse_capabilities,
    parse_count,
    parse_duration_ms,
    parse_family,
    parse_usd,
)


def duration_ms(d: Duration) -> int:
    """A Duration in whole milliseconds."""
    return d.seconds * 1000 + d.nanos // 1_000_000


def pricing_text(m: models_pb2.Model) -> str:
    """Input/output (cached) prices per million tokens."""
    p = m.pricing
    text = f"in {usd(p.input_per_mtok_micros)} / out {usd(p.output_per_mtok_micros)}"
    if p.HasField("cached_input_per_mtok_micros"):
        text += f" / cached {usd(p.cached_input_per_mtok_micros)}"
    return text + " per Mtok"


def capabilities_text(m: models_pb2.Model) -> str:
    """The model's capabilities, comma-separated ("none" when none is declared)."""
    return ",".join(n for n in CAPABILITIES if getattr(m.capabilities, n)) or "none"


def model_fields(m: models_pb2.Model) -> list[tuple[str, str]]:
    """Key/value rendering of one model."""
    return [
        ("id", m.id),
        ("org id", m.org_id),
        ("name", m.name),
        ("family", family_name(m.family)),
        ("upstream slug", m.upstream_slug),
        ("base url", m.base_url),
        ("timeout", format_duration_ms(duration_ms(m.timeout))),
        ("credential", m.credential),
        *(("deployment", deployments.summary(d)) for d in m.deployments),
        ("fallbacks", ", ".join(m.fallbacks) or "none"),
        ("pricing", pricing_text(m)),
        ("unit pricing", units_text(m.pricing)),
        ("enabled", "yes" if m.enabled else "no"),
        ("openai compatible", "yes" if m.openai_compatible else "no"),
        ("context window", str(m.context_window) if m.context_window else "unknown"),
        ("max output tokens", str(m.max_output_tokens) if m.max_output_tokens else "default"),
        ("capabilities", capabilities_text(m)),
        ("created", timestamp_text(m.create_time)),
        ("updated", timestamp_text(m.update_time)),
    ]


def _fill(model: models_pb2.Model, args: argparse.Namespace) -> list[str]:
    """Copy given flags into ``model``; returns the update-mask paths they touch."""
    paths = []
    if args.family is not None:
        model.family = parsed(args.family, parse_family, "--family")
        paths.append("family")
    if args.slug is not None:
        model.upstream_slug = args.slug
        paths.append("upstream_slug")
    if args.base_url is not None:
        model.base_url = parsed(args.base_url, check_base_url, "--base-url")
        paths.append("base_url")
    if args.timeout_value is not None:
        model.timeout.FromMilliseconds(parsed(args.timeout_value, parse_duration_ms, "--upstream-timeout"))
        paths.append("timeout")
    if args.credential is not None:
        model.credential = args.credential
        paths.append("credential")
    if args.input_price is not None:
        model.pricing.input_per_mtok_micros = parsed(args.input_price, parse_usd, "--input-price")
        paths.append("pricing.input_per_mtok_micros")
    if args.output_price is not None:
        model.pricing.output_per_mtok_micros = parsed(args.output_price, parse_usd, "--output-price")
        paths.append("pricing.output_per_mtok_micros")
    if args.cached_input_price is not _KEEP:
        if args.cached_input_price is not None:
            model.pricing.cached_input_per_mtok_micros = args.cached_input_price
        paths.append("pricing.cached_input_per_mtok_micros")
    paths += _fill_units(model, args)
    if args.enabled is not None:
        model.enabled = args.enabled
        paths.append("enabled")
    if args.openai_compatible is not None:
        model.openai_compatible = args.openai_compatible
        paths.append("openai_compatible")
    if args.context_window is not None:
        model.context_window = parsed(args.context_window, parse_count, "--context-window")
        paths.append("context_window")
    if args.max_output_tokens is not None:
        model.max_output_tokens = parsed(args.max_output_tokens, parse_count, "--max-output-tokens")
        paths.append("max_output_tokens")
    if args.capabilities is not None:
        for name in parsed(args.capabilities, parse_capabilities, "--capabilities"):
            setattr(model.capabilities, name, True)
        paths.append("capabilities")
    if args.deployment:
        if len(args.deployment) > deployments.MAX_DEPLOYMENTS:
            raise UsageError(f"--deployment: at most {deployments.MAX_DEPLOYMENTS}")
        model.deployments.extend(
            parsed(text, lambda t: deployments.parse_flag(t, _read_ca_file), "--deployment")
            for text in args.deployment
        )
        paths.append("deployments")
    if args.fallback or args.no_fallbacks:
        if args.fallback and args.no_fallbacks:
            raise UsageError("--fallback and --no-fallbacks exclude each other")
        model.fallbacks.extend(args.fallback or [])
        paths.append("fallbacks")
    return paths


def _fill_units(model: models_pb2.Model, args: argparse.Namespace) -> list[str]:
    """The non-token prices and the batch percent (issue 15); their update-mask paths."""
    paths = []
    if args.audio_second_price is not None:
        model.pricing.per_million_audio_seconds_micros = parsed(
            args.audio_second_price, parse_usd_per_second, "--audio-second-price"
        )
        paths.append("pricing.per_million_audio_seconds_micros")
    if args.character_price is not None:
        model.pricing.per_million_characters_micros = parsed(args.character_price, parse_usd, "--character-price")
        paths.append("pricing.per_million_characters_micros")
    if args.batch_price_percent is not None:
        if args.batch_price_percent.strip().lower() not in ("default", "none", "unset"):
            model.pricing.batch_price_percent = parsed(args.batch_price_percent, parse_percent,
                                                       "--batch-price-percent")  # fmt: skip
        paths.append("pricing.batch_price_percent")
    return paths


def _read_ca_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(deployments.MAX_CA_BUNDLE + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueProblem(f"ca-file {path}: cannot be read ({type(exc).__name__})") from None


_KEEP: Any = object()
# Optional prices a flag may clear (unset: the input price; the default batch percent).
_OPTIONAL_PRICES = ("cached_input_per_mtok_micros", "batch_price_percent")


def create(ctx: Context, args: argparse.Namespace) -> None:
    model = models_pb2.Model(name=args.name)
    _fill(model, args)
    if not args.deployment:  # otherwise the deployments say where the model's requests go
        missing = [flag for flag, value in (("--slug", args.slug), ("--base-url", args.base_url),
                                            ("--credential", args.credential)) if value is None]  # fmt: skip
        if missing:
            raise UsageError(f"the following arguments are required: {', '.join(missing)} (or --deployment)")
    client = ctx.client()
    model.org_id = client.org_id(args.org)
    created = client.call(client.models.CreateModel, models_pb2.CreateModelRequest(model=model))
    ctx.out.message(created, model_fields(created))


def get(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    m = client.call(
        client.models.GetModel, models_pb2.GetModelRequest(org_id=client.org_id(args.org), name=args.name)
    )
    ctx.out.message(m, model_fields(m))


def list_(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    org_id = client.org_id(args.org)
    models = client.pages(
        client.models.ListModels,
        lambda token, size: models_pb2.ListModelsRequest(org_id=org_id, page_size=size, page_token=token),
        lambda r: iter(r.models),
    )
    rows = [
        [
            m.name,
            family_name(m.family),
            m.upstream_slug,
            m.base_url,
            m.credential,
            ",".join(d.name for d in m.deployments) or "-",
            usd(m.pricing.input_per_mtok_micros),
            usd(m.pricing.output_per_mtok_micros),
            "yes" if m.enabled else "no",
            "yes" if m.openai_compatible else "no",
            str(m.context_window) if m.context_window else "-",
        ]
        for m in models
    ]
    ctx.out.listing(
        "models",
        models,
        [
            "NAME",
            "FAMILY",
            "SLUG",
            "BASE URL",
            "CREDENTIAL",
            "DEPLOYMENTS",
            "IN/MTOK",
            "OUT/MTOK",
            "ENABLED",
            "OPENAI",
            "CONTEXT",
        ],
        rows,
    )


def update(ctx: Context, args: argparse.Namespace) -> None:
    model = models_pb2.Model(name=args.name)
    paths = _fill(model, args)
    if not paths:
        raise UsageError("nothing to update: give at least one field flag")
    client = ctx.client()
    org_id = model.org_id = client.org_id(args.org)
    if any(p.startswith("pricing.") for p in paths):
        # The mask addresses pricing as a whole: merge the given prices into the current ones.
        current = client.call(
            client.models.GetModel, models_pb2.GetModelRequest(org_id=org_id, name=args.name)
        )
        merged = models_pb2.Model()
        merged.pricing.CopyFrom(current.pricing)
        for path in paths:
            if path.startswith("pricing."):
                field = path.removeprefix("pricing.")
                if field in _OPTIONAL_PRICES and not has(model.pricing, field):
                    clear(merged.pricing, field)
                else:
                    setattr(merged.pricing, field, getattr(model.pricing, field))
        model.pricing.CopyFrom(merged.pricing)
        paths = [p for p in paths if not p.startswith("pricing.")] + ["pricing"]
    updated = client.call(
        client.models.UpdateModel,
        models_pb2.UpdateModelRequest(model=model, update_mask=FieldMask(paths=paths)),
    )
    ctx.out.message(updated, model_fields(updated))


def delete(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    org_id = client.org_id(args.org)
    client.call(client.models.DeleteModel, models_pb2.DeleteModelRequest(org_id=org_id, name=args.name))
    if ctx.out.as_json:
        ctx.out.json({"deleted": "model", "org_id": org_id, "name": args.name})
    else:
        ctx.out.line(f"deleted model {args.org}/{args.name}")


def _add_model_flags(p: argparse.ArgumentParser, create: bool) -> None:
    p.add_argument("org", help="org name or id")
    p.add_argument("name", help="model name clients send")
    p.add_argument("--family", required=create, help=f"provider family: {', '.join(families())}")
    p.add_argument("--slug", help="the provider's model id, e.g. gpt-4.1-mini")
    p.add_argument("--base-url", help="provider base URL, e.g. https://api.openai.com/v1")
    p.add_argument("--credential", help="credential name in the same org and family")
    p.add_argument(
        "--deployment",
        action="append",
        metavar="KEY=VALUE,...",
        help="one upstream of the model (repeat for several; replaces the whole list): name=eu,"
        "base-url=URL,credential=NAME,slug=SLUG[,weight=N][,priority=N][,timeout=30s]"
        "[,proxy=http://host:port|direct][,ca-file=PATH]; values cannot contain commas (docs/routing.md)",
    )
    p.add_argument(
        "--fallback", action="append", metavar="MODEL", help="a fallback model (repeat; replaces the list)"
    )
    p.add_argument("--no-fallbacks", action="store_true", help="clear the fallback models")
    p.add_argument(
        "--upstream-timeout",
        dest="timeout_value",
        metavar="DURATION",
        help="upstream first-byte timeout, e.g. 60s (server default 60s)",
    )
    p.add_argument("--input-price", metavar="USD", help="USD per million input tokens, e.g. 0.15")
    p.add_argument("--output-price", metavar="USD", help="USD per million output tokens")
    p.add_argument(
        "--cached-input-price",
        metavar="USD|none",
        type=usd_or_none("--cached-input-price"),
        default=_KEEP,
        help="USD per million cached input tokens; 'none' = not priced separately",
    )
    p.add_argument(
        "--audio-second-price", metavar="USD", help="USD per second of input audio (transcriptions), e.g. 0.0001"
    )
    p.add_argument("--character-price", metavar="USD", help="USD per million input characters (speech), e.g. 15")
    p.add_argument(
        "--batch-price-percent",
        metavar="N|default",
        help="what batch work costs, in percent of the prices (0-100); 'default' = 50",
    )
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enabled", dest="enabled", action="store_const", const=True, default=None)
    state.add_argument("--disabled", dest="enabled", action="store_const", const=False)
    openai = p.add_mutually_exclusive_group()
    openai.add_argument(
        "--openai-compatible",
        dest="openai_compatible",
        action="store_const",
        const=True,
        default=None,
        help="serve a vllm/anthropic/gemini model through OpenAI's POST /v1/chat/completions too",
    )
    openai.add_argument("--no-openai-compatible", dest="openai_compatible", action="store_const", const=False)
    p.add_argument("--context-window", metavar="TOKENS", help="tokens the model accepts; 0 = unknown")
    p.add_argument(
        "--max-output-tokens",
        metavar="TOKENS",
        help="output cap when a request sets none and the provider needs one; 0 = gateway default (4096)",
    )
    p.add_argument(
        "--capabilities",
        metavar="LIST",
        help=f"comma-separated: {','.join(CAPABILITIES)} (or none); replaces the whole set",
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the model command group."""
    group = add_group(sub, common, "model", "manage models (what clients name in requests)")
    _add_model_flags(add_command(group, common, "create", "create a model", create), create=True)
    p = add_command(group, common, "get", "show one model", get)
    p.add_argument("org", help="org name or id")
    p.add_argument("name")
    p = add_command(group, common, "list", "list an org's models", list_)
    p.add_argument("org", help="org name or id")
    _add_model_flags(
        add_command(group, common, "update", "change fields of a model (only the flags given)", update),
        create=False,
    )
    p = add_command(group, common, "delete", "delete a model", delete)
    p.add_argument("org", help="org name or id")
    p.add_argument("name")
