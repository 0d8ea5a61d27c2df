"""A large upload goes through the node with bounded memory: spooled to disk, streamed to the provider.

The upstream here is a sink that hashes what arrives (the shared fake would hold the whole body);
the node's peak resident memory (VmHWM) must grow by far less than the file's size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest_asyncio
from aiohttp import BodyPartReader, web

from tests.support.dataplane import DataPlaneProcess
from tests.support.provision import Provisioner

FILE_BYTES = 300 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024  # the node holds about a chunk or two per upload, plus the allocator's slack
SECRET = "sk-sink-secret-0123456789"


class Sink:
    """An OpenAI files endpoint that keeps only the hash and size of each uploaded file."""

    def __init__(self) -> None:
        self.digest = ""
        self.size = 0
        self.url = ""

    async def handle(self, request: web.BaseRequest) -> web.Response:
        assert request.path == "/v1/files" and request.headers["Authorization"] == f"Bearer {SECRET}"
        reader = await request.multipart()
        digest, size, purpose = hashlib.sha256(), 0, ""
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.name == "file":
                while chunk := await part.read_chunk(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            else:
                purpose = (await part.read()).decode()
        self.digest, self.size = digest.hexdigest(), size
        return web.Response(text=json.dumps({
            "id": "file-sink0001", "object": "file", "bytes": size, "created_at": 1, "filename": "big.bin",
            "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None,
        }), content_type="application/json")


@pytest_asyncio.fixture(loop_scope="package")
async def sink() -> AsyncIterator[Sink]:
    found = Sink()
    runner = web.ServerRunner(web.Server(found.handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    found.url = f"http://{host}:{port}/v1"
    yield found
    await runner.cleanup()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_a_300_mb_upload_keeps_the_node_small(
    gateway: str, dp: DataPlaneProcess, admin: Provisioner, sink: Sink, tmp_path: Path
) -> None:
    org = await admin.create_org(tier="enterprise")
    await admin.create_credential(org.id, "openai", SECRET, name="sink-cred")
    await admin.create_model(org.id, "sink-model", "openai", "sink-upstream", sink.url, "sink-cred")
    _, key = await admin.create_key(org.id)
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(FILE_BYTES // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            out.write(block)
    sdk = openai.AsyncOpenAI(api_key=key, base_url=f"{gateway}/v1", max_retries=0, timeout=300)
    await sdk.files.list()  # the key and the node warmed up before the baseline
    before = peak_rss(dp.pid)
    with path.open("rb") as file:
        created = await sdk.files.create(file=file, purpose="user_data", extra_body={"model": "sink-model"})
    grown = peak_rss(dp.pid) - before
    assert created.bytes == FILE_BYTES
    assert (sink.size, sink.digest) == (FILE_BYTES, digest.hexdigest())
    assert grown < MAX_GROWTH, f"the node's peak RSS grew by {grown / 2**20:.1f} MiB"
    print(f"peak RSS growth for a {FILE_BYTES >> 20} MiB upload: {grown / 2**20:.1f} MiB")
