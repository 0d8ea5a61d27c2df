"""The spool's entry framing: checksummed headers, and a scan that skips what is corrupt.

An entry is ``b"OUB2" | u32 length | u32 records | u32 crc32(payload) | u32
crc32(the 16 bytes before)`` followed by ``length`` payload bytes (a
``UsageBatch``). The header has its own checksum, so when only the payload is
bad (a torn write, a flipped bit) the scan knows how many records were lost
and where the next entry starts; when the header itself is bad it searches for
the next magic and resumes at the first frame that checks out. ``OUB1``
entries (``magic | u32 length | u32 crc32``, the format before this one) are
still read, their records counted by parsing them.

Pure functions over bytes, linear in the segment's size.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from odock.v1 import node_pb2

MAGIC = b"OUB2"
LEGACY_MAGIC = b"OUB1"
_HEAD = struct.Struct(">4sIII")  # magic, length, records, payload crc; then the header's own crc
HEADER_SIZE = _HEAD.size + 4
_LEGACY = struct.Struct(">4sII")
_CRC = struct.Struct(">I")
MAX_ENTRY = 256 * 1024 * 1024


def record_frame(record: node_pb2.UsageRecord) -> bytes:
    """``record`` as one element of UsageBatch.records on the wire (field 3, length-delimited).

    A UsageBatch's encoding is its node_id field followed by these, so the journal encodes each
    record when it is submitted and a commit only joins them (wal.Journal._append).
    """
    return encoded_frame(record.SerializeToString())


def encoded_frame(body: bytes) -> bytes:
    """An encoded UsageRecord (``body``) as one element of UsageBatch.records (see record_frame)."""
    n = len(body)
    if n < 0x80:
        return b"\x1a" + bytes((n,)) + body
    size = bytearray()
    while n >= 0x80:
        size.append((n & 0x7F) | 0x80)
        n >>= 7
    size.append(n)
    return b"\x1a" + bytes(size) + body


def frame(payload: bytes, records: int) -> bytes:
    """One entry: the checksummed header, then the payload."""
    head = _HEAD.pack(MAGIC, len(payload), records, zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head)) + payload


@dataclass(frozen=True, slots=True)
class Found:
    """A sound entry: where its payload starts, its length, record count and checksum."""

    offset: int
    length: int
    records: int
    crc: int


@dataclass
class Scan:
    """What a segment holds: its sound entries, and the corrupt stretches skipped (records when known)."""

    entries: list[Found] = field(default_factory=list)
    corrupt: list[tuple[int, int | None]] = field(default_factory=list)


def scan(data: bytes) -> Scan:
    """Every sound entry of a segment's bytes, skipping (and listing) corrupt or torn ones."""
    out = Scan()
    offset, bad_from = 0, -1
    while offset < len(data):
        step = _parse(out, data, offset)
        if step != 0 and bad_from >= 0:
            out.corrupt.append((bad_from, None))
            bad_from = -1
        if step != 0:
            offset += abs(step)
            continue
        if bad_from < 0:
            bad_from = offset
        found = [i for i in (data.find(MAGIC, offset + 1), data.find(LEGACY_MAGIC, offset + 1)) if i >= 0]
        offset = min(found, default=len(data))
    if bad_from >= 0:
        out.corrupt.append((bad_from, None))
    return out


def _parse(out: Scan, data: bytes, offset: int) -> int:
    """The frame at ``offset``: its size when sound, minus its size when only the payload is bad, else 0."""
    if data.startswith(MAGIC, offset) and offset + HEADER_SIZE <= len(data):
        length, records, crc = (int(v) for v in _HEAD.unpack_from(data, offset)[1:])
        (head_crc,) = _CRC.unpack_from(data, offset + _HEAD.size)
        if head_crc != zlib.crc32(data[offset : offset + _HEAD.size]) or length > MAX_ENTRY:
            return 0
        start = offset + HEADER_SIZE
        payload = data[start : start + length]
        if len(payload) == length and zlib.crc32(payload) == crc:
            out.entries.append(Found(start, length, records, crc))
        else:
            out.corrupt.append((offset, records))
        return HEADER_SIZE + length
    if data.startswith(LEGACY_MAGIC, offset) and offset + _LEGACY.size <= len(data):
        length, crc = (int(v) for v in _LEGACY.unpack_from(data, offset)[1:])
        start = offset + _LEGACY.size
        payload = data[start : start + length]
        if length > MAX_ENTRY or len(payload) != length or zlib.crc32(payload) != crc:
            return 0
        batch = node_pb2.UsageBatch()
        try:
            batch.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - corrupt despite its checksum: skipped like any other
            return 0
        out.entries.append(Found(start, length, len(batch.records), crc))
        return _LEGACY.size + length
    return 0
