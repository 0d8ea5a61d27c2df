"""The node's detailed status (``GET /readyz/details``) where ``/metrics`` is served, never on the
public port: it names orgs, keys and limit pools.

One worker serves its own (``data_plane/server.py``). With ``--workers N`` each worker writes its
status beside its metrics values (``status-<pid>.json`` in the supervisor's multi-process
directory, refreshed with the metrics every second) and the supervisor's listener answers
``{"ready": every worker ready, "workers": [their status objects]}``; a reaped worker's file goes
with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from odock.metricsserver import DETAILS_PATH, shown_address

STATUS_GLOB = "status-*.json"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def status_file(directory: Path, pid: int) -> Path:
    """Where worker ``pid`` keeps its status."""
    return directory / f"status-{pid}.json"


def write_worker_status(directory: Path, status: dict[str, Any]) -> None:
    """This worker's status, replaced atomically (a small file, once a second, off the request path)."""
    pid = os.getpid()
    tmp = directory / f".status-{pid}.tmp"
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, status_file(directory, pid))


def forget_worker(directory: Path, pid: int) -> None:
    """A reaped worker's status goes with it."""
    with contextlib.suppress(FileNotFoundError):
        status_file(directory, pid).unlink()


def merged_details(directory: Path) -> tuple[int, dict[str, Any]]:
    """Every live worker's status; 200 when there is at least one and all are ready, else 503."""
    workers: list[dict[str, Any]] = []
    for path in sorted(directory.glob(STATUS_GLOB)):
        try:
            workers.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # just reaped
    ready = bool(workers) and all(w.get("ready") is True for w in workers)
    return (200 if ready else 503), {"ready": ready, "workers": workers}


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _app(
    registry: CollectorRegistry, directory: Path
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != DETAILS_PATH:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        code, body = merged_details(directory)
        data = json.dumps(body).encode()
        reason = "OK" if code == 200 else "Service Unavailable"
        start_response(
            f"{code} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


def serve_supervisor(
    listen: str, registry: CollectorRegistry, directory: Path
) -> tuple[ThreadingWSGIServer, str]:
    """``/metrics`` (merged) and ``/readyz/details`` of every worker, on a thread of the supervisor."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, int(port), _app(registry, directory), Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="odock-metrics", daemon=True).start()
    return server, shown_address(host, server.server_port)
