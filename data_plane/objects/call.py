"""One request to a files or batches endpoint: authenticated and metered like a native one.

:func:`begin` does what every such handler does first (the loop guard, the key, the request's
meter: exactly one usage record, whatever happens, closed by the middleware) and :func:`owned`
asks the ledger whether an object is the caller's organisation's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from data_plane.exchange import EXCHANGE, Exchange
from data_plane.governance.domain import KeyGrant
from data_plane.native import authorize, loop_detected
from data_plane.objects.errors import ledger_unavailable, no_such
from data_plane.objects.ledger import MAX_OBJECT_ID, Kind, Ledger, LedgerUnavailable, OwnedObject
from data_plane.providers import OPENAI, Endpoint
from data_plane.providers.headers import HOP_HEADER
from data_plane.state import STATE, NodeState
from data_plane.usage.meter import RequestMeter
from data_plane.usage.shapes import NO_USAGE

log = logging.getLogger("odock.data_plane.objects")
T = TypeVar("T")
# Work that must finish though its client went away, kept referenced until it has (outlive_client).
_OUTLIVING: set[asyncio.Task[Any]] = set()

# Provider object ids ("file-abc123", "batch_abc123"): anything else cannot be one (404, no lookup).
_OBJECT_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_OBJECT_ID - 1}}}")


@dataclass(slots=True)
class Call:
    """An authenticated request on an objects endpoint, its meter open."""

    request: web.Request
    state: NodeState
    grant: KeyGrant
    ex: Exchange
    meter: RequestMeter
    deadline: float  # loop.time() by which everything must be done

    @property
    def ledger(self) -> Ledger:
        ledger = self.state.ledger
        if ledger is None:  # a node built without one (cannot happen in a served node)
            raise ledger_unavailable()
        return ledger


async def begin(request: web.Request, endpoint: Endpoint, *, shape_usage: bool = False) -> Call:
    """Authenticate ``request`` and open its meter (the record names ``endpoint``; no tokens unless
    ``shape_usage``: the endpoint's usage shape is read from the answer)."""
    if HOP_HEADER in request.headers:
        raise loop_detected()
    state = request.app[STATE]
    settings = state.settings
    deadline = asyncio.get_running_loop().time() + settings.timeouts.total
    grant = await authorize(state, request)
    ex = request[EXCHANGE]
    ex.grant = grant
    metering = settings.usage.metering
    ex.meter = meter = RequestMeter(
        state.shipper if metering else None,
        request_id=ex.record_id,
        node_id=settings.node_id,
        org_id=grant.org_id,
        key_id=grant.key_id,
        family=OPENAI,
        endpoint=endpoint.name,
        shape=endpoint.usage if (metering and shape_usage) else NO_USAGE,
        client_request_id=ex.client_request_id,
    )
    return Call(request, state, grant, ex, meter, deadline)


def valid_object_id(object_id: str) -> bool:
    """Whether ``object_id`` could be a provider object's id."""
    return _OBJECT_ID.fullmatch(object_id) is not None


async def owned(call: Call, kind: Kind, object_id: str) -> OwnedObject:
    """The org's object ``object_id``, else the 404 a missing one gets (503: the ledger is unreachable)."""
    if not valid_object_id(object_id):
        raise no_such(kind, object_id)
    try:
        obj = await call.ledger.get(call.grant.org_id, kind, object_id)
    except LedgerUnavailable:
        raise ledger_unavailable() from None
    if obj is None:
        raise no_such(kind, object_id)
    call.meter.model_name = obj.model_name[:256]
    return obj


async def outlive_client(work: Coroutine[Any, Any, T]) -> T:
    """``await work``, run in a task the handler's cancellation (its client went away) does not stop.

    For steps that must not be cut in the middle (an object made at the provider and not yet
    recorded, a usage claim won and its record not yet submitted). While the caller waits, a failure
    is its to handle; once it is gone nobody reads the result, so a failure other than the ledger's
    is logged here rather than lost.
    """
    task = asyncio.ensure_future(work)
    _OUTLIVING.add(task)
    task.add_done_callback(_OUTLIVING.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_report_unread)
        raise


def _report_unread(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, LedgerUnavailable):
        log.error("object bookkeeping failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
