"""scripts/audit: pip-audit over the installed environment, against a local advisory service.

The fake speaks OSV's query API (what ``pip-audit -s osv --osv-url`` sends): it validates each
query and answers from the advisories it is given, so the tests decide what is "vulnerable"
without the network. The real services are not reachable from every machine that runs the
tests; what the script says then is tested with a port nothing listens on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any

import pytest

from tests.system.deploy.envcheck import REPO

pytestmark = pytest.mark.slow
AUDIT = REPO / "scripts" / "audit"


class FakeOsv(ThreadingHTTPServer):
    """POST /v1/query {"package": {"name", "ecosystem": "PyPI"}, "version"} -> {"vulns": [...]} or {}."""

    def __init__(self, advisories: dict[str, list[dict[str, Any]]], status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.advisories, self.status = advisories, status
        self.queries: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/query"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOsv

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            query = json.loads(body)
            package, version = query["package"], query["version"]
            name, ecosystem = package["name"], package["ecosystem"]
            assert self.path == "/v1/query" and ecosystem == "PyPI" and isinstance(version, str) and name
        except (ValueError, KeyError, TypeError, AssertionError):
            self._answer(400, {"code": 3, "message": "Invalid query."})
            return
        self.server.queries.append((name, version))
        if self.server.status != 200:
            self._answer(self.server.status, {"code": 13, "message": "internal"})
            return
        vulns = [v for v in self.server.advisories.get(name, []) if version in v["affected"][0]["versions"]]
        self._answer(200, {"vulns": vulns} if vulns else {})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def advisory(package: str, versions: list[str], fixed: str) -> dict[str, Any]:
    """One OSV record (schema 1.x) saying ``versions`` of ``package`` are affected, fixed in ``fixed``."""
    return {
        "schema_version": "1.6.0", "id": "GHSA-test-0000-0001", "aliases": ["CVE-2099-0001"],
        "summary": "test advisory", "published": "2026-12-01T00:00:00Z", "modified": "2026-12-01T00:00:00Z",
        "affected": [{"package": {"name": package, "ecosystem": "PyPI"}, "versions": versions,
                      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}],
    }  # fmt: skip


@pytest.fixture
def serve() -> Iterator[list[FakeOsv]]:
    started: list[FakeOsv] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def start(serve: list[FakeOsv], advisories: dict[str, list[dict[str, Any]]], status: int = 200) -> FakeOsv:
    server = FakeOsv(advisories, status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    serve.append(server)
    return server


def audit(*args: str, required: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ODOCK_AUDIT_REQUIRED"}
    if required:
        env["ODOCK_AUDIT_REQUIRED"] = "1"
    return subprocess.run([str(AUDIT), *args], capture_output=True, text=True, env=env, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def test_a_vulnerable_installed_version_fails_the_audit(serve: list[FakeOsv]) -> None:
    installed = metadata.version("aiohttp")
    osv = start(serve, {"aiohttp": [advisory("aiohttp", [installed], "99.0")]})
    result = audit("-s", "osv", "--osv-url", osv.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("audit: VULNERABLE: 1 installed package(s)")
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"audit:   aiohttp {installed}: "))
    assert "GHSA-test-0000-0001" in line and "CVE-2099-0001" in line and line.endswith("(fixed in 99.0)")
    assert ("aiohttp", installed) in osv.queries


def test_nothing_vulnerable_passes_and_says_how_many_were_checked(serve: list[FakeOsv]) -> None:
    # An advisory for a version that is not the installed one: not a finding.
    osv = start(serve, {"aiohttp": [advisory("aiohttp", ["0.1"], "0.2")]})
    result = audit("-s", "osv", "--osv-url", osv.url)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = len(set(osv.queries))
    assert checked > 20 and ("cryptography", metadata.version("cryptography")) in osv.queries
    assert result.stdout == f"audit: ok: no known advisory in the {checked} installed packages\n"


@pytest.mark.parametrize("required", [False, True])
def test_an_unreachable_advisory_database_is_a_loud_skip(required: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = audit("-s", "osv", "--osv-url", f"http://127.0.0.1:{port}/v1/query", "--timeout", "5",
                   required=required)  # fmt: skip
    assert result.returncode == (3 if required else 0), result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("audit: SKIPPED: cannot reach the advisory database"), lines
    assert "Connection refused" in lines[0] or "ConnectionError" in lines[0]


def test_a_failing_advisory_service_is_a_loud_skip_not_a_pass(serve: list[FakeOsv]) -> None:
    osv = start(serve, {}, status=503)
    result = audit("-s", "osv", "--osv-url", osv.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("audit: SKIPPED"), result.stdout + result.stderr[-2000:]
    assert "audit: ok" not in result.stdout


def test_the_test_command_runs_the_audit_before_pytest() -> None:
    lines = [line.split("#")[0].strip() for line in (REPO / "scripts" / "test").read_text().splitlines()]
    assert "./scripts/audit" in lines
    assert lines.index("./scripts/audit") < next(i for i, line in enumerate(lines) if "pytest" in line)
