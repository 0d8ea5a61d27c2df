"""The change feed: one background reader of the change log per control-plane
process, fanning invalidations out to every Watch stream in revision order.

Wake-ups come from ``poke()`` (a local admin write just committed), from
PostgreSQL ``LISTEN odock_changes`` (a write on any replica) and from a slow
poll (a backstop for a lost notification). Each subscriber tracks the last
revision it delivered; whatever it did not get live (the replay before it
joined, a gap) it reads from the database, and a subscriber that falls too
far behind is told to Reset instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane.store import changes
from control_plane.store.db import is_postgres
from control_plane.store.tables import ChangeRow
from odock.v1 import node_pb2

log = logging.getLogger("odock.control_plane.changefeed")

CHANNEL = "odock_changes"
PAGE = 500
QUEUE_LIMIT = 1024
RETENTION = timedelta(hours=24)
PRUNE_EVERY_SECONDS = 3600.0
# The poll is only a backstop: poke() and LISTEN carry changes within milliseconds.
POLL_SECONDS = 5.0
# On PostgreSQL without a LISTEN connection, other replicas' changes arrive only by polling.
UNLISTENED_POLL_SECONDS = 0.5
RECONNECT_MIN_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 10.0


class FeedSettings(Protocol):
    """What the feed needs from the control plane's settings."""

    @property
    def heartbeat_seconds(self) -> float: ...


class FeedClosed(Exception):
    """The feed was stopped (the control plane is shutting down)."""


def event_from_row(row: ChangeRow) -> node_pb2.WatchEvent:
    """A change-log row as the WatchEvent the data planes receive."""
    inv = node_pb2.Invalidation(
        kind=node_pb2.InvalidationKind.ValueType(row.kind),
        org_id=row.org_id,
        key_id=row.key_id or "",
        model_name=row.model_name or "",
        credential_id=row.credential_id or "",
    )
    return node_pb2.WatchEvent(revision=row.revision, invalidation=inv)


def _heartbeat(revision: int) -> node_pb2.WatchEvent:
    ts = Timestamp()
    ts.GetCurrentTime()
    return node_pb2.WatchEvent(revision=revision, heartbeat=node_pb2.Heartbeat(time=ts))


def _reset(revision: int, reason: str) -> node_pb2.WatchEvent:
    return node_pb2.WatchEvent(revision=revision, reset=node_pb2.Reset(reason=reason))


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``; TimeoutError when it stays unset.

    Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that races
    the event being set, and an owner awaiting the cancelled task would hang.
    """
    async with asyncio.timeout(seconds):
        await event.wait()


class _Subscriber:
    """One Watch stream's mailbox: live events offered by the feed, bounded."""

    def __init__(self, limit: int) -> None:
        self.events: collections.deque[node_pb2.WatchEvent] = collections.deque()
        self.limit = limit
        self.overflowed = False
        self.wake = asyncio.Event()

    def offer(self, event: node_pb2.WatchEvent) -> None:
        if self.overflowed:
            return
        if len(self.events) >= self.limit:
            # Too slow to keep up: drop the backlog, the stream will Reset.
            self.events.clear()
            self.overflowed = True
        else:
            self.events.append(event)
        self.wake.set()


class ChangeFeed:
    """Reads the change log once per process and fans it out to Watch streams."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        settings: FeedSettings,
        *,
        poll_seconds: float | None = None,
        queue_limit: int = QUEUE_LIMIT,
        retention: timedelta = RETENTION,
        prune_every_seconds: float = PRUNE_EVERY_SECONDS,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._engine = engine
        self._heartbeat_seconds = float(settings.heartbeat_seconds)
        self._poll_seconds = poll_seconds if poll_seconds is not None else POLL_SECONDS
        self._postgres = is_postgres(engine)
        self._queue_limit = queue_limit
        self._retention = retention
        self._prune_every = prune_every_seconds
        self._last = 0
        self._subscribers: set[_Subscriber] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closed = False
        self._listening = asyncio.Event()
        self._last_read: float | None = None

    @property
    def latest_revision(self) -> int:
        """The highest revision this feed has read and fanned out."""
        return self._last

    @property
    def subscriber_count(self) -> int:
        """Watch streams subscribed now (a metrics gauge)."""
        return len(self._subscribers)

    @property
    def last_read(self) -> float | None:
        """``time.monotonic()`` of the last successful read of the change log (a metrics gauge)."""
        return self._last_read

    @property
    def listening(self) -> asyncio.Event:
        """Set while the PostgreSQL LISTEN connection is established (tests wait on it)."""
        return self._listening

    async def start(self) -> None:
        """Read the current revision and start the background reader (and listener on PostgreSQL)."""
        if self._started:
            return
        async with self._sessionmaker() as session:
            self._last = await changes.current_revision(session)
        self._last_read = time.monotonic()
        self._started = True
        self._tasks.append(asyncio.create_task(self._run(), name="odock-changefeed"))
        if self._postgres:
            self._tasks.append(asyncio.create_task(self._listen(), name="odock-changefeed-listen"))

    async def stop(self) -> None:
        """Stop the background tasks and end every open subscription."""
        self._closed = True
        for sub in self._subscribers:
            sub.wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()

    def poke(self) -> None:
        """Ask the reader to look for new changes now (call after committing one)."""
        self._wake.set()

    # -- the reader -------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        backoff = RECONNECT_MIN_SECONDS
        while not self._closed:
            try:
                await _wait(self._wake, self._poll_interval())
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._read_new()
                self._last_read = time.monotonic()
                if loop.time() >= next_prune:
                    await self._prune()
                    next_prune = loop.time() + self._prune_every
                backoff = RECONNECT_MIN_SECONDS
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the feed
                log.warning("change feed: reading the change log failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
                self._wake.set()

    def _poll_interval(self) -> float:
        if self._postgres and not self._listening.is_set():
            return min(self._poll_seconds, UNLISTENED_POLL_SECONDS)
        return self._poll_seconds

    async def _read_new(self) -> None:
        while True:
            async with self._sessionmaker() as session:
                rows = await changes.changes_after(session, self._last, PAGE)
            for row in rows:
                self._publish(event_from_row(row))
            if len(rows) < PAGE:
                return

    def _publish(self, event: node_pb2.WatchEvent) -> None:
        # Synchronous on purpose: at every await point, each subscriber has been
        # offered exactly the events up to self._last.
        if event.revision <= self._last:
            return
        self._last = event.revision
        for sub in self._subscribers:
            sub.offer(event)

    async def _prune(self) -> None:
        cutoff = datetime.now(UTC) - self._retention
        async with self._sessionmaker() as session, session.begin():
            removed = await changes.prune(session, cutoff)
        if removed:
            log.info("change feed: pruned %d changes older than %s", removed, cutoff.isoformat())

    async def _listen(self) -> None:
        conninfo = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = RECONNECT_MIN_SECONDS
        while not self._closed:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    backoff = RECONNECT_MIN_SECONDS
                    # Anything committed while we were not listening is read now.
                    self._wake.set()
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                log.warning("change feed: LISTEN connection lost (%s); reconnecting", type(exc).__name__)
            self._listening.clear()
            self._wake.set()  # re-read now, and poll faster until listening again
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    # -- subscriptions ----------------------------------------------------

    async def subscribe(self, after_revision: int) -> AsyncGenerator[node_pb2.WatchEvent, None]:
        """Events after ``after_revision`` (0 = from now), live, until the feed stops.

        Raises FeedClosed when the feed is (or gets) stopped.
        """
        if self._closed or not self._started:
            raise FeedClosed("the change feed is not running")
        sub = _Subscriber(self._queue_limit)
        self._subscribers.add(sub)
        try:
            # Registered before any await: every change after self._last is offered live.
            if after_revision == 0:
                pos = self._last
                yield _heartbeat(pos)
            else:
                pos = after_revision
                async with self._sessionmaker() as session:
                    current = await changes.current_revision(session)
                    first = await changes.changes_after(session, after_revision, 1)
                if after_revision > current:
                    pos = max(current, self._last)
                    yield _reset(pos, f"after_revision {after_revision} is ahead of the log ({current})")
                elif after_revision < current and (not first or first[0].revision != after_revision + 1):
                    # The next change was pruned: replaying would leave a hole.
                    pos = max(current, self._last)
                    yield _reset(pos, f"after_revision {after_revision} is older than the log retains")
            async for event in self._follow(sub, pos):
                yield event
        finally:
            self._subscribers.discard(sub)

    async def _follow(self, sub: _Subscriber, pos: int) -> AsyncIterator[node_pb2.WatchEvent]:
        # Every event yielded here (invalidation or reset) moves pos to its revision.
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._heartbeat_seconds
        # Catch up from the database to what the feed had read when we joined.
        async for event in self._catch_up(sub, pos, self._last):
            pos = event.revision
            yield event
        while True:
            if self._closed:
                raise FeedClosed("the control plane is shutting down")
            if sub.overflowed:
                sub.events.clear()
                sub.overflowed = False
                pos = self._last
                yield _reset(pos, "watcher fell too far behind")
                continue
            if sub.events:
                event = sub.events.popleft()
                if event.revision <= pos:
                    continue
                if event.revision > pos + 1:
                    sub.events.appendleft(event)
                    async for missed in self._catch_up(sub, pos, event.revision - 1):
                        pos = missed.revision
                        yield missed
                    continue
                pos = event.revision
                yield event
                continue
            now = loop.time()
            if now >= next_beat:
                next_beat = now + self._heartbeat_seconds
                yield _heartbeat(pos)
                continue
            sub.wake.clear()
            try:
                await _wait(sub.wake, next_beat - now)
            except TimeoutError:
                pass

    async def _catch_up(self, sub: _Subscriber, after: int, upto: int) -> AsyncIterator[node_pb2.WatchEvent]:
        """Changes (after, upto] from the database; a Reset if any of them is gone."""
        pos = after
        while pos < upto:
            async with self._sessionmaker() as session:
                rows = await changes.changes_after(session, pos, min(PAGE, upto - pos))
            if not rows or rows[0].revision != pos + 1:
                break
            for row in rows:
                if row.revision != pos + 1 or row.revision > upto:
                    break
                pos = row.revision
                yield event_from_row(row)
            else:
                continue
            break
        if pos < upto:
            # Pruned (or never readable): replaying would leave a hole.
            sub.events.clear()
            yield _reset(self._last, "changes were pruned before they could be delivered")
