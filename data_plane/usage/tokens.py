"""Token counts normalised to one shape, and the helpers each family's reader builds them with.

Normalised meaning (what a record stores): ``input`` is every input token,
cached ones included; ``cached`` is the part of ``input`` read from a cache;
``output`` is every output token, reasoning included; ``reasoning`` is the
part of ``output`` spent thinking. Providers split these differently; each
family's reader says how it maps its provider's counts (``openai_usage``,
``anthropic_usage``, ``gemini_usage``, ``tokenize_usage`` in
``data_plane/providers/<family>.py``).

Anything that is present but not a non-negative integer, or parts larger
than their whole, is :class:`MalformedUsage`: the caller flags the record and
ignores that report. A count larger than ``MAX_TOKENS`` (a broken or hostile
upstream) is clamped to it and the usage marked ``clamped`` (the record is
flagged); never an exception.

Nothing in ``data_plane.usage`` imports ``data_plane.providers``: the families plug in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

# Far beyond any real request (about 1.1e12); keeps per-record counters, and sums of
# many records, inside int64. Larger counts are clamped to it.
MAX_TOKENS = 2**40


class MalformedUsage(ValueError):
    """A usage report that cannot be trusted."""


class Usage(msgspec.Struct, frozen=True):
    """Normalised token counts of one request (a msgspec struct: made per usage report, and a frozen
    slots dataclass took 0.94 µs to build where this takes 0.08; a Gemini stream reports on every
    chunk: issue 16)."""

    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0
    # Units other than tokens (issue 15): milliseconds of input audio billed by duration,
    # characters of input text billed by length.
    audio_ms: int = 0
    characters: int = 0
    clamped: bool = False  # some count was above MAX_TOKENS and was clamped to it


def shown_count(value: object) -> int:
    """A provider's count as a translated answer shows it to the client: 0 unless a positive integer,
    clamped to MAX_TOKENS as the meter clamps it (orjson, which the translators parse with, reads an
    integer beyond 64 bits as a float: such a float is such a count too)."""
    if type(value) is int:
        return min(value, MAX_TOKENS) if value > 0 else 0
    return MAX_TOKENS if type(value) is float and value >= 2**64 else 0


def count(obj: Mapping[str, Any], key: str) -> int:
    """``obj[key]`` as a token count (absent or null: 0)."""
    value = obj.get(key)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise MalformedUsage(f"{key}: not a token count")
    return value


def details(obj: Mapping[str, Any], key: str, field: str) -> int:
    """The count ``field`` of the details object ``obj[key]`` (absent or null: 0)."""
    found = obj.get(key)
    if found is None:
        return 0
    if not isinstance(found, dict):
        raise MalformedUsage(f"{key}: not an object")
    return count(found, field)


def make_usage(
    input: int, output: int = 0, cached: int = 0, reasoning: int = 0, *, parts: bool = True
) -> Usage:
    """Usage of raw counts, each clamped to MAX_TOKENS; ``parts``: a part larger than its total is malformed."""
    if parts and (cached > input or reasoning > output):
        raise MalformedUsage("a part is larger than its total")
    if max(input, output) <= MAX_TOKENS:  # parts are at most their totals here
        return Usage(input=input, output=output, cached=cached, reasoning=reasoning)
    m = MAX_TOKENS
    return Usage(input=min(input, m), output=min(output, m), cached=min(cached, m), reasoning=min(reasoning, m),
                 clamped=True)  # fmt: skip


def as_object(usage: object) -> Mapping[str, Any]:
    """A usage report's members (MalformedUsage unless it is a JSON object)."""
    if not isinstance(usage, dict):
        raise MalformedUsage("usage is not an object")
    return usage
