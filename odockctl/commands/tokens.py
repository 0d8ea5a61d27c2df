"""odockctl token create|list|revoke (org-scoped admin tokens)."""

from __future__ import annotations

import argparse
from typing import Any

from odock.v1 import admin_tokens_pb2
from odockctl.commands.common import add_command, add_group
from odockctl.context import Context
from odockctl.output import timestamp_text, to_dict


def token_fields(t: admin_tokens_pb2.AdminToken) -> list[tuple[str, str]]:
    """Key/value rendering of one admin token (display only)."""
    return [
        ("id", t.id),
        ("org id", t.org_id),
        ("name", t.name),
        ("token", t.display),
        ("revoked", timestamp_text(t.revoke_time) if t.revoked else "no"),
        ("created", timestamp_text(t.create_time)),
    ]


def create(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    r = client.call(
        client.tokens.CreateAdminToken,
        admin_tokens_pb2.CreateAdminTokenRequest(org_id=client.org_id(args.org), name=args.name),
    )
    if ctx.out.as_json:
        ctx.out.json(to_dict(r))
        return
    ctx.out.fields(token_fields(r.token))
    ctx.out.line()
    ctx.out.line("org admin token (shown only once; store it now):")
    ctx.out.line(f"  {r.secret}")


def list_(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    r = client.call(
        client.tokens.ListAdminTokens, admin_tokens_pb2.ListAdminTokensRequest(org_id=client.org_id(args.org))
    )
    rows = [
        [t.name, t.id, t.display, "revoked" if t.revoked else "active", timestamp_text(t.create_time)]
        for t in r.tokens
    ]
    ctx.out.listing("tokens", list(r.tokens), ["NAME", "ID", "TOKEN", "STATE", "CREATED"], rows)


def revoke(ctx: Context, args: argparse.Namespace) -> None:
    client = ctx.client()
    org_id = client.org_id(args.org)
    token_id = args.token_ref
    if not token_id.startswith("tok_"):
        listed = client.call(
            client.tokens.ListAdminTokens, admin_tokens_pb2.ListAdminTokensRequest(org_id=org_id)
        )
        matches = [t.id for t in listed.tokens if t.name == token_id and not t.revoked]
        token_id = matches[0] if len(matches) == 1 else token_id
    t = client.call(
        client.tokens.RevokeAdminToken, admin_tokens_pb2.RevokeAdminTokenRequest(org_id=org_id, id=token_id)
    )
    ctx.out.message(t, token_fields(t))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the token command group."""
    group = add_group(sub, common, "token", "manage org-scoped admin tokens")
    p = add_command(group, common, "create", "create an org admin token and print it once", create)
    p.add_argument("org", help="org name or id")
    p.add_argument("name", help="a name for the token")
    p = add_command(group, common, "list", "list an org's admin tokens", list_)
    p.add_argument("org", help="org name or id")
    p = add_command(group, common, "revoke", "revoke an org admin token", revoke)
    p.add_argument("org", help="org name or id")
    p.add_argument("token_ref", metavar="TOKEN", help="token id (or the name of a single active token)")
