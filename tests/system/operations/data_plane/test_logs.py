"""JSON logs of a real data plane, and canary secrets through a whole scripted run.

Canary provider keys (one per family) and canary virtual keys (valid, revoked, restricted,
rate-limited, unknown, malformed; sent in every auth style, ``?key=`` included) go through
successes, streams and errors of every kind at debug level. None may appear in either plane's
log, either plane's /metrics, any answer (body or headers), or the stored usage records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from odock import keyformat
from odock.logfmt import REDACTED
from odock.v1 import common_pb2, keys_pb2
from tests.data_plane.helpers import NativeCall, chat_call
from tests.data_plane.usage.stack import UsageQueries, provision_priced
from tests.fakes.provider import FAMILIES, FakeProvider
from tests.support.provision import Provisioned, Provisioner, unique_name
from tests.system.operations.control_plane.ops import scrape
from tests.system.operations.data_plane.stack import (
    REQUEST_FIELDS,
    OpsControlPlane,
    OpsDataPlane,
    start_ops_dp,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

LEVELS = {"debug", "info", "warning", "error", "critical"}
CHAT = {"openai": "gpt-chat", "anthropic": "claude", "gemini": "gemini-flash", "vllm": "llama"}


class Run:
    """Everything the clients saw during the scripted run."""

    def __init__(self) -> None:
        self.answers: list[httpx.Response] = []
        self.record_ids: list[str] = []
        self.fragments: list[bytes] = []  # bodies of answers the client abandoned

    def keep(self, resp: httpx.Response) -> httpx.Response:
        self.answers.append(resp)
        rid = resp.headers.get("x-odock-request-id")
        if rid:
            self.record_ids.append(rid)
        return resp

    def text(self) -> str:
        """Every answer's status line, headers and body, as one text."""
        parts = []
        for r in self.answers:
            parts.append(f"{r.status_code}\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items()))
            with contextlib.suppress(httpx.ResponseNotRead):  # the abandoned stream: see fragments
                parts.append(r.content.decode("utf-8", "replace"))
        parts += [f.decode("utf-8", "replace") for f in self.fragments]
        return "\n".join(parts)


def with_key(req: NativeCall, style: str, key: str) -> tuple[str, dict[str, str]]:
    """(path, headers) of ``req`` presenting ``key`` in ``style``."""
    headers = {k: v for k, v in req.headers.items() if k != "Authorization"}
    if style == "bearer":
        return req.path, {**headers, "Authorization": f"Bearer {key}"}
    if style == "query":
        sep = "&" if "?" in req.path else "?"
        return f"{req.path}{sep}key={key}", headers
    return req.path, {**headers, style: key}


async def _keys(cp: OpsControlPlane, org_id: str) -> dict[str, str]:
    """Restricted (gpt-chat only), rate-limited (1/min) and revoked canary keys."""
    out: dict[str, str] = {}
    async with Provisioner.connect(cp.process.address, cp.process.admin_token) as admin:
        _, out["restricted"] = await admin.create_key(org_id, models=["gpt-chat"])
        limited = keys_pb2.VirtualKey(org_id=org_id, name=unique_name("rpm1"), all_models=True,
                                      limits=common_pb2.KeyLimits(requests_per_minute=1))  # fmt: skip
        resp = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=limited), metadata=admin.metadata
        )
        out["limited"] = resp.secret
        row, out["revoked"] = await admin.create_key(org_id)
        await admin.revoke_key(org_id, row.id)
    return out


async def _scripted_run(client: httpx.AsyncClient, key: str, keys: dict[str, str], fake: FakeProvider) -> Run:
    run = Run()

    async def post(family: str, model: str, *, stream: bool = False, style: str = "bearer", k: str = key,
                   body: bytes | None = None) -> httpx.Response:  # fmt: skip
        req = chat_call(family, model, stream=stream)
        path, headers = with_key(req, style, k)
        return run.keep(await client.post(path, content=req.body if body is None else body, headers=headers))

    for family, model in CHAT.items():  # successes, plain and streamed, in every auth style
        assert (await post(family, model)).status_code == 200
        style = {"anthropic": "x-api-key", "gemini": "query"}.get(family, "bearer")
        assert (await post(family, model, stream=True, style=style)).status_code == 200
    assert (await post("gemini", "gemini-flash", style="x-goog-api-key")).status_code == 200
    run.keep(await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}))
    gateway_errors = {
        401: [await post("openai", "gpt-chat", k=keys["unknown"]), await post("openai", "gpt-chat", k=keys["malformed"]),
              await post("anthropic", "claude", k=keys["revoked"], style="x-api-key")],
        403: [await post("anthropic", "claude", k=keys["restricted"])],
        404: [await post("gemini", "no-such-model", style="query")],
        400: [await post("openai", "claude"), await post("openai", "gpt-chat", body=b'{"model": "gpt-chat", bad')],
        413: [await post("vllm", "llama", body=b'{"model": "llama", "x": "' + b"a" * 70_000 + b'"}')],
    }  # fmt: skip
    for status, answers in gateway_errors.items():
        assert [a.status_code for a in answers] == [status] * len(answers), (
            status,
            [a.text for a in answers],
        )
    limited = [await post("openai", "gpt-chat", k=keys["limited"]) for _ in range(4)]
    assert 429 in {a.status_code for a in limited}
    fake.knobs.status = 401  # the provider refuses (passed through as it sent it)
    assert (await post("openai", "gpt-chat")).status_code == 401
    fake.knobs.status = 500
    assert (await post("anthropic", "claude")).status_code == 500
    fake.knobs.status = None
    fake.knobs.reset_after = 0
    assert (await post("vllm", "llama")).status_code == 502
    fake.knobs.reset_after = 2  # a stream cut after it started: partial
    assert (await post("openai", "gpt-chat", stream=True)).status_code == 200
    fake.knobs.reset_after = None
    fake.knobs.stall_after = 0
    assert (await post("gemini", "gemini-flash")).status_code == 504
    fake.knobs.stall_after = None
    fake.knobs.chunk_delay = 0.2  # the client goes away mid-stream: cancelled
    req = chat_call("anthropic", "claude", stream=True)
    path, headers = with_key(req, "x-api-key", key)
    async with client.stream("POST", path, content=req.body, headers=headers) as resp:
        run.keep(resp)
        async for chunk in resp.aiter_bytes():
            run.fragments.append(chunk)
            break
    fake.knobs.chunk_delay = 0.0
    return run


async def test_json_logs_and_no_secret_anywhere(
    ops_cp: OpsControlPlane, fake: FakeProvider, queries: UsageQueries, tmp_path: Path
) -> None:
    provider_keys = {f: f"sk-canary-{f}-{secrets.token_hex(16)}" for f in FAMILIES}
    fake.secrets.update(provider_keys)
    org = await provision_priced(ops_cp.process, fake)
    keys = await _keys(ops_cp, org.org.id)
    keys["unknown"] = keyformat.generate()
    keys["malformed"] = "odk-" + secrets.token_urlsafe(40)
    dp = await asyncio.to_thread(
        lambda: start_ops_dp(ops_cp.process, tmp_path / "spool", ODOCK_LOG_LEVEL="debug",
                             ODOCK_MAX_BODY_BYTES="65536", ODOCK_UPSTREAM_IDLE_SECONDS="0.5")
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=dp.url, timeout=20) as client:
            run = await _scripted_run(client, org.key, keys, fake)
        records = [await queries.record(rid) for rid in run.record_ids]
        assert dp.metrics is not None
        exposition = scrape(dp.metrics).text + scrape(ops_cp.metrics).text
    finally:
        code = await asyncio.to_thread(dp.process.stop)
    assert code == 0, dp.process.stderr_text()[-3000:]
    # The canaries did travel: the provider keys reached the fake, the virtual keys the gateway.
    sent = "\n".join(v for r in fake.requests for v in r.headers.values())
    assert all(k in sent for k in provider_keys.values())
    assert {r.outcome for r in records} >= {common_pb2.OUTCOME_COMPLETE, common_pb2.OUTCOME_ERROR,
                                            common_pb2.OUTCOME_PARTIAL, common_pb2.OUTCOME_CANCELLED}  # fmt: skip
    canaries = [*provider_keys.values(), org.key, *keys.values()]
    places = {
        "data-plane log": dp.process.stderr_text(),
        "control-plane log": ops_cp.process.stderr_text(),
        "metrics": exposition,
        "answers": run.text(),
        "usage records": "\n".join(str(r) for r in records),
    }
    for where, text in places.items():
        for canary in canaries:
            assert canary not in text, f"a secret reached the {where}"
    _check_lines(dp, org.org.id, org.key_row.id, records)


def _check_lines(dp: OpsDataPlane, org_id: str, key_id: str, records: list[Any]) -> None:
    """Every line is one JSON object; request lines carry the documented fields, matching the records."""
    lines = dp.log_records()
    for rec in lines:
        assert {"time", "level", "logger", "message"} <= rec.keys(), rec
        assert rec["level"] in LEVELS and rec["time"].endswith("Z"), rec
    by_id = {line["request_id"]: line for line in dp.request_lines()}
    for rec in lines:
        if rec["logger"] == "odock.data_plane.request":
            assert REQUEST_FIELDS <= rec.keys(), rec
            assert rec["latency_ms"] >= rec["overhead_ms"] >= 0, rec
    assert {r["status"] for r in by_id.values()} >= {200, 400, 401, 403, 404, 413, 429, 500, 502, 504}
    for record in records:  # one line per metered request, agreeing with its usage record
        line = by_id[record.request_id]
        assert (line["org_id"], line["key_id"]) == (org_id, record.key_id)
        assert line["status"] == record.http_status
        assert line["outcome"] == common_pb2.Outcome.Name(record.outcome).removeprefix("OUTCOME_").lower()
        assert (line["input_tokens"], line["output_tokens"]) == (record.input_tokens, record.output_tokens)
        assert line["endpoint"] == record.endpoint and line["model"] == record.model_name
        assert line["streamed"] == record.streamed
        assert line.get("client_request_id", "") == record.client_request_id
    ok = [line for line in by_id.values() if line["status"] == 200 and line["key_id"] == key_id]
    assert ok and all(line["family"] in CHAT and line["method"] == "POST" for line in ok)
    for line in ok:
        if line["outcome"] == "complete":
            assert line["upstream_first_byte_ms"] is not None and line["input_tokens"] > 0, json.dumps(line)
    refused = [line for line in by_id.values() if line["status"] == 401 and not line["org_id"]]
    assert len(refused) == 3 and all(line["error_code"] for line in refused)  # unknown, malformed, revoked


async def test_text_request_lines_redact_a_secret_model_name_and_warning_turns_them_off(
    ops_cp: OpsControlPlane, org: Provisioned, tmp_path: Path
) -> None:
    token = ops_cp.process.node_token  # a model name the gateway must not write back out
    planes = [
        await asyncio.to_thread(start_ops_dp, ops_cp.process, tmp_path / "text", ODOCK_LOG_FORMAT="text"),
        await asyncio.to_thread(start_ops_dp, ops_cp.process, tmp_path / "quiet", ODOCK_LOG_LEVEL="warning"),
    ]
    try:
        for dp in planes:
            async with httpx.AsyncClient(base_url=dp.url, timeout=20) as client:
                for model, status in (("gpt-chat", 200), (token, 404)):
                    req = chat_call("openai", model, key=org.key)
                    headers = {**req.headers, "x-request-id": f"client-{status}"}
                    resp = await client.post(req.path, content=req.body, headers=headers)
                    assert resp.status_code == status, resp.text[:300]
        assert planes[1].metrics is not None
        counted = await asyncio.to_thread(scrape, planes[1].metrics)
    finally:
        codes = [await asyncio.to_thread(dp.process.stop) for dp in planes]
    assert codes == [0, 0]
    text = planes[0].process.stderr_text()
    lines = [line for line in text.splitlines() if " INFO odock.data_plane.request: " in line]
    assert len(lines) == 2 and token not in text, text[-2000:]
    assert lines[0].split(" ", 3)[3].startswith("POST /v1/chat/completions 200 complete request_id=req_")
    assert " model=gpt-chat " in lines[0] and f" model={REDACTED} " in lines[1] and " status=404 " in lines[1]
    # The client's own id is on the line, so a request a client logged can be found by it.
    assert lines[0].endswith(" client_request_id=client-200") and lines[1].endswith(" client_request_id=client-404")
    quiet = planes[1].process.stderr_text()
    assert "odock.data_plane.request" not in quiet  # off at warning; the metrics still count
    assert sum(v for (name, _), v in counted.samples.items() if name == "odock_dp_requests_total") == 2
