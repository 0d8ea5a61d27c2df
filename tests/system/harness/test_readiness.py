"""A plane that fails to start is reported with its exit and stderr, killed, and cleaned up."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from tests.support.dataplane import start_data_plane
from tests.support.planes import start_control_plane
from tests.support.secrets import PlaneSecrets
from tests.system.harness.procs import Proc


@pytest.fixture(autouse=True)
def _workdirs_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plane work directories under tmp_path, so a test can see they were removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _pid(message: str) -> int:
    found = re.search(r"\(pid (\d+)\)", message)
    assert found, message
    return int(found.group(1))


def test_control_plane_with_bad_settings_reports_its_stderr(tmp_path: Path) -> None:
    secrets = PlaneSecrets()
    with pytest.raises(RuntimeError) as info:
        start_control_plane(f"sqlite:///{tmp_path / 'cp.db'}", extra_env={"ODOCK_KEKS": "k1=not-base64"},
                            secrets=secrets)
    message = str(info.value)
    head, _, tail = message.partition("stderr tail:\n")
    assert re.match(r"control plane \(pid \d+\) exited with code 2 before it was ready; argv ", head), message
    assert "ODOCK_KEKS: KEK 'k1' must be 32 bytes" in tail
    assert secrets.admin_token not in message
    assert not list(tmp_path.glob("odock-cp-*")), "work directory left behind"


def test_data_plane_with_bad_settings_reports_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        start_data_plane("127.0.0.1:1", "node-" + "t" * 40, b"short")
    message = str(info.value)
    assert re.match(r"data plane \(pid \d+\) exited with code 2 before it was ready", message), message
    assert message.endswith("stderr tail:\ndata-plane: ODOCK_KEY_PEPPER: must decode to at least 32 bytes"), message
    assert not list(tmp_path.glob("odock-dp-*")), "work directory left behind"


def test_data_plane_not_ready_in_time_is_killed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        start_data_plane("127.0.0.1:1", "node-" + "t" * 40, b"p" * 32, timeout=0.05)
    message = str(info.value)
    assert re.match(r"data plane \(pid \d+\) not ready after 0.05s", message), message
    with pytest.raises(AssertionError, match="not running"):
        Proc.of(_pid(message))  # killed and reaped
    assert not list(tmp_path.glob("odock-dp-*")), "work directory left behind"
