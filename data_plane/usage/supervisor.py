"""Background tasks that survive their own bugs: restarted with backoff, each failure logged and counted.

``supervise(name, run, restarts)`` runs ``run()`` until it returns or is
cancelled; when it raises, the failure is logged at ERROR (one line, the
exception's type and message), counted in ``restarts[name]``, and ``run()``
is started again after a delay that doubles from ``first`` up to ``cap`` and
goes back to ``first`` once a run lasted ``healthy`` seconds. A bug in a
background loop then costs a pause, not the feature for the rest of the
process's life.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

log = logging.getLogger("odock.data_plane.usage")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    restarts: Counter[str],
    *,
    first: float = 0.1,
    cap: float = 5.0,
    healthy: float = 30.0,
) -> None:
    """Run ``run()`` again (after a backoff) whenever it raises; return when it returns."""
    delay = first
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the point: any failure is survived
            if time.monotonic() - started >= healthy:
                delay = first
            restarts[name] += 1
            log.error(
                "%s failed (%s: %s); restarting in %.1fs (restart %d)",
                name, type(exc).__name__, str(exc)[:200], delay, restarts[name],
            )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)
