"""An upload the provider accepted while the control plane is away: answered 503, and the file is
taken back at the provider (deleted), not left there where nobody can reach it through the gateway.

Its own control plane (killed mid-test) and data plane; the package's fake upstream.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tests.data_plane.limits.stack import free_port, start_cp
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.provision import Provisioner, provision_org
from tests.system.e2e.files.conftest import MODELS


def _wait_disconnected(dp: DataPlaneProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while dp.status().get("control_plane") != "disconnected":
        assert time.monotonic() < deadline, dp.status()
        time.sleep(0.05)


@pytest.mark.parametrize("reachable", [True, False], ids=["deleted", "unreachable"])
async def test_an_upload_that_cannot_be_recorded_is_deleted_at_the_provider(
    fake: FakeProvider, tmp_path: Path, reachable: bool
) -> None:
    (tmp_path / "uploads").mkdir()
    cp = start_cp(tmp_path / "cp.db", f"127.0.0.1:{free_port()}")
    env = {"ODOCK_UPLOAD_DIR": str(tmp_path / "uploads"), "ODOCK_USAGE_SPOOL_DIR": str(tmp_path / "spool"),
           "ODOCK_DP_METRICS_LISTEN": "127.0.0.1:0"}  # fmt: skip
    dp = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env=env)
    try:
        dp.wait_connected()
        async with Provisioner.connect(cp.address, cp.admin_token) as admin:
            org = await provision_org(admin, fake, MODELS)
        sdk = openai.AsyncOpenAI(api_key=org.key, base_url=f"{dp.url}/v1", max_retries=0)
        kept = await sdk.files.create(file=("a.txt", b"first"), purpose="user_data", extra_body={"model": "gpt-files"})
        cp.kill()  # the key and the model stay cached; the ledger cannot be written
        _wait_disconnected(dp)
        fake.reset()
        before = set(fake.objects.files)  # the package's fake keeps its files across tests
        assert kept.id in before
        if not reachable:  # the provider takes the upload, then refuses the delete
            fake.knobs.status_for["DELETE"] = 500
        with pytest.raises(openai.APIStatusError) as info:
            await sdk.files.create(file=("b.txt", b"second"), purpose="user_data", extra_body={"model": "gpt-files"})
        assert info.value.status_code == 503 and info.value.code == "control_plane_unavailable"
        calls = [f"{r.method} {r.native_path}" for r in fake.requests]
        assert calls[0] == "POST /v1/files" and len(calls) == 2, calls
        orphan = calls[1].removeprefix("DELETE /v1/files/")
        assert orphan != calls[1] and orphan != kept.id
        assert set(fake.objects.files) - before == (set() if reachable else {orphan})
        logs = dp.stderr_text()
        if reachable:
            assert f"file {orphan} could not be recorded" in logs and "taken back at the provider" in logs
        else:
            assert f"file {orphan} could not be recorded" in logs and "it stays at the provider" in logs
        assert "PutObject: UNAVAILABLE" in logs  # why it could not be recorded
    finally:
        dp.stop()
        cp.stop()
