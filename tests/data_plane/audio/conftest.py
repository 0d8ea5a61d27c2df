"""Real control plane + data plane (metering on, records queried through the UsageService) and
the fake OpenAI upstream's audio/moderation shapes (``tests/fakes/openai_audio.py``).

The org has OpenAI audio models priced per second of audio, per character and per token, so a
record's cost shows which unit it was billed in; plus a vLLM model and an opted-in Anthropic one
for the listing tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from odock.v1 import common_pb2, models_pb2
from tests.data_plane.usage.stack import UsageQueries, free_port, start_cp, start_dp
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner

# name -> (family, upstream slug, pricing). The fake bills gpt-4o-transcribe* in tokens and
# whisper in seconds; tts-1 cannot stream SSE, gpt-4o-mini-tts can.
AUDIO_MODELS: dict[str, tuple[str, str, common_pb2.Pricing]] = {
    "whisper": (
        "openai",
        "whisper-1-upstream",
        common_pb2.Pricing(per_million_audio_seconds_micros=100_000_000),
    ),
    "transcribe": (
        "openai",
        "gpt-4o-transcribe-upstream",
        common_pb2.Pricing(input_per_mtok_micros=2_500_000, output_per_mtok_micros=10_000_000),
    ),
    "tts": ("openai", "tts-1", common_pb2.Pricing(per_million_characters_micros=15_000_000)),
    "tts-tokens": (
        "openai",
        "gpt-4o-mini-tts-upstream",
        common_pb2.Pricing(
            input_per_mtok_micros=600_000,
            output_per_mtok_micros=12_000_000,
            per_million_characters_micros=15_000_000,
        ),
    ),
    "moderation": ("openai", "omni-moderation-latest-upstream", common_pb2.Pricing()),
    "gpt-chat": ("openai", "gpt-4.1-mini-upstream", common_pb2.Pricing()),
    "llama": ("vllm", "meta-llama/Llama-3.1-8B-Instruct", common_pb2.Pricing()),
    "claude": ("anthropic", "claude-sonnet-4-5-upstream", common_pb2.Pricing()),
    "claude-open": ("anthropic", "claude-haiku-upstream", common_pb2.Pricing()),  # openai_compatible
}
OPTED_IN = frozenset({"claude-open"})
MAX_BODY = 32 * 1024 * 1024  # the node's default ODOCK_MAX_BODY_BYTES, stated so the 413 test knows it
# Small, so a long speech answer is far over what the node would ever hold whole.
MAX_BUFFERED = 16 * 1024


@dataclass
class AudioOrg:
    """The org's id, its all-models key, and its models."""

    org_id: str
    key: str
    models: dict[str, models_pb2.Model]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    proc = start_cp(tmp_path_factory.mktemp("cp") / "cp.db", f"127.0.0.1:{free_port()}")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def dp(cp: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    proc = start_dp(
        cp,
        tmp_path_factory.mktemp("spool"),
        ODOCK_MAX_BODY_BYTES=str(MAX_BODY),
        ODOCK_MAX_BUFFERED_RESPONSE_BYTES=str(MAX_BUFFERED),
    )
    try:
        yield proc
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.stderr_text(), proc.stderr_text()[-4000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def org(cp: ControlPlaneProcess, fake: FakeProvider) -> AudioOrg:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        row = await admin.create_org(tier="enterprise", default_models={"/v1/moderations": "moderation"})
        creds = {}
        for family in dict.fromkeys(f for f, _, _ in AUDIO_MODELS.values()):
            creds[family] = await admin.create_credential(
                row.id, family, fake.secret(family), name=f"{family}-c"
            )
        models = {}
        for name, (family, slug, pricing) in AUDIO_MODELS.items():
            models[name] = await admin.create_model(
                row.id, name, family, slug, fake.base_url(family), creds[family].name, pricing=pricing
            )
            if name in OPTED_IN:
                models[name] = await _opt_in(admin, models[name])
        _, key = await admin.create_key(row.id)
    return AudioOrg(org_id=row.id, key=key, models=models)


async def _opt_in(admin: Provisioner, model: models_pb2.Model) -> models_pb2.Model:
    from google.protobuf import field_mask_pb2

    model.openai_compatible = True
    req = models_pb2.UpdateModelRequest(
        model=model, update_mask=field_mask_pb2.FieldMask(paths=["openai_compatible"])
    )
    updated: models_pb2.Model = await admin.models.UpdateModel(req, metadata=admin.metadata)
    return updated


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def queries(cp: ControlPlaneProcess) -> AsyncIterator[UsageQueries]:
    q = UsageQueries(cp)
    yield q
    await q.close()


@pytest.fixture
def fresh(fake: FakeProvider) -> Iterator[FakeProvider]:
    """The module's fake with no recorded requests and default knobs (restored after the test)."""
    fake.reset()
    yield fake
    fake.reset()
