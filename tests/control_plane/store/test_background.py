"""BackgroundDatabase's worker threads: their CPU scheduling policy (idle_cpu) and its fallback."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import pytest

from control_plane.store.background import BackgroundDatabase

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")


def _policy_and_thread() -> tuple[int, int]:
    return os.sched_getscheduler(0), threading.get_native_id()


async def test_idle_cpu_puts_every_worker_thread_under_sched_idle_and_not_the_caller(
    migrated_db_url: str,
) -> None:
    store = BackgroundDatabase.open(migrated_db_url, 2, idle_cpu=True)
    try:
        # Two calls at once so that both workers start (a pool only adds threads it needs).
        started = threading.Barrier(2)

        def both() -> tuple[int, int]:
            started.wait(timeout=10)
            return _policy_and_thread()

        results = await asyncio.gather(store.call(both), store.call(both))
        assert {policy for policy, _ in results} == {os.SCHED_IDLE}
        assert len({tid for _, tid in results}) == 2
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the event loop's thread is untouched
        # Transactions run in the same threads.
        policy = await store.transaction(lambda conn: os.sched_getscheduler(0))
        assert policy == os.SCHED_IDLE
    finally:
        store.close()


async def test_by_default_worker_threads_keep_normal_priority(migrated_db_url: str) -> None:
    store = BackgroundDatabase.open(migrated_db_url, 1)
    try:
        policy, _ = await store.call(_policy_and_thread)
        assert policy == os.SCHED_OTHER
    finally:
        store.close()


async def test_a_refused_policy_change_is_logged_once_and_the_work_still_runs(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(pid: int, policy: int, param: os.sched_param) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    caplog.set_level(logging.WARNING, logger="odock.control_plane.store")
    store = BackgroundDatabase.open(migrated_db_url, 2, idle_cpu=True)
    try:
        started = threading.Barrier(2)

        def both() -> int:
            started.wait(timeout=10)
            return os.sched_getscheduler(0)

        assert list(await asyncio.gather(store.call(both), store.call(both))) == [os.SCHED_OTHER] * 2
    finally:
        store.close()
    warnings = [r.getMessage() for r in caplog.records if "SCHED_IDLE" in r.getMessage()]
    assert warnings == [
        "usage ingest threads keep normal CPU priority: SCHED_IDLE unavailable ([Errno 1] Operation not permitted)"
    ]
