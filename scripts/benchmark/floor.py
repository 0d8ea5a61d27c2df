"""The floor: a bare aiohttp + uvloop pass-through proxy (no auth, no parsing, no limits).

What any Python gateway on aiohttp costs at minimum: read the request, forward it to one
fixed upstream with a pooled keep-alive client, relay the answer (whole when the upstream
says how long it is, chunk by chunk otherwise). The gateway is measured against this.

Run: ``python -m scripts.benchmark.floor --upstream http://127.0.0.1:PORT --port 0 --ready-file PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import aiohttp
from aiohttp import web

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "host", "content-length", "proxy-connection"})  # fmt: skip
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    """Forward one request as is and relay the answer."""
    session = request.app[SESSION]
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    async with session.request(request.method, request.app[UPSTREAM] + request.path_qs, headers=headers,
                               data=body, allow_redirects=False) as upstream:  # fmt: skip
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        if upstream.content_length is not None:
            return web.Response(status=upstream.status, body=await upstream.read(), headers=out_headers)
        resp = web.StreamResponse(status=upstream.status, headers=out_headers)
        await resp.prepare(request)
        async for chunk in upstream.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


def build_app(upstream: str) -> web.Application:
    """The floor's application: one catch-all route."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30.0)
        app[SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             skip_auto_headers=("User-Agent", "Accept-Encoding"))  # fmt: skip
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


async def serve(upstream: str, host: str, port: int, ready_file: Path | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    runner = web.AppRunner(build_app(upstream), access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    await web.SockSite(runner, sock, backlog=4096).start()
    bound = sock.getsockname()
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"http": f"{bound[0]}:{bound[1]}", "pid": os.getpid()}))
        os.replace(tmp, ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="bench-floor", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.upstream, args.host, args.port, args.ready_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
