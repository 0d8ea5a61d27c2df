"""Prices for units other than tokens (issue 15), as users type them and as the API stores them.

- Seconds of input audio: users give USD per second ("0.0001", whisper-1's $0.006 a minute); the
  API stores micro-USD per million seconds, i.e. USD x 10^12 (exact: at most 12 decimals).
- Characters of input text: USD per million characters ("15"), like the token prices.
- The batch price percent: what batch work costs in percent of these prices (0..100; unset: 50).

Shared by ``odockctl model create|update|get`` and ``odockctl apply``: the same units in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from odock.v1 import common_pb2
from odockctl.apply.fields import Fields
from odockctl.values import ValueProblem, parse_usd, usd_amount

PICOS_PER_USD = 10**12
# The control plane's bound for every price (micro-USD per million units): $1 a second of audio.
MAX_PRICE_MICROS = 10**12
DEFAULT_BATCH_PERCENT = 50
# pricing: keys of an apply file (input/output/cached_input are USD per million tokens).
PRICING_KEYS = ("input", "output", "cached_input", "audio_second", "character", "batch_percent")


def parse_usd_per_second(text: str | float) -> int:
    """USD per second of audio ("0.0001") as micro-USD per million seconds (USD x 10^12), exactly."""
    amount, raw = usd_amount(text)
    scaled = amount * PICOS_PER_USD
    if scaled != scaled.to_integral_value():
        raise ValueProblem(f"USD per second has more than 12 decimal places: {raw!r}")
    if scaled > MAX_PRICE_MICROS:
        raise ValueProblem(f"USD per second must be at most 1: {raw!r}")
    return int(scaled)


def format_usd_per_second(micros_per_million_seconds: int) -> str:
    """The stored audio price as USD per second ("$0.0001")."""
    text = f"{Decimal(micros_per_million_seconds) / PICOS_PER_USD:.12f}".rstrip("0").rstrip(".")
    return f"${text}"


def parse_percent(text: str | int) -> int:
    """A whole percentage from 0 to 100."""
    if isinstance(text, bool):
        raise ValueProblem(f"expected a percentage, got {text!r}")
    try:
        value = int(str(text).strip().removesuffix("%"))
    except ValueError:
        raise ValueProblem(f"not a whole percentage: {text!r}") from None
    if not 0 <= value <= 100:
        raise ValueProblem(f"percentage must be from 0 to 100: {text!r}")
    return value


def units_text(p: common_pb2.Pricing) -> str:
    """The non-token prices and the batch percent, for ``model get``."""
    parts = []
    if p.per_million_audio_seconds_micros:
        parts.append(f"audio {format_usd_per_second(p.per_million_audio_seconds_micros)} per second")
    if p.per_million_characters_micros:
        parts.append(f"characters ${_usd(p.per_million_characters_micros)} per million")
    percent = p.batch_price_percent if p.HasField("batch_price_percent") else DEFAULT_BATCH_PERCENT
    default = "" if p.HasField("batch_price_percent") else " (default)"
    parts.append(f"batch {percent}%{default}")
    return " / ".join(parts)


def _usd(micros: int) -> str:
    text = f"{Decimal(micros) / 1_000_000:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


@dataclass(frozen=True)
class UnitPrices:
    """An apply file's non-token prices, in the API's units."""

    audio_second_micros: int = 0  # micro-USD per million seconds
    character_micros: int = 0  # micro-USD per million characters
    batch_percent: int | None = None  # None: the default (50)

    def key(self) -> tuple[int, int, int | None]:
        """What to compare with a model's current prices."""
        return (self.audio_second_micros, self.character_micros, self.batch_percent)

    def fill(self, pricing: common_pb2.Pricing) -> None:
        """Set these prices on ``pricing``."""
        pricing.per_million_audio_seconds_micros = self.audio_second_micros
        pricing.per_million_characters_micros = self.character_micros
        if self.batch_percent is not None:
            pricing.batch_price_percent = self.batch_percent


def current_key(p: common_pb2.Pricing) -> tuple[int, int, int | None]:
    """A model's current non-token prices, as ``UnitPrices.key`` gives them."""
    percent = p.batch_price_percent if p.HasField("batch_price_percent") else None
    return (p.per_million_audio_seconds_micros, p.per_million_characters_micros, percent)


def unit_prices(prices: Fields | None) -> UnitPrices:
    """The ``audio_second``, ``character`` and ``batch_percent`` keys of a ``pricing:`` mapping."""
    if prices is None:
        return UnitPrices()

    def get(key: str, parser: object) -> int | None:
        return prices.child(key).parse(parser) if prices.has(key) else None  # type: ignore[arg-type]

    return UnitPrices(
        audio_second_micros=get("audio_second", parse_usd_per_second) or 0,
        character_micros=get("character", parse_usd) or 0,
        batch_percent=get("batch_percent", parse_percent),
    )
