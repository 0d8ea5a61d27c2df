"""A finished batch's usage: recorded once, counted against the limits, its output files made the org's.

The gateway learns a batch's usage when it first sees the batch finished, whichever call shows
it (retrieve, list, cancel) on whichever node. ``Ledger.claim_batch_usage`` is true for exactly
one caller per batch; that caller submits ONE usage record (``batch_id`` set, endpoint = the
batch's endpoint, model = the gateway model, tokens from the batch object's ``usage``, cost at
the model's ``batch_price_percent``) and charges it to the org's and key's long-window limits
(``data_plane/limits/charge.py``). The record's id is derived from the batch id, so should two
records ever be submitted the control plane keeps one (records are unique by id). The record is
submitted, and in the spool, before the claim is asked for (``settle_finished``).

The batch's ``output_file_id`` / ``error_file_id`` become the org's files (purpose
``batch_output``, same model and deployment) before the claim, so a node that dies between the
two leaves the files registered and the usage to the next caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from data_plane.governance.domain import Pricing
from data_plane.limits.charge import charge
from data_plane.limits.limiter import Limiter
from data_plane.objects.ledger import MAX_SNAPSHOT_BYTES, Kind, Ledger, OwnedObject
from data_plane.providers import OPENAI
from data_plane.providers.openai import openai_usage
from data_plane.usage.meter import COMPLETE, RecordSink, RequestMeter
from data_plane.usage.shapes import NO_USAGE
from data_plane.usage.tokens import MalformedUsage, Usage

log = logging.getLogger("odock.data_plane.batches")

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
OUTPUT_PURPOSE = "batch_output"
# Fetches a file object's JSON from the batch's deployment (None: it could not be had).
FileFetcher = Callable[[str], Awaitable[bytes | None]]


# How long a batch's usage record is waited for to reach the spool before its claim (a commit
# every ODOCK_USAGE_COMMIT_SECONDS, 50 ms by default).
DURABLE_WAIT_SECONDS = 5.0
# The batches this process is settling (org, batch id): concurrent calls on one leave it to the first.
_SETTLING: set[tuple[str, str]] = set()


class BatchSink(RecordSink, Protocol):
    """Where a batch's usage record goes (the shipper): a sink that can say when it is durable."""

    async def durable(self, timeout: float) -> bool:
        """Until the records submitted so far are in the spool (at most ``timeout`` s): whether they are."""
        ...


@dataclass(frozen=True, slots=True)
class Recorder:
    """What recording a batch's usage needs of the node."""

    ledger: Ledger
    sink: BatchSink | None  # None: metering off (no record; the limits still count)
    limiter: Limiter | None  # None: limits off
    node_id: str


def finished(batch: dict[str, Any]) -> bool:
    """Whether the batch reached a final status (its usage cannot change any more)."""
    return batch.get("status") in TERMINAL


def billable(batch: dict[str, Any]) -> bool:
    """Whether a finished batch did work worth a record: completed, or ended otherwise after some
    requests completed or with tokens reported (a batch failed in validation did nothing)."""
    if batch.get("status") == "completed":
        return True
    counts = batch.get("request_counts")
    if isinstance(counts, dict) and isinstance(counts.get("completed"), int) and counts["completed"] > 0:
        return True
    usage = batch.get("usage")
    return isinstance(usage, dict) and any(
        isinstance(usage.get(k), int) and usage[k] > 0 for k in ("input_tokens", "output_tokens", "total_tokens")
    )


def record_id(batch_id: str) -> str:
    """The usage record id of a batch: derived from its id, so a second record is a duplicate."""
    return "req_" + hashlib.sha256(b"odock-batch:" + batch_id.encode()).hexdigest()[:24]


def batch_usage(batch: dict[str, Any]) -> tuple[Usage | None, bool]:
    """The batch's token usage and whether it was malformed (no usage reported: None)."""
    raw = batch.get("usage")
    if raw is None:
        return None, False
    try:
        return openai_usage(raw), False
    except MalformedUsage:
        return None, True


def snapshot_of(batch: dict[str, Any]) -> bytes:
    """The batch's JSON as the ledger keeps it (at most MAX_SNAPSHOT_BYTES: long error lists cut)."""
    data = json.dumps(batch, separators=(",", ":"), ensure_ascii=False).encode()
    errors = batch.get("errors")
    if len(data) > MAX_SNAPSHOT_BYTES and isinstance(errors, dict) and isinstance(errors.get("data"), list):
        cut = dict(batch, errors=dict(errors, data=errors["data"][:10]))
        data = json.dumps(cut, separators=(",", ":"), ensure_ascii=False).encode()
    return data if len(data) <= MAX_SNAPSHOT_BYTES else b""


async def register_outputs(ledger: Ledger, batch_obj: OwnedObject, batch: dict[str, Any], fetch: FileFetcher) -> None:
    """Record the batch's output and error files as its org's (LedgerUnavailable propagates)."""
    for name in ("output_file_id", "error_file_id"):
        file_id = batch.get(name)
        if not isinstance(file_id, str) or not file_id:
            continue
        snapshot = await fetch(file_id) or b""
        created = _created_at(snapshot) or _int(batch.get("completed_at")) or batch_obj.created_at
        await ledger.put(OwnedObject(
            kind=Kind.FILE, id=file_id, org_id=batch_obj.org_id, key_id=batch_obj.key_id,
            model_name=batch_obj.model_name, deployment=batch_obj.deployment, purpose=OUTPUT_PURPOSE,
            created_at=created, snapshot=snapshot if len(snapshot) <= MAX_SNAPSHOT_BYTES else b"",
        ))  # fmt: skip


async def settle_finished(
    rec: Recorder, obj: OwnedObject, batch: dict[str, Any], pricing: Pricing, slug: str, fetch: FileFetcher
) -> bool:
    """Do what a finished batch owes once: its files, then its usage. True when this call recorded it.

    Nothing for an unfinished batch or one already settled (``obj.usage_recorded``, as the ledger
    said when it was read); LedgerUnavailable propagates (the next call on the batch tries again).

    The record is submitted, and waited for until it is in the spool, before the claim: a node
    that dies between the two leaves a record that the next caller's (the same id) joins at the
    control plane, never a claim won with its record lost. A caller that loses the claim has sent
    a duplicate the control plane drops (records are unique by id); one node settles a batch
    once at a time.
    """
    if obj.usage_recorded or not finished(batch):
        return False
    await register_outputs(rec.ledger, obj, batch, fetch)
    if not billable(batch):
        await rec.ledger.claim_batch_usage(obj.org_id, obj.id)  # settled: never asked again
        return False
    settling = (obj.org_id, obj.id)
    if settling in _SETTLING:
        return False  # this node is already on it
    _SETTLING.add(settling)
    try:
        meter = _meter(rec, obj, batch, pricing, slug)
        picos = meter.cost_picos()
        meter.close()  # submitted (metering off: nothing is)
        if rec.sink is not None and not await rec.sink.durable(DURABLE_WAIT_SECONDS):
            # The spool failed or is slow: the record is kept in memory until delivered, as any is.
            log.warning("batch %s: its usage record is not in the spool yet; claimed anyway", obj.id[:128])
        if not await rec.ledger.claim_batch_usage(obj.org_id, obj.id):
            return False  # another call (another node) has it: its record and ours are one
    finally:
        _SETTLING.discard(settling)
    usage = meter.usage
    if rec.limiter is not None and usage is not None:
        charge(rec.limiter, obj.org_id, obj.key_id, usage.input + usage.output, picos)
    log.info("batch %s finished (%s): usage recorded once as %s", obj.id[:128], batch.get("status"), meter.request_id)
    return True


def _meter(rec: Recorder, obj: OwnedObject, batch: dict[str, Any], pricing: Pricing, slug: str) -> RequestMeter:
    """The batch's usage as a settled meter, ready to close (its record derived from the batch)."""
    usage, malformed = batch_usage(batch)
    meter = RequestMeter(rec.sink, request_id=record_id(obj.id), node_id=rec.node_id, org_id=obj.org_id,
                         key_id=obj.key_id, family=OPENAI, endpoint=obj.purpose, shape=NO_USAGE)  # fmt: skip
    meter.model_name = obj.model_name[:256]
    meter.upstream_slug = slug[:256]
    meter.deployment = obj.deployment[:256]
    meter.upstream_attempts = 1
    meter.pricing = pricing
    meter.batch_id = obj.id
    meter.price_percent = pricing.batch_price_percent
    if malformed:
        meter.malformed()
    meter.report(usage, final=True)
    meter.settle(200, COMPLETE)
    return meter


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _created_at(snapshot: bytes) -> int:
    try:
        doc = json.loads(snapshot) if snapshot else None
    except ValueError:
        return 0
    return _int(doc.get("created_at")) if isinstance(doc, dict) else 0
