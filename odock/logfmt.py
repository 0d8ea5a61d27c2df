"""Process-wide logging both planes install once at startup.

``json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``,
then any ``extra=`` fields, then ``exception``). ``text``: the classic
``time LEVEL logger: message key=value`` line. Both go to stderr. As a second
line of defence behind code that never logs secrets, the handler replaces every
registered secret value with ``[redacted]`` in whatever it writes. Shared here
(with the key format and sealing) because neither plane imports the other.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

REDACTED = "[redacted]"


class TextSink(Protocol):
    """Where the handler writes: a text stream (stderr) or anything with ``write`` and ``flush``."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


# Shorter values are not secrets we hold, and replacing them would mangle ordinary text.
MIN_REDACT_CHARS = 8

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record (anything a plain LogRecord does not have)."""
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return (
        datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class Redacting(logging.Formatter):
    """Base: replaces registered secret values in the formatted line."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self._escaped: tuple[str, ...] = ()

    def add_secrets(self, values: Iterable[str]) -> None:
        """Never write any of ``values`` (longest first, so overlapping ones go whole)."""
        merged = set(self._secrets) | {v for v in values if len(v) >= MIN_REDACT_CHARS}
        self._secrets = tuple(sorted(merged, key=len, reverse=True))
        # Escaped once here, not per line: this runs on every request's log line.
        self._escaped = tuple(json.dumps(s, ensure_ascii=False)[1:-1] for s in self._secrets)

    def scrub(self, line: str, *, escaped: bool) -> str:
        """``line`` with every registered secret (JSON-escaped when ``escaped``) replaced."""
        for needle in self._escaped if escaped else self._secrets:
            if needle in line:
                line = line.replace(needle, REDACTED)
        return line


class JsonFormatter(Redacting):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return self.scrub(json.dumps(out, default=str, ensure_ascii=False), escaped=True)


class TextFormatter(Redacting):
    """``time LEVEL logger: message key=value ...`` (tracebacks on the following lines)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}:", record.getMessage()]
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self.scrub(line, escaped=False)


class LogSetup:
    """The installed handler; ``redact()`` registers secret values it must never write."""

    def __init__(self, handler: logging.Handler, formatter: Redacting) -> None:
        self.handler = handler
        self._formatter = formatter

    @property
    def formatter(self) -> Redacting:
        """The handler's formatter (its ``scrub`` for lines written outside ``logging``)."""
        return self._formatter

    def redact(self, values: Iterable[str]) -> None:
        """Replace each of ``values`` with ``[redacted]`` in every line from now on."""
        self._formatter.add_secrets(values)

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced (for messages printed outside logging)."""
        return self._formatter.scrub(text, escaped=False)


def configure(
    log_format: str, level_name: str, quiet_loggers: Iterable[str] = (), stream: TextSink | None = None
) -> LogSetup:
    """Install one stderr handler on the root logger (replacing any), at ``level_name``;
    ``quiet_loggers`` stay at WARNING or above whatever the level."""
    formatter: Redacting = JsonFormatter() if log_format == "json" else TextFormatter()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(level_name.upper())
    root.setLevel(level)
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
    logging.captureWarnings(True)
    return LogSetup(handler, formatter)
