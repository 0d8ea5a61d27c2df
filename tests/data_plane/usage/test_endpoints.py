"""Every native endpoint of every family, streamed and not: the stored record's tokens are what
the fake provider reported for that request, and its cost is tokens x the model's pricing."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from odock.v1 import common_pb2
from tests.data_plane.usage.stack import PRICES, UsageQueries, cost
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.provision import Provisioned

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MSGS = [{"role": "user", "content": "Count the tokens of this request, please."}]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(32))


@dataclass(frozen=True)
class Case:
    """One request and which of the fake's counts its usage carries (io: in+out, i: in, none)."""

    id: str
    path: str
    model: str
    expect: str
    body: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    file: tuple[str, bytes, str] | None = None
    stream: bool = False


def _chatty(path: str, model: str, extra: dict[str, Any]) -> list[Case]:
    base = {"model": model, **extra}
    return [
        Case(f"{path}", path, model, "io", base),
        Case(f"{path}+stream", path, model, "io", {**base, "stream": True}, stream=True),
    ]


CASES: list[Case] = [
    *_chatty("/v1/chat/completions", "gpt-chat", {"messages": MSGS}),
    Case(
        "/v1/chat/completions+stream+include_usage",
        "/v1/chat/completions",
        "gpt-chat",
        "io",
        {"model": "gpt-chat", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}},
        stream=True,
    ),
    *_chatty("/v1/completions", "gpt-chat", {"prompt": "Say hi"}),
    *_chatty("/v1/responses", "gpt-chat", {"input": "Summarise the flow."}),
    Case("/v1/embeddings", "/v1/embeddings", "text-embed", "i", {"model": "text-embed", "input": ["a", "b"]}),
    Case(
        "/v1/images/generations",
        "/v1/images/generations",
        "image-gen",
        "io",
        {"model": "image-gen", "prompt": "a lighthouse"},
    ),
    Case(
        "/v1/images/edits",
        "/v1/images/edits",
        "image-gen",
        "io",
        form={"model": "image-gen", "prompt": "hat"},
        file=("image", PNG, "image/png"),
    ),
    Case(
        "/v1/images/variations",
        "/v1/images/variations",
        "image-gen",
        "io",
        form={"model": "image-gen"},
        file=("image", PNG, "image/png"),
    ),
    *_chatty("/v1/messages", "claude", {"messages": MSGS, "max_tokens": 64}),
    Case(
        "gemini:generateContent",
        "/v1beta/models/gemini-flash:generateContent",
        "gemini-flash",
        "io",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    ),
    Case(
        "gemini:streamGenerateContent+sse",
        "/v1beta/models/gemini-flash:streamGenerateContent?alt=sse",
        "gemini-flash",
        "io",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        stream=True,
    ),
    Case(
        "gemini:streamGenerateContent+array",
        "/v1beta/models/gemini-flash:streamGenerateContent",
        "gemini-flash",
        "io",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        stream=True,
    ),
    *_chatty("/v1/vllm/chat/completions", "llama", {"messages": MSGS}),
    *_chatty("/v1/vllm/completions", "llama", {"prompt": "Say hi"}),
    *_chatty("/v1/vllm/responses", "llama", {"input": "Summarise."}),
    Case("/v1/vllm/embeddings", "/v1/vllm/embeddings", "bge", "i", {"model": "bge", "input": "text"}),
    Case(
        "/v1/vllm/audio/transcriptions",
        "/v1/vllm/audio/transcriptions",
        "whisper",
        "none",
        form={"model": "whisper"},
        file=("file", WAV, "audio/wav"),
    ),
    Case(
        "/v1/vllm/audio/translations",
        "/v1/vllm/audio/translations",
        "whisper",
        "none",
        form={"model": "whisper"},
        file=("file", WAV, "audio/wav"),
    ),
    Case("/v1/vllm/tokenize", "/v1/vllm/tokenize", "llama", "i", {"model": "llama", "prompt": "hello there"}),
    Case("/v1/vllm/detokenize", "/v1/vllm/detokenize", "llama", "none", {"model": "llama", "tokens": [1, 2]}),
    Case("/v1/vllm/pooling", "/v1/vllm/pooling", "bge", "i", {"model": "bge", "input": ["x", "y"]}),
    Case("/v1/vllm/classify", "/v1/vllm/classify", "bge", "i", {"model": "bge", "input": "great"}),
    Case(
        "/v1/vllm/score", "/v1/vllm/score", "bge", "i", {"model": "bge", "text_1": "a", "text_2": ["b", "c"]}
    ),
    Case(
        "/v1/vllm/rerank", "/v1/vllm/rerank", "bge", "i", {"model": "bge", "query": "q", "documents": ["a"]}
    ),
]


async def _send(client: httpx.AsyncClient, case: Case, key: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if case.file is not None:
        name, data, ctype = case.file
        return await client.post(
            case.path, data=case.form, files={name: (f"f.{ctype[-3:]}", data, ctype)}, headers=headers
        )
    return await client.post(
        case.path,
        content=json.dumps(case.body).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_record_matches_the_provider_report(
    case: Case, dp: DataPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:
        resp = await _send(client, case, org.key)
    assert resp.status_code == 200, resp.text[:500]
    sent = fake.last()
    assert sent.complete
    want_in = sent.prompt_tokens if case.expect in ("io", "i") else 0
    want_out = sent.completion_tokens if case.expect == "io" else 0
    assert want_in > 0 or case.expect == "none"

    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert (rec.input_tokens, rec.output_tokens, rec.cached_input_tokens, rec.reasoning_tokens) == (
        want_in,
        want_out,
        0,
        0,
    )
    assert rec.cost_picos == cost(PRICES[case.model], want_in, want_out)
    assert rec.outcome == common_pb2.OUTCOME_COMPLETE and rec.http_status == 200 and rec.flags == 0
    assert rec.streamed is case.stream
    assert (rec.org_id, rec.key_id, rec.model_name) == (org.org.id, org.key_row.id, case.model)
    assert rec.upstream_slug == org.slug(case.model)
    assert rec.endpoint == (
        case.path.split("?")[0]
        if not case.path.startswith("/v1beta")
        else "/v1beta/models/{model}:" + case.path.split(":")[1].split("?")[0]
    )
    assert rec.attempt == 1 and rec.node_id
    assert rec.latency_us >= rec.upstream_latency_us > 0
    assert (rec.time_to_first_byte_us > 0) is case.stream
    assert abs(rec.time.seconds - time.time()) < 60
