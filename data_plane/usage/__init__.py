"""Usage metering on the data plane: one record per authenticated request, shipped without loss.

- ``tokens``: provider usage objects -> normalised counts (and what counts as malformed).
- ``shapes``: which endpoint reports usage where; whole-body extraction.
- ``stream``/``jsonscan``: usage read from streams as they pass (SSE events, JSON arrays).
- ``inject``: ``stream_options.include_usage`` added upstream when the client left it out.
- ``meter``: the per-request accumulator that emits exactly one ``UsageRecord``.
- ``wal``: the journal: records group-committed to the spool within ``ODOCK_USAGE_COMMIT_SECONDS``,
  batched, memory bounded, every drop counted by reason.
- ``shipper``: the ReportUsage stream with acks, retries, housekeeping, shutdown (``supervisor``
  restarts its background tasks when they fail).
- ``spool``/``frames``/``disk``: the on-disk segments, their checksummed entries, the file calls
  (a seam for tests that break the disk).

Decisions are documented in docs/usage.md.
"""

from __future__ import annotations

import os
import re
import time

from aiohttp import web

from data_plane.usage.meter import RequestMeter

# The gateway's own id for a request (new_record_id, kept on the request's exchange) is unique and
# the usage record's id (docs/usage.md); responses carry it in this header.
RECORD_ID_HEADER = "x-odock-request-id"
# A client's x-request-id the gateway echoes and stores on the record (docs/usage.md); anything
# else (too long, other characters) is neither echoed nor stored.
_CLIENT_ID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def client_request_id(request: web.BaseRequest) -> str:
    """The client's well-formed ``x-request-id``, else ``""``."""
    given = request.headers.get("x-request-id")
    return given if given and _CLIENT_ID_OK.fullmatch(given) else ""


_ID_BYTES = 8  # the random part of a request id (64 bits); 32 bits of time come first
_POOL_IDS = 512


class _IdPool:
    """Random bytes for request ids, fetched 512 ids at a time (one getrandom call, not one per request)."""

    def __init__(self) -> None:
        self.buf = b""
        self.at = 0

    def reset(self) -> None:
        """Forget the buffered bytes (a forked child must never reuse its parent's)."""
        self.buf, self.at = b"", 0


_POOL = _IdPool()
os.register_at_fork(after_in_child=_POOL.reset)


def new_record_id() -> str:
    """A fresh, unique request id: ``req_`` + 8 hex digits of unix seconds + 16 random (64 bits).

    Time first so that the ids a control plane stores arrive nearly in key order: each record
    is appended at the end of the usage table's primary-key index instead of a random page of
    it, which is what ingestion cost per record at scale (docs/benchmarks.md, issue 16).
    """
    pool = _POOL
    at = pool.at
    if at >= len(pool.buf):
        pool.buf, at = os.urandom(_ID_BYTES * _POOL_IDS), 0
    pool.at = at + _ID_BYTES
    return f"req_{int(time.time()) & 0xFFFFFFFF:08x}{pool.buf[at : at + _ID_BYTES].hex()}"


__all__ = ["RECORD_ID_HEADER", "RequestMeter", "client_request_id", "new_record_id"]
