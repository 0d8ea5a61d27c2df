"""Built-in tiers (named presets of org limits) and the effective-limits merge."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class LimitSet:
    """Org-level limits; ``None`` means no limit at this level."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_quota: int | None = None
    monthly_spend_cap_micros: int | None = None

    def merged_over(self, base: LimitSet) -> LimitSet:
        """These values where set, ``base``'s elsewhere (per-org overrides over a tier)."""
        return replace(
            base, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        )


LIMIT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LimitSet))


@dataclass(frozen=True)
class Tier:
    """A named preset of limits."""

    name: str
    description: str
    limits: LimitSet


# A self-hosted operator creating an org expects no limits they didn't ask for;
# "free" (the product's 100K-tokens, no-spend tier) is one explicit choice away.
DEFAULT_TIER = "custom"

TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier(
            "free",
            "100,000 tokens a month, no paid spend, modest rates",
            LimitSet(
                requests_per_minute=60,
                tokens_per_minute=20_000,
                monthly_token_quota=100_000,
                monthly_spend_cap_micros=0,
            ),
        ),
        Tier(
            "standard",
            "production rates, 50M tokens and USD 1,000 a month",
            LimitSet(
                requests_per_minute=1_000,
                tokens_per_minute=500_000,
                monthly_token_quota=50_000_000,
                monthly_spend_cap_micros=1_000_000_000,
            ),
        ),
        Tier("enterprise", "no limits unless overridden per org", LimitSet()),
        Tier("custom", "only the per-org limits apply", LimitSet()),
    )
}


def effective_limits(tier: str, overrides: LimitSet) -> LimitSet:
    """The tier's limits merged with the org's overrides (an unknown tier contributes none)."""
    base = TIERS[tier].limits if tier in TIERS else LimitSet()
    return overrides.merged_over(base)
