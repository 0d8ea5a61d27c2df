"""``--version`` for every Odock program (odock, odockctl, control-plane, data-plane).

The version is the installed distribution's (``importlib.metadata``), so all four programs
and ``pip show odock`` agree; it is looked up only when ``--version`` is given."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

DISTRIBUTION = "odock"


def package_version() -> str:
    """The installed ``odock`` version, or a clear stand-in when run from an uninstalled tree."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
            help="print the version and exit",
        )  # fmt: skip

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        sys.stdout.write(f"{parser.prog} {package_version()}\n")
        sys.stdout.flush()
        parser.exit(0)


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``PROG VERSION`` on stdout and exit 0."""
    parser.add_argument("--version", action=_VersionAction)
