"""retry_after_seconds: every header form, provider reset hints, bounds, and never raising."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.routing import RETRYABLE_STATUSES, retry_after_seconds

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW + seconds, tz=UTC)


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, [("Retry-After", "7")], 7.0),
        (503, [("retry-after", " 12 ")], 12.0),
        (429, [("Retry-After", "1.5")], 1.5),
        (503, [("Retry-After", format_datetime(at(42), usegmt=True))], 42.0),
        (429, [("retry-after-ms", "250")], 0.25),
        (429, [("Retry-After", "9"), ("Retry-After-Ms", "1500")], 1.5),  # the precise one wins
        (429, [("Retry-After", "3"), ("retry-after", "99")], 3.0),  # the first of a repeated header
        (429, [("x-ratelimit-reset-requests", "1s")], 1.0),
        (429, [("x-ratelimit-reset-requests", "4m0s")], 240.0),
        (429, [("x-ratelimit-reset-tokens", "20ms")], 0.02),
        (429, [("x-ratelimit-reset-tokens", "1h2m3.5s")], 300.0),  # capped
        (429, [("x-ratelimit-reset-requests", "2m3.5s")], 123.5),
        # The exhausted limit decides; without a remaining count, the soonest reset.
        (429, [("x-ratelimit-reset-requests", "1s"), ("x-ratelimit-reset-tokens", "30s"),
               ("x-ratelimit-remaining-tokens", "0"), ("x-ratelimit-remaining-requests", "12")], 30.0),
        (429, [("x-ratelimit-reset-requests", "1s"), ("x-ratelimit-reset-tokens", "30s")], 1.0),
        (429, [("anthropic-ratelimit-requests-reset", at(20).isoformat().replace("+00:00", "Z"))], 20.0),
        (429, [("anthropic-ratelimit-tokens-reset", at(5).isoformat()),
               ("anthropic-ratelimit-input-tokens-reset", at(50).isoformat()),
               ("anthropic-ratelimit-input-tokens-remaining", "0")], 50.0),
        (429, [("Retry-After", "4"), ("x-ratelimit-reset-requests", "60s")], 4.0),  # Retry-After first
    ],
)  # fmt: skip
def test_header_forms(status: int, headers: list[tuple[str, str]], expected: float) -> None:
    assert retry_after_seconds(status, headers, None, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (429, []),
        (429, [("Retry-After", "-5")]),
        (429, [("Retry-After", "soon")]),
        (429, [("Retry-After", "nan")]),
        (429, [("Retry-After", "inf")]),
        (429, [("Retry-After", "1e3")]),
        (429, [("Retry-After", format_datetime(at(-30), usegmt=True))]),  # in the past
        (429, [("Retry-After", "Wed, 99 Foo 2015 07:28:00 GMT")]),
        (429, [("retry-after-ms", "-1")]),
        (429, [("x-ratelimit-reset-requests", "6 minutes")]),
        (429, [("x-ratelimit-reset-requests", "-1s")]),
        (429, [("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:20")]),  # no zone
        (429, [("anthropic-ratelimit-requests-reset", "tomorrow")]),
        (400, [("Retry-After", "5")]),  # not retryable: no hint
        (200, [("Retry-After", "5")]),
        (503, [("x-ratelimit-reset-requests", "5s")]),  # providers' reset hints mean something only on a 429
    ],
)
def test_garbage_and_other_statuses_give_none(status: int, headers: list[tuple[str, str]]) -> None:
    assert retry_after_seconds(status, headers, None, NOW) is None


def test_the_cap_bounds_every_form() -> None:
    assert retry_after_seconds(429, [("Retry-After", "86400")], None, NOW) == 300.0
    assert retry_after_seconds(429, [("Retry-After", "86400")], None, NOW, cap=60.0) == 60.0
    assert (
        retry_after_seconds(503, [("Retry-After", format_datetime(at(4000), usegmt=True))], None, NOW, cap=10)
        == 10
    )


def test_gemini_retry_delay_in_a_429_body() -> None:
    body = b"""{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}]}}"""
    assert retry_after_seconds(429, [], body, NOW) == 38.0
    assert retry_after_seconds(429, [], body.replace(b"38s", b"0.5s"), NOW) == 0.5
    assert retry_after_seconds(429, [("Retry-After", "2")], body, NOW) == 2.0
    assert retry_after_seconds(503, [], body, NOW) is None
    assert retry_after_seconds(429, [], b'{"retryDelay": "soon"}', NOW) is None
    late = b" " * (17 * 1024) + b'"retryDelay": "38s"'  # beyond the bounded prefix: not parsed
    assert retry_after_seconds(429, [], late, NOW) is None


def test_the_retryable_statuses() -> None:
    assert RETRYABLE_STATUSES == {429, 500, 502, 503, 504, 529}


_names = st.sampled_from(
    ["Retry-After", "retry-after-ms", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
     "x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-tokens-remaining",
     "anthropic-ratelimit-output-tokens-reset"]
) | st.text(max_size=60)  # fmt: skip
# Header values arrive decoded as the upstream client does (surrogateescape): any bytes at all.
_raw = st.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape"))
_values = (
    st.text(max_size=80)
    | _raw
    | st.from_regex(r"[0-9.hms -]{0,20}", fullmatch=True)
    | st.builds(lambda s: format_datetime(at(s), usegmt=True), st.floats(-1e9, 1e9))
)


@settings(max_examples=400, deadline=None)
@given(
    status=st.sampled_from([200, 400, 429, 500, 503, 529]) | st.integers(),
    headers=st.lists(st.tuples(_names | _raw, _values), max_size=8),
    body=st.none()
    | st.binary(max_size=300)
    | st.builds(lambda s: b'{"retryDelay": "' + s + b'"}', st.binary(max_size=30)),
    now=st.floats(allow_nan=True, allow_infinity=True),
    cap=st.floats(allow_nan=False, min_value=-10, max_value=1e6),
)
def test_never_raises_and_stays_in_bounds(
    status: int, headers: list[tuple[str, str]], body: bytes | None, now: float, cap: float
) -> None:
    seconds = retry_after_seconds(status, headers, body, now, cap=cap)
    assert seconds is None or 0.0 <= seconds <= max(cap, 0.0)


def test_a_hostile_body_costs_only_its_bounded_prefix() -> None:
    body = b'"retryDelay": "1' * 1_000_000  # 16 MB of near misses
    started = time.perf_counter()
    assert retry_after_seconds(429, [("x-ratelimit-reset-tokens", "9" * 5000)], body, NOW) is None
    assert time.perf_counter() - started < 0.5  # about a millisecond: only the first 16 KiB is searched
