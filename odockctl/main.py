"""odockctl entry point: parse, dispatch, and turn every failure into one
stderr line with a distinct exit status (never a traceback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn, TextIO

from odock.version import add_version_flag
from odockctl import usage_cmd
from odockctl.apply import command as apply_command
from odockctl.commands import credentials, keys, models, orgs, tokens
from odockctl.context import Context
from odockctl.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_REMOTE, CliError, UsageError
from odockctl.output import Output
from odockctl.settings import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, CliSettings, process_environ

PROG = "odockctl"
EPILOG = """\
exit status: 0 ok, 1 the control plane refused or failed the request,
2 bad input (flags, file, environment), 3 control plane unreachable.
Errors are one line on stderr: "odockctl: error: ...".
"""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are a one-line UsageError instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _global_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # Sub-parsers repeat the flags with SUPPRESS defaults so they may appear
    # anywhere on the line without resetting values given before the command.
    def d(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--address",
        default=d(None),
        metavar="HOST:PORT",
        help=f"control plane gRPC address (env ODOCK_CP_ADDRESS, default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--token",
        default=d(None),
        help="admin token (env ODOCK_ADMIN_TOKEN or ODOCK_ADMIN_TOKEN_FILE; prefer those)",
    )
    parser.add_argument(
        "--tls-ca",
        default=d(None),
        metavar="FILE",
        help="CA bundle to verify the control plane's TLS certificate (env ODOCK_CP_TLS_CA_FILE)",
    )
    parser.add_argument(
        "--tls-cert",
        default=d(None),
        metavar="FILE",
        help="client certificate for mTLS (env ODOCK_CP_TLS_CERT_FILE)",
    )
    parser.add_argument(
        "--tls-key", default=d(None), metavar="FILE", help="client key for mTLS (env ODOCK_CP_TLS_KEY_FILE)"
    )
    parser.add_argument("--json", action="store_true", default=d(False), help="print JSON for scripts")
    parser.add_argument(
        "--timeout",
        type=float,
        default=d(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"deadline per RPC (default {DEFAULT_TIMEOUT:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full command tree."""
    common = Parser(add_help=False)
    _global_flags(common, suppress=True)
    parser = Parser(
        prog=PROG,
        description="Odock admin tool over the control plane's gRPC API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_flags(parser, suppress=False)
    add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (orgs, credentials, models, keys, tokens, usage_cmd, apply_command):
        module.register(sub, common)
    return parser


def run(
    argv: Sequence[str],
    environ: Mapping[str, str],
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Run one odockctl invocation; returns the exit status."""
    ctx: Context | None = None
    try:
        settings = CliSettings.from_env(environ)
        args = build_parser().parse_args(list(argv))
        ctx = Context(
            args=args,
            out=Output(stdout, args.json),
            err=stderr,
            stdin=stdin,
            environ=environ,
            settings=settings,
        )
        args.handler(ctx, args)
        return EXIT_OK
    except CliError as exc:
        stderr.write(f"{PROG}: error: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        stderr.write(f"{PROG}: error: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, not a traceback
        text = " ".join(str(exc).split())
        stderr.write(f"{PROG}: error: internal error: {type(exc).__name__}: {text}\n")
        return EXIT_REMOTE
    finally:
        if ctx is not None:
            ctx.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        code = run(
            sys.argv[1:] if argv is None else argv, process_environ(), sys.stdin, sys.stdout, sys.stderr
        )
        sys.stdout.flush()
    except BrokenPipeError:
        # Output piped into e.g. `head`: not an error worth a traceback.
        sys.stderr.close()
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
