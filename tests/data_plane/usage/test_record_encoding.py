"""A meter's record is encoded as two joined parts (the fields records share, cached, and the
request's own): decoded, it must be exactly the record built field by field, whatever the fields
hold and however the cache of shared parts is filled (issue 16)."""

from __future__ import annotations

import math
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.governance.domain import Pricing
from data_plane.providers.openai import CHAT_USAGE
from data_plane.usage import meter as meter_module
from data_plane.usage.frames import encoded_frame, record_frame
from data_plane.usage.meter import (
    COMPLETE,
    ERROR,
    FLAG_COST_SATURATED,
    MAX_COST_PICOS,
    RequestMeter,
    exact_cost_picos,
)
from data_plane.usage.tokens import Usage
from odock.v1 import common_pb2, node_pb2

# Few values per shared field, so that records share parts (cache hits) as well as differ in one.
NAMES = st.sampled_from(["", "a", "b", "gpt-4o", "é-deployment"])
COUNTS = st.one_of(st.just(0), st.integers(1, 2**40))
FAMILIES = st.sampled_from([common_pb2.PROVIDER_FAMILY_OPENAI, common_pb2.PROVIDER_FAMILY_ANTHROPIC])


def _us_half_up(seconds: float) -> int:
    return max(0, math.floor(seconds * 1e6 + 0.5))


def expected(m: RequestMeter) -> node_pb2.UsageRecord:
    """The record built the plain way, field by field (what the meter built before issue 16's change)."""
    usage = m.usage or Usage()
    cost = exact_cost_picos(usage, m.pricing, m.price_percent)
    flags = m.flags
    if not 0 <= cost <= MAX_COST_PICOS:
        flags |= FLAG_COST_SATURATED
        cost = min(max(0, cost), MAX_COST_PICOS)
    assert m._end is not None
    rec = node_pb2.UsageRecord(
        request_id=m.request_id, node_id=m.node_id, org_id=m.org_id, key_id=m.key_id, model_name=m.model_name,
        upstream_slug=m.upstream_slug, family=m.family, endpoint=m.endpoint, http_status=m.status,  # type: ignore[arg-type]
        outcome=m.outcome, streamed=m.streamed, input_tokens=usage.input, output_tokens=usage.output,  # type: ignore[arg-type]
        cached_input_tokens=usage.cached, reasoning_tokens=usage.reasoning, cost_picos=cost,
        latency_us=_us_half_up(m._end - m._start), flags=flags, client_request_id=m.client_request_id,
        error_code=m._error_code(), deployment=m.deployment, upstream_attempts=m.upstream_attempts,
        requested_model=m.requested_model, audio_milliseconds=usage.audio_ms, input_characters=usage.characters,
        batch_id=m.batch_id,
    )  # fmt: skip
    if m._upstream_start is not None:
        rec.upstream_latency_us = _us_half_up((m._upstream_end or m._end) - m._upstream_start)
    if m._first_byte is not None:
        rec.time_to_first_byte_us = _us_half_up(m._first_byte - m._start)
    rec.time.FromNanoseconds(int(m._wall * 1e9))
    return rec


@st.composite
def meters(draw: st.DrawFn) -> RequestMeter:
    m = RequestMeter(None, request_id=draw(st.sampled_from(["req_1", "req_2"])), node_id=draw(NAMES),
                     org_id=draw(NAMES), key_id=draw(NAMES), family=draw(FAMILIES), endpoint=draw(NAMES),
                     shape=CHAT_USAGE, client_request_id=draw(NAMES))  # fmt: skip
    m.model_name, m.upstream_slug, m.deployment = draw(NAMES), draw(NAMES), draw(NAMES)
    m.requested_model, m.batch_id = draw(NAMES), draw(NAMES)
    m.upstream_attempts = draw(st.integers(0, 5))
    m.price_percent = draw(st.sampled_from([100, 50]))
    m.pricing = Pricing(input_per_mtok_micros=draw(st.integers(0, 10**8)),
                        output_per_mtok_micros=draw(st.integers(0, 10**8)))  # fmt: skip
    m.streamed = draw(st.booleans())
    if draw(st.booleans()):
        m.report(Usage(input=draw(COUNTS), output=draw(COUNTS), cached=draw(COUNTS), reasoning=draw(COUNTS),
                       audio_ms=draw(COUNTS), characters=draw(COUNTS)), final=True)  # fmt: skip
    if draw(st.booleans()):
        m.malformed()
    m.settle(draw(st.sampled_from([200, 429, 502])), draw(st.sampled_from([COMPLETE, ERROR])),
             draw(st.sampled_from(["", "upstream_timeout"])))  # fmt: skip
    if draw(st.booleans()):
        m.upstream_started()
        if draw(st.booleans()):
            m.upstream_responded()
            m.first_byte()
        if draw(st.booleans()):
            m.upstream_finished()
    m._wall = draw(st.floats(0, 2e9))
    m._end = m._start + draw(st.floats(0, 100))
    m.closed = True
    return m


@settings(max_examples=400, deadline=None)
@given(st.lists(meters(), min_size=1, max_size=6))
def test_the_encoded_record_decodes_to_the_record_built_field_by_field(ms: list[RequestMeter]) -> None:
    for m in ms:
        encoded = m.final_encoded()
        assert node_pb2.UsageRecord.FromString(encoded) == expected(m)
        assert m.record() == expected(m)
        assert node_pb2.UsageBatch.FromString(encoded_frame(encoded)).records[0] == expected(m)


def test_a_full_cache_of_shared_parts_starts_over_and_records_stay_right(monkeypatch: object) -> None:
    monkeypatch.setattr(meter_module, "SHARED_PARTS_MAX", 3)  # type: ignore[attr-defined]
    meter_module._SHARED.clear()
    built = []
    for n in range(10):  # ten deployments: the cache fills and is cleared twice over
        m = RequestMeter(None, request_id=f"req_{n}", node_id="n1", org_id="o", key_id="k",
                         family=common_pb2.PROVIDER_FAMILY_OPENAI, endpoint="/v1/chat/completions", shape=CHAT_USAGE)  # fmt: skip
        m.deployment = f"dep-{n}"
        m.settle(200, COMPLETE)
        m._end = time.perf_counter()
        built.append((m, m.final_record()))
        assert len(meter_module._SHARED) <= 3
    for m, record in built:
        assert record == expected(m) and record.deployment == m.deployment


def test_the_frame_of_an_encoding_is_the_frame_of_its_record() -> None:
    record = node_pb2.UsageRecord(request_id="r", error_code="e" * 300)  # a two-byte length
    assert encoded_frame(record.SerializeToString()) == record_frame(record)
