"""The meter never raises into a request: token counts from upstream are clamped, the cost
saturates at the control plane's per-record ceiling, and a record that cannot be built is
logged, counted and replaced by a minimal one. Also what a record says about the request:
the client's request id and the error code."""

from __future__ import annotations

import logging

import pytest

from control_plane.usage.records import COUNTER_MAX
from data_plane.governance.domain import Pricing
from data_plane.providers.anthropic import anthropic_usage
from data_plane.providers.gemini import gemini_usage
from data_plane.providers.openai import CHAT_USAGE, openai_usage
from data_plane.providers.vllm import tokenize_usage
from data_plane.usage import meter as meter_mod
from data_plane.usage.meter import (
    COMPLETE,
    ERROR,
    FLAG_CLAMPED,
    FLAG_COST_SATURATED,
    FLAG_METER_FAILED,
    MAX_COST_PICOS,
    RequestMeter,
    cost_picos,
)
from data_plane.usage.shapes import body_usage
from data_plane.usage.tokens import MAX_TOKENS, Usage
from odock.v1 import common_pb2, node_pb2

INT64_MAX = 2**63 - 1


class Sink:
    def __init__(self) -> None:
        self.records: list[node_pb2.UsageRecord] = []

    def submit_closed(self, meter: RequestMeter) -> None:
        self.records.append(meter.final_record())


class FailingSink:
    def submit_closed(self, meter: RequestMeter) -> None:
        raise RuntimeError("queue broken")


def new_meter(sink: object, **kw: str) -> RequestMeter:
    return RequestMeter(
        sink,  # type: ignore[arg-type]
        request_id="req_0123", node_id="n1", org_id="org_a", key_id="key_a",
        family=common_pb2.PROVIDER_FAMILY_OPENAI, endpoint="/v1/chat/completions", shape=CHAT_USAGE, **kw,
    )  # fmt: skip


def test_the_issue_case_2_to_the_40_output_tokens_at_75_dollars_saturates_and_flags() -> None:
    sink = Sink()
    m = new_meter(sink)
    m.pricing = Pricing(input_per_mtok_micros=15_000_000, output_per_mtok_micros=75_000_000)
    m.report(body_usage(CHAT_USAGE, b'{"usage":{"prompt_tokens":12,"completion_tokens":1099511627776}}'),
             final=True)  # fmt: skip
    m.settle(200, COMPLETE)
    m.close()  # raised ValueError (int64 overflow of cost_picos) before the fix
    (rec,) = sink.records
    assert 2**40 * 75_000_000 > INT64_MAX  # the exact cost does not fit the wire type
    assert (rec.http_status, rec.outcome, rec.output_tokens) == (200, COMPLETE, 2**40)
    assert rec.cost_picos == MAX_COST_PICOS == COUNTER_MAX  # the most the control plane stores
    assert rec.flags == FLAG_COST_SATURATED
    assert rec.error_code == ""


def test_cost_is_exact_below_the_ceiling_and_saturates_above() -> None:
    pricing = Pricing(input_per_mtok_micros=3, output_per_mtok_micros=10**12, cached_input_per_mtok_micros=1)
    assert cost_picos(Usage(input=10, output=9007, cached=4), pricing) == 6 * 3 + 4 + 9007 * 10**12
    assert cost_picos(Usage(output=9008), pricing) == MAX_COST_PICOS
    assert cost_picos(Usage(input=MAX_TOKENS, output=MAX_TOKENS), pricing) == MAX_COST_PICOS


@pytest.mark.parametrize(
    ("read", "raw", "want"),
    [
        (openai_usage, {"prompt_tokens": 2**41, "completion_tokens": 5}, Usage(MAX_TOKENS, 5, clamped=True)),
        (openai_usage, {"input_tokens": 1, "output_tokens": 10**30}, Usage(1, MAX_TOKENS, clamped=True)),
        (openai_usage, {"total_tokens": 2**64}, Usage(MAX_TOKENS, clamped=True)),
        (anthropic_usage, {"input_tokens": 2**40, "cache_read_input_tokens": 2**40, "output_tokens": 1},
         Usage(MAX_TOKENS, 1, MAX_TOKENS, clamped=True)),
        (gemini_usage, {"promptTokenCount": 3, "candidatesTokenCount": 2**40, "thoughtsTokenCount": 1},
         Usage(3, MAX_TOKENS, 0, 1, clamped=True)),
        (tokenize_usage, 2**50, Usage(MAX_TOKENS, clamped=True)),
        (openai_usage, {"prompt_tokens": 2**40, "completion_tokens": 0}, Usage(2**40)),  # at the bound: kept
    ],
)  # fmt: skip
def test_counts_above_the_bound_are_clamped_not_refused(read: object, raw: object, want: Usage) -> None:
    assert read(raw) == want  # type: ignore[operator]


def test_a_clamped_report_flags_the_record() -> None:
    sink = Sink()
    m = new_meter(sink)
    m.report(openai_usage({"prompt_tokens": 1, "completion_tokens": 2**45}), final=True)
    m.settle(200, COMPLETE)
    m.close()
    assert sink.records[0].output_tokens == MAX_TOKENS
    assert sink.records[0].flags == FLAG_CLAMPED


def test_a_record_that_cannot_be_built_is_logged_counted_and_kept_minimal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink()
    m = new_meter(sink, client_request_id="my-id")
    m.model_name = "gpt"
    m.usage = Usage(input=-(2**70))  # nothing valid produces this: stands for any bug in building the record
    m.settle(502, ERROR, "upstream_unreachable")
    before = meter_mod.FAILURES.count
    with caplog.at_level(logging.WARNING, logger="odock.data_plane.usage"):
        m.close()
    assert meter_mod.FAILURES.count == before + 1
    assert any("req_0123" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    (rec,) = sink.records
    assert (rec.request_id, rec.org_id, rec.key_id, rec.model_name) == ("req_0123", "org_a", "key_a", "gpt")
    assert (rec.http_status, rec.outcome, rec.error_code) == (502, ERROR, "upstream_unreachable")
    assert rec.client_request_id == "my-id" and rec.flags == FLAG_METER_FAILED
    assert rec.HasField("time")


def test_a_sink_that_raises_never_reaches_the_request(caplog: pytest.LogCaptureFixture) -> None:
    m = new_meter(FailingSink())
    m.settle(200, COMPLETE)
    before = meter_mod.FAILURES.count
    with caplog.at_level(logging.WARNING, logger="odock.data_plane.usage"):
        m.close()
    assert meter_mod.FAILURES.count == before + 1
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_error_codes_on_the_record() -> None:
    sink = Sink()
    gateway = new_meter(sink)
    gateway.settle(429, ERROR, "rate_limit_exceeded")
    gateway.close()
    provider = new_meter(sink)
    provider.upstream_started()
    provider.upstream_responded()
    provider.settle(503, ERROR)  # the relay settles a provider's own error without a code
    provider.close()
    unsettled = new_meter(sink)
    unsettled.close()
    ok = new_meter(sink)
    ok.settle(200, COMPLETE)
    ok.close()
    assert [(r.http_status, r.error_code) for r in sink.records] == [
        (429, "rate_limit_exceeded"), (503, "upstream_error"), (500, "internal_error"), (200, ""),
    ]  # fmt: skip
