"""Parsing and formatting of the values users type: money, durations,
families, policies, labels, names, URLs, timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from odock.v1 import common_pb2

MICROS_PER_USD = 1_000_000
_INT64_MAX = 2**63 - 1
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ValueProblem(ValueError):
    """A value that does not parse; the message says why (callers add where)."""


def families() -> dict[str, int]:
    """Family names users type ("openai", ...) -> enum values; grows with the proto."""
    return {
        name.removeprefix("PROVIDER_FAMILY_").lower(): value
        for name, value in common_pb2.ProviderFamily.items()
        if value != common_pb2.PROVIDER_FAMILY_UNSPECIFIED
    }


def parse_family(text: str) -> int:
    """A provider family by name."""
    known = families()
    value = known.get(text.strip().lower())
    if value is None:
        raise ValueProblem(f"unknown family {text!r} (expected one of: {', '.join(known)})")
    return value


def family_name(value: int) -> str:
    """The short lowercase name of a family enum value."""
    for name, number in families().items():
        if number == value:
            return name
    return "unspecified" if value == 0 else str(value)


OUTAGE_POLICIES = {
    "fail_open": common_pb2.OUTAGE_POLICY_FAIL_OPEN,
    "fail_closed": common_pb2.OUTAGE_POLICY_FAIL_CLOSED,
}


def parse_outage_policy(text: str) -> int:
    """An outage policy by name (fail_open, fail_closed)."""
    value = OUTAGE_POLICIES.get(text.strip().lower().replace("-", "_"))
    if value is None:
        raise ValueProblem(f"unknown outage policy {text!r} (expected fail_open or fail_closed)")
    return value


def outage_policy_name(value: int) -> str:
    """Name of an outage policy; unspecified is documented as fail_open."""
    for name, number in OUTAGE_POLICIES.items():
        if number == value:
            return name
    return "fail_open" if value == 0 else str(value)


def usd_amount(text: str | float) -> tuple[Decimal, str]:
    """A finite, non-negative decimal USD amount ("0.15", "$2", 0.5) and the text it was read from."""
    if isinstance(text, bool):
        raise ValueProblem(f"expected a USD amount, got {text!r}")
    raw = repr(text) if isinstance(text, float) else str(text)
    try:
        amount = Decimal(raw.strip().removeprefix("$"))
    except InvalidOperation:
        raise ValueProblem(f"not a USD amount: {raw!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueProblem(f"USD amount must be a finite, non-negative number: {raw!r}")
    return amount, raw


def parse_usd(text: str | float) -> int:
    """A decimal USD amount ("0.15") as exact micro-USD; at most 6 decimals."""
    amount, raw = usd_amount(text)
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueProblem(f"USD amount has more than 6 decimal places: {raw!r}")
    if micros > _INT64_MAX:
        raise ValueProblem(f"USD amount too large: {raw!r}")
    return int(micros)


def format_usd(micros: int) -> str:
    """Micro-USD as a decimal string without trailing zeros past the cents."""
    text = f"{Decimal(micros) / MICROS_PER_USD:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def parse_count(text: str | int) -> int:
    """A non-negative integer (limits, quotas)."""
    if isinstance(text, bool):
        raise ValueProblem(f"expected a whole number, got {text!r}")
    try:
        value = int(str(text).replace("_", "")) if not isinstance(text, int) else text
    except ValueError:
        raise ValueProblem(f"not a whole number: {text!r}") from None
    if value < 0 or value > _INT64_MAX:
        raise ValueProblem(f"out of range: {text!r}")
    return value


# A model's capability names (odock.v1.ModelCapabilities fields), in field order.
CAPABILITIES = ("tools", "vision", "json_output", "streaming")


def parse_capabilities(value: str | list[object]) -> list[str]:
    """``tools,vision`` (or a list of names; ``none`` or empty: none) -> the names, in field order."""
    items = [str(v).strip() for v in value] if isinstance(value, list) else value.split(",")
    names = {item.strip() for item in items if item.strip()}
    if names == {"none"}:
        return []
    unknown = sorted(n for n in names if n not in CAPABILITIES)
    if unknown:
        raise ValueProblem(
            f"unknown capability {unknown[0][:40]!r} (expected {', '.join(CAPABILITIES)} or none)"
        )
    return [name for name in CAPABILITIES if name in names]


def parse_duration_ms(text: str) -> int:
    """A duration such as 30s, 5m, 24h, 1h30m, 250ms, 7d, in milliseconds."""
    compact = str(text).strip().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact):
        raise ValueProblem(f"not a duration: {text!r} (examples: 30s, 5m, 24h, 1h30m)")
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_RE.findall(compact))


def format_duration_ms(ms: int) -> str:
    """Milliseconds as the shortest of 1h30m / 45s / 250ms style text."""
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s", "ms"):
        count, ms = divmod(ms, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_timestamp(text: str | datetime) -> datetime:
    """An RFC 3339 timestamp with an offset (or Z), or a plain date meaning 00:00 UTC."""
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(str(text).strip())
        except ValueError:
            raise ValueProblem(f"not an RFC 3339 timestamp: {text!r}") from None
    if value.tzinfo is None:
        if isinstance(text, str) and "T" in text:
            raise ValueProblem(f"timestamp needs a UTC offset or Z: {text!r}")
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_label(text: str) -> tuple[str, str]:
    """A KEY=VALUE pair."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueProblem(f"expected KEY=VALUE, got {text!r}")
    return key, value


def check_name(text: str, what: str) -> str:
    """An org/credential/key name: [a-z0-9][a-z0-9._-]{0,62}."""
    if not isinstance(text, str) or not NAME_RE.fullmatch(text):
        raise ValueProblem(f"invalid {what} name {text!r} (lowercase letters, digits, '.', '_', '-'; max 63)")
    return text


def check_model_name(text: str) -> str:
    """A model name: 1..256 printable characters without '/', '?', '#' or whitespace."""
    if not isinstance(text, str) or not 1 <= len(text) <= 256:
        raise ValueProblem(f"invalid model name {text!r} (1 to 256 characters)")
    bad = [c for c in text if c in "/?#" or c.isspace() or not c.isprintable()]
    if bad:
        raise ValueProblem(f"invalid model name {text!r}: character {bad[0]!r} not allowed")
    return text


def check_base_url(text: str) -> str:
    """An upstream base URL: http(s), a host, no userinfo, query or fragment."""
    if not isinstance(text, str) or not text:
        raise ValueProblem("base URL must be a non-empty string")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueProblem(f"malformed base URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueProblem(f"malformed base URL {text!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueProblem(f"malformed base URL {text!r}: no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueProblem(f"malformed base URL {text!r}: userinfo not allowed")
    if parts.query or "?" in text:
        raise ValueProblem(f"malformed base URL {text!r}: query not allowed")
    if parts.fragment or "#" in text:
        raise ValueProblem(f"malformed base URL {text!r}: fragment not allowed")
    if any(c.isspace() for c in text):
        raise ValueProblem(f"malformed base URL {text!r}: whitespace not allowed")
    del port
    return text
