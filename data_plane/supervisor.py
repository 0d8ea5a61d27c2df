"""Running N worker processes on one port (SO_REUSEPORT), restarting any that die.

With port 0 the supervisor reserves a free port by binding (not listening on)
a SO_REUSEPORT socket, which it holds for its lifetime; the kernel only
balances connections across the workers' listening sockets. SIGTERM is
forwarded to every worker, which drains within the grace period.

Metrics: the supervisor creates a fresh multi-process directory for its
workers (``PROMETHEUS_MULTIPROC_DIR`` in their environment), serves the merged
values on ``ODOCK_DP_METRICS_LISTEN`` from a thread (with the workers' ``/readyz/details``,
see ``data_plane/details.py``), and drops a dead worker's live gauges and status when it reaps it.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from wsgiref.simple_server import WSGIServer

from prometheus_client.multiprocess import mark_process_dead

from data_plane.details import forget_worker, serve_supervisor
from data_plane.metrics import multiprocess_registry
from data_plane.server import listening_socket
from data_plane.settings import METRICS_DIR_VAR, Settings
from odock.readyfile import write_ready_file

log = logging.getLogger("odock.data_plane.supervisor")

_START_TIMEOUT = 60.0


def _spawn(
    environ: dict[str, str], index: int, listen: str, ready: Path, node_id: str, metrics_dir: Path
) -> subprocess.Popen[bytes]:
    env = dict(environ)
    env.update(
        ODOCK_DP_LISTEN=listen,
        ODOCK_WORKERS="1",
        ODOCK_READY_FILE=str(ready),
        ODOCK_NODE_ID=f"{node_id}-w{index}",
        ODOCK_DP_METRICS_LISTEN="",  # the supervisor serves every worker's metrics
    )
    env[METRICS_DIR_VAR] = str(metrics_dir)
    return subprocess.Popen([sys.executable, "-m", "data_plane", "--worker-child"], env=env)


def _serve_metrics(listen: str, metrics_dir: Path) -> tuple[WSGIServer, str]:
    """The merged ``/metrics`` (and ``/readyz/details``) of every worker, on a thread of the supervisor."""
    return serve_supervisor(listen, multiprocess_registry(metrics_dir), metrics_dir)


def _reaped(proc: subprocess.Popen[bytes], metrics_dir: Path) -> None:
    """A worker is gone: its live gauges go with it (its counters stay in the totals)."""
    mark_process_dead(proc.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    forget_worker(metrics_dir, proc.pid)


def supervise(settings: Settings, environ: dict[str, str]) -> int:
    """Start ``settings.workers`` workers and keep them running until SIGTERM/SIGINT."""
    host, port = settings.host_port
    holder = listening_socket(host, port, reuse_port=True)  # reserves the port, never listens
    port = holder.getsockname()[1]
    listen = f"{host}:{port}"
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with tempfile.TemporaryDirectory(prefix="odock-dp-") as tmp:
        # Fresh at every start: values of an earlier run's workers must not be merged in.
        metrics_dir = Path(tmp) / "metrics"
        metrics_dir.mkdir(mode=0o700)
        metrics_server, metrics_address = (
            _serve_metrics(settings.metrics_listen, metrics_dir) if settings.metrics_listen else (None, None)
        )
        if metrics_address is not None:
            log.info("metrics of all workers on http://%s/metrics", metrics_address)
        readies = [Path(tmp) / f"worker-{i}.json" for i in range(settings.workers)]
        procs = [
            _spawn(environ, i, listen, readies[i], settings.node_id, metrics_dir)
            for i in range(settings.workers)
        ]
        deadline = time.monotonic() + _START_TIMEOUT
        while not stopping and not all(r.exists() for r in readies):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                log.error("a worker failed to start")
                stopping = True
                break
            time.sleep(0.05)
        if not stopping:
            pids = [json.loads(r.read_text())["pid"] for r in readies]
            log.info("data plane serving on %s with %d workers %s", listen, len(procs), pids)
            if settings.ready_file is not None:
                write_ready_file(settings.ready_file, "http", listen, metrics_address)
        while not stopping:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    log.warning("worker %d exited with %s; restarting", proc.pid, proc.returncode)
                    _reaped(proc, metrics_dir)
                    time.sleep(0.5)
                    procs[i] = _spawn(environ, i, listen, readies[i], settings.node_id, metrics_dir)
            time.sleep(0.2)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        grace_end = time.monotonic() + settings.timeouts.grace + 5.0
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, grace_end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _reaped(proc, metrics_dir)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    holder.close()
    return 0
