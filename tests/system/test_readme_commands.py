"""The README's quick start, run literally in a fresh ``git clone`` of this repository.

The commands come from README.md's fenced blocks: ``./scripts/up`` with no arguments (so on
odock up's default ports 8080 and 50051), then the second shell's block as written (``odock
env``, placeholder provider keys, ``odockctl apply`` with ``--dry-run`` and ``--keys-out``),
then the Python snippet with a virtual key from keys.jsonl. The clone is of the committed HEAD
(uncommitted work is not in it) and reuses this test run's virtualenv through scripts/setup's
ODOCK_SETUP_BASE_VENV, so nothing is downloaded; the clone's own code is installed into it.

The example file's models point at the real providers. Only after the README's commands have
run does the test re-apply a copy whose base URLs point at a local fake provider, so the
snippet's one call gets an answer without leaving the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import yaml

from tests.fakes.provider import FakeProvider
from tests.support.spawn import popen

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PORTS = (8080, 50051)  # odock up's defaults, which the README's addresses assume
READY_TIMEOUT_S = 240.0  # scripts/setup (a thin venv, an editable install) plus both planes
EXAMPLE = "deploy/examples/gateway.yaml"


def fenced(text: str, lang: str) -> list[str]:
    """The bodies of README.md's ```lang blocks, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """A shell block's command lines, without comments or blank lines."""
    lines = (line.split(" #", 1)[0].strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def readme() -> dict[str, str]:
    """The three blocks the quick start consists of, checked to still say what this test runs."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    bash, python = fenced(text, "bash"), fenced(text, "python")
    assert len(bash) >= 2 and python, "README.md: expected two ```bash blocks and a ```python block"
    assert commands(bash[0])[0] == "./scripts/up"
    second = commands(bash[1])
    assert 'eval "$(odock env)"' in second
    assert any(c.startswith("export OPENAI_API_KEY=") for c in second)
    assert f"odockctl apply -f {EXAMPLE} --dry-run" in second
    assert f"odockctl apply -f {EXAMPLE} --keys-out keys.jsonl" in second
    for part in ('api_key="odk-..."', 'base_url="http://127.0.0.1:8080/v1"', 'model="gpt-4.1-mini"'):
        assert part in python[0], f"README.md's Python snippet no longer has {part}"
    return {"up": commands(bash[0])[0], "second_shell": bash[1], "snippet": python[0]}


def require_free_ports() -> None:
    for port in DEFAULT_PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the planes bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                pytest.fail(
                    f"127.0.0.1:{port} is in use ({exc.strerror}): the README's `./scripts/up` takes "
                    f"odock up's default ports {DEFAULT_PORTS}; stop whatever holds it and rerun"
                )


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """A fake provider served from its own event loop thread (the test itself is synchronous)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    provider = asyncio.run_coroutine_threadsafe(FakeProvider().start(), loop).result(30)
    try:
        yield provider
    finally:
        asyncio.run_coroutine_threadsafe(provider.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of the committed HEAD."""
    target = tmp_path / "odock"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, timeout=120,
                   capture_output=True)  # fmt: skip
    return target


def clean_env() -> dict[str, str]:
    """This environment without Odock's, the providers' or Python's path settings, plus the venv reuse."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "VLLM_API_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_") and k not in drop}
    env["ODOCK_SETUP_BASE_VENV"] = sys.prefix  # this run's virtualenv (scripts/setup --test made it)
    return env


def read_until(stream: IO[bytes], marker: str, proc: subprocess.Popen[bytes], timeout: float) -> list[str]:
    """Lines of ``stream`` up to one containing ``marker`` (a reader thread; bounded wait)."""
    lines: list[str] = []
    done = threading.Event()

    def pump() -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if marker in line:
                done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    done.wait(timeout)
    if not any(marker in line for line in lines):
        try:
            how = f"exited with status {proc.wait(timeout=10)}"
        except subprocess.TimeoutExpired:
            how = f"not ready after {timeout:g}s"
        raise AssertionError(f"`./scripts/up` {how}; its output: {lines[-40:]}")
    return lines


def stop(proc: subprocess.Popen[bytes], clone: Path) -> None:
    """Stop ``./scripts/up`` and make sure both planes are gone, whatever state the test left."""
    planes = []
    for name in ("control-plane", "data-plane"):
        try:
            planes.append(int(json.loads((clone / ".odock" / "run" / f"{name}.ready.json").read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    for pid in planes:  # odock stops them; their own sessions, so kill any straggler by pid
        while _is_plane(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_plane(pid):
            os.kill(pid, signal.SIGKILL)


def _is_plane(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and any(arg in (b"control_plane", b"data_plane") for arg in cmdline)


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def pointed_at(example: Path, fake: FakeProvider, out: Path) -> list[str]:
    """A copy of the example file whose models' base URLs are the fake's; the models moved."""
    spec = yaml.safe_load(example.read_text(encoding="utf-8"))
    text = example.read_text(encoding="utf-8")
    moved, targets = [], dict[str, str]()
    for org in spec["orgs"]:
        families = {c["name"]: c["family"] for c in org.get("credentials", [])}
        for model in org.get("models", []):
            target = fake.base_url(model.get("family") or families[model["credential"]])
            assert targets.setdefault(model["base_url"], target) == target, model
            moved.append(model["name"])
    for url, target in targets.items():
        text, n = re.subn(rf"(base_url:\s*){re.escape(url)}(?=\s)", rf"\g<1>{target}", text)
        assert n >= 1, url
    out.write_text(text, encoding="utf-8")
    assert all(m["base_url"].startswith(fake.url) for o in yaml.safe_load(text)["orgs"] for m in o["models"])
    return moved


def test_readme_quick_start_from_a_fresh_clone(readme: dict[str, str], clone: Path, fake: FakeProvider) -> None:
    require_free_ports()
    env = clean_env()
    # In the session's process group: if pytest itself dies, its reaper kills odock, and odock's
    # planes get SIGTERM when their parent dies (odock sets that up); stop() covers the rest.
    proc = popen(["bash", "-c", readme["up"]], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = read_until(proc.stdout, "stops both planes", proc, READY_TIMEOUT_S)
        assert any("http://127.0.0.1:8080" in line for line in banner), banner
        assert any("127.0.0.1:50051" in line for line in banner), banner

        # The second shell, as the README writes it.
        second = bash(readme["second_shell"], clone, env)
        assert second.returncode == 0, second.stdout + second.stderr
        keys = [json.loads(line) for line in (clone / "keys.jsonl").read_text().splitlines()]
        assert keys and all(k["secret"].startswith("odk-") for k in keys)
        applied = second.stdout.splitlines()
        assert any(line.startswith("org acme") and "created" in line for line in applied), applied

        # Only now point the example's models at the fake provider (same odock env, same keys).
        moved = pointed_at(clone / EXAMPLE, fake, clone / "local.yaml")
        exports = [c for c in commands(readme["second_shell"]) if c.startswith("export ")]
        repoint = bash("\n".join([*exports, 'eval "$(odock env)"', "odockctl apply -f local.yaml"]), clone, env)
        assert repoint.returncode == 0, repoint.stdout + repoint.stderr
        for name in moved:
            assert any(f"model acme/{name}" in line and "base_url" in line for line in repoint.stdout.splitlines()), (
                name, repoint.stdout)

        # The Python snippet, with a virtual key from keys.jsonl in place of the README's odk-...
        key = next(k["secret"] for k in keys if k["name"] == "web-app")
        snippet = readme["snippet"].replace('api_key="odk-..."', f"api_key={key!r}")
        answer = subprocess.run([str(clone / ".venv/bin/python"), "-c", snippet], cwd=clone, env=env,
                                capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert answer.returncode == 0, answer.stderr[-3000:]
        assert answer.stdout == "".join(f"piece{i} " for i in range(fake.knobs.chunks)) + "\n"
        assert len(fake.requests) == 1
        upstream = fake.last()
        assert (upstream.family, upstream.native_path) == ("openai", "/v1/chat/completions")
        # The README's placeholder OPENAI_API_KEY, swapped in for the virtual key.
        exported = re.search(r"OPENAI_API_KEY=(\S+)", readme["second_shell"])
        assert exported and upstream.headers["Authorization"] == f"Bearer {exported.group(1)}"
        assert upstream.json()["model"] == "gpt-4.1-mini"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc, clone)
