"""Helpers: start a control-plane process with metrics on, scrape /metrics, call RPCs."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.secrets import PlaneSecrets

Labels = frozenset[tuple[str, str]]
WAIT_S = 20.0


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


def start_with_metrics(
    db_url: str, extra_env: Mapping[str, str] | None = None, secrets: PlaneSecrets | None = None
) -> tuple[ControlPlaneProcess, str]:
    """A control-plane process with its /metrics listener on 127.0.0.1:0; (process, metrics address)."""
    env = {"ODOCK_CP_METRICS_LISTEN": "127.0.0.1:0", "ODOCK_DB_CHECK_SECONDS": "0.2", **(extra_env or {})}
    cp = start_control_plane(db_url, extra_env=env, secrets=secrets)
    ready = json.loads(Path(cp.env["ODOCK_READY_FILE"]).read_text())
    return cp, str(ready["metrics"])


class Scrape:
    """One /metrics scrape: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly ``labels``, or None when absent."""
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        """Like ``get`` but the sample must exist."""
        got = self.get(name, **labels)
        assert got is not None, f"no sample {name}{labels} in:\n{self.text[:3000]}"
        return got

    def rpc(self, name: str, method: str, **labels: str) -> float:
        """An ``odock_cp_grpc_server_*`` sample of ``Service/Method`` (0 when absent)."""
        service, _, short = method.rpartition("/")
        return self.get(name, grpc_service=service, grpc_method=short, **labels) or 0.0


def scrape(address: str) -> Scrape:
    """GET http://address/metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return Scrape(resp.read().decode("utf-8"))


def wait_for(address: str, ok: Callable[[Scrape], bool], what: str, timeout: float = WAIT_S) -> Scrape:
    """Scrape until ``ok(scrape)`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        got = scrape(address)
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{got.text[:4000]}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
