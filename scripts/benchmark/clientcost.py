"""What one upstream request costs the data plane's HTTP client, in CPU per request.

Sends N keep-alive requests (sequential, then concurrent) to the fast fake upstream
(``scripts/benchmark/upstream.py``, started here as a subprocess, pinned to another core when
``taskset`` is there) with each client in turn and prints the client process's CPU time per
request:

- ``aiohttp``: the ``ClientSession`` exactly as ``data_plane/state.py`` built it before the lean
  client replaced it, used the way ``data_plane/relay.py`` used it (request, buffered read with
  ``read_nowait``/``readany``, release);
- ``lean``: ``data_plane.upstream`` (asyncio.Protocol + httptools, one ``write`` per request),
  called through the ``Transport`` protocol as ``data_plane/relay.py`` calls it.

Run: ``python -m scripts.benchmark.clientcost [--requests 20000] [--concurrency 64] [--rounds 3]``.
Rounds alternate the clients' order; the median of the rounds is printed as one JSON line per
(client, mode), so a noisy neighbour on the shared machine shows as spread, not as a result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

from data_plane.settings import Settings
from data_plane.upstream import Transport, UpstreamClient
from scripts.benchmark.requests import UPSTREAM_CHAT_MODEL, chat_body
from scripts.benchmark.stack import python_env

# What the gateway sends upstream for the benchmark's chat request (build_headers' output).
HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "wrk",
    "Accept": "*/*",
    "Accept-Encoding": "identity",
    "Authorization": "Bearer sk-benchmark-provider-key-0123456789abcdefghijklmnopqrstuvwxyz",
}
Send = Callable[[str, bytes], Awaitable[bytes]]


def upstream_session(settings: Settings) -> aiohttp.ClientSession:
    """The data plane's former upstream session (data_plane/state.py before data_plane.upstream)."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_pool_size,
        limit_per_host=settings.upstream_pool_per_host,
        keepalive_timeout=30.0,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=settings.timeouts.upstream_connect,
            sock_connect=settings.timeouts.upstream_connect,
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        trust_env=False,
        raise_for_status=False,
    )


def _settings() -> Settings:
    env = {"ODOCK_NODE_TOKEN": "n" * 40, "ODOCK_KEY_PEPPER": "cGVwcGVy" * 6}
    return Settings.from_env(env)


async def _aiohttp_client(settings: Settings) -> tuple[Send, Callable[[], Awaitable[None]]]:
    session = upstream_session(settings)

    async def send(url: str, body: bytes) -> bytes:
        upstream = await session.request("POST", url, headers=HEADERS, data=body, allow_redirects=False)
        try:
            buf = bytearray()
            content = upstream.content
            while True:
                chunk = content.read_nowait()
                if not chunk and not content.is_eof():
                    async with asyncio.timeout(30):
                        chunk = await content.readany()
                if not chunk:
                    break
                buf += chunk
            return bytes(buf)
        finally:
            upstream.release()

    return send, session.close


async def _lean_client(settings: Settings) -> tuple[Send, Callable[[], Awaitable[None]]]:
    client = UpstreamClient.from_settings(settings)
    transport: Transport = client  # what the node's state hands the relay

    async def send(url: str, body: bytes) -> bytes:
        async with asyncio.timeout(30):
            upstream = await transport.request("POST", url, HEADERS, body)
        try:
            buf = bytearray()
            while True:
                chunk = upstream.read_nowait()
                if not chunk and not upstream.at_eof():
                    async with asyncio.timeout(30):
                        chunk = await upstream.read()
                if not chunk:
                    break
                buf += chunk
            return bytes(buf)
        finally:
            upstream.release()

    return send, client.close


CLIENTS = {"aiohttp": _aiohttp_client, "lean": _lean_client}


async def _measure(send: Send, url: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    expected = len(await send(url, body))  # warm: one connection open, code paths hot

    async def worker(count: int) -> None:
        for _ in range(count):
            if len(await send(url, body)) != expected:
                raise RuntimeError("short answer")

    per = requests // concurrency
    # Open the pool's connections before the clock starts: connecting is not the per-request cost.
    await asyncio.gather(*(worker(1) for _ in range(concurrency)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    done = per * concurrency
    return {"cpu_us_per_req": cpu / done * 1e6, "rps": done / wall}


async def _run(url: str, requests: int, concurrency: int, rounds: int) -> list[dict[str, object]]:
    settings = _settings()
    body = chat_body(UPSTREAM_CHAT_MODEL)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    names = list(CLIENTS)
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            send, close = await CLIENTS[name](settings)
            try:
                for mode, conc in (("sequential", 1), ("concurrent", concurrency)):
                    n = requests if conc > 1 else max(1, requests // 4)
                    results.setdefault((name, mode), []).append(await _measure(send, url, body, n, conc))
            finally:
                await close()
    out: list[dict[str, object]] = []
    for (name, mode), runs in results.items():
        cpu = [r["cpu_us_per_req"] for r in runs]
        rps = [r["rps"] for r in runs]
        out.append({"client": name, "mode": mode, "cpu_us_per_req": round(statistics.median(cpu), 1),
                    "cpu_min_max": [round(min(cpu), 1), round(max(cpu), 1)],
                    "rps": round(statistics.median(rps)), "runs": len(runs)})  # fmt: skip
    return out


def _start_upstream(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    ready = workdir / "ready.json"
    argv = [sys.executable, "-m", "scripts.benchmark.upstream", "--port", "0", "--ready-file", str(ready)]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        argv = ["taskset", "-c", "0", *argv]
    proc = subprocess.Popen(argv, env=python_env(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("fake upstream did not start")
        time.sleep(0.05)
    address = json.loads(ready.read_text())["http"]
    return proc, f"http://{address}/v1/chat/completions"


def main(argv: list[str] | None = None) -> int:
    """Entry point: one JSON line per (client, mode)."""
    parser = argparse.ArgumentParser(prog="clientcost", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the client on core 1, the upstream on core 0
    with tempfile.TemporaryDirectory(prefix="clientcost-") as tmp:
        proc, url = _start_upstream(Path(tmp))
        try:
            for line in uvloop.run(_run(url, args.requests, args.concurrency, args.rounds)):
                print(json.dumps(line), flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
