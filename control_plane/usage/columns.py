"""A usage batch as columns: validation one column at a time instead of one record at a time.

records.prepare checks a record field by field and builds a dict per record: about 20 µs of
interpreter work per record, the largest part of what ingesting cost the control plane. Here
each field is read for the whole batch with one C-level ``map(attrgetter(...))`` and checked
with one ``min``/``max``/``in`` per column; the values then go to the writers column by column
(store/repositories/usage_writes.py), never through a per-record dict.

The rules are records.prepare's, exactly: when any check fails for any record, ``from_batch``
returns None and the caller falls back to prepare() record by record, which names, logs and
counts each rejected record as before. Columns optional on the wire (trace strings, deployment,
...) are normalised through a per-batch table of their distinct values (a batch repeats them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter, methodcaller
from typing import Any

from control_plane.usage.records import (
    _COUNTERS,
    _DEPLOYMENT,
    _PRINTABLE_ASCII,
    _SMALL,
    _SMALLINT_MAX,
    _STRINGS,
    _TRACE,
    COUNTER_MAX,
    MAX_BATCH_ID,
    MAX_SECONDS,
    MAX_UPSTREAM_ATTEMPTS,
    SECONDS_PER_HOUR,
    UNIT_COUNTERS,
    Prepared,
    _model_name,
)
from odock.v1 import node_pb2

_INT32_MAX = 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_HAS_TIME = methodcaller("HasField", "time")
_TIME_COLUMNS = ("time", "receive_time")


@dataclass
class Columns:
    """Rows as one list per usage_records column (times as microseconds since the epoch), plus hours.

    Rows are unique by request id and sorted by it (the lock order of the writers).
    """

    values: dict[str, list[Any]]
    hours: list[int]

    def __len__(self) -> int:
        return len(self.hours)

    def slice(self, start: int, stop: int) -> Columns:
        """Rows ``start:stop``."""
        return Columns({k: v[start:stop] for k, v in self.values.items()}, self.hours[start:stop])


def micros(value: datetime) -> int:
    """An aware datetime as microseconds since the epoch."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return (value - _EPOCH) // _MICROSECOND


def from_prepared(rows: Sequence[Prepared]) -> Columns:
    """The slow path's rows (validated one by one) as columns."""
    if not rows:
        return Columns({}, [])
    names = list(rows[0].values)
    values = {n: [p.values[n] for p in rows] for n in names}
    for name in _TIME_COLUMNS:
        values[name] = [micros(v) for v in values[name]]
    return Columns(values, [p.hour for p in rows])


def _normalised(column: list[Any], rule: Callable[[Any], Any]) -> list[Any]:
    table = {v: rule(v) for v in set(column)}
    return list(map(table.__getitem__, column))


def _trace(limit: int) -> Callable[[str], str | None]:
    return lambda v: v if len(v) <= limit and _PRINTABLE_ASCII.fullmatch(v) else None


def _in_range(column: Iterable[int], low: int, high: int) -> bool:
    column = list(column)
    return not column or (min(column) >= low and max(column) <= high)


def from_batch(records: Sequence[node_pb2.UsageRecord], batch_node_id: str,
               receive_time: datetime, batch_attempt: int = 0) -> tuple[Columns, int] | None:  # fmt: skip
    """(unique rows sorted by request id, duplicates within the batch); None if any record is invalid."""
    records = list(records)  # one wrapper per message; reading fields of a repeated field's items costs 3x
    count = len(records)
    if count == 0:
        return Columns({}, []), 0
    get: dict[str, list[Any]] = {}
    for name in (*_STRINGS, *_COUNTERS, *UNIT_COUNTERS, *_SMALL, "attempt", "streamed", "flags",
                 *_TRACE, "deployment", "upstream_attempts", "requested_model", "batch_id"):  # fmt: skip
        get[name] = list(map(attrgetter(name), records))
    if "" in get["request_id"] or "" in get["org_id"] or not all(map(_HAS_TIME, records)):
        return None
    times = list(map(attrgetter("time"), records))
    seconds = list(map(attrgetter("seconds"), times))
    nanos = list(map(attrgetter("nanos"), times))
    if not (_in_range(seconds, 0, MAX_SECONDS) and _in_range(nanos, 0, 999_999_999)):
        return None
    get["node_id"] = [v or batch_node_id for v in get["node_id"]]
    if batch_attempt:
        get["attempt"] = [v or batch_attempt for v in get["attempt"]]
    for name, limit in _STRINGS.items():
        if max(map(len, get[name])) > limit:
            return None
    if any("\x00" in "".join(get[name]) for name in _STRINGS):
        return None
    if not all(_in_range(get[n], 0, COUNTER_MAX) for n in (*_COUNTERS, *UNIT_COUNTERS)):
        return None
    if not all(_in_range(get[n], 0, _SMALLINT_MAX) for n in _SMALL) or max(get["attempt"]) > _INT32_MAX:
        return None
    for name, limit in _TRACE.items():
        get[name] = _normalised(get[name], _trace(limit))
    get["batch_id"] = _normalised(get["batch_id"], _trace(MAX_BATCH_ID))
    get["deployment"] = _normalised(get["deployment"], lambda v: v if _DEPLOYMENT.fullmatch(v) else None)
    get["requested_model"] = _normalised(get["requested_model"], _model_name)
    get["upstream_attempts"] = [v if v <= MAX_UPSTREAM_ATTEMPTS else None for v in get["upstream_attempts"]]
    get["time"] = [s * 1_000_000 + n // 1000 for s, n in zip(seconds, nanos, strict=True)]
    get["receive_time"] = [micros(receive_time)] * count
    # Sorted by request id; a stable sort keeps the first copy of a repeated id first.
    ids = get["request_id"]
    order = sorted(range(count), key=ids.__getitem__)
    keep = [i for n, i in enumerate(order) if n == 0 or ids[i] != ids[order[n - 1]]]
    values = {name: list(map(column.__getitem__, keep)) for name, column in get.items()}
    return Columns(values, [seconds[i] // SECONDS_PER_HOUR for i in keep]), count - len(keep)
