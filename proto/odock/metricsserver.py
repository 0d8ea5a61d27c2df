"""The ``GET /metrics`` listener both planes run beside their main port (aiohttp, its own runner)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


async def serve_metrics(render: Callable[[], bytes], listen: str) -> MetricsServer:
    """Serve ``GET /metrics`` on ``listen`` (HOST:PORT, port 0 = pick one); ``render`` gives the body."""

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
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
