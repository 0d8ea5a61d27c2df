"""Errors odockctl reports as one stderr line, each with its exit status.

CliError            exit 1: generic
├── UsageError      exit 2: bad flags, bad file, missing env var, bad value
├── RemoteError     exit 1: the control plane answered with an error status
└── UnreachableError exit 3: no answer from the control plane at all
"""

from __future__ import annotations

import grpc

EXIT_OK = 0
EXIT_REMOTE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error printed as ``odockctl: error: <message>``."""

    exit_code = EXIT_REMOTE

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(CliError):
    """Bad input from the user: flags, values, files, environment."""

    exit_code = EXIT_USAGE


class RemoteError(CliError):
    """The control plane refused or failed a call."""

    exit_code = EXIT_REMOTE

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class UnreachableError(CliError):
    """The control plane could not be reached (or did not answer in time)."""

    exit_code = EXIT_UNREACHABLE


def from_rpc_error(err: grpc.RpcError, address: str) -> CliError:
    """Map a failed call to a one-line error naming the status."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnreachableError(f"cannot reach the control plane at {address}: {details or 'unavailable'}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UnreachableError(f"the control plane at {address} did not answer in time (see --timeout)")
    name = code.name if code is not None else "UNKNOWN"
    return RemoteError(f"{name}: {details}" if details else name, code)
