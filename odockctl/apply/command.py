"""odockctl apply -f FILE [--dry-run] [--keys-out FILE]."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import IO, Any

from odockctl.apply.fields import load_yaml
from odockctl.apply.plan import Planner, Step
from odockctl.apply.spec import parse_spec
from odockctl.context import Context
from odockctl.errors import UsageError

HELP = """\
Make the control plane match FILE: orgs (tier, limit overrides, outage policy,
default models, labels), their credentials, models and virtual keys. Prints
one line per resource: created, changed (fields...), unchanged, revoked (the
file says `revoked: true`), skipped (a key revoked in the file that was never
created) or revoked elsewhere (a key revoked on the control plane that the file
still lists as active: it stays revoked, the rest is applied). The whole
file is validated before anything changes. Apply never deletes anything that
is not in the file.

Credential secrets come from the environment variable named by `secret_env`.
Secrets cannot be read back, so `rotate` decides when the stored one is
replaced: on_change (default) rotates when the last 4 characters differ from
the stored secret's (the control plane shows no last 4 for secrets shorter than
12 characters: those are never rotated by on_change), never sets the secret
only at creation, always rotates on every apply (so it never reports
unchanged). For a new secret ending in the same 4 characters, run
`odockctl credential rotate`.

New virtual keys print their secret once; with --keys-out the secrets are
appended (one JSON object per line) to that file, created with mode 0600,
instead of being printed.
"""


def _read(path: str, stdin: IO[str]) -> str:
    if path == "-":
        return stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"-f: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _open_keys_out(path: str) -> IO[str]:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise UsageError(f"--keys-out: cannot open {path}: {exc.strerror or exc}") from None
    return os.fdopen(fd, "a", encoding="utf-8")


def _record(step: Step) -> dict[str, Any]:
    record = {"kind": step.kind, "name": step.name, "action": step.action, "fields": list(step.fields)}
    if step.note:
        record["note"] = step.note
    return record


def run(ctx: Context, args: argparse.Namespace) -> None:
    """Validate, plan, then (unless --dry-run) execute, printing one line per resource."""
    source = "<stdin>" if args.file == "-" else args.file
    spec = parse_spec(load_yaml(_read(args.file, ctx.stdin), source), source, ctx.environ)
    steps = Planner(ctx.client()).plan(spec)
    creates_keys = any(s.kind == "key" and s.action == "created" for s in steps)
    keys_out = _open_keys_out(args.keys_out) if args.keys_out and creates_keys and not args.dry_run else None
    records: list[dict[str, Any]] = []
    try:
        for step in steps:
            created = step.run() if step.run is not None and not args.dry_run else None
            if step.silent:
                continue
            record = _record(step)
            records.append(record)
            if created is not None:
                record["id"] = created.key_id
                org, _, name = step.name.partition("/")
                if keys_out is not None:
                    keys_out.write(
                        json.dumps({"org": org, "name": name, "id": created.key_id, "secret": created.secret})
                        + "\n"
                    )
                    keys_out.flush()
                else:
                    record["secret"] = created.secret
            if ctx.out.as_json:
                continue
            suffix = f" (secret appended to {args.keys_out})" if created and keys_out else ""
            ctx.out.line(step.line + suffix)
            if created is not None and keys_out is None:
                ctx.out.line(f"  secret: {created.secret}   <- shown only once; store it now")
    finally:
        if keys_out is not None:
            keys_out.close()
    if ctx.out.as_json:
        ctx.out.json({"dry_run": args.dry_run, "resources": records})
    elif args.dry_run:
        ctx.out.line("dry run: nothing was changed")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the apply command."""
    p = sub.add_parser(
        "apply",
        help="make the control plane match a YAML file",
        description=HELP,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="the YAML file ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--keys-out", metavar="FILE", help="append new virtual-key secrets to FILE (mode 0600)")
    p.set_defaults(handler=run)
