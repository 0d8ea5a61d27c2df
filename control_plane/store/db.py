"""Engines and sessions for the two backends (SQLite via aiosqlite, PostgreSQL
via psycopg 3), and running the Alembic migrations programmatically."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# SQLAlchemy errors render "[parameters: ...]" in str(); a logged "database is
# locked" would then carry the row being written (names, digests, ciphertext).
# Every engine is created with the parameters withheld from its exceptions.
HIDE_PARAMETERS = {"hide_parameters": True}

# SQLite waits this long for a competing writer's lock before failing with
# "database is locked"; long enough to ride out a burst of admin writes.
SQLITE_BUSY_TIMEOUT_MS = 10_000

# pg_advisory_xact_lock key serialising concurrent migrations ("odock" in ASCII).
MIGRATION_LOCK_KEY = 0x6F646F636B


def normalize_url(url: str) -> str:
    """Map user-facing URLs onto the async drivers: sqlite -> aiosqlite, postgresql -> psycopg."""
    raw = url.strip()
    if not raw:
        raise ValueError("database url is empty")
    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ValueError("database url must look like sqlite:///path or postgresql://user@host:port/db")
    driver_by_scheme = {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
        "sqlite+pysqlite": "sqlite+aiosqlite",
        "postgres": "postgresql+psycopg",
        "postgresql": "postgresql+psycopg",
        "postgresql+psycopg": "postgresql+psycopg",
        "postgresql+psycopg_async": "postgresql+psycopg",
    }
    driver = driver_by_scheme.get(scheme.lower())
    if driver is None:
        raise ValueError(f"unsupported database url scheme {scheme!r}: use sqlite:// or postgresql://")
    return f"{driver}://{rest}"


def sync_url(url: str) -> str:
    """The same database for a synchronous driver (pysqlite / psycopg), as Alembic wants."""
    async_url = normalize_url(url)
    if async_url.startswith("sqlite+aiosqlite://"):
        return "sqlite+pysqlite://" + async_url.removeprefix("sqlite+aiosqlite://")
    # psycopg 3 serves both the sync and the async dialect under one name.
    return async_url


def _is_sqlite_url(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_conn: Any, foreign_keys: bool) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Safe under WAL: a crash may lose the last commits, never corrupt.
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def _install_sqlite_pragmas(engine: Engine, *, foreign_keys: bool = True) -> None:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, foreign_keys)

    event.listen(engine, "connect", on_connect)


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine for ``url`` (SQLite: WAL, foreign keys, busy timeout).

    SQLite keeps the driver's transaction handling: BEGIN is sent just before
    the first write, so a transaction always starts by taking the write lock
    (waiting up to busy_timeout) and never has to upgrade a stale read
    snapshot, which would fail at once with "database is locked".
    """
    async_url = normalize_url(url)
    kwargs = {**HIDE_PARAMETERS, **kwargs}
    if _is_sqlite_url(async_url):
        engine = create_async_engine(async_url, **kwargs)
        _install_sqlite_pragmas(engine.sync_engine)
        return engine
    options: dict[str, Any] = {
        "pool_size": 10,
        "max_overflow": 10,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "pool_timeout": 30,
    }
    options.update(kwargs)
    return create_async_engine(async_url, **options)


def make_sync_engine(url: str, connections: int) -> Engine:
    """A synchronous engine with a pool of ``connections``, for work run in worker threads.

    Usage ingestion and pruning use one (store/background.py): their own
    connections, so a backlog never holds those lease and resolve RPCs need,
    and their row binding runs off the event loop. Same SQLite pragmas.
    """
    from sqlalchemy import create_engine

    target = sync_url(url)
    sqlite = _is_sqlite_url(target)
    # The pool hands a connection to one thread at a time, so pysqlite's thread check is moot.
    engine = create_engine(
        target,
        pool_size=connections,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"check_same_thread": False} if sqlite else {},
        **HIDE_PARAMETERS,
    )
    if sqlite:
        _install_sqlite_pragmas(engine)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no lazy loads in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine: AsyncEngine | Engine) -> bool:
    """True when the engine talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser interpolation syntax; a password may contain it.
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def _upgrade_head(url: str) -> None:
    _migrate_to(url, "head")


def _migrate_to(url: str, revision: str) -> None:
    """Upgrade to ``revision`` ("head" or a revision id), or downgrade when it is behind the database."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    cfg = _alembic_config(url)
    engine = create_engine(sync_url(url), poolclass=NullPool, **HIDE_PARAMETERS)
    if _is_sqlite_url(sync_url(url)):
        # Batch migrations copy and recreate tables; foreign keys enforced
        # mid-copy would cascade deletes, so they are off while migrating.
        _install_sqlite_pragmas(engine, foreign_keys=False)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # Replicas starting together migrate one at a time; the others
                # then find the schema at head. Released at commit.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            # The history is linear: a target older than the database's revision is a downgrade.
            order = [r.revision for r in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]
            if revision != "head" and revision not in order:
                raise ValueError(f"unknown schema revision {revision!r} (known: {', '.join(order)})")
            current = MigrationContext.configure(conn).get_current_revision()
            if revision != "head" and current in order and order.index(revision) < order.index(current):
                command.downgrade(cfg, revision)
            else:
                command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def migrate_sync(url: str, revision: str = "head") -> None:
    """Bring ``url``'s schema to ``revision`` (default: ``alembic upgrade head``; blocking)."""
    _migrate_to(url, revision)


async def migrate(url: str) -> None:
    """Run ``alembic upgrade head`` on ``url`` in a worker thread, off the event loop."""
    await asyncio.to_thread(_upgrade_head, url)
