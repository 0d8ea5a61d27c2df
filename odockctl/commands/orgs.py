"""odockctl org create|get|list|update|delete and tier list."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask

from odock.v1 import common_pb2, orgs_pb2
from odockctl.commands.common import (
    add_command,
    add_group,
    count_or_none,
    labels,
    set_optional,
    usd_or_none,
)
from odockctl.context import Context, parsed
from odockctl.errors import UsageError
from odockctl.output import mapping_text, timestamp_text, usd
from odockctl.protos import has
from odockctl.values import outage_policy_name, parse_label, parse_outage_policy

# (flag, Limits field, parser factory)
_LIMIT_FLAGS = (
    ("--rpm", "requests_per_minute", count_or_none),
    ("--tpm", "tokens_per_minute", count_or_none),
    ("--monthly-token-quota", "monthly_token_quota", count_or_none),
    ("--monthly-spend-cap", "monthly_spend_cap_micros", usd_or_none),
)


def limits_text(limits: common_pb2.Limits) -> str:
    """Compact one-line rendering of org limits."""
    parts = []
    for label, field in (
        ("rpm", "requests_per_minute"),
        ("tpm", "tokens_per_minute"),
        ("tokens/month", "monthly_token_quota"),
    ):
        if has(limits, field):
            parts.append(f"{label}={getattr(limits, field)}")
    if limits.HasField("monthly_spend_cap_micros"):
        parts.append(f"spend/month={usd(limits.monthly_spend_cap_micros)}")
    return " ".join(parts) or "unlimited"


def org_fields(org: orgs_pb2.Org) -> list[tuple[str, str]]:
    """Key/value rendering of one org."""
    return [
        ("id", org.id),
        ("name", org.name),
        ("tier", org.tier),
        ("limits (overrides)", limits_text(org.limits) if org.HasField("limits") else "unlimited"),
        ("effective limits", limits_text(org.effective_limits)),
        ("outage policy", outage_policy_name(org.outage_policy)),
        ("default models", mapping_text(org.default_models)),
        ("labels", mapping_text(org.labels)),
        ("created", timestamp_text(org.create_time)),
        ("updated", timestamp_text(org.update_time)),
    ]


def _add_org_flags(parser: argparse.ArgumentParser, update: bool) -> None:
    parser.add_argument("--tier", help="tier name (see `odockctl tier list`)")
    for flag, field, factory in _LIMIT_FLAGS:
        unit = " in USD" if field.endswith("micros") else ""
        parser.add_argument(
            flag,
            dest=field,
            type=factory(flag),
            metavar="N|none",
            help=f"override the tier's {field.removesuffix('_micros')}{unit}; 'none' = inherit",
        )
    parser.add_argument("--outage-policy", help="fail_open or fail_closed")
    parser.add_argument(
        "--default-model",
        action="append",
        metavar="ENDPOINT=MODEL",
        help="default model for an endpoint, e.g. /v1/embeddings=text-embedding-3-small"
        + (" (replaces the whole map)" if update else ""),
    )
    parser.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="label" + (" (replaces all labels)" if update else ""),
    )


def _fill(org: orgs_pb2.Org, args: argparse.Namespace) -> list[str]:
    """Copy given flags into ``org``; returns the update-mask paths they touch."""
    paths: list[str] = []
    if args.tier is not None:
        org.tier = args.tier
        paths.append("tier")
    for _, field, _ in _LIMIT_FLAGS:
        if field in vars(args) and vars(args)[field] is not _UNSET:
            set_optional(org.limits, field, vars(args)[field])
            paths.append(f"limits.{field}")
    if args.outage_policy is not None:
        org.outage_policy = parsed(args.outage_policy, parse_outage_policy, "--outage-policy")
        paths.append("outage_policy")
    if args.default_model is not None:
        org.default_models.update(dict(parsed(v, parse_label, "--default-model") for v in args.default_model))
        paths.append("default_models")
    if args.label is not None:
        org.labels.update(labels(args.label))
        paths.append("labels")
    return paths


_UNSET: Any = object()


def create(ctx: Context, args: argparse.Namespace) -> None:
    org = orgs_pb2.Org(name=args.name)
    _fill(org, args)
    created = ctx.client().call(ctx.client().orgs.CreateOrg, orgs_pb2.CreateOrgRequest(org=org))
    ctx.out.message(created, org_fields(created))


def get(ctx: Context, args: argparse.Namespace) -> None:
    org = ctx.client().org(args.org)
    ctx.out.message(org, org_fields(org))


def list_(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    orgs = client.pages(
        client.orgs.ListOrgs,
        lambda token, size: orgs_pb2.ListOrgsRequest(page_size=size, page_token=token),
        lambda r: iter(r.orgs),
    )
    rows = [
        [
            o.name,
            o.id,
            o.tier,
            limits_text(o.effective_limits),
            outage_policy_name(o.outage_policy),
            mapping_text(o.labels),
        ]
        for o in orgs
    ]
    ctx.out.listing("orgs", orgs, ["NAME", "ID", "TIER", "EFFECTIVE LIMITS", "OUTAGE", "LABELS"], rows)


def update(ctx: Context, args: argparse.Namespace) -> None:
    org = orgs_pb2.Org()
    paths = _fill(org, args)
    if args.new_name is not None:
        org.name = args.new_name
        paths.append("name")
    if args.clear_default_models:
        paths.append("default_models")
    if args.clear_labels:
        paths.append("labels")
    if not paths:
        raise UsageError("nothing to update: give at least one field flag")
    client = ctx.client()
    org.id = client.org_id(args.org)
    updated = client.call(
        client.orgs.UpdateOrg,
        orgs_pb2.UpdateOrgRequest(org=org, update_mask=FieldMask(paths=sorted(set(paths)))),
    )
    ctx.out.message(updated, org_fields(updated))


def delete(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    org = client.org(args.org)
    client.call(client.orgs.DeleteOrg, orgs_pb2.DeleteOrgRequest(id=org.id, force=args.force))
    if ctx.out.as_json:
        ctx.out.json({"deleted": "org", "name": org.name, "id": org.id})
    else:
        ctx.out.line(f"deleted org {org.name} ({org.id})")


def tiers(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    response = client.call(client.orgs.ListTiers, orgs_pb2.ListTiersRequest())
    rows = [[t.name, limits_text(t.limits), t.description or "-"] for t in response.tiers]
    ctx.out.listing("tiers", list(response.tiers), ["NAME", "LIMITS", "DESCRIPTION"], rows)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the org and tier command groups."""
    group = add_group(sub, common, "org", "manage organisations")
    p = add_command(group, common, "create", "create an org", create)
    p.add_argument("name", help="org name ([a-z0-9][a-z0-9._-]{0,62})")
    _add_org_flags(p, update=False)
    p.set_defaults(**{field: _UNSET for _, field, _ in _LIMIT_FLAGS})
    p = add_command(group, common, "get", "show one org", get)
    p.add_argument("org", help="org name or id")
    add_command(group, common, "list", "list orgs", list_)
    p = add_command(group, common, "update", "change fields of an org (only the flags given)", update)
    p.add_argument("org", help="org name or id")
    p.add_argument("--name", dest="new_name", help="rename the org")
    _add_org_flags(p, update=True)
    p.add_argument("--clear-default-models", action="store_true", help="remove every default model")
    p.add_argument("--clear-labels", action="store_true", help="remove every label")
    p.set_defaults(**{field: _UNSET for _, field, _ in _LIMIT_FLAGS})
    p = add_command(group, common, "delete", "delete an org", delete)
    p.add_argument("org", help="org name or id")
    p.add_argument("--force", action="store_true", help="also delete its models, keys and credentials")
    tier_group = add_group(sub, common, "tier", "show tiers (named limit presets)")
    add_command(tier_group, common, "list", "list tiers", tiers)
