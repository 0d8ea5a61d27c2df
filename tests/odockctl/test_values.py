"""Unit tests for the value parsers odockctl applies to user input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from odockctl.values import (
    ValueProblem,
    check_base_url,
    format_duration_ms,
    format_usd,
    parse_duration_ms,
    parse_family,
    parse_timestamp,
    parse_usd,
)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.15", 150_000),
        ("1", 1_000_000),
        ("0.000001", 1),
        ("$2.50", 2_500_000),
        (0.1, 100_000),
        (3, 3_000_000),
        ("1e-6", 1),
        ("0", 0),
    ],
)
def test_usd_converts_exactly(text: str | float, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize("text", ["0.0000001", "-1", "NaN", "inf", "abc", "", "1e30"])
def test_usd_rejects(text: str) -> None:
    with pytest.raises(ValueProblem):
        parse_usd(text)


def test_usd_formats_back() -> None:
    assert format_usd(150_000) == "0.15"
    assert format_usd(1) == "0.000001"
    assert format_usd(25_000_000) == "25.00"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30s", 30_000),
        ("5m", 300_000),
        ("24h", 86_400_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        ("7d", 604_800_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    assert parse_duration_ms(format_duration_ms(ms)) == ms


@pytest.mark.parametrize("text", ["", "30", "5 min", "1.5h", "-3s", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueProblem):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "https://user:pw@x",
        "https://x/v1?a=1",
        "https://x#f",
        "https://",
        "api.openai.com/v1",
        "https://x:99999",
    ],
)
def test_bad_base_urls(url: str) -> None:
    with pytest.raises(ValueProblem):
        check_base_url(url)


def test_families_and_timestamps() -> None:
    assert parse_family("Anthropic") == 2
    with pytest.raises(ValueProblem, match="unknown family"):
        parse_family("cohere")
    assert parse_timestamp("2027-01-01T00:00:00Z") == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueProblem):
        parse_timestamp("2027-01-01T00:00:00")
