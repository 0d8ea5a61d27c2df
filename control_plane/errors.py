"""Domain errors and their single mapping onto gRPC status codes.

    DomainError                 one human line, safe to show a client
     ├── NotFound               -> NOT_FOUND
     ├── AlreadyExists          -> ALREADY_EXISTS
     ├── InvalidArgument        -> INVALID_ARGUMENT   ("field: what is wrong")
     ├── FailedPrecondition     -> FAILED_PRECONDITION
     ├── PermissionDenied       -> PERMISSION_DENIED
     ├── Unauthenticated        -> UNAUTHENTICATED
     ├── Unavailable            -> UNAVAILABLE         (try again, possibly on another replica)
     └── DataLoss               -> DATA_LOSS           (stored data cannot be read back)

Anything else reaching the RPC boundary is logged and answered with INTERNAL
and a fixed message: a stack trace never reaches the client.
"""

from __future__ import annotations

import logging

import grpc
from sqlalchemy.exc import IntegrityError

log = logging.getLogger("odock.control_plane")

INTERNAL_MESSAGE = "internal error"


class DomainError(Exception):
    """A refusal with a one-line message for the client."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message.replace("\n", " ")


class NotFound(DomainError):
    """The named resource does not exist (or is not visible to the caller)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    """A resource with that unique name already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(DomainError):
    """A request field is malformed; the message starts with the field's path."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(DomainError):
    """The caller is authenticated but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    """No valid credential was presented."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(DomainError):
    """The service cannot answer now; the caller should retry (here or on another replica)."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(DomainError):
    """Stored data cannot be read back (e.g. a credential that no longer decrypts)."""

    code = grpc.StatusCode.DATA_LOSS


def is_unique_violation(exc: IntegrityError) -> bool:
    """True when ``exc`` is a unique-constraint violation (not e.g. a foreign key)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505":  # psycopg: unique_violation
        return True
    return "UNIQUE constraint failed" in str(orig)


def status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and client-safe message for an exception raised by a handler."""
    if isinstance(exc, DomainError):
        return exc.code, exc.message
    if isinstance(exc, IntegrityError) and is_unique_violation(exc):
        # Services name the resource themselves; this is the backstop for races.
        return grpc.StatusCode.ALREADY_EXISTS, f"{_resource_of(method)} already exists"
    log.error("unhandled error in %s", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def _resource_of(method: str) -> str:
    name = method.rsplit("/", 1)[-1]
    for verb in ("Create", "Update", "Rotate", "Revoke", "Delete"):
        name = name.removeprefix(verb)
    out = "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()
    return out or "resource"
