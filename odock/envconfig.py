"""Reading settings from the environment, shared by both planes' ``Settings.from_env``.

Only the two ``settings`` modules use this (no other module reads the environment).
Shared rather than copied because some of it must agree byte for byte: both planes
decode the same ``ODOCK_KEY_PEPPER`` and must derive the same key digests from it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIN_PEPPER_BYTES = 32
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A missing or malformed setting; the message is one line naming the variable."""


class EnvReader:
    """Typed reads of ``ODOCK_*`` variables, each failure a one-line :class:`SettingsError`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env = environ

    def plain(self, name: str, default: str) -> str:
        return self._env.get(name, "").strip() or default

    def secret(self, name: str) -> str:
        """``name`` or the contents of ``name_FILE``; required, never echoed."""
        direct = self._env.get(name, "")
        path = self._env.get(f"{name}_FILE", "").strip()
        if direct and path:
            raise SettingsError(f"{name}: set either {name} or {name}_FILE, not both")
        if path:
            try:
                direct = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
                raise SettingsError(f"{name}_FILE: cannot read {path}: {reason}") from None
        direct = direct.strip()
        if not direct:
            raise SettingsError(f"{name}: required (set {name} or {name}_FILE)")
        return direct

    def path(self, name: str) -> Path | None:
        raw = self._env.get(name, "").strip()
        if not raw:
            return None
        p = Path(raw)
        if not p.is_file():
            raise SettingsError(f"{name}: no such file: {raw}")
        return p

    def number(self, name: str, default: float, *, low: float, high: float, integer: bool = False) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(int(raw)) if integer else float(raw)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise SettingsError(f"{name}: not {kind}: {raw[:32]!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}: must be between {low:g} and {high:g}")
        return value


def parse_base64(value: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional, strictly validated; None if neither."""
    value = value.strip()
    padded = value + "=" * (-len(value) % 4)
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def parse_pepper(value: str) -> bytes:
    """``ODOCK_KEY_PEPPER``: base64 of at least MIN_PEPPER_BYTES bytes."""
    raw = parse_base64(value)
    if raw is None:
        raise SettingsError("ODOCK_KEY_PEPPER: must be base64")
    if len(raw) < MIN_PEPPER_BYTES:
        raise SettingsError(f"ODOCK_KEY_PEPPER: must decode to at least {MIN_PEPPER_BYTES} bytes")
    return raw


def parse_address(name: str, value: str) -> str:
    """A ``HOST:PORT`` listen or connect address."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"{name}: expected HOST:PORT, got {value[:64]!r}")
    return value


@dataclass(frozen=True)
class LogSettings:
    """How a plane logs: ``text`` or ``json`` lines on stderr, at a minimum level."""

    format: str = "text"
    level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LogSettings:
        """Read ODOCK_LOG_FORMAT and ODOCK_LOG_LEVEL (needs nothing else, so it can run first)."""
        env = EnvReader(environ)
        fmt = env.plain("ODOCK_LOG_FORMAT", "text").lower()
        if fmt not in LOG_FORMATS:
            raise SettingsError("ODOCK_LOG_FORMAT: must be 'text' or 'json'")
        level = env.plain("ODOCK_LOG_LEVEL", "info").lower()
        if level not in LOG_LEVELS:
            raise SettingsError("ODOCK_LOG_LEVEL: must be one of debug, info, warning, error")
        return cls(format=fmt, level=level)
