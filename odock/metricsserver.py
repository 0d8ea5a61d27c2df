"""The ``GET /metrics`` listener both planes run beside their main port (aiohttp, its own runner).

It may also serve ``GET /readyz/details``: an operator's status object (ids and counts), kept off
the public port, which answers readiness alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST


@dataclass
class MetricsServer:
    """The running ``/metrics`` HTTP listener."""

    runner: web.AppRunner
    address: str

    async def stop(self) -> None:
        """Close the listener."""
        await self.runner.cleanup()


def shown_address(host: str, port: int) -> str:
    """``HOST:PORT`` as a client on this machine would dial it."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"{shown}:{port}"


DETAILS_PATH = "/readyz/details"

Details = Callable[[], tuple[int, dict[str, Any]]]


async def serve_metrics(
    render: Callable[[], bytes], listen: str, details: Details | None = None
) -> MetricsServer:
    """Serve ``GET /metrics`` on ``listen`` (HOST:PORT, port 0 = pick one); ``render`` gives the body.

    With ``details``, also ``GET /readyz/details``: the (HTTP status, JSON object) it returns.
    """

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    if details is not None:
        show = details

        async def handle_details(_request: web.Request) -> web.Response:
            code, body = show()
            return web.json_response(body, status=code)

        app.router.add_get(DETAILS_PATH, handle_details)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    site = web.TCPSite(runner, host, int(port))
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return MetricsServer(runner=runner, address=shown_address(host, runner.addresses[0][1]))
