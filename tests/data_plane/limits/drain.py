"""Send chat requests from several workers per node until every node keeps refusing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.data_plane.limits.stack import chat, error_code

QUIET_SECONDS = 1.5  # a worker stops after refusals only for this long
DEADLINE_SECONDS = 60.0


@dataclass
class Drained:
    """What the workers saw."""

    served: int = 0
    codes: Counter[str] = field(default_factory=Counter)


async def drain(bases: list[str], key: str, *, per_node: int, max_tokens: int, text_bytes: int) -> Drained:
    """Requests of ~``text_bytes`` of prompt from ``per_node`` workers per node until all refuse."""
    out = Drained()
    deadline = time.monotonic() + DEADLINE_SECONDS
    prompt = "lorem ipsum " * (text_bytes // 12)

    async def worker(client: httpx.AsyncClient, base: str) -> None:
        refused_since: float | None = None
        while time.monotonic() < deadline:
            path, body, headers = chat("openai", key, max_tokens=max_tokens, text=prompt)
            resp = await client.post(base + path, content=body, headers=headers)
            if resp.status_code == 200:
                out.served += 1
                refused_since = None
                continue
            out.codes[error_code("openai", resp)] += 1
            assert resp.status_code == 429, resp.text[:300]
            now = time.monotonic()
            refused_since = refused_since or now
            if now - refused_since >= QUIET_SECONDS:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the limit never stopped the key")

    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=64)) as client:
        await asyncio.gather(*(worker(client, base) for base in bases for _ in range(per_node)))
    return out
