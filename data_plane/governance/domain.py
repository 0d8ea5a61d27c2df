"""What the data plane keeps of governance state: grants, routes, model summaries, link status."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from odock.egress import DEFAULT_POLICY, EgressPolicy

if TYPE_CHECKING:  # importing data_plane.upstream here would cycle back (errors -> providers -> domain)
    from data_plane.upstream.network import Network


class KeyRejected(Exception):
    """The control plane refused the key (unknown, revoked or expired)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ControlPlaneUnavailable(Exception):
    """No answer could be had from the control plane and nothing usable is cached."""


class RouteUnusable(Exception):
    """The route exists but its credential cannot be used (sealing or decryption failed)."""


@dataclass(frozen=True, slots=True)
class GrantLimits:
    """The limits that apply to a key: its own and its org's effective ones (None: no limit)."""

    key_requests_per_minute: int | None = None
    key_tokens_per_minute: int | None = None
    key_budget_micros: int | None = None
    org_requests_per_minute: int | None = None
    org_tokens_per_minute: int | None = None
    org_monthly_token_quota: int | None = None
    org_monthly_spend_cap_micros: int | None = None


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """A valid key's permissions, as cached."""

    org_id: str
    org_name: str
    key_id: str
    all_models: bool
    models: frozenset[str]
    expire_at: float | None  # unix seconds; None = never
    default_models: Mapping[str, str]
    fail_closed: bool
    limits: GrantLimits = field(default_factory=GrantLimits)

    def allows(self, model_name: str) -> bool:
        """Whether this key may use ``model_name``."""
        return self.all_models or model_name in self.models

    def expired(self, now: float | None = None) -> bool:
        """Whether the key's expiry (or rotation grace) has passed."""
        return self.expire_at is not None and (time.time() if now is None else now) >= self.expire_at


@dataclass(frozen=True, slots=True)
class Pricing:
    """A model's prices in micro-USD per million units (cost in pico-USD = units * price).

    Units: tokens; seconds of input audio (records count milliseconds); characters of input
    text. Batch work costs ``batch_price_percent`` of these (OpenAI's Batch API: 50).
    """

    input_per_mtok_micros: int = 0
    output_per_mtok_micros: int = 0
    cached_input_per_mtok_micros: int | None = None  # None: cached input costs the input price
    per_million_audio_seconds_micros: int = 0
    per_million_characters_micros: int = 0
    batch_price_percent: int = 50


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream behind a model (docs/routing.md): where, with which credential, how much traffic."""

    name: str
    base_url: str
    upstream_slug: str
    timeout: float  # first-byte timeout, seconds
    credential_id: str
    secret: bytes = field(repr=False)
    weight: int = 1  # share among the healthy deployments of the same priority
    priority: int = 0  # lower first
    network: Network | None = None  # its own proxy / CA bundle; None: the node's environment


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how to call upstream for one (org, model)."""

    org_id: str
    model_id: str
    model_name: str
    family: int
    upstream_slug: str
    base_url: str
    timeout: float
    enabled: bool
    credential_id: str
    secret: bytes = field(repr=False)
    pricing: Pricing = field(default_factory=Pricing)
    # Where this route's upstream connections may go (the control plane's ODOCK_EGRESS_ALLOW).
    egress: EgressPolicy = DEFAULT_POLICY
    # The model registry (odock.v1.Model; docs/openai-compatibility.md "Model registry and opt-in").
    # A vllm-, anthropic- or gemini-family model is served through OpenAI's /v1/chat/completions
    # only when set (vLLM passed through, the others translated); an openai-family model always is.
    openai_compatible: bool = False
    context_window: int = 0  # tokens; 0 unknown
    max_output_tokens: int = 0  # output cap when the request sets none; 0: the gateway default
    # Capability names (data_plane.providers.translator: TOOLS, VISION, JSON_OUTPUT, STREAMING).
    capabilities: frozenset[str] = frozenset()
    # Every deployment (the fields above repeat the first one's). Empty: the fields above are
    # the model's one deployment (a route built by a test, or from a control plane that
    # predates deployments).
    deployments: tuple[Deployment, ...] = ()
    fallbacks: tuple[str, ...] = ()  # other models of the org to try when every deployment failed


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model of an org, for model listings."""

    name: str
    family: int
    enabled: bool
    created: int
    openai_compatible: bool = False  # as Route.openai_compatible
    context_window: int = 0
    capabilities: frozenset[str] = frozenset()


@dataclass
class Link:
    """The state of this node's connection to the control plane (written by the watcher)."""

    connected: bool = False
    ever_connected: bool = False
    # monotonic time of the last event on the watch stream; invalidations up to then are applied
    last_contact: float | None = None
    revision: int = 0
    flushes: int = 0
    reconnects: int = 0

    def staleness(self, now: float) -> float | None:
        """Seconds since the last watch event (None: never heard from the control plane)."""
        return None if self.last_contact is None else max(0.0, now - self.last_contact)
