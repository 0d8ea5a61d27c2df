"""Scripted traffic for the operability tests, and what each answer was (the expected metrics)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import httpx

from odock import keyformat
from tests.data_plane.helpers import NativeCall, chat_call
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned

ENDPOINT_OF_PATH = {
    "/v1/chat/completions": "/v1/chat/completions",
    "/v1/messages": "/v1/messages",
    "/v1/vllm/chat/completions": "/v1/vllm/chat/completions",
}


def endpoint_name(path: str) -> str:
    """The endpoint's stable name (the metrics label) for a request path."""
    bare = path.partition("?")[0]
    if bare.startswith("/v1beta/models/"):
        return "/v1beta/models/{model}:" + bare.rpartition(":")[2]
    return ENDPOINT_OF_PATH[bare]


@dataclass(frozen=True)
class Seen:
    """One answer as the client saw it."""

    family: str
    endpoint: str
    status: int
    record_id: str | None  # x-odock-request-id (absent before authentication)
    overhead_ms: str | None
    body: bytes
    headers: tuple[tuple[str, str], ...]

    @property
    def outcome(self) -> str:
        """The outcome the gateway records for it (these scripts never cut streams)."""
        return "complete" if 200 <= self.status < 300 else "error"


def fresh_connections(url: str) -> httpx.AsyncClient:
    """A client opening a new connection per request, so SO_REUSEPORT spreads them over workers."""
    return httpx.AsyncClient(base_url=url, timeout=20, limits=httpx.Limits(max_keepalive_connections=0))


async def call(client: httpx.AsyncClient, family: str, req: NativeCall) -> Seen:
    """Send ``req`` and keep what came back."""
    resp = await client.post(req.path, content=req.body, headers=req.headers)
    return Seen(
        family=family,
        endpoint=endpoint_name(req.path),
        status=resp.status_code,
        record_id=resp.headers.get("x-odock-request-id"),
        overhead_ms=resp.headers.get("x-odock-overhead-ms"),
        body=resp.content,
        headers=tuple(resp.headers.items()),
    )


async def metrics_script(
    client: httpx.AsyncClient, org: Provisioned, limited_key: str, fake: FakeProvider
) -> list[Seen]:
    """Successes (plain and streamed) in three families, 401, 404, an upstream 500 and a limit 429."""
    seen = [await call(client, "openai", chat_call("openai", "gpt-chat", key=org.key)) for _ in range(3)]
    seen += [await call(client, "anthropic", chat_call("anthropic", "claude", stream=True, key=org.key))
             for _ in range(2)]  # fmt: skip
    seen.append(await call(client, "gemini", chat_call("gemini", "gemini-flash", key=org.key)))
    seen.append(await call(client, "openai", chat_call("openai", "gpt-chat", key=keyformat.generate())))
    seen.append(await call(client, "openai", chat_call("openai", "no-such-model", key=org.key)))
    fake.knobs.status = 500
    seen.append(await call(client, "openai", chat_call("openai", "gpt-chat", key=org.key)))
    fake.knobs.status = None
    for _ in range(6):  # a 1-request-per-minute key: refused once its lease is used
        seen.append(await call(client, "openai", chat_call("openai", "gpt-chat", key=limited_key)))
        if seen[-1].status == 429:
            break
    return seen


def tally(seen: list[Seen]) -> Counter[tuple[str, str, str, str]]:
    """Answers by (family, endpoint, code, outcome): the expected ``odock_dp_requests_total``."""
    return Counter((s.family, s.endpoint, str(s.status), s.outcome) for s in seen)
