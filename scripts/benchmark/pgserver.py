"""A throwaway PostgreSQL for the ingest benchmark: the tests' server, optionally with durable commits.

``tests/support/postgres.py`` starts its cluster with fsync and synchronous_commit off (fast
tests). A benchmark of commit-bound ingest should use the server's defaults, so the same
cluster is restarted on the same port with those two (and full_page_writes) left at their
defaults; everything else (owner, socket directory, parent-death signal) is kept.
"""

from __future__ import annotations

import os
import signal
import subprocess

from tests.support import spawn
from tests.support.postgres import (
    PostgresServer,
    _os_user,
    _server_prefix,
    _wait_ready,
    start_postgres,
)


def start_pg(*, durable: bool) -> PostgresServer:
    """A running cluster; with ``durable``, one that fsyncs every commit (PostgreSQL's defaults)."""
    server = start_postgres()
    if not durable:
        return server
    server.process.send_signal(signal.SIGINT)
    server.process.wait(timeout=30)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(server.root)}
    with open(server.root / "postgres.log", "ab") as log:
        server.process = spawn.popen(
            [*_server_prefix(_os_user()), str(server.bindir / "postgres"), "-D", str(server.root / "data"),
             "-p", str(server.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={server.root / 'sock'}", "-c", "max_connections=300",
             "-c", "shared_buffers=128MB", "-c", "log_min_messages=warning", "-c", "logging_collector=off"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=server.root,
        )  # fmt: skip
    if not _wait_ready(server):
        tail = server.log_tail()
        server.stop()
        raise RuntimeError(f"PostgreSQL did not restart with durable settings:\n{tail}")
    return server
