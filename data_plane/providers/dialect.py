"""What one provider family speaks beyond its endpoints: auth, headers, errors, paths, listings.

A :class:`Dialect` is built once, in its family's module (``providers/<family>.py``), and is
the single source for that family's wire conventions: ``errors.render`` and
``errors.sse_error_event`` delegate the error document and the stream-ending event to it,
``headers.build_headers`` reads the header rules (the dropped set is computed here, at
construction), ``providers.family_for_path`` asks it which request paths it owns, and the
gateway's own model listings use its :class:`Listing`.

A translated path (an OpenAI-format request served by another family's backend) would pair
the client-facing dialect's errors with the backend dialect's auth, headers and usage; nothing
here assumes that a request's client dialect and backend dialect are the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from multidict import MultiMapping

from data_plane.governance.domain import ModelSummary
from data_plane.payload.errors import PayloadError
from data_plane.providers.endpoint import Endpoint
from data_plane.providers.headers import DROPPED_HEADERS

MAX_ECHO = 64
# Family -> name of every dialect built (each family module builds its one at import).
FAMILY_NAMES: dict[int, str] = {}


class ErrorFacts(Protocol):
    """What a dialect renders of a gateway error (``errors.GatewayError`` has these)."""

    @property
    def status(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def param(self) -> str | None: ...
    @property
    def retry_after(self) -> int | None: ...


def family_name(family: int) -> str:
    """Lower-case name of a provider family (``unknown`` for values this build does not know)."""
    return FAMILY_NAMES.get(family, "unknown")


def clip(value: str, limit: int = MAX_ECHO) -> str:
    """A bounded, printable rendering of client-supplied text for error messages."""
    cleaned = "".join(c if c.isprintable() else "?" for c in value[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def bad_parameter(name: str, message: str) -> PayloadError:
    """A 400 ``invalid_parameter`` naming a listing's query parameter."""
    return PayloadError(message, code="invalid_parameter", param=name)


def int_parameter(query: MultiMapping[str], name: str, default: int) -> int:
    """An integer query parameter (absent or empty: ``default``)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_parameter(name, f"{name}: expected an integer, got {clip(raw)!r}") from None


def by_status(table: Mapping[int, str], status: int) -> str:
    """A family's error type for ``status``: its own entry, else the one for 500 (5xx) or 400."""
    found = table.get(status)
    if found is not None:
        return found
    return table[500] if status >= 500 else table[400]


@dataclass(frozen=True, slots=True)
class Listing:
    """A family's model-listing shape: one model, and one page of models for a query.

    ``page`` raises ``payload.PayloadError`` (code ``invalid_parameter``) on a bad query
    parameter; the listing handler renders it as a 400.
    """

    model: Callable[[ModelSummary], dict[str, Any]]
    page: Callable[[Sequence[ModelSummary], MultiMapping[str]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one provider family authenticates, which headers and paths are its, how its errors read."""

    family: int  # odock.v1.ProviderFamily
    name: str  # lower-case family name (metrics labels, messages, "owned_by")
    endpoints: tuple[Endpoint, ...]
    auth_header: str
    # The family's error document for a gateway error (the shape its official SDK parses).
    error_body: Callable[[ErrorFacts], dict[str, Any]]
    auth_prefix: str = ""
    # Lower-case client header names to drop for this family (beyond the common set).
    drop_headers: frozenset[str] = frozenset()
    # Headers to send when the client did not (lower-case name -> value).
    default_headers: Mapping[str, str] = field(default_factory=dict)
    # SSE event name of the error event that ends a broken stream ("" : a bare data event).
    sse_error_name: str = ""
    # Request paths whose errors this family renders: a path ending in "/" owns everything
    # under it; any other owns itself and everything under it ("/v1/messages", "/v1/messages/x").
    paths: tuple[str, ...] = ()
    listing: Listing | None = None
    # Every client header name never forwarded for this family: computed once, here.
    dropped_headers: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dropped_headers", DROPPED_HEADERS | self.drop_headers)
        FAMILY_NAMES[self.family] = self.name

    def owns_path(self, path: str) -> bool:
        """Whether errors on ``path`` are rendered in this family's shape (see ``paths``)."""
        for owned in self.paths:
            if path.startswith(owned) and (
                owned.endswith("/") or len(path) == len(owned) or path[len(owned)] == "/"
            ):
                return True
        return False
