"""Run openai-python's generated API tests for audio, moderations, files and batches through the gateway.

A real control plane and data plane (loopback, SQLite) whose OpenAI models point at Prism mocking
OpenAI's spec (behind ``front.py``); one org, one key. The generated tests use literal object ids
("file_id", "input_file_id", "batch_id"): the gateway answers 404 for an id its org does not own,
so those are recorded as the org's objects first, with the node RPC a data plane uses
(``NodeService.PutObject``). The tests run in a subprocess (pytest, junit XML), the SDK's own
``tests/conftest.py`` plus ``sdk_conftest.py`` (the key, respx mocks moved upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from odock.v1 import node_pb2, node_pb2_grpc
from tests.support.dataplane import start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import ModelSpec, Provisioned, Provisioner, provision_org
from tests.support.spawn import popen, wait_exit
from tests.system.sdk_suite.fetch import Artifacts
from tests.system.sdk_suite.front import Front

SELECTED = (
    "tests/api_resources/audio/test_transcriptions.py",
    "tests/api_resources/audio/test_translations.py",
    "tests/api_resources/audio/test_speech.py",
    "tests/api_resources/test_moderations.py",
    "tests/api_resources/test_files.py",
    "tests/api_resources/test_batches.py",
    "tests/api_resources/test_models.py",  # GET /v1/models/{id} (and the listing)
)
# The gateway models the generated tests name, each mapped to an upstream slug of its own.
MODELS = (
    ModelSpec("whisper-1", "openai", "whisper-1"),
    ModelSpec("gpt-transcribe", "openai", "gpt-4o-transcribe"),
    ModelSpec("tts-1", "openai", "gpt-4o-mini-tts"),
    ModelSpec("omni-moderation-2024-09-26", "openai", "omni-moderation-latest"),
    ModelSpec("gpt-batch", "openai", "gpt-4.1-mini"),
    ModelSpec("gpt-6.2-astra", "openai", "gpt-4.1"),
)
# For the calls that name no model: moderations without one, file uploads (purpose "assistants").
DEFAULT_MODELS = {"/v1/moderations": "omni-moderation-2024-09-26", "/v1/files": "gpt-batch"}
# The ids the generated tests use, owned by the test org: (kind, id, purpose).
OWNED = (
    (node_pb2.OBJECT_KIND_FILE, "file_id", "assistants"),
    (node_pb2.OBJECT_KIND_FILE, "input_file_id", "batch"),
    (node_pb2.OBJECT_KIND_BATCH, "batch_id", "/v1/responses"),
)
PRISM_START_S = 120.0
SUITE_TIMEOUT_S = 600.0


@dataclass
class FileResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped


@dataclass
class SuiteResult:
    sdk_version: str
    files: dict[str, FileResult]
    upstream: Counter[tuple[str, str, int]]  # requests that reached the mock: (method, path, status)
    exit_code: int
    output: str
    seconds: float

    def totals(self) -> FileResult:
        out = FileResult()
        for r in self.files.values():
            out.passed, out.failed, out.skipped = (
                out.passed + r.passed,
                out.failed + r.failed,
                out.skipped + r.skipped,
            )
            out.failures += r.failures
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def prism_mock(art: Artifacts, log: Path) -> AsyncIterator[str]:
    """Prism serving OpenAI's spec on loopback; yields its base URL."""
    port = free_port()
    with log.open("wb") as out:
        proc = popen([str(art.prism), "mock", "-h", "127.0.0.1", "-p", str(port), str(art.spec)],
                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + PRISM_START_S
        while b"Prism is listening" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prism did not start: {log.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(wait_exit, proc, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(wait_exit, proc, 5)


@contextlib.asynccontextmanager
async def serve_front(front: Front) -> AsyncIterator[str]:
    runner = web.AppRunner(front.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


class _Upstream:
    def __init__(self, url: str) -> None:
        self.url = url

    def base_url(self, family: str | int) -> str:
        return self.url  # Prism serves the spec's paths at its root, which is OpenAI's /v1

    def secret(self, family: str | int) -> str:
        return "sk-sdk-suite-upstream"


async def snapshots(prism_url: str) -> dict[str, bytes]:
    """What the provider answered for each owned id (the mock's example object, with that id), as
    the gateway's ledger holds for objects it saw created."""
    out: dict[str, bytes] = {}
    auth = {"Authorization": "Bearer " + _Upstream(prism_url).secret("openai")}
    async with aiohttp.ClientSession() as http:
        for kind, object_id, purpose in OWNED:
            path = "/files/" if kind == node_pb2.OBJECT_KIND_FILE else "/batches/"
            async with http.get(prism_url + path + object_id, headers=auth) as resp:
                resp.raise_for_status()
                example = await resp.json()
            example["id"] = object_id
            example.update(
                {"purpose": purpose} if kind == node_pb2.OBJECT_KIND_FILE else {"endpoint": purpose}
            )
            out[object_id] = json.dumps(example).encode()
    return out


class Owner:
    """Records the generated tests' literal ids as the test org's objects (``NodeService.PutObject``)."""

    def __init__(self, cp: ControlPlaneProcess, setup: Provisioned, snapshots: dict[str, bytes]) -> None:
        self.cp, self.setup, self.snapshots = cp, setup, snapshots

    async def __call__(self) -> None:
        async with grpc.aio.insecure_channel(self.cp.address) as channel:
            node = node_pb2_grpc.NodeServiceStub(channel)
            for kind, object_id, purpose in OWNED:
                obj = node_pb2.ProviderObject(
                    kind=kind, id=object_id, org_id=self.setup.org.id, key_id=self.setup.key_row.id,
                    model_name="gpt-batch", deployment="default", purpose=purpose, created_at=int(time.time()),
                    snapshot=self.snapshots[object_id])  # fmt: skip
                await node.PutObject(node_pb2.PutObjectRequest(object=obj),
                                     metadata=(("authorization", f"Bearer {self.cp.node_token}"),))  # fmt: skip


async def provision(cp: ControlPlaneProcess, upstream_url: str, prism_url: str) -> Owner:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        setup = await provision_org(admin, _Upstream(upstream_url), MODELS, default_models=DEFAULT_MODELS)
    owner = Owner(cp, setup, await snapshots(prism_url))
    await owner()
    return owner


def parse_junit(xml: Path, selection: tuple[str, ...]) -> dict[str, FileResult]:
    files = {path: FileResult() for path in selection}
    by_module = {p.removesuffix(".py").replace("/", "."): p for p in SELECTED}
    for case in ET.parse(xml).getroot().iter("testcase"):
        module = ".".join(case.get("classname", "").split(".")[:-1])
        result = files.setdefault(by_module.get(module, module), FileResult())
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            result.passed += 1
        elif outcome.tag == "skipped":
            result.skipped += 1
            result.failures.append(
                f"SKIPPED {case.get('classname')}::{case.get('name')}: {outcome.get('message')}"
            )
        else:
            result.failed += 1
            result.failures.append(
                f"{case.get('classname')}::{case.get('name')}: {outcome.get('message', '')[:600]}"
            )
    return files


async def run_pytest(art: Artifacts, gateway: str, key: str, front: str, xml: Path,
                     selection: tuple[str, ...]) -> tuple[int, str]:  # fmt: skip
    conftest = art.sdk_root / "tests" / "api_resources" / "conftest.py"
    shutil.copyfile(Path(__file__).with_name("sdk_conftest.py"), conftest)
    # The SDK's own `tests` package must not meet this repository's: no PYTHONPATH of ours.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ODOCK_", "PYTEST_")) and k != "PYTHONPATH"
    }
    env.update(
        {"TEST_API_BASE_URL": gateway + "/v1", "ODOCK_SDK_SUITE_KEY": key, "ODOCK_SDK_SUITE_FRONT": front}
    )
    argv = [sys.executable, "-m", "pytest", "-c", str(art.sdk_root / "pyproject.toml"), "--rootdir", str(art.sdk_root),
            "-o", "addopts=", "-p", "no:cacheprovider", "-q", "-rfEs", f"--junitxml={xml}", *selection]  # fmt: skip
    with tempfile.TemporaryFile() as out:
        proc = popen(
            argv, cwd=art.sdk_root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            code = await asyncio.to_thread(wait_exit, proc, SUITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = await asyncio.to_thread(wait_exit, proc, 10)
        out.seek(0)
        return code, out.read().decode(errors="replace")


async def run_suite(art: Artifacts, selection: tuple[str, ...] = SELECTED) -> SuiteResult:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="odock-sdk-suite-") as tmp:
        work = Path(tmp)
        async with prism_mock(art, work / "prism.log") as prism_url:
            front = Front(prism_url)
            async with serve_front(front) as front_url:
                cp = start_control_plane(f"sqlite:///{work / 'cp.db'}")
                try:
                    owner = await provision(cp, front_url, prism_url)
                    front.own = owner
                    dp = start_data_plane(cp.address, cp.node_token, cp.pepper)
                    try:
                        dp.wait_connected()
                        code, output = await run_pytest(
                            art, dp.url, owner.setup.key, front_url, work / "junit.xml", selection
                        )
                    finally:
                        dp.stop()
                finally:
                    cp.stop()
        files = parse_junit(work / "junit.xml", selection) if (work / "junit.xml").is_file() else {}
    return SuiteResult(art.sdk_version, files, front.seen, code, output, time.monotonic() - start)
