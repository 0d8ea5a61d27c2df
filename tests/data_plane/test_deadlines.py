"""The deadline wheel (data_plane/deadlines.py): expiries fire once, late by at most a slot, never
for a wait that ended; ``timeout_at`` keeps ``asyncio.timeout_at``'s contract."""

from __future__ import annotations

import asyncio
import math

import pytest
import uvloop

from data_plane import deadlines
from data_plane.deadlines import SLOTS_PER_SECOND, fail_with_timeout, timeout_at

SLOT = 1 / SLOTS_PER_SECOND


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    def runner(coro):  # type: ignore[no-untyped-def]
        if request.param == "uvloop":
            return uvloop.run(coro)
        return asyncio.run(coro)

    return runner


def test_an_expiry_fires_after_its_deadline_and_within_a_slot_or_so(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        wheel = deadlines.wheel()
        fired: dict[int, float] = {}
        start = loop.time()
        wanted = {i: start + 0.02 + 0.013 * i for i in range(8)}
        for i, when in wanted.items():
            wheel.add(when, i, lambda key: fired.__setitem__(key, loop.time()))
        await asyncio.sleep(0.25)
        assert sorted(fired) == list(range(8))
        assert wheel.pending() == 0
        return [fired[i] - wanted[i] for i in range(8)]

    lates = run(main())
    assert all(late >= -0.0015 for late in lates), lates  # the loop's clock counts whole milliseconds
    assert all(late <= SLOT + 0.03 for late in lates), lates  # a slot, plus a busy machine's slack


def test_a_discarded_deadline_never_fires_and_leaves_nothing(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wheel = deadlines.wheel()
        fired: list[int | str] = []
        slots = [wheel.add(loop.time() + 0.03, i, fired.append) for i in range(100)]
        for i, slot in enumerate(slots):
            if i % 2:
                wheel.discard(slot, i)
        await asyncio.sleep(0.1)
        assert sorted(int(k) for k in fired) == list(range(0, 100, 2))
        slot = wheel.add(loop.time() + 0.02, "x", fired.append)
        wheel.discard(slot, "x")
        wheel.discard(slot, "x")  # twice: nothing
        await asyncio.sleep(0.06)
        assert "x" not in fired
        assert wheel.pending() == 0

    run(main())


def test_an_earlier_deadline_added_later_still_fires_first(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wheel = deadlines.wheel()
        order: list[str] = []
        wheel.add(loop.time() + 10, "late", order.append)
        wheel.add(loop.time() + 0.02, "early", order.append)
        await asyncio.sleep(0.08)
        assert order == ["early"]
        assert wheel.pending() == 1

    run(main())


def test_an_unbounded_deadline_is_kept_nowhere(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        wheel = deadlines.wheel()
        assert wheel.add(math.inf, "never", print) == 0
        assert wheel.add(math.nan, "never", print) == 0
        assert wheel.pending() == 0

    run(main())


def test_a_failing_expiry_does_not_stop_the_others(run, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        wheel = deadlines.wheel()
        seen: list[str] = []

        def broken(_key: object) -> None:
            raise RuntimeError("bug")

        when = loop.time() + 0.02
        wheel.add(when, "a", broken)
        wheel.add(when, "b", seen.append)
        await asyncio.sleep(0.08)
        return seen

    assert run(main()) == ["b"]
    assert "a deadline's expiry failed" in caplog.text


def test_each_loop_has_its_own_wheel() -> None:
    async def grab() -> deadlines.Wheel:
        return deadlines.wheel()

    first, second = asyncio.run(grab()), asyncio.run(grab())
    assert first is not second


def test_fail_with_timeout_fails_a_waiting_future_once(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        deadlines.wheel().add(loop.time() + 0.02, fut, fail_with_timeout)
        with pytest.raises(TimeoutError):
            await fut
        done: asyncio.Future[None] = loop.create_future()
        done.set_result(None)
        fail_with_timeout(done)  # already done: untouched
        assert done.result() is None

    run(main())


def test_timeout_at_raises_timeout_error_at_its_deadline(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            async with timeout_at(start + 0.05) as scope:
                await asyncio.sleep(5)
        assert scope.expired()
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the cancellation it made is taken back
        return loop.time() - start

    took = run(main())
    assert 0.048 <= took <= 0.05 + SLOT + 0.05


def test_timeout_at_leaves_a_block_that_ends_in_time_alone(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with timeout_at(loop.time() + 0.05) as scope:
            await asyncio.sleep(0.001)
        assert not scope.expired()
        assert deadlines.wheel().pending() == 0
        await asyncio.sleep(0.1)  # nothing fires later into this task
        assert not scope.expired()

    run(main())


def test_timeout_at_keeps_an_outside_cancellation_a_cancellation(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def inner() -> None:
            async with timeout_at(loop.time() + 10):
                await asyncio.sleep(5)

        task = asyncio.create_task(inner())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert deadlines.wheel().pending() == 0

    run(main())


def test_timeout_at_in_the_past_expires_at_once(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with timeout_at(loop.time() - 1):
                await asyncio.sleep(1)

    run(main())


def test_an_expiry_that_adds_a_deadline_leaves_one_timer_and_the_new_deadline_fires(run) -> None:  # type: ignore[no-untyped-def]
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        wheel = deadlines.wheel()
        seen: list[str] = []

        def chain(key: str) -> None:
            seen.append(key)
            if key == "first":
                wheel.add(loop.time() + 0.02, "second", chain)

        wheel.add(loop.time() + 0.02, "first", chain)
        await asyncio.sleep(0.12)
        assert wheel._handle is None  # nothing left to wake for
        return seen

    assert run(main()) == ["first", "second"]
