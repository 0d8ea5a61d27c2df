"""The record's routing fields (deployment, upstream_attempts, requested_model), kept even in a minimal
record, and the upstream timings of a request that was retried."""

from __future__ import annotations

import time

from data_plane.usage.meter import COMPLETE, ERROR, FLAG_METER_FAILED
from data_plane.usage.tokens import Usage
from tests.data_plane.usage.test_meter_bounds import Sink, new_meter


def test_the_routing_fields_are_recorded() -> None:
    sink = Sink()
    m = new_meter(sink)
    m.model_name, m.deployment, m.upstream_attempts, m.requested_model = "fallback", "west", 3, "asked"
    m.settle(200, COMPLETE)
    m.close()
    (rec,) = sink.records
    assert (rec.model_name, rec.deployment, rec.upstream_attempts, rec.requested_model) == (
        "fallback", "west", 3, "asked",
    )  # fmt: skip


def test_a_minimal_record_keeps_the_routing_fields() -> None:
    sink = Sink()
    m = new_meter(sink)
    m.deployment, m.upstream_attempts = "east", 2
    m.usage = Usage(input=-(2**70))  # stands for any bug in building the full record
    m.settle(502, ERROR, "upstream_unreachable")
    m.close()
    (rec,) = sink.records
    assert rec.flags == FLAG_METER_FAILED and (rec.deployment, rec.upstream_attempts) == ("east", 2)


def test_a_retried_requests_upstream_wait_runs_from_the_first_attempt() -> None:
    m = new_meter(Sink())
    m.upstream_started()
    m.upstream_responded()  # the first attempt's head (a 500)
    time.sleep(0.05)
    m.retrying()
    assert m.upstream_first_byte() is None  # the next attempt's head is still to come
    m.upstream_started()
    m.upstream_responded()
    m.upstream_finished()
    now = time.perf_counter()
    assert m.upstream_wait(now) >= 0.05  # the failed attempt's time is upstream time, not the gateway's
    first_byte = m.upstream_first_byte()
    assert first_byte is not None and first_byte >= 0.05
