"""A real, throwaway PostgreSQL server for the tests, and the ``db_url`` fixture.

One server per pytest session (a fresh cluster in a temp dir, 127.0.0.1 on a
free port, durability off for speed), one fresh database per test. PostgreSQL
refuses to run as root, so under root the cluster belongs to the unprivileged
``postgres`` OS user (created when missing). The server joins the session's process
group (``tests/support/spawn.py``): when the pytest process dies, however it dies, the
reaper sends it SIGQUIT (then SIGKILL), so no orphan outlives the run.

Use from a test directory's conftest.py::

    from tests.support.postgres import db_url, migrated_db_url, pg_server  # noqa: F401
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support import spawn

SETUP_HINT = "run scripts/setup (it installs the postgresql package), or put initdb/postgres on PATH"
PG_USER = "postgres"  # the database superuser created by initdb
START_TIMEOUT_S = 30.0


def find_pg_bindir() -> Path | None:
    """The directory holding initdb and postgres: PATH first, then /usr/lib/postgresql/*/bin (newest)."""
    on_path = shutil.which("initdb")
    if on_path:
        bindir = Path(os.path.realpath(on_path)).parent
        if (bindir / "postgres").exists():
            return bindir

    def version(p: str) -> tuple[int, ...]:
        v = Path(p).parent.name
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _os_user() -> pwd.struct_passwd | None:
    """The OS account to run the server as: ``postgres`` under root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam("postgres")


def _server_prefix(owner: pwd.struct_passwd | None) -> list[str]:
    """Command prefix that drops to ``owner`` and execs the server in place (empty when not root).

    The uid switch is in the command rather than in Popen arguments, so a restart from
    ``process.args`` runs as the same user; restart through ``spawn.popen`` to stay in the
    session group. No parent-death signal: it fires when the spawning *thread* exits (a
    server started from ``asyncio.to_thread`` would die at once); the reaper does the cleanup.
    """
    if owner is None:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ["runuser", "-u", owner.pw_name, "--"]
    return [setpriv, "--reuid", str(owner.pw_uid), "--regid", str(owner.pw_gid), "--clear-groups", "--"]


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``create_database()`` hands out fresh databases."""

    bindir: Path
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    _counter: itertools.count[int]
    _template_ready: bool = False

    TEMPLATE = "odock_migrated_template"

    @property
    def admin_conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres connect_timeout=5"

    def url(self, dbname: str) -> str:
        """``postgresql://`` URL of ``dbname`` on this server."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, *, migrated: bool = False) -> str:
        """A fresh empty database (or, with ``migrated``, one already at alembic head); its URL."""
        name = f"odock_t{next(self._counter)}_{os.getpid()}"
        template = "template0"
        if migrated:
            self._ensure_template()
            template = self.TEMPLATE
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by ``create_database``, closing any connection left on it."""
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _ensure_template(self) -> None:
        if self._template_ready:
            return
        from control_plane.store.db import migrate_sync

        self._admin(f'CREATE DATABASE "{self.TEMPLATE}" TEMPLATE template0')
        migrate_sync(self.url(self.TEMPLATE))
        self._template_ready = True

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "postgres.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown, then SIGKILL if it lingers; remove the cluster."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_clusters() -> None:
    """Delete clusters left behind by a killed pytest (its server died with it)."""
    for root in Path(tempfile.gettempdir()).glob("odock-pg-*"):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # still being set up by a concurrent session, or not ours
        if not _pid_alive(owner):
            shutil.rmtree(root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb a cluster in a fresh temp dir and start a server on 127.0.0.1."""
    bindir = find_pg_bindir()
    if bindir is None:
        raise RuntimeError(f"PostgreSQL binaries (initdb, postgres) not found: {SETUP_HINT}")
    owner = _os_user()
    # Not under pytest's tmp dir: that is 0700 root-owned, unreachable for the postgres user.
    _sweep_stale_clusters()
    root = Path(tempfile.mkdtemp(prefix="odock-pg-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_owner: dict[str, object] = {}
    if owner is not None:
        for path in (root, sock):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        as_owner = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(root)}
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync", "--no-instructions"],
        check=False, capture_output=True, env=env, cwd=root, **as_owner,  # type: ignore[call-overload]
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")

    last_error = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        with open(root / "postgres.log", "ab") as log:
            proc = spawn.popen(
                [*_server_prefix(owner), str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300", "-c", "shared_buffers=64MB",
                 "-c", "log_min_messages=warning", "-c", "logging_collector=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=root,
            )  # fmt: skip
        server = PostgresServer(
            bindir=bindir, root=root, port=port, process=proc, _counter=itertools.count(1)
        )
        if _wait_ready(server):
            return server
        last_error = server.log_tail()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")


def _wait_ready(server: PostgresServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    delay = 0.02
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with psycopg.connect(server.admin_conninfo, autocommit=True):
                return True
        except psycopg.OperationalError:
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, stopped (and deleted) at the end."""
    try:
        server = start_postgres()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _make_db_url(request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "odock.db"
        if migrated:
            from control_plane.store.db import migrate_sync

            migrate_sync(f"sqlite:///{path}")
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    url = server.create_database(migrated=migrated)
    try:
        yield url
    finally:
        try:
            server.drop_database(url)
        except psycopg.Error:
            pass  # the server may be going down with the session; the cluster is deleted anyway


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database: a SQLite file, or a new database on ``pg_server``."""
    yield from _make_db_url(request, tmp_path, migrated=False)


@pytest.fixture(params=BACKENDS)
def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Like ``db_url`` but already migrated to alembic head (cheaper than migrating per test)."""
    yield from _make_db_url(request, tmp_path, migrated=True)
