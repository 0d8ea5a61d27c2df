"""Bytes of database per usage record (docs/operations.md, "Usage storage and retention").

Realistic records (gateway-style request ids, org/key ids, a model name, every
counter set; one record in ten with a client request id) are ingested the way
the server does it; the growth of the database (SQLite: the file after a WAL
checkpoint; PostgreSQL: the usage tables with their indexes and TOAST) divided
by the records is printed (run with -s) and held to the documented bound.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from control_plane.store.background import BackgroundDatabase
from control_plane.usage import ingest_batch
from odock.v1 import common_pb2
from tests.control_plane.usage.env import batch, record

RECORDS = 20_000
# Documented in docs/operations.md: at most this many bytes per record, indexes and rollups included.
BYTES_PER_RECORD_BOUND = 600


def _size(conn: Connection, sqlite_file: Path | None) -> int:
    if sqlite_file is not None:
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        return sqlite_file.stat().st_size
    conn.execute(text("VACUUM ANALYZE usage_records"))  # settles the free-space and visibility maps
    return int(conn.scalar(text(
        "SELECT pg_total_relation_size('usage_records') + pg_total_relation_size('usage_rollups')"
    )) or 0)  # fmt: skip


def _measure(store: BackgroundDatabase, sqlite_file: Path | None) -> int:
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return _size(conn, sqlite_file)


async def test_bytes_per_record_stays_within_the_documented_bound(migrated_db_url: str) -> None:
    sqlite_file = Path(migrated_db_url.removeprefix("sqlite:///")) if migrated_db_url.startswith("sqlite") else None
    store = BackgroundDatabase.open(migrated_db_url, 2)
    start = datetime.now(UTC) - timedelta(hours=6)
    try:
        before = await asyncio.to_thread(_measure, store, sqlite_file)
        for b in range(RECORDS // 500):
            client_ids: list[dict[str, Any]] = [
                {"client_request_id": f"client-{secrets.token_hex(8)}"} if i % 10 == 0 else {} for i in range(500)
            ]
            recs = [
                record(
                    "org_" + secrets.token_hex(13)[:26] if i % 50 == 0 else "org_k7d2m4p6q8r1s3t5v7w9x2y4z6",
                    request_id=f"req_{secrets.token_hex(12)}",
                    key_id=f"key_{'abcdefghijklmnopqrstuvwxyz'[i % 26] * 26}",
                    model="gpt-4.1-mini", when=start + timedelta(seconds=b * 500 + i), node_id="gw-node-7f9c2-1234",
                    input_tokens=1200 + i, output_tokens=300 + i, cached=i % 100, cost_picos=987_654_321 + i,
                    time_to_first_byte_us=250_000, attempt=1, streamed=i % 2 == 0,
                    http_status=200 if i % 20 else 429,
                    outcome=common_pb2.OUTCOME_COMPLETE if i % 20 else common_pb2.OUTCOME_ERROR,
                    **client_ids[i],
                )
                for i in range(500)
            ]  # fmt: skip
            assert (await ingest_batch(store, batch(recs, sequence=b))).accepted == 500
        after = await asyncio.to_thread(_measure, store, sqlite_file)
    finally:
        await asyncio.to_thread(store.close)
    per_record = (after - before) / RECORDS
    print(f"\n{migrated_db_url.split(':')[0]}: {per_record:.0f} bytes per usage record ({RECORDS} records)")
    assert 0 < per_record <= BYTES_PER_RECORD_BOUND
