"""``control-plane`` / ``python -m control_plane``: run the gRPC control plane."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from control_plane.settings import Settings, SettingsError


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main() -> None:
    """Entry point: configure from the environment, serve until SIGTERM, exit 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"control-plane: {exc}", file=sys.stderr)
        sys.exit(2)
    from control_plane.server import serve

    try:
        _run(serve(settings))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # one line for the operator; the traceback is for debugging only
        logging.getLogger("odock.control_plane").debug("startup failed", exc_info=True)
        print(f"control-plane: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        sys.exit(1)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "failed"


if __name__ == "__main__":
    main()
