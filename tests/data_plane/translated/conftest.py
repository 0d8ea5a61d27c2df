"""OpenAI-format access to Anthropic, Gemini and vLLM models (issue 13): real planes, the strict fakes.

One control plane, one data plane (fast usage batching, spooling into a temporary directory) and
one fake provider per module; every test provisions its own org, whose models opted in to
OpenAI-format access (``openai_compatible``) except ``claude-native``, and plugs the strict
Anthropic / Gemini validators into the fake (``FakeProvider.builders``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from google.protobuf import duration_pb2

from odock.v1 import common_pb2, models_pb2
from tests.data_plane.usage.stack import UsageQueries, free_port, start_cp, start_dp
from tests.fakes import gemini_generate
from tests.fakes.anthropic_messages import strict_messages
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner, family_enum

# name -> (family, upstream slug, opted in)
MODELS = {
    "claude-x": ("anthropic", "claude-sonnet-4-5", True),
    "gem-x": ("gemini", "gemini-2.5-flash", True),
    "llama-x": ("vllm", "meta-llama/Llama-3.1-8B-Instruct", True),
    "claude-native": ("anthropic", "claude-haiku-4-5", False),
    "gpt-x": ("openai", "gpt-4.1-mini", False),
}
PRICING = common_pb2.Pricing(input_per_mtok_micros=3_000_000, output_per_mtok_micros=15_000_000)


@dataclass
class Org:
    id: str
    key: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake_upstream() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture
def fake(fake_upstream: FakeProvider) -> Iterator[FakeProvider]:
    """The module's fake with the strict Anthropic validator, Gemini's scripted per test (``script``)."""
    fake_upstream.reset()
    fake_upstream.builders = {"anthropic": strict_messages}
    yield fake_upstream
    fake_upstream.builders = {}


def script_gemini(fake: FakeProvider, script: gemini_generate.Script) -> None:
    """Answer Gemini calls with ``script`` after the strict validation."""
    fake.builders["gemini"] = lambda ask: gemini_generate.generate(ask, script)


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    proc = start_cp(tmp_path_factory.mktemp("cp") / "cp.db", f"127.0.0.1:{free_port()}")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def dp(cp: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    proc = start_dp(cp, Path(tmp_path_factory.mktemp("spool")), ODOCK_UPSTREAM_IDLE_SECONDS="2")
    try:
        yield proc
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.stderr_text(), proc.stderr_text()[-4000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def queries(cp: ControlPlaneProcess) -> AsyncIterator[UsageQueries]:
    q = UsageQueries(cp)
    yield q
    await q.close()


async def provision(cp: ControlPlaneProcess, fake: FakeProvider, tier: str = "enterprise") -> Org:
    """An org with MODELS on ``fake`` and an all-models key."""
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        org = await admin.create_org(tier=tier)
        families = {family for family, _, _ in MODELS.values()}
        for family in families:
            await admin.create_credential(org.id, family, fake.secret(family), name=f"{family}-c")
        timeout = duration_pb2.Duration(seconds=5)
        caps = models_pb2.ModelCapabilities(tools=True, vision=True, json_output=True, streaming=True)
        for name, (family, slug, opted) in MODELS.items():
            model = models_pb2.Model(
                org_id=org.id, name=name, family=family_enum(family), upstream_slug=slug,
                base_url=fake.base_url(family), timeout=timeout, credential=f"{family}-c", pricing=PRICING,
                openai_compatible=opted, capabilities=caps,
            )  # fmt: skip
            await admin.models.CreateModel(
                models_pb2.CreateModelRequest(model=model), metadata=admin.metadata
            )
        _, key = await admin.create_key(org.id)
    return Org(org.id, key)


@pytest_asyncio.fixture(loop_scope="module")
async def org(cp: ControlPlaneProcess, fake: FakeProvider) -> Org:
    return await provision(cp, fake)
