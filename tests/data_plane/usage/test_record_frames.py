"""Records encoded one by one at submit (frames.record_frame) join into the UsageBatch a commit spools."""

from __future__ import annotations

from pathlib import Path

from data_plane.settings import UsageSettings
from data_plane.usage.frames import record_frame, scan
from data_plane.usage.spool import Spool
from data_plane.usage.wal import Journal
from odock.v1 import node_pb2
from tests.data_plane.usage.bench_wal import record


def test_joined_frames_are_the_batch_encoding() -> None:
    records = [record(i) for i in range(300)]
    records[7].client_request_id = "x" * 128  # a record longer than 127 bytes: two-byte length
    records[8].request_id = "é" * 40  # non-ASCII
    big = node_pb2.UsageRecord(request_id="r", org_id="o", error_code="e" * 20000)  # three-byte length
    records.append(big)
    header = node_pb2.UsageBatch(node_id="node-1").SerializeToString()
    joined = header + b"".join(record_frame(r) for r in records)
    assert joined == node_pb2.UsageBatch(node_id="node-1", records=records).SerializeToString()
    assert list(node_pb2.UsageBatch.FromString(joined).records) == records


async def test_a_commit_spools_the_records_submitted(tmp_path: Path) -> None:
    settings = UsageSettings(spool_dir=tmp_path, batch_size=4)
    spool = Spool(settings.spool_dir, settings.spool_max_bytes, settings.spool_full_policy)
    spool.open()
    journal = Journal(settings, "node-9", spool)
    journal.spool_ok = True
    sent = [record(i) for i in range(10)]
    for r in sent:
        journal.submit(r)
    await journal.commit()
    found: list[node_pb2.UsageRecord] = []
    segments = sorted(tmp_path.glob("*.seg"))
    assert segments
    for segment in segments:
        data = segment.read_bytes()
        for entry in scan(data).entries:
            batch = node_pb2.UsageBatch.FromString(data[entry.offset : entry.offset + entry.length])
            assert batch.node_id == "node-9" and entry.records == len(batch.records) <= 4
            found.extend(batch.records)
    assert found == sent
    spool.close()
