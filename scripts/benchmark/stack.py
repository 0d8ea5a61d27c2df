"""The processes under test, each started for real and pinned with ``taskset``.

Core plan on the 2-core machine: the data plane (and the floor, for a fair comparison)
on core 1; the load generators, the fake upstream and the control plane on core 0.
``--workers 2`` gets both cores. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.secrets import PlaneSecrets

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment minus ODOCK_* settings, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


@dataclass
class Service:
    """A started process that wrote ``{"http"|"grpc": "HOST:PORT", "pid": N}`` to its ready file."""

    name: str
    process: subprocess.Popen[bytes]
    address: str
    workdir: Path
    log_path: Path

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The serving processes: the children of a supervisor, or the process itself."""
        children = _children(self.pid)
        return children or [self.pid]

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cpus: str | None,
    ready_env: str | None = None,
    ready_arg: bool = False,
    key: str = "http",
) -> Service:
    """Start ``argv`` (pinned to ``cpus``) and wait for its ready file."""
    workdir = Path(tempfile.mkdtemp(prefix=f"odock-bench-{name}-"))
    ready = workdir / "ready.json"
    env = dict(env)
    args = list(argv)
    if ready_env:
        env[ready_env] = str(ready)
    if ready_arg:
        args += ["--ready-file", str(ready)]
    if cpus is not None:
        args = ["taskset", "-c", cpus, *args]
    log_path = workdir / "output.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    service = Service(name, proc, "", workdir, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready.exists():
            service.address = json.loads(ready.read_text())[key]
            return service
        if proc.poll() is not None:
            tail = service.log_tail()
            service.stop()
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    tail = service.log_tail()
    service.stop(timeout=2)
    raise RuntimeError(f"{name} not ready after {START_TIMEOUT_S}s:\n{tail}")


def start_upstream(cpus: str | None) -> Service:
    """The fast fake provider."""
    return spawn("upstream", [sys.executable, "-m", "scripts.benchmark.upstream", "--port", "0"],
                 python_env(), cpus=cpus, ready_arg=True)  # fmt: skip


def start_floor(upstream: Service, cpus: str | None) -> Service:
    """The bare pass-through proxy."""
    return spawn("floor", [sys.executable, "-m", "scripts.benchmark.floor", "--upstream", upstream.url,
                           "--port", "0"], python_env(), cpus=cpus, ready_arg=True)  # fmt: skip


@dataclass
class Gateway:
    """Control plane and data planes (1 worker on one core, optionally 2 workers on both)."""

    cp: Service
    dp: Service
    dp2: Service | None
    secrets: PlaneSecrets

    def stop(self) -> dict[str, int]:
        """Stop the data planes first, then the control plane; exit codes by name."""
        codes: dict[str, int] = {}
        for svc in (self.dp2, self.dp):
            if svc is not None:
                codes[svc.name] = svc.stop()
        codes[self.cp.name] = self.cp.stop()
        return codes


# Generous pools: the memory scenario holds 1,000 streams, each with its own upstream connection.
DP_ENV = {"ODOCK_UPSTREAM_POOL_SIZE": "4096", "ODOCK_UPSTREAM_POOL_PER_HOST": "4096"}


def start_control_plane(
    db_path: Path, cpus: str | None, extra_env: Mapping[str, str] | None = None
) -> tuple[Service, PlaneSecrets]:
    """``python -m control_plane`` on a fresh SQLite file with generated secrets (and ``extra_env``)."""
    from tests.support.planes import control_plane_env

    secrets = PlaneSecrets()
    env = control_plane_env(
        f"sqlite:///{db_path}", secrets, Path("/nonexistent"), {"ODOCK_GRACE_SECONDS": "2", **(extra_env or {})}
    )
    env.pop("ODOCK_READY_FILE")
    svc = spawn("control-plane", [sys.executable, "-m", "control_plane"], env, cpus=cpus,
                ready_env="ODOCK_READY_FILE", key="grpc")  # fmt: skip
    return svc, secrets


def start_data_plane(
    cp: Service,
    secrets: PlaneSecrets,
    *,
    workers: int,
    cpus: str | None,
    extra_env: Mapping[str, str] | None = None,
    launcher: Sequence[str] = (),
    name: str = "",
) -> Service:
    """``python -m data_plane --workers N`` pinned to ``cpus`` (``launcher``: e.g. a profiler's ``-m`` prefix)."""
    from tests.support.dataplane import data_plane_env

    env = data_plane_env(cp.address, secrets.node_token, secrets.pepper, Path("/nonexistent"),
                         extra_env={**DP_ENV, "ODOCK_GRACE_SECONDS": "2", **(extra_env or {})})  # fmt: skip
    env.pop("ODOCK_READY_FILE")
    argv = [sys.executable, *launcher, "-m", "data_plane", "--workers", str(workers)]
    return spawn(name or f"data-plane-{workers}w", argv, env, cpus=cpus, ready_env="ODOCK_READY_FILE")


async def wait_connected(dp: Service, timeout: float = 30.0) -> None:
    """Until /readyz says ready (at start: connected to the control plane)."""
    deadline = time.monotonic() + timeout
    status: object = None
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{dp.url}/readyz") as resp:
                    status = await resp.json()
                    if resp.status == 200:
                        return
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{dp.name} never connected to the control plane: {status}\n{dp.log_tail()}")
