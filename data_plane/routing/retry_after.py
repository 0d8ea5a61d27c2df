"""How long an upstream asked us to wait: Retry-After and the providers' own reset hints.

Every input is hostile: each header value is cut to a few dozen characters
before parsing, a body is searched only in its first ``BODY_PREFIX`` bytes with
a bounded pattern (linear time), and nothing here raises on any input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime
from email.utils import parsedate_to_datetime

# Answered before the first byte, these mean "try elsewhere" (docs/routing.md); any other 4xx
# is the request's fault, so it is relayed as is.
RETRYABLE_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504, 529})

DEFAULT_CAP = 300.0
BODY_PREFIX = 16 * 1024  # Gemini's RetryInfo comes early in a short error body
MAX_VALUE_CHARS = 64  # longer header values are not a duration or a date we need
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
# Go's time.Duration text as OpenAI sends it: "1s", "6m0s", "20ms", "1h2m3.5s".
_DURATION = re.compile(r"(?:[0-9]{1,12}(?:\.[0-9]{1,9})?(?:h|ms|m|s|us|µs|ns)){1,6}")
_DURATION_PART = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(h|ms|m|s|us|µs|ns)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# google.rpc.RetryInfo in a JSON error body: "retryDelay": "38s" (protobuf Duration JSON).
_RETRY_DELAY = re.compile(rb'"retryDelay"[ \t\r\n]{0,16}:[ \t\r\n]{0,16}"([0-9]{1,12}(?:\.[0-9]{1,9})?)s"')
_OPENAI_LIMITS = ("requests", "tokens")
_ANTHROPIC_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")
_WANTED = frozenset(
    {"retry-after", "retry-after-ms"}
    | {f"x-ratelimit-{k}-{n}" for n in _OPENAI_LIMITS for k in ("reset", "remaining")}
    | {f"anthropic-ratelimit-{n}-{k}" for n in _ANTHROPIC_LIMITS for k in ("reset", "remaining")}
)


def retry_after_seconds(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
    now: float,
    *,
    cap: float = DEFAULT_CAP,
) -> float | None:
    """Seconds to keep a deployment out of choice after this answer, at most ``cap``; None: no hint.

    ``now`` is the wall clock (``time.time()``): HTTP dates and RFC 3339 reset times are absolute.
    ``Retry-After`` / ``retry-after-ms`` count on any retryable status; the providers' reset
    headers and Gemini's ``retryDelay`` only on a 429.
    """
    if status not in RETRYABLE_STATUSES:
        return None
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower() if len(name) <= 64 else ""  # longer names are none of ours
        if key in _WANTED and key not in found:
            found[key] = value[:MAX_VALUE_CHARS].strip()
    seconds = _standard(found, now)
    if seconds is None and status == 429:
        seconds = _provider_headers(found, now)
        if seconds is None and body:
            seconds = _gemini_body(body)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, max(cap, 0.0))


def _standard(found: dict[str, str], now: float) -> float | None:
    ms = found.get("retry-after-ms")
    if ms is not None and _SECONDS.fullmatch(ms):
        return float(ms) / 1000.0
    value = found.get("retry-after")
    if not value:
        return None
    if _SECONDS.fullmatch(value):
        return float(value)
    return _http_date(value, now)


def _http_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
            return None
        return when.timestamp() - now
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _provider_headers(found: dict[str, str], now: float) -> float | None:
    """OpenAI's Go durations, then Anthropic's RFC 3339 times, each for the exhausted limit."""
    openai = [(found.get(f"x-ratelimit-remaining-{n}"), _duration(found.get(f"x-ratelimit-reset-{n}")))
              for n in _OPENAI_LIMITS]  # fmt: skip
    anthropic = [(found.get(f"anthropic-ratelimit-{n}-remaining"), _rfc3339(found.get(f"anthropic-ratelimit-{n}-reset"), now))
                 for n in _ANTHROPIC_LIMITS]  # fmt: skip
    for pairs in (openai, anthropic):
        resets = [(remaining, s) for remaining, s in pairs if s is not None]
        if not resets:
            continue
        # The limit that ran out decides; when none says so, the soonest reset (a short retry
        # that meets another 429 costs less than a deployment kept out too long).
        exhausted = [s for remaining, s in resets if remaining == "0"]
        return max(exhausted) if exhausted else min(s for _, s in resets)
    return None


def _duration(value: str | None) -> float | None:
    if not value or not _DURATION.fullmatch(value):
        return None
    return sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(value))


def _rfc3339(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    try:
        return when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None


def _gemini_body(body: bytes) -> float | None:
    match = _RETRY_DELAY.search(body, 0, BODY_PREFIX)
    return float(match.group(1)) if match else None
