"""``data-plane`` / ``python -m data_plane``: one worker, or N workers sharing one port."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

import prometheus_client

from data_plane.logs import configure, secret_values
from data_plane.server import serve
from data_plane.settings import Settings, SettingsError, process_environ
from data_plane.supervisor import supervise
from odock.envconfig import LogSettings
from odock.version import add_version_flag

# Under load the collector cost a worker about 8-9 us of CPU per request at the default thresholds
# (issue 6, chat at 64 connections: 0.47 s in 847 collections over ~50,000 requests, the full ones
# walking every module, class and function imported). Startup objects live as long as the worker:
# frozen, they are never walked again; requests free almost everything by refcount, so a rarer
# gen-0 pass finds the same garbage (2 collections in the same run).
GC_THRESHOLDS = (7000, 10, 10)


def _settle_gc() -> None:
    """Keep the garbage collector off the request path: freeze what startup made, collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run_worker(settings: Settings, reuse_port: bool) -> int:
    _settle_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where available
        asyncio.run(serve(settings, reuse_port=reuse_port))
    else:
        uvloop.run(serve(settings, reuse_port=reuse_port))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="data-plane", description="Odock data plane (native LLM endpoints)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes sharing the port (ODOCK_WORKERS)"
    )
    add_version_flag(parser)
    parser.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    environ = process_environ()
    if args.workers is not None:
        environ["ODOCK_WORKERS"] = str(args.workers)
    try:
        setup = configure(LogSettings.from_env(environ))
        settings = Settings.from_env(environ)
    except SettingsError as exc:
        print(f"data-plane: {exc}", file=sys.stderr)
        return 2
    setup.redact(secret_values(settings))
    # The *_created series double /metrics for nothing a dashboard uses.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    if args.worker_child or settings.workers == 1:
        return _run_worker(settings, reuse_port=args.worker_child)
    return supervise(settings, environ)


if __name__ == "__main__":
    sys.exit(main())
