"""odockctl credential create|get|list|rotate|delete|rewrap."""

from __future__ import annotations

import argparse
from typing import Any

from odock.v1 import credentials_pb2
from odockctl.commands.common import add_command, add_group
from odockctl.context import Context, add_secret_flags, parsed
from odockctl.output import timestamp_text
from odockctl.values import families, family_name, parse_family


def _last4(c: credentials_pb2.Credential) -> str:
    return f"…{c.last4}" if c.last4 else "-"


def credential_fields(c: credentials_pb2.Credential) -> list[tuple[str, str]]:
    """Key/value rendering of one credential (never a secret: there is none to show)."""
    return [
        ("id", c.id),
        ("org id", c.org_id),
        ("name", c.name),
        ("family", family_name(c.family)),
        ("last4", _last4(c)),
        ("kek id", c.kek_id),
        ("created", timestamp_text(c.create_time)),
        ("rotated", timestamp_text(c.rotate_time, c.HasField("rotate_time"))),
    ]


def create(ctx: Context, args: argparse.Namespace) -> None:
    family = parsed(args.family, parse_family, "--family")
    secret = ctx.secret("provider secret")
    client = ctx.client()
    org_id = client.org_id(args.org)
    cred = client.call(
        client.credentials.CreateCredential,
        credentials_pb2.CreateCredentialRequest(org_id=org_id, name=args.name, family=family, secret=secret),
    )
    ctx.out.message(cred, credential_fields(cred))


def get(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    cred = client.call(
        client.credentials.GetCredential,
        credentials_pb2.GetCredentialRequest(org_id=client.org_id(args.org), name=args.name),
    )
    ctx.out.message(cred, credential_fields(cred))


def list_(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    org_id = client.org_id(args.org)
    creds = client.pages(
        client.credentials.ListCredentials,
        lambda token, size: credentials_pb2.ListCredentialsRequest(
            org_id=org_id, page_size=size, page_token=token
        ),
        lambda r: iter(r.credentials),
    )
    rows = [
        [
            c.name,
            c.id,
            family_name(c.family),
            _last4(c),
            c.kek_id,
            timestamp_text(c.create_time),
            timestamp_text(c.rotate_time, c.HasField("rotate_time")),
        ]
        for c in creds
    ]
    ctx.out.listing(
        "credentials", creds, ["NAME", "ID", "FAMILY", "LAST4", "KEK", "CREATED", "ROTATED"], rows
    )


def rotate(ctx: Context, args: argparse.Namespace) -> None:
    secret = ctx.secret("new provider secret")
    client = ctx.client()
    org_id = client.org_id(args.org)
    cred = client.call(
        client.credentials.RotateCredential,
        credentials_pb2.RotateCredentialRequest(org_id=org_id, name=args.name, secret=secret),
    )
    ctx.out.message(cred, credential_fields(cred))


def delete(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    org_id = client.org_id(args.org)
    client.call(
        client.credentials.DeleteCredential,
        credentials_pb2.DeleteCredentialRequest(org_id=org_id, name=args.name),
    )
    if ctx.out.as_json:
        ctx.out.json({"deleted": "credential", "org_id": org_id, "name": args.name})
    else:
        ctx.out.line(f"deleted credential {args.org}/{args.name}")


def rewrap(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    r = client.call(client.credentials.RewrapCredentials, credentials_pb2.RewrapCredentialsRequest())
    ctx.out.message(
        r, [("kek id", r.kek_id), ("rewrapped", str(r.rewrapped)), ("unchanged", str(r.unchanged))]
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the credential command group."""
    group = add_group(sub, common, "credential", "manage provider credentials (secrets never come back out)")
    p = add_command(group, common, "create", "store a provider key, encrypted at rest", create)
    p.add_argument("org", help="org name or id")
    p.add_argument("name", help="credential name, unique in the org")
    p.add_argument("--family", required=True, help=f"provider family: {', '.join(families())}")
    add_secret_flags(p)
    p = add_command(group, common, "get", "show one credential", get)
    p.add_argument("org", help="org name or id")
    p.add_argument("name")
    p = add_command(group, common, "list", "list an org's credentials", list_)
    p.add_argument("org", help="org name or id")
    p = add_command(group, common, "rotate", "replace a credential's secret", rotate)
    p.add_argument("org", help="org name or id")
    p.add_argument("name")
    add_secret_flags(p)
    p = add_command(group, common, "delete", "delete a credential (refused while a model uses it)", delete)
    p.add_argument("org", help="org name or id")
    p.add_argument("name")
    add_command(
        group, common, "rewrap", "re-encrypt every data key under the newest KEK (super-admin)", rewrap
    )
