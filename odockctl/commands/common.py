"""Helpers shared by the resource command modules."""

from __future__ import annotations

import argparse
from typing import Any

from odockctl.context import parsed
from odockctl.protos import clear
from odockctl.values import parse_count, parse_label, parse_usd

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_group(sub: Any, common: argparse.ArgumentParser, name: str, help_text: str) -> Any:
    """A resource group (``odockctl org ...``) with its own required subcommand."""
    group = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
    return group.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)


def add_command(
    group: Any, common: argparse.ArgumentParser, name: str, help_text: str, handler: Any
) -> argparse.ArgumentParser:
    """One leaf command bound to its handler."""
    parser: argparse.ArgumentParser = group.add_parser(
        name, help=help_text, description=help_text, parents=[common]
    )
    parser.set_defaults(handler=handler)
    return parser


def count_or_none(flag: str) -> Any:
    """Parser for a limit flag where 'none' clears it."""

    def parse(text: str) -> int | None:
        return None if text.strip().lower() in ("none", "unset") else parsed(text, parse_count, flag)

    return parse


def usd_or_none(flag: str) -> Any:
    """Parser for a USD flag where 'none' clears it."""

    def parse(text: str) -> int | None:
        return None if text.strip().lower() in ("none", "unset") else parsed(text, parse_usd, flag)

    return parse


def labels(values: list[str] | None, flag: str = "--label") -> dict[str, str]:
    """Repeated KEY=VALUE flags as a dict."""
    return dict(parsed(v, parse_label, flag) for v in values or [])


def set_optional(message: Any, field: str, value: int | None) -> None:
    """Set a proto3 optional field, or clear it for None."""
    if value is None:
        clear(message, field)
    else:
        setattr(message, field, value)
