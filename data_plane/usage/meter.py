"""One request's usage, gathered while it runs and turned into exactly one record.

The gateway opens a :class:`RequestMeter` right after authentication and
closes it in a ``finally``; :meth:`RequestMeter.close` fixes what the record
says once, whatever happened (a second call does nothing, later reports are
ignored). Closing never awaits: the meter is handed to the shipper's journal,
which builds its record with the others of the same loop iteration, after
their responses went out (``wal.Journal.submit_closed``).

Usage reports come in two kinds. *Final* reports (a JSON answer's usage, the
OpenAI usage-only chunk, ``response.completed``, Anthropic ``message_start``)
may arrive once: a second one sets the duplicate flag and is ignored, so it
never counts twice. *Cumulative* reports (Gemini ``usageMetadata``, Anthropic
``message_delta``, usage on OpenAI chunks that also carry choices) are running
totals: the last one wins, and repeats are normal.

Nothing here may fail a request: counts from upstream are clamped (tokens.py),
the cost saturates at ``MAX_COST_PICOS`` (both flagged on the record), and
:meth:`RequestMeter.close` catches anything else, logs it at WARNING, counts it
(``FAILURES``) and still emits a minimal record.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import msgspec

from data_plane.governance.domain import Pricing
from data_plane.usage.shapes import Shape
from data_plane.usage.tokens import MAX_TOKENS, Usage
from odock.v1 import common_pb2, node_pb2

log = logging.getLogger("odock.data_plane.usage")

FLAG_MALFORMED = 1
FLAG_DUPLICATE = 2
FLAG_CLAMPED = 4  # a token (or audio ms, character) count above tokens.MAX_TOKENS was clamped to it
FLAG_COST_SATURATED = 8  # the cost exceeded MAX_COST_PICOS and was saturated to it
FLAG_METER_FAILED = 16  # building the record failed: it carries ids, status, outcome and error code only
# An OpenAI chat completion served by another family's model through its translator (issue 13):
# the record's family is the backend's, its endpoint the client's (/v1/chat/completions).
FLAG_TRANSLATED = 32
# A record's cost ceiling (about $9,007): the control plane's per-record counter ceiling
# (control_plane/usage/records.py COUNTER_MAX), which keeps hourly sums inside int64.
MAX_COST_PICOS = 2**53
# Error code of a provider's own non-2xx answer relayed as is (its status is http_status).
UPSTREAM_ERROR = "upstream_error"
MAX_ERROR_CODE = 64

COMPLETE = common_pb2.OUTCOME_COMPLETE
PARTIAL = common_pb2.OUTCOME_PARTIAL
CANCELLED = common_pb2.OUTCOME_CANCELLED
ERROR = common_pb2.OUTCOME_ERROR
# HTTP status recorded for a request the client abandoned before any response started.
CLIENT_CLOSED = 499


class RecordSink(Protocol):
    """Where closed meters go (the shipper's journal); must not block."""

    def submit_closed(self, meter: RequestMeter) -> None:
        """Take a closed meter: its record (:meth:`RequestMeter.final_encoded`) is built now or soon."""
        ...


UNPRICED = Pricing()


def exact_cost_picos(usage: Usage, pricing: Pricing, percent: int = 100) -> int:
    """Cost in pico-USD, ``percent`` of the list price, rounded half up to a whole pico-USD.

    Prices are micro-USD per million units, so tokens and characters cost ``units * price``
    pico-USD exactly; audio is counted in milliseconds, so it costs ``ms * price / 1000``. The sum is
    formed exactly (in thousandths of a pico-USD, times the percent) and rounded once, half up:
    at most half a pico-USD off, whatever the mix of units.
    """
    cached_price = pricing.cached_input_per_mtok_micros
    if cached_price is None:
        cached_price = pricing.input_per_mtok_micros
    per_unit = (
        (usage.input - usage.cached) * pricing.input_per_mtok_micros
        + usage.cached * cached_price
        + usage.output * pricing.output_per_mtok_micros
        + usage.characters * pricing.per_million_characters_micros
    )
    milli = per_unit * 1000 + usage.audio_ms * pricing.per_million_audio_seconds_micros
    scaled, denominator = milli * percent, 100_000
    return (2 * scaled + denominator) // (2 * denominator)  # half up (towards +inf), exact integers


def cost_picos(usage: Usage, pricing: Pricing, percent: int = 100) -> int:
    """The exact cost, saturated to [0, MAX_COST_PICOS] (what records and limits use)."""
    return min(max(0, exact_cost_picos(usage, pricing, percent)), MAX_COST_PICOS)


def _clamp_units(usage: Usage) -> Usage:
    """``usage`` with audio milliseconds and characters clamped to MAX_TOKENS (marked ``clamped``)."""
    if usage.audio_ms <= MAX_TOKENS and usage.characters <= MAX_TOKENS:
        return usage
    return msgspec.structs.replace(usage, audio_ms=min(usage.audio_ms, MAX_TOKENS), characters=min(usage.characters, MAX_TOKENS),
                   clamped=True)  # fmt: skip


class _Failures:
    """Meter failures in this process (exported as a metric)."""

    count = 0


FAILURES = _Failures()


def _us(seconds: float) -> int:
    """Whole microseconds, rounded half up, never negative (``round`` costs several times more)."""
    us = int(seconds * 1_000_000 + 0.5)
    return max(0, us)


class RequestMeter:
    """Usage of one request after authentication; becomes one UsageRecord."""

    def __init__(
        self,
        sink: RecordSink | None,
        *,
        request_id: str,
        node_id: str,
        org_id: str,
        key_id: str,
        family: int,
        endpoint: str,
        shape: Shape,
        client_request_id: str = "",
    ) -> None:
        self._sink = sink
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.node_id = node_id
        self.org_id = org_id
        self.key_id = key_id
        self.family = family
        self.endpoint = endpoint
        self.shape = shape
        self.model_name = ""
        self.upstream_slug = ""
        self.deployment = ""  # the deployment that answered, or the last one tried
        self.upstream_attempts = 0
        self.requested_model = ""  # the model the client named, when a fallback model answered
        self.pricing = UNPRICED  # frozen: one shared instance, not one made per request
        # Set by the batch code (data_plane/objects/batch_usage.py): the record is a batch's usage,
        # costed at the model's batch_price_percent of its prices (100: list price).
        self.batch_id = ""
        self.price_percent = 100
        self.streamed = False
        self.status = 0
        self.outcome: int = common_pb2.OUTCOME_UNSPECIFIED
        self.error_code = ""
        self.usage: Usage | None = None
        self.flags = 0
        self._final_seen = False
        self._wall = time.time()
        self._start = time.perf_counter()
        self._upstream_start: float | None = None
        self._upstream_end: float | None = None
        self._upstream_headers: float | None = None
        self._first_byte: float | None = None
        self._retried = False
        self._end: float | None = None  # when the meter closed: the record's latency ends there
        self.closed = False

    # -- what the gateway and the proxy learn along the way --

    def upstream_started(self) -> None:
        """The request is being sent upstream (a retry's attempt: the first one's start is kept)."""
        if not self._retried:
            self._upstream_start = time.perf_counter()

    def upstream_responded(self) -> None:
        """The upstream response headers arrived."""
        if self._upstream_headers is None:
            self._upstream_headers = time.perf_counter()

    def retrying(self) -> None:
        """An attempt failed before its answer reached the client; another follows. The upstream wait
        keeps running from the first attempt's start; the head and end are the next attempt's."""
        self._upstream_headers = None
        self._upstream_end = None
        self._retried = True

    def upstream_finished(self) -> None:
        """The upstream answer ended (fully read, failed or abandoned)."""
        if self._upstream_start is not None and self._upstream_end is None:
            self._upstream_end = time.perf_counter()

    def first_byte(self) -> None:
        """The first body bytes of a stream went to the client."""
        if self._first_byte is None:
            self._first_byte = time.perf_counter()

    def report(self, usage: Usage | None, *, final: bool) -> None:
        """A usage report from the provider (see the module docstring for final vs cumulative)."""
        if self.closed:  # the record may be built after close: what it says is fixed at close
            return
        if final:
            if self._final_seen:
                self.flags |= FLAG_DUPLICATE
                return
            self._final_seen = True
        if usage is not None:
            usage = _clamp_units(usage)
            if usage.clamped:
                self.flags |= FLAG_CLAMPED
            self.usage = usage

    def malformed(self) -> None:
        """The provider sent usage that could not be read."""
        if not self.closed:
            self.flags |= FLAG_MALFORMED

    def settle(self, status: int, outcome: int, error_code: str = "") -> None:
        """Set the status, outcome and error code unless an earlier, more precise one is set."""
        if self.outcome == common_pb2.OUTCOME_UNSPECIFIED:
            self.status, self.outcome = status, outcome
            self.error_code = error_code[:MAX_ERROR_CODE]

    def cost_picos(self) -> int:
        """What the usage seen so far costs (saturated), as the record and the limits' settlement count it."""
        return cost_picos(self.usage or Usage(), self.pricing, self.price_percent)

    # -- timings for metrics and the overhead header (perf_counter seconds) --

    def upstream_wait(self, now: float) -> float:
        """Seconds spent waiting on upstream so far: until its end, else until its headers, else until now."""
        if self._upstream_start is None:
            return 0.0
        end = self._upstream_end or self._upstream_headers or now
        return max(0.0, end - self._upstream_start)

    def upstream_first_byte(self) -> float | None:
        """Seconds from sending upstream to its response headers (None: no headers came)."""
        if self._upstream_start is None or self._upstream_headers is None:
            return None
        return self._upstream_headers - self._upstream_start

    # -- the record --

    def close(self) -> None:
        """Close the meter (once) and hand it to the sink, which builds its record now or on the
        next loop iteration. An unsettled request counts as an internal error.

        What the record says is fixed here: later reports are ignored, and its latency ends now.
        """
        if self.closed:
            return
        self.closed = True
        self._end = end = time.perf_counter()
        if self._upstream_start is not None and self._upstream_end is None:
            self._upstream_end = end  # upstream_finished(), with the same clock reading
        self.settle(500, ERROR, "internal_error")
        if self._sink is None:  # metering is off (ODOCK_USAGE_METERING): no record is built
            return
        # Called in the gateway's ``finally``: an exception here would turn the answer already
        # decided (often the upstream's 200) into a 500 and lose the record.
        try:
            self._sink.submit_closed(self)
        except Exception as exc:  # noqa: BLE001 - metering must never fail a request
            FAILURES.count += 1
            log.warning("usage record of %s not submitted: %s", self.request_id, type(exc).__name__)

    def final_encoded(self) -> bytes:
        """The encoded record of a closed meter; never raises (a minimal record when building it fails)."""
        try:
            return self.encoded()
        except Exception as exc:  # noqa: BLE001 - metering must never lose a request's record
            FAILURES.count += 1
            log.warning("usage record of %s: building it failed (%s); a minimal record is kept",
                        self.request_id, type(exc).__name__)  # fmt: skip
            return self._minimal_record().SerializeToString()

    def final_record(self) -> node_pb2.UsageRecord:
        """The record of a closed meter (:meth:`final_encoded`, decoded); never raises."""
        return node_pb2.UsageRecord.FromString(self.final_encoded())

    def _error_code(self) -> str:
        if self.error_code or self.outcome != ERROR:
            return self.error_code
        # Settled as an error by the relay without a code of the gateway's: the provider's answer.
        return UPSTREAM_ERROR if self._upstream_headers is not None else ""

    def _minimal_record(self) -> node_pb2.UsageRecord:
        rec = node_pb2.UsageRecord(request_id=self.request_id, node_id=self.node_id, org_id=self.org_id,
                                   flags=FLAG_METER_FAILED)  # fmt: skip
        for name, value in (("key_id", self.key_id), ("model_name", self.model_name),
                            ("endpoint", self.endpoint), ("client_request_id", self.client_request_id),
                            ("error_code", self._error_code()), ("http_status", self.status),
                            ("outcome", self.outcome), ("family", self.family),
                            ("deployment", self.deployment), ("upstream_attempts", self.upstream_attempts),
                            ("requested_model", self.requested_model), ("batch_id", self.batch_id)):  # fmt: skip
            try:
                setattr(rec, name, value)
            except (TypeError, ValueError):
                pass  # whatever broke the full record: leave that field out
        rec.time.FromNanoseconds(int(self._wall * 1e9))
        return rec

    def record(self) -> node_pb2.UsageRecord:
        """The UsageRecord as things stand (as they stood at close, once closed)."""
        return node_pb2.UsageRecord.FromString(self.encoded())

    def encoded(self) -> bytes:
        """The encoding of the UsageRecord as things stand (as they stood at close, once closed).

        Two encodings joined: the fields every record of the same key, model and deployment
        shares, encoded once (:func:`_shared_part`), then this request's own. A protobuf parser
        merges the two, so they decode as one record. A 26-field message built and encoded for
        each request cost 6.6 µs in ``timeit``, this 3.9 (issue 16, docs/benchmarks.md).
        """
        end = self._end if self._end is not None else time.perf_counter()
        usage = self.usage or Usage()
        cost = exact_cost_picos(usage, self.pricing, self.price_percent)
        flags = self.flags
        if not 0 <= cost <= MAX_COST_PICOS:
            flags |= FLAG_COST_SATURATED
            cost = min(max(0, cost), MAX_COST_PICOS)
        rec = node_pb2.UsageRecord(
            request_id=self.request_id,
            http_status=self.status,
            outcome=self.outcome,  # type: ignore[arg-type]
            streamed=self.streamed,
            input_tokens=usage.input,
            output_tokens=usage.output,
            cost_picos=cost,
            latency_us=_us(end - self._start),
            upstream_attempts=self.upstream_attempts,
        )
        # Zero on most records: set only when not (each keyword costs about as much as a field set).
        if usage.cached:
            rec.cached_input_tokens = usage.cached
        if usage.reasoning:
            rec.reasoning_tokens = usage.reasoning
        if usage.audio_ms:
            rec.audio_milliseconds = usage.audio_ms
        if usage.characters:
            rec.input_characters = usage.characters
        if flags:
            rec.flags = flags
        if self.client_request_id:
            rec.client_request_id = self.client_request_id
        error_code = self._error_code()
        if error_code:
            rec.error_code = error_code
        if self._upstream_start is not None:
            rec.upstream_latency_us = _us((self._upstream_end or end) - self._upstream_start)
        if self._first_byte is not None:
            rec.time_to_first_byte_us = _us(self._first_byte - self._start)
        stamp = rec.time
        stamp.seconds, stamp.nanos = divmod(int(self._wall * 1e9), 1_000_000_000)
        shared = (self.node_id, self.org_id, self.key_id, self.model_name, self.upstream_slug, self.family,
                  self.endpoint, self.deployment, self.requested_model, self.batch_id)  # fmt: skip
        part = _SHARED.get(shared)
        if part is None:
            part = _shared_part(shared)
        return part + rec.SerializeToString()


# The encodings of the fields records share (node, org, key, model, deployment...), by their values.
_SHARED: dict[tuple[str, str, str, str, str, int, str, str, str, str], bytes] = {}
# Distinct sets of shared fields kept (the cache starts over past it: a rebuild is one message).
SHARED_PARTS_MAX = 4096


def _shared_part(shared: tuple[str, str, str, str, str, int, str, str, str, str]) -> bytes:
    (
        node_id,
        org_id,
        key_id,
        model_name,
        upstream_slug,
        family,
        endpoint,
        deployment,
        requested_model,
        batch_id,
    ) = shared
    part = node_pb2.UsageRecord(
        node_id=node_id,
        org_id=org_id,
        key_id=key_id,
        model_name=model_name,
        upstream_slug=upstream_slug,
        family=family,  # type: ignore[arg-type]
        endpoint=endpoint,
        deployment=deployment,
        requested_model=requested_model,
        batch_id=batch_id,
    ).SerializeToString()
    if len(_SHARED) >= SHARED_PARTS_MAX:
        _SHARED.clear()
    _SHARED[shared] = part
    return part
