"""Issue 15's units in the meter: seconds of audio (counted in milliseconds) and characters are
costed exactly next to tokens, rounded once half up; a batch's record carries its id and costs the
model's batch percent; counts beyond the ceiling are clamped and flagged like tokens."""

from __future__ import annotations

from fractions import Fraction

import pytest

from data_plane.governance.domain import Pricing
from data_plane.governance.link import pricing_of
from data_plane.providers.openai import CHAT_USAGE
from data_plane.usage.meter import COMPLETE, FLAG_CLAMPED, RequestMeter, cost_picos, exact_cost_picos
from data_plane.usage.tokens import MAX_TOKENS, Usage
from odock.v1 import common_pb2, node_pb2

# whisper-1: $0.006 per minute = $0.0001 per second = 100 micro-USD per second
WHISPER = Pricing(per_million_audio_seconds_micros=100 * 10**6)
# tts-1: $15 per million characters
TTS = Pricing(per_million_characters_micros=15 * 10**6)


class Sink:
    def __init__(self) -> None:
        self.records: list[node_pb2.UsageRecord] = []

    def submit_closed(self, meter: RequestMeter) -> None:
        self.records.append(meter.final_record())


def new_meter(sink: Sink) -> RequestMeter:
    return RequestMeter(sink, request_id="req_units", node_id="n1", org_id="org_a", key_id="key_a",
                        family=common_pb2.PROVIDER_FAMILY_OPENAI, endpoint="/v1/audio/transcriptions",
                        shape=CHAT_USAGE)  # fmt: skip


def half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)) // 1)


def test_audio_seconds_cost_exactly_including_fractional_milliseconds() -> None:
    # 12.345 s at $0.0001/s = $0.0012345 = 1_234_500_000 pico-USD: exact, no rounding needed.
    assert cost_picos(Usage(audio_ms=12_345), WHISPER) == 1_234_500_000
    # A price that does not divide by 1000: 7 micro-USD per million seconds, 1 ms -> 0.007 pico-USD.
    odd = Pricing(per_million_audio_seconds_micros=7)
    assert cost_picos(Usage(audio_ms=1), odd) == 0  # 0.007 rounds down
    assert cost_picos(Usage(audio_ms=71), odd) == 0  # 0.497
    assert cost_picos(Usage(audio_ms=500), Pricing(per_million_audio_seconds_micros=1)) == 1  # 0.5 rounds up
    assert cost_picos(Usage(audio_ms=499), Pricing(per_million_audio_seconds_micros=1)) == 0
    for ms in (1, 999, 1000, 1001, 65_432, 3_600_000):
        assert exact_cost_picos(Usage(audio_ms=ms), odd) == half_up(Fraction(ms * 7, 1000))


def test_characters_cost_like_tokens_and_add_to_every_other_unit() -> None:
    assert cost_picos(Usage(characters=1000), TTS) == 1000 * 15 * 10**6  # $0.015
    mixed = Pricing(input_per_mtok_micros=2_500_000, output_per_mtok_micros=10_000_000,
                    per_million_audio_seconds_micros=333, per_million_characters_micros=15_000_000)  # fmt: skip
    usage = Usage(input=40, output=7, audio_ms=2_001, characters=11)
    expected = Fraction(40 * 2_500_000 + 7 * 10_000_000 + 11 * 15_000_000) + Fraction(2_001 * 333, 1000)
    assert cost_picos(usage, mixed) == half_up(expected)


@pytest.mark.parametrize("percent", [0, 1, 33, 50, 99, 100])
def test_a_percent_scales_the_exact_sum_and_rounds_once(percent: int) -> None:
    pricing = Pricing(input_per_mtok_micros=3, output_per_mtok_micros=7, per_million_audio_seconds_micros=13,
                      per_million_characters_micros=5)  # fmt: skip
    usage = Usage(input=101, output=33, audio_ms=1_234, characters=17)
    exact = Fraction(101 * 3 + 33 * 7 + 17 * 5) + Fraction(1_234 * 13, 1000)
    assert cost_picos(usage, pricing, percent) == half_up(exact * percent / 100)


def test_the_record_carries_the_units_and_their_cost() -> None:
    sink = Sink()
    m = new_meter(sink)
    m.pricing = WHISPER
    m.report(Usage(audio_ms=61_500), final=True)
    m.settle(200, COMPLETE)
    m.close()
    (rec,) = sink.records
    assert (rec.audio_milliseconds, rec.input_characters, rec.batch_id) == (61_500, 0, "")
    assert rec.cost_picos == 6_150_000_000 and rec.flags == 0  # 61.5 s at $0.0001/s = $0.00615

    sink = Sink()
    m = new_meter(sink)
    m.pricing = TTS
    m.report(Usage(characters=42), final=True)
    m.settle(200, COMPLETE)
    m.close()
    (rec,) = sink.records
    assert (rec.audio_milliseconds, rec.input_characters, rec.cost_picos) == (0, 42, 42 * 15 * 10**6)


def test_a_batch_record_has_its_id_and_costs_the_batch_percent_the_limits_settle_the_same() -> None:
    sink = Sink()
    m = new_meter(sink)
    m.pricing = Pricing(input_per_mtok_micros=150_000, output_per_mtok_micros=600_000, batch_price_percent=50)
    m.batch_id = "batch_abc"
    m.price_percent = m.pricing.batch_price_percent
    m.report(Usage(input=1_001, output=3), final=True)
    m.settle(200, COMPLETE)
    assert m.cost_picos() == (1_001 * 150_000 + 3 * 600_000) // 2  # what settle_request charges
    m.close()
    (rec,) = sink.records
    assert rec.batch_id == "batch_abc"
    assert rec.cost_picos == m.cost_picos() == 75_975_000


def test_unit_counts_above_the_ceiling_are_clamped_and_flagged() -> None:
    sink = Sink()
    m = new_meter(sink)
    m.pricing = TTS
    m.report(Usage(audio_ms=2**62, characters=MAX_TOKENS + 1), final=True)
    m.settle(200, COMPLETE)
    m.close()
    (rec,) = sink.records
    assert (rec.audio_milliseconds, rec.input_characters) == (MAX_TOKENS, MAX_TOKENS)
    assert rec.flags & FLAG_CLAMPED


def test_the_wire_prices_reach_the_route_and_an_unset_batch_percent_is_50() -> None:
    msg = common_pb2.Pricing(input_per_mtok_micros=1, output_per_mtok_micros=2, per_million_audio_seconds_micros=3,
                             per_million_characters_micros=4)  # fmt: skip
    assert pricing_of(msg) == Pricing(1, 2, None, 3, 4, 50)
    msg.batch_price_percent = 0  # explicitly free batch work, not "unset"
    msg.cached_input_per_mtok_micros = 0
    assert pricing_of(msg) == Pricing(1, 2, 0, 3, 4, 0)
    msg.batch_price_percent = 100
    assert pricing_of(msg).batch_price_percent == 100
