"""Coarse deadlines for the request path: one loop timer per due slot, not one per wait.

Every bounded wait on the request path (the upstream's head, each silence of its body, a
client's request head) used to arm its own loop timer. Under uvloop a timer is a libuv handle
made, started, stopped and closed: with ``asyncio.timeout`` around it, about 7.7 µs per wait, so
a streamed answer paid it on each of its reads. Waits that end in time are by far the common
case, so deadlines here are kept in 10 ms slots (a dict per slot) and the loop holds a timer
only for the earliest slot due: a wait adds itself to its slot and removes itself when it ends
(about 0.8 µs together). An expiry fires up to one slot (10 ms) after its deadline.

Two ways to bound a wait:

- ``wheel().add(when, key, callback)``: the callback runs (with its key) once the deadline
  passed, unless ``discard`` (on the same wheel) came first; e.g. failing the future a reader
  awaits with ``TimeoutError`` (:func:`fail_with_timeout`, ``upstream/response.py``);
- :class:`timeout_at`: ``asyncio.timeout_at`` with the same contract (the block's task is
  cancelled at the deadline and the block raises ``TimeoutError``), for waits that are not one
  future (connecting, then the head).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import weakref
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Any, Self

log = logging.getLogger("odock.data_plane")

NEVER = 1e12  # loop seconds (about 31,700 years): a later deadline is none
SLOTS_PER_SECOND = 100  # 10 ms: well under any timeout the gateway has (the shortest are 0.1 s)

Callback = Callable[[Any], None]


class Wheel:
    """The deadlines of one event loop, by slot (``int(when * SLOTS_PER_SECOND) + 1``)."""

    __slots__ = ("_due", "_handle", "_handle_slot", "_loop", "_slots", "fired")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, dict[Hashable, Callback]] = {}
        self._due: list[int] = []  # slot numbers with entries (a removed slot lingers until due)
        self._handle: asyncio.TimerHandle | None = None
        self._handle_slot = 0
        self.fired = 0  # expiries run (tests, diagnostics)

    def add(self, when: float, key: Hashable, callback: Callback) -> int:
        """Run ``callback(key)`` at or after loop time ``when``; the slot, for :meth:`discard`.

        A deadline past ``NEVER`` (infinity included) never fires: slot 0, nothing kept.
        """
        if not when < NEVER:
            return 0
        slot = int(when * SLOTS_PER_SECOND) + 1
        entries = self._slots.get(slot)
        if entries is None:
            self._slots[slot] = {key: callback}
            heapq.heappush(self._due, slot)
            handle = self._handle
            if handle is None or slot < self._handle_slot:
                if handle is not None:
                    handle.cancel()
                self._arm(slot)
        else:
            entries[key] = callback
        return slot

    def discard(self, slot: int, key: Hashable) -> None:
        """Forget ``key``'s deadline in ``slot`` (nothing if it fired or was discarded)."""
        entries = self._slots.get(slot)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                del self._slots[slot]

    def pending(self) -> int:
        """Deadlines not yet fired nor discarded."""
        return sum(len(entries) for entries in self._slots.values())

    def _arm(self, slot: int) -> None:
        self._handle_slot = slot
        self._handle = self._loop.call_at(slot / SLOTS_PER_SECOND, self._run)

    def _run(self) -> None:
        self._handle = None
        # A loop timer may fire a hair before its time (uvloop counts whole milliseconds).
        now = int(self._loop.time() * SLOTS_PER_SECOND + 0.01)
        due, slots = self._due, self._slots
        while due and due[0] <= now:
            entries = slots.pop(heapq.heappop(due), None)
            if entries:
                for key, callback in entries.items():
                    self.fired += 1
                    try:
                        callback(key)
                    except Exception:  # one broken expiry must not keep the others from firing
                        log.exception("a deadline's expiry failed")
        while due and due[0] not in slots:  # slots emptied by discards: no need to wake for them
            heapq.heappop(due)
        if self._handle is not None:  # an expiry above added a deadline (and armed for it)
            self._handle.cancel()
            self._handle = None
        if due:
            self._arm(due[0])


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wheel] = weakref.WeakKeyDictionary()
_current: tuple[asyncio.AbstractEventLoop | None, Wheel | None] = (None, None)  # the last one asked for


def wheel() -> Wheel:
    """The running loop's wheel (made on first use).

    A wait keeps the wheel it was added to and discards itself there: several loops (tests,
    threads) each have their own.
    """
    global _current
    loop = asyncio.get_running_loop()
    owner, found = _current
    if owner is loop and found is not None:
        return found
    found = _wheels.get(loop)
    if found is None:
        found = _wheels[loop] = Wheel(loop)
    _current = (loop, found)
    return found


def fail_with_timeout(future: asyncio.Future[Any]) -> None:
    """An expiry callback: the awaited future fails with TimeoutError (unless it is done)."""
    if not future.done():
        future.set_exception(TimeoutError())


class timeout_at:
    """``async with timeout_at(when):`` as ``asyncio.timeout_at``, on the wheel.

    At the deadline the block's task is cancelled; leaving the block turns that cancellation into
    ``TimeoutError`` (a cancellation from elsewhere stays one, as with ``asyncio.Timeout``).
    """

    __slots__ = ("_cancelling", "_expired", "_slot", "_task", "_wheel", "_when")

    def __init__(self, when: float) -> None:
        self._when = when
        self._expired = False
        self._slot = 0
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._wheel: Wheel | None = None

    async def __aenter__(self) -> Self:
        task = self._task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout_at should be used inside a task")
        self._cancelling = task.cancelling()
        found = self._wheel = wheel()
        self._slot = found.add(self._when, self, _expire_scope)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._expired:
            if self._wheel is not None:
                self._wheel.discard(self._slot, self)
            return
        assert self._task is not None
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def expired(self) -> bool:
        """Whether the deadline passed inside the block."""
        return self._expired


def _expire_scope(scope: timeout_at) -> None:
    task = scope._task
    if task is not None and not task.done():
        scope._expired = True
        task.cancel()
