"""A new provider object made the org's, or taken back at the provider.

An upload the provider accepted, or a batch it created, is recorded in the ledger as the org's
before the client hears of it: an unrecorded object is unreachable through the gateway. A ledger
outage is retried briefly (``PUT_TRIES``). When it lasts longer the client is answered 503 and
will send the request again, so the first object is taken back at the provider (the file
deleted, the batch cancelled), once and bounded in time: left there, a file would keep the
company's data where nobody can reach or delete it through the gateway, and a batch would run
and bill unmetered. Which of the two happened is logged with the object's id, at ERROR when it
could not be taken back (the operator's to remove).

Both run in a task of their own that the client going away does not cancel (the handler is
cancelled on disconnect): cut short between the provider's answer and the record, the object
would be left behind without a word.
"""

from __future__ import annotations

import asyncio
import logging

from data_plane.errors import GatewayError, clip
from data_plane.governance.domain import Deployment, Route
from data_plane.objects.call import Call, outlive_client
from data_plane.objects.ledger import LedgerUnavailable, OwnedObject
from data_plane.objects.pinned import open_upstream

log = logging.getLogger("odock.data_plane.objects")

PUT_TRIES = 3
TAKE_BACK_SECONDS = 10.0  # the whole undo request (connect, answer), whatever is left of the client's


async def record_new(
    call: Call, obj: OwnedObject, route: Route, dep: Deployment, method: str, undo_path: str
) -> OwnedObject | None:
    """``obj`` recorded as the org's (None: its id is another org's, left alone); else taken back at
    ``dep`` (``method undo_path``) and LedgerUnavailable raised. Finishes if the caller is cancelled."""
    return await outlive_client(_record_new(call, obj, route, dep, method, undo_path))


async def _record_new(
    call: Call, obj: OwnedObject, route: Route, dep: Deployment, method: str, undo_path: str
) -> OwnedObject | None:
    try:
        return await put_new(call, obj)
    except LedgerUnavailable as exc:
        await take_back(call, route, dep, method, undo_path, obj, str(exc))
        raise


async def put_new(call: Call, obj: OwnedObject) -> OwnedObject | None:
    """``ledger.put`` through a brief outage (``PUT_TRIES``); LedgerUnavailable once it lasts longer."""
    for attempt in range(1, PUT_TRIES + 1):
        try:
            return await call.ledger.put(obj)
        except LedgerUnavailable:
            if attempt == PUT_TRIES:
                raise
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def take_back(
    call: Call, route: Route, dep: Deployment, method: str, path: str, obj: OwnedObject, why: str
) -> bool:
    """Ask ``dep`` to undo ``obj`` (``method path``: the delete or cancel; ``why`` it could not be
    recorded, for the log); whether it answered 2xx. Upstream failures are logged, not raised."""
    deadline = asyncio.get_running_loop().time() + TAKE_BACK_SECONDS
    try:
        relay, upstream = await open_upstream(call, route, dep, method, path, deadline=deadline)
        try:
            await relay.read_failure(upstream)
        finally:
            upstream.release()
        outcome = f"HTTP {upstream.status}"
        done = 200 <= upstream.status < 300
    except GatewayError as err:
        outcome, done = err.code, False
    kind = obj.kind.name.lower()
    if done:
        log.warning("%s %s could not be recorded as org %s's (%s): taken back at the provider (%s %s)",
                    kind, clip(obj.id), obj.org_id, why, method, outcome)  # fmt: skip
    else:
        log.error("%s %s could not be recorded as org %s's (%s) nor taken back at deployment %s (%s): it "
                  "stays at the provider, remove it there", kind, clip(obj.id), obj.org_id, why, dep.name,
                  outcome)  # fmt: skip
    return done
