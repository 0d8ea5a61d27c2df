"""The routing tests' world: an org whose models have several deployments on switchable fake
upstreams (``tests/fakes/switchable.py``), a client for it, and its usage records read back
from the control plane's UsageService."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import httpx
import openai
from google.protobuf import duration_pb2

from odock.v1 import common_pb2, keys_pb2, models_pb2, node_pb2, usage_pb2, usage_pb2_grpc
from tests.fakes.switchable import SwitchableUpstream
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner, family_enum

MESSAGES: list[Any] = [{"role": "user", "content": "route me"}]
PRICING = common_pb2.Pricing(input_per_mtok_micros=1_000_000, output_per_mtok_micros=2_000_000)


@dataclass(frozen=True)
class Dep:
    """One deployment of a model, on a fake upstream."""

    up: SwitchableUpstream
    weight: int = 1
    priority: int = 0
    timeout_s: float | None = None  # first-byte timeout (None: the default, 60 s)


@dataclass
class World:
    """One org (enterprise tier: no limits unless a key sets them) on the shared control plane."""

    admin: Provisioner
    org_id: str
    key: str = ""
    credentials: dict[int, str] = field(default_factory=dict)  # id(upstream) -> credential name

    @classmethod
    async def create(cls, admin: Provisioner) -> World:
        org = await admin.create_org(tier="enterprise")
        world = cls(admin, org.id)
        _, world.key = await admin.create_key(org.id)
        return world

    async def credential(self, up: SwitchableUpstream) -> str:
        """The credential holding ``up``'s provider key (one per upstream: a deployment's own account)."""
        if id(up) not in self.credentials:
            cred = await self.admin.create_credential(self.org_id, up.family, up.secret, name=f"cred-{up.name}")
            self.credentials[id(up)] = cred.name
        return self.credentials[id(up)]

    async def model(self, name: str, deps: Sequence[Dep], *, fallbacks: Sequence[str] = (),
                    openai_compatible: bool = False, pricing: common_pb2.Pricing = PRICING,
                    enabled: bool = True) -> models_pb2.Model:
        """A model whose deployments are ``deps`` (named after their upstreams, slugs theirs)."""
        family = deps[0].up.family
        out = []
        for dep in deps:
            d = models_pb2.Deployment(name=dep.up.name, base_url=dep.up.base_url,
                                      credential=await self.credential(dep.up), upstream_slug=dep.up.slug,
                                      weight=dep.weight, priority=dep.priority)
            if dep.timeout_s is not None:
                d.timeout.CopyFrom(_duration(dep.timeout_s))
            out.append(d)
        model = models_pb2.Model(org_id=self.org_id, name=name, family=family_enum(family), pricing=pricing,
                                 deployments=out, fallbacks=list(fallbacks), enabled=enabled)
        if openai_compatible:
            model.openai_compatible = True
        result: models_pb2.Model = await self.admin.models.CreateModel(
            models_pb2.CreateModelRequest(model=model), metadata=self.admin.metadata)
        return result

    async def limited_key(self, requests_per_minute: int) -> str:
        """A new all-models key of this org with a per-minute request limit."""
        key = keys_pb2.VirtualKey(org_id=self.org_id, name=f"rpm-{requests_per_minute}", all_models=True,
                                  limits=common_pb2.KeyLimits(requests_per_minute=requests_per_minute))
        created = await self.admin.keys.CreateVirtualKey(keys_pb2.CreateVirtualKeyRequest(key=key),
                                                         metadata=self.admin.metadata)
        return str(created.secret)


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


@dataclass
class Reply:
    """What the client saw of one request (status, the routing headers, the body)."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: Any = None
    began: float = 0.0  # time.monotonic() when it was sent

    @property
    def deployment(self) -> str | None:
        return self.headers.get("x-odock-deployment")

    @property
    def model(self) -> str | None:
        return self.headers.get("x-odock-model")

    @property
    def attempts(self) -> int | None:
        value = self.headers.get("x-odock-attempts")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def request_id(self) -> str:
        return str(self.headers.get("x-odock-request-id", ""))

    def error(self) -> dict[str, Any]:
        """The error object of an OpenAI-shaped error body."""
        assert isinstance(self.body, dict) and isinstance(self.body.get("error"), dict), self.body
        err: dict[str, Any] = self.body["error"]
        return err


def sdk(gateway: str, key: str, timeout: float = 20) -> openai.AsyncOpenAI:
    """The official OpenAI SDK on the gateway, without its own retries (they would hide ours)."""
    return openai.AsyncOpenAI(api_key=key, base_url=gateway + "/v1", max_retries=0, timeout=timeout)


async def chat(client: openai.AsyncOpenAI, model: str) -> Reply:
    """One non-streamed chat completion through the SDK; errors are returned, not raised."""
    began = time.monotonic()
    try:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    except openai.APIStatusError as exc:
        return Reply(exc.status_code, _lower(exc.response.headers), _json(exc.response), began)
    completion = raw.parse()
    return Reply(raw.status_code, _lower(raw.headers), completion.model_dump(), began)


async def post(http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> Reply:
    """A raw POST /v1/chat/completions (``http`` has the gateway as base URL)."""
    began = time.monotonic()
    resp = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    return Reply(resp.status_code, _lower(resp.headers), _json(resp), began)


class _Response(Protocol):
    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def _json(resp: _Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


async def steady(client: openai.AsyncOpenAI, model: str, seconds: float, *, concurrency: int = 2,
                 pause: float = 0.02, until: Callable[[], bool] | None = None) -> list[Reply]:
    """``concurrency`` loops of back-to-back requests (``pause`` apart) for ``seconds``, or until
    ``until()`` holds."""
    deadline = time.monotonic() + seconds
    replies: list[Reply] = []

    async def loop() -> None:
        while time.monotonic() < deadline and not (until is not None and until()):
            replies.append(await chat(client, model))
            await asyncio.sleep(pause)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return replies


class Usage:
    """UsageService calls with the super-admin token."""

    def __init__(self, cp: ControlPlaneProcess) -> None:
        self._channel = grpc.aio.insecure_channel(cp.address)
        self._stub = usage_pb2_grpc.UsageServiceStub(self._channel)
        self._md = (("authorization", f"Bearer {cp.admin_token}"),)

    async def close(self) -> None:
        await self._channel.close()

    async def of_org(self, org_id: str) -> list[node_pb2.UsageRecord]:
        """Every stored record of the org."""
        records: list[node_pb2.UsageRecord] = []
        token = ""
        while True:
            resp = await self._stub.ListUsageRecords(
                usage_pb2.ListUsageRecordsRequest(org_id=org_id, page_size=1000, page_token=token),
                metadata=self._md, timeout=10)
            records.extend(resp.records)
            token = resp.next_page_token
            if not token:
                return records

    async def wait(self, org_id: str, count: int, timeout: float = 15.0) -> dict[str, node_pb2.UsageRecord]:
        """The org's records by request id once there are ``count`` (and still exactly that a moment
        later: a duplicate or a record per attempt would show)."""
        deadline = time.monotonic() + timeout
        while True:
            records = await self.of_org(org_id)
            assert len(records) <= count, f"{len(records)} usage records for {count} client requests"
            if len(records) == count:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(records)} of {count} usage records after {timeout}s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        records = await self.of_org(org_id)
        assert len(records) == count, f"{len(records)} usage records for {count} client requests"
        by_id = {r.request_id: r for r in records}
        assert len(by_id) == count
        return by_id


def assert_records_match(replies: Sequence[Reply], records: dict[str, node_pb2.UsageRecord]) -> None:
    """One record per reply, naming the deployment and the attempts the headers named, with the
    answering deployment's slug and only its answer's tokens (an OpenAI fake's: 3 output tokens)."""
    for reply in replies:
        rec = records.get(reply.request_id)
        assert rec is not None, f"no usage record for {reply.request_id!r} ({reply.status})"
        assert rec.deployment == reply.deployment, (rec.deployment, reply.deployment)
        assert rec.upstream_attempts == reply.attempts, (rec.upstream_attempts, reply.attempts)
        assert rec.http_status == reply.status
        assert rec.upstream_slug == f"{reply.deployment}-slug"  # the fixture's naming (conftest.upstream)
        if reply.status == 200:
            usage = reply.body["usage"]
            assert (rec.input_tokens, rec.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"]) \
                and rec.output_tokens == 3
            assert rec.cost_picos == (rec.input_tokens * PRICING.input_per_mtok_micros
                                      + rec.output_tokens * PRICING.output_per_mtok_micros)
