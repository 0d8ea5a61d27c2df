"""What aiohttp's web server costs per request, against the same answer from a bare httptools
protocol, in CPU microseconds (issue 16: the share of the chat c=64 gap no change inside the
handlers can close).

Both servers answer ``POST /v1/chat/completions`` with the same fixed JSON after reading the whole
body: aiohttp through an ``Application`` with one route (uvloop, no access log, no middleware),
the other through an ``asyncio.Protocol`` that feeds ``httptools.HttpRequestParser`` and writes
one preformatted answer per request. Each runs in its own process pinned to the data-plane core;
wrk (64 connections) runs on the load core. The figure is the server process's CPU time over
the requests wrk completed, per repetition, servers alternating.

Run: ``python -m scripts.benchmark.servercost [--reps 3] [--duration 5]``. Prints one JSON line
per server with the median (min-max) CPU microseconds per request and requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from scripts.benchmark import wrk
from scripts.benchmark.measure import cpu_seconds
from scripts.benchmark.stack import Service, python_env, spawn

ANSWER = b'{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m","choices":[]}'
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}
KINDS = ("aiohttp", "httptools")


def _ready(path: Path, address: tuple[str, int]) -> None:
    """The ready file ``stack.spawn`` waits for (the address bound), written whole at once."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"http": f"{address[0]}:{address[1]}"}))
    os.replace(tmp, path)


def serve_aiohttp(ready: Path) -> None:
    import uvloop
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        _ready(ready, runner.addresses[0])
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_httptools(ready: Path) -> None:
    import httptools
    import uvloop

    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER)

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.received = b""

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            self.received = b"".join(self.body)  # the body whole, as a handler gets it
            self.body.clear()
            self.transport.write(head + ANSWER)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
        _ready(ready, server.sockets[0].getsockname()[:2])
        await server.serve_forever()

    uvloop.run(main())


def start(kind: str, core: str | None) -> Service:
    """One of the servers, pinned to ``core``, once it listens."""
    argv = [sys.executable, "-m", "scripts.benchmark.servercost", "--serve", kind]
    return spawn(f"servercost-{kind}", argv, python_env(), cpus=core, ready_arg=True)


async def measure(kind: str, script: Path, reps: int, duration: int, load: str, core: str) -> dict[str, object]:
    service = start(kind, core)
    try:
        url = f"{service.url}/v1/chat/completions"
        await wrk.run(url, script, connections=64, duration_s=1, cpus=load)  # warm-up
        cpu, rps = [], []
        for _ in range(reps):
            before = cpu_seconds([service.pid])
            result = await wrk.run(url, script, connections=64, duration_s=duration, cpus=load)
            if result.errors or result.non_2xx:
                raise RuntimeError(f"{kind}: {result.errors} errors, {result.non_2xx} non-2xx answers")
            cpu.append((cpu_seconds([service.pid]) - before) * 1e6 / result.requests)
            rps.append(result.rps)
        return {
            "server": kind,
            "cpu_us_per_req": round(statistics.median(cpu), 1),
            "min": round(min(cpu), 1),
            "max": round(max(cpu), 1),
            "rps": round(statistics.median(rps)),
        }
    finally:
        service.stop()


async def main_async(args: argparse.Namespace) -> None:
    cores = sorted(os.sched_getaffinity(0))
    load, core = str(cores[0]), str(cores[-1])
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(json.dumps(REQUEST).encode())
        script = wrk.write_script(Path(tmp) / "post.lua", body, {"Authorization": "Bearer odk_bench"})
        for kind in KINDS:
            print(json.dumps(await measure(kind, script, args.reps, args.duration, load, core)), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.benchmark.servercost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        (serve_aiohttp if args.serve == "aiohttp" else serve_httptools)(args.ready_file)
        return 0
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
