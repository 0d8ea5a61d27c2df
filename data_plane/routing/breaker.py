"""One deployment's health on this worker: its circuit breaker, Retry-After cooldown and choice weight.

Closed: chosen normally. Open: out of choice until its cooldown ends (the first
open lasts ``breaker_cooldown``; each failed probe doubles it, up to 8x; a
success resets it). Half-open: chosen only as a probe, one at a time; the
probe's success closes the breaker, its failure opens it again. A 429 is rate
limiting, not a fault: it only cools the deployment down (Retry-After, else
``cooldown_429``) and never counts toward the breaker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_plane.settings import RoutingSettings

CLOSED, OPEN, HALF_OPEN = 0, 1, 2  # also the breaker-state gauge's values
STATE_NAMES = ("closed", "open", "half_open")
MAX_DOUBLINGS = 3  # cooldown x1, x2, x4, x8
BUCKETS = 10  # the failure-rate window in buckets: O(1) memory whatever the traffic


class Window:
    """Attempts and failures over the last ``seconds``, in ``BUCKETS`` rolling buckets."""

    __slots__ = ("_epoch", "_failed", "_span", "_total")

    def __init__(self, seconds: float) -> None:
        self._span = seconds / BUCKETS
        self._epoch = [-1] * BUCKETS
        self._total = [0] * BUCKETS
        self._failed = [0] * BUCKETS

    def add(self, now: float, failed: bool) -> None:
        epoch = int(now / self._span)
        slot = epoch % BUCKETS
        if self._epoch[slot] != epoch:
            self._epoch[slot], self._total[slot], self._failed[slot] = epoch, 0, 0
        self._total[slot] += 1
        if failed:
            self._failed[slot] += 1

    def counts(self, now: float) -> tuple[int, int]:
        """(attempts, failures) in the window ending now."""
        oldest = int(now / self._span) - BUCKETS + 1
        total = failed = 0
        for i in range(BUCKETS):
            if self._epoch[i] >= oldest:
                total += self._total[i]
                failed += self._failed[i]
        return total, failed

    def clear(self) -> None:
        self._epoch = [-1] * BUCKETS


# A state change to publish: (model name, deployment name, new state).
Change = tuple[str, str, int]


class DeploymentHealth:
    """The mutable health of one (model, deployment) on this worker."""

    __slots__ = ("cool_until", "current", "failures", "level", "model", "name", "open_until", "probe",
                 "state", "window")  # fmt: skip

    def __init__(self, model: str, name: str, settings: RoutingSettings) -> None:
        self.model = model
        self.name = name
        self.state = CLOSED
        self.failures = 0  # consecutive
        self.level = 0  # failed probes since the breaker last closed (cooldown doublings)
        self.open_until = 0.0
        self.cool_until = 0.0  # Retry-After / 429 cooldown, separate from the breaker
        self.probe: object | None = None  # the plan holding the half-open probe slot
        self.current = 0  # smooth weighted round robin's running weight
        self.window = Window(settings.breaker_window)

    def available(self, now: float, changes: dict[tuple[str, str], int]) -> bool:
        """Whether a plan may be handed this deployment now (an open breaker past its cooldown turns half-open)."""
        if self.cool_until > now:
            return False
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if now < self.open_until:
                return False
            self._set(HALF_OPEN, changes)
        return self.probe is None

    def back_at(self, now: float) -> float:
        """When an unavailable deployment may be chosen again (a busy probe: in a second, a guess)."""
        if self.state == OPEN:
            return max(self.open_until, self.cool_until)
        if self.cool_until > now:
            return self.cool_until
        return now + 1.0

    def succeeded(self, now: float, plan: object, changes: dict[tuple[str, str], int]) -> None:
        self.failures = 0
        if self.probe is plan:
            self.probe = None
        if self.state == CLOSED:
            self.window.add(now, False)
        elif self.state == HALF_OPEN:  # a probe (or a request let through before it opened) came back fine
            self.level = 0
            self.probe = None
            self.window.clear()
            self._set(CLOSED, changes)
        # OPEN: an answer to a request handed out before the breaker opened proves little; the probe decides

    def failed(
        self, now: float, plan: object, settings: RoutingSettings, retry_after: float | None, rate_limited: bool,
        changes: dict[tuple[str, str], int],
    ) -> None:  # fmt: skip
        owner = self.probe is plan
        if owner:
            self.probe = None
        if rate_limited:
            wait = settings.cooldown_429 if retry_after is None else retry_after
            self.cool_until = max(self.cool_until, now + wait)
            return
        if retry_after is not None:
            self.cool_until = max(self.cool_until, now + retry_after)
        self.failures += 1
        if settings.breaker_failures <= 0:
            return
        if self.state == HALF_OPEN:
            if owner:  # the probe failed: open again, for longer
                self.level = min(self.level + 1, MAX_DOUBLINGS)
                self._open(now, settings, changes)
            return
        if self.state == OPEN:
            return
        self.window.add(now, True)
        if self.failures >= settings.breaker_failures:
            self._open(now, settings, changes)
            return
        total, failed = self.window.counts(now)
        if total >= settings.breaker_min_requests and failed >= settings.breaker_failure_rate * total:
            self._open(now, settings, changes)

    def release(self, plan: object) -> None:
        """Free the probe slot ``plan`` took and never reported on (the request ended otherwise)."""
        if self.probe is plan:
            self.probe = None

    def _open(self, now: float, settings: RoutingSettings, changes: dict[tuple[str, str], int]) -> None:
        self.open_until = now + settings.breaker_cooldown * (1 << self.level)
        self._set(OPEN, changes)

    def _set(self, state: int, changes: dict[tuple[str, str], int]) -> None:
        self.state = state
        changes[(self.model, self.name)] = state
