"""A data-plane process for one test module: started, connected, and checked at the end."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess


@contextmanager
def connected_data_plane(
    cp: ControlPlaneProcess, extra_env: Mapping[str, str] | None = None
) -> Iterator[DataPlaneProcess]:
    """A data plane connected to ``cp``; on exit it must stop with 0 and have logged no traceback."""
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env=dict(extra_env or {}))
    try:
        proc.wait_connected()
        yield proc
    finally:
        code = proc.stop()
    log = proc.stderr_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "unhandled" not in log, log[-5000:]
