"""The one error the payload inspectors raise: always a client error (HTTP 400)."""

from __future__ import annotations

_MAX_ECHO = 40


class PayloadError(Exception):
    """A request body the gateway refuses to forward; rendered as a 400 in the family's shape."""

    status = 400

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param

    def __repr__(self) -> str:
        return f"PayloadError({self.message!r}, code={self.code!r}, param={self.param!r})"


def echo(text: str) -> str:
    """A short, printable rendering of client text for an error message (never unbounded)."""
    cleaned = "".join(c if c.isprintable() and c not in '"\\' else "?" for c in text[: _MAX_ECHO + 1])
    if len(cleaned) > _MAX_ECHO:
        cleaned = cleaned[:_MAX_ECHO] + "..."
    return f'"{cleaned}"'
