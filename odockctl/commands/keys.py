"""odockctl key create|get|list|update|revoke|rotate."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from odock.v1 import common_pb2, keys_pb2
from odockctl.client import Client, shown_ref
from odockctl.commands.common import add_command, add_group, count_or_none, labels, usd_or_none
from odockctl.context import Context, parsed
from odockctl.errors import RemoteError, UsageError
from odockctl.output import mapping_text, timestamp_text, to_dict, usd
from odockctl.protos import has
from odockctl.values import parse_duration_ms, parse_timestamp

_KEY_ID_RE = re.compile(r"key_[a-z2-7]{26}")
_UNSET: Any = object()
_LIMIT_FLAGS = (
    ("--rpm", "requests_per_minute", count_or_none),
    ("--tpm", "tokens_per_minute", count_or_none),
    ("--budget", "budget_micros", usd_or_none),
)


def limits_text(limits: common_pb2.KeyLimits) -> str:
    """Compact one-line rendering of per-key limits."""
    parts = [
        f"{label}={getattr(limits, f)}"
        for label, f in (("rpm", "requests_per_minute"), ("tpm", "tokens_per_minute"))
        if has(limits, f)
    ]
    if limits.HasField("budget_micros"):
        parts.append(f"budget={usd(limits.budget_micros)}")
    return " ".join(parts) or "org limits only"


def scope_text(k: keys_pb2.VirtualKey) -> str:
    """'all models' or the model list."""
    return "all models" if k.all_models else ",".join(k.models) or "-"


def key_fields(k: keys_pb2.VirtualKey) -> list[tuple[str, str]]:
    """Key/value rendering of one virtual key (display only, never the secret)."""
    pairs = [
        ("id", k.id),
        ("org id", k.org_id),
        ("name", k.name or "-"),
        ("key", k.display),
        ("scope", scope_text(k)),
        ("expires", timestamp_text(k.expire_time, k.HasField("expire_time"))),
        ("limits", limits_text(k.limits)),
        ("labels", mapping_text(k.labels)),
        ("state", key_state(k, datetime.now(UTC))),
        ("revoked", timestamp_text(k.revoke_time) if k.revoked else "no"),
        ("created", timestamp_text(k.create_time)),
        ("updated", timestamp_text(k.update_time)),
    ]
    if k.previous_display:
        until = timestamp_text(k.previous_secret_expire_time)
        pairs.append(("previous key", f"{k.previous_display} valid until {until}"))
    return pairs


def find_key(client: Client, org_id: str, ref: str) -> keys_pb2.VirtualKey:
    """A key by id, or by name (including revoked keys)."""
    if _KEY_ID_RE.fullmatch(ref):
        try:
            key: keys_pb2.VirtualKey = client.call(
                client.keys.GetVirtualKey, keys_pb2.GetVirtualKeyRequest(org_id=org_id, id=ref)
            )
            return key
        except RemoteError as err:
            if err.code != grpc.StatusCode.NOT_FOUND:
                raise
    for key in list_keys(client, org_id, include_revoked=True):
        if key.name == ref:
            return key
    raise RemoteError(f"NOT_FOUND: virtual key {shown_ref(ref)} does not exist", grpc.StatusCode.NOT_FOUND)


def list_keys(client: Client, org_id: str, include_revoked: bool) -> list[keys_pb2.VirtualKey]:
    """Every key of an org."""
    return client.pages(
        client.keys.ListVirtualKeys,
        lambda token, size: keys_pb2.ListVirtualKeysRequest(
            org_id=org_id, page_size=size, page_token=token, include_revoked=include_revoked
        ),
        lambda r: iter(r.keys),
    )


def show_secret(ctx: Context, response: keys_pb2.CreateVirtualKeyResponse, verb: str) -> None:
    """Print a new key and its secret, once."""
    if ctx.out.as_json:
        ctx.out.json(to_dict(response))
        return
    ctx.out.fields(key_fields(response.key))
    ctx.out.line()
    ctx.out.line(f"{verb} key secret (shown only once; store it now):")
    ctx.out.line(f"  {response.secret}")


def _fill(key: keys_pb2.VirtualKey, args: argparse.Namespace) -> list[str]:
    paths = []
    if args.all_models:
        key.all_models = True
        paths += ["all_models", "models"]
    elif args.model:
        key.models.extend(args.model)
        paths += ["all_models", "models"]
    if args.expires is not None or args.expires_in is not None or getattr(args, "no_expiry", False):
        if args.expires is not None:
            key.expire_time.FromDatetime(parsed(args.expires, parse_timestamp, "--expires"))
        elif args.expires_in is not None:
            ms = parsed(args.expires_in, parse_duration_ms, "--expires-in")
            key.expire_time.FromMilliseconds(int(datetime.now(UTC).timestamp() * 1000) + ms)
        paths.append("expire_time")
    for _, field, _ in _LIMIT_FLAGS:
        value = vars(args)[field]
        if value is not _UNSET:
            if value is not None:
                setattr(key.limits, field, value)
            paths.append("limits")
    if args.label is not None or getattr(args, "clear_labels", False):
        key.labels.update(labels(args.label))
        paths.append("labels")
    return paths


def create(ctx: Context, args: argparse.Namespace) -> None:
    if not args.all_models and not args.model:
        raise UsageError("give --all-models or at least one --model")
    key = keys_pb2.VirtualKey(name=args.name or "")
    _fill(key, args)
    client = ctx.client()
    key.org_id = client.org_id(args.org)
    response = client.call(client.keys.CreateVirtualKey, keys_pb2.CreateVirtualKeyRequest(key=key))
    show_secret(ctx, response, "new")


def get(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    key = find_key(client, client.org_id(args.org), args.key)
    ctx.out.message(key, key_fields(key))


def key_state(key: keys_pb2.VirtualKey, now: datetime) -> str:
    """active, expired (past its expiry, not revoked) or revoked."""
    if key.revoked:
        return "revoked"
    if key.HasField("expire_time") and key.expire_time.ToDatetime(tzinfo=UTC) <= now:
        return "expired"
    return "active"


def list_(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    keys = list_keys(client, client.org_id(args.org), args.include_revoked)
    now = datetime.now(UTC)
    rows = [
        [
            k.name or "-",
            k.id,
            k.display,
            scope_text(k),
            timestamp_text(k.expire_time, k.HasField("expire_time")),
            limits_text(k.limits),
            key_state(k, now),
        ]
        for k in keys
    ]
    ctx.out.listing("keys", keys, ["NAME", "ID", "KEY", "SCOPE", "EXPIRES", "LIMITS", "STATE"], rows)


def update(ctx: Context, args: argparse.Namespace) -> None:
    key = keys_pb2.VirtualKey()
    paths = _fill(key, args)
    if args.new_name is not None:
        key.name = args.new_name
        paths.append("name")
    if not paths:
        raise UsageError("nothing to update: give at least one field flag")
    client = ctx.client()
    key.org_id = client.org_id(args.org)
    current = find_key(client, key.org_id, args.key)
    key.id = current.id
    if "limits" in paths:
        # "limits" replaces the whole message: keep the limits not mentioned on the command line.
        for _, field, _ in _LIMIT_FLAGS:
            if vars(args)[field] is _UNSET and has(current.limits, field):
                setattr(key.limits, field, getattr(current.limits, field))
    updated = client.call(
        client.keys.UpdateVirtualKey,
        keys_pb2.UpdateVirtualKeyRequest(key=key, update_mask=FieldMask(paths=sorted(set(paths)))),
    )
    ctx.out.message(updated, key_fields(updated))


def revoke(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    org_id = client.org_id(args.org)
    key_id = find_key(client, org_id, args.key).id
    revoked = client.call(
        client.keys.RevokeVirtualKey, keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id=key_id)
    )
    ctx.out.message(revoked, key_fields(revoked))


def rotate(ctx: Context, args: argparse.Namespace) -> None:
    grace_ms = parsed(args.grace, parse_duration_ms, "--grace")
    client = ctx.client()
    org_id = client.org_id(args.org)
    request = keys_pb2.RotateVirtualKeyRequest(org_id=org_id, id=find_key(client, org_id, args.key).id)
    request.grace_period.FromMilliseconds(grace_ms)
    show_secret(ctx, client.call(client.keys.RotateVirtualKey, request), "rotated")


def _add_key_flags(p: argparse.ArgumentParser, update: bool) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--all-models", action="store_true", help="allow every model of the org")
    scope.add_argument("--model", action="append", metavar="NAME", help="allow this model (repeatable)")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires", metavar="RFC3339", help="expiry time, e.g. 2026-12-31T00:00:00Z")
    expiry.add_argument("--expires-in", metavar="DURATION", help="expiry from now, e.g. 30d, 12h")
    if update:
        expiry.add_argument("--no-expiry", action="store_true", help="remove the expiry")
    for flag, field, factory in _LIMIT_FLAGS:
        p.add_argument(
            flag,
            dest=field,
            type=factory(flag),
            default=_UNSET,
            metavar="N|none",
            help=f"per-key {field.removesuffix('_micros')}" + (" in USD" if "budget" in field else ""),
        )
    p.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="label" + (" (replaces all labels)" if update else ""),
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the key command group."""
    group = add_group(sub, common, "key", "manage virtual keys (secrets are shown once)")
    p = add_command(group, common, "create", "create a virtual key and print its secret once", create)
    p.add_argument("org", help="org name or id")
    p.add_argument("--name", help="key name, unique in the org")
    _add_key_flags(p, update=False)
    p = add_command(group, common, "get", "show one key", get)
    p.add_argument("org", help="org name or id")
    p.add_argument("key", help="key id or name")
    p = add_command(group, common, "list", "list an org's keys", list_)
    p.add_argument("org", help="org name or id")
    p.add_argument("--include-revoked", action="store_true")
    p = add_command(group, common, "update", "change fields of a key (only the flags given)", update)
    p.add_argument("org", help="org name or id")
    p.add_argument("key", help="key id or name")
    p.add_argument("--name", dest="new_name", help="rename the key")
    _add_key_flags(p, update=True)
    p.add_argument("--clear-labels", action="store_true", help="remove every label")
    p = add_command(group, common, "revoke", "revoke a key at once", revoke)
    p.add_argument("org", help="org name or id")
    p.add_argument("key", help="key id or name")
    p = add_command(group, common, "rotate", "issue a new secret and print it once", rotate)
    p.add_argument("org", help="org name or id")
    p.add_argument("key", help="key id or name")
    p.add_argument(
        "--grace",
        default="0s",
        metavar="DURATION",
        help="how long the old secret keeps working, e.g. 24h (default 0s)",
    )
