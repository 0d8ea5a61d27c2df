"""``control-plane`` / ``python -m control_plane``: run the gRPC control plane.

    control-plane            serve until SIGTERM/SIGINT, then drain and exit 0
    control-plane migrate    bring the database to the newest schema and exit 0

``migrate`` reads only the database URL (ODOCK_DATABASE_URL or
ODOCK_DATABASE_URL_FILE) and the log settings, so a migration job needs no
KEKs, pepper or tokens. Exit codes: 0 done, 1 failed, 2 bad settings or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import prometheus_client

from control_plane.logs import configure, database_password, secret_values
from control_plane.settings import Settings, SettingsError, database_url_from_env
from odock.envconfig import LogSettings
from odock.logfmt import LogSetup
from odock.version import add_version_flag

PROG = "control-plane"


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Odock control plane (configured by ODOCK_* environment variables)."
    )
    add_version_flag(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="serve gRPC until SIGTERM (the default)")
    migrate = commands.add_parser("migrate", help="run the database migrations (alembic upgrade head) and exit")
    migrate.add_argument(
        "--to",
        default="head",
        metavar="REVISION",
        help="schema revision to upgrade or downgrade to, e.g. 0003 (default: head); see docs/production.md",
    )
    return parser.parse_args(argv)


def _setup_logging(environ: Mapping[str, str], prog: str) -> LogSetup:
    try:
        log_settings = LogSettings.from_env(environ)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(2)
    return configure(log_settings)


def migrate_main(environ: Mapping[str, str], prog: str = PROG, revision: str = "head") -> int:
    """Migrate the database named by the environment; one line on stdout or stderr; the exit code."""
    setup = _setup_logging(environ, prog)
    try:
        url = database_url_from_env(environ)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    from control_plane.store.db import migrate_sync

    password = database_password(url)
    setup.redact([password] if password else [])
    try:
        migrate_sync(url, revision)
    except Exception as exc:  # noqa: BLE001 - any failure: one line, never the URL (it may hold a password)
        print(f"{prog}: {type(exc).__name__}: {setup.scrub(_one_line(exc))[:300]}", file=sys.stderr)
        return 1
    print(f"{prog}: database schema is at {revision}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: ``serve`` (default) or ``migrate``."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "migrate":
        sys.exit(migrate_main(os.environ, revision=args.to))
    setup = _setup_logging(os.environ, PROG)
    # The *_created series double /metrics for nothing a dashboard uses.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(2)
    from control_plane.server import serve

    setup.redact(secret_values(settings))
    try:
        _run(serve(settings))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # one line for the operator; the traceback is for debugging only
        logging.getLogger("odock.control_plane").debug("startup failed", exc_info=True)
        print(f"{PROG}: {type(exc).__name__}: {setup.scrub(_one_line(exc))}", file=sys.stderr)
        sys.exit(1)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "failed"


if __name__ == "__main__":
    main()
