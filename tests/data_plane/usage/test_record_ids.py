"""Request ids: the documented form, unique, and never shared with a forked worker."""

from __future__ import annotations

import os
import re
import time

from data_plane.usage import new_record_id

FORM = re.compile(r"req_[0-9a-f]{24}")


def test_form_and_uniqueness_across_many_pool_refills() -> None:
    ids = [new_record_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    assert all(FORM.fullmatch(i) for i in ids)


def test_ids_start_with_the_time_so_they_arrive_in_key_order() -> None:
    before = int(time.time())
    ids = [new_record_id() for _ in range(1_000)]
    after = int(time.time())
    stamps = {int(i[4:12], 16) for i in ids}
    assert stamps <= set(range(before, after + 1))
    assert sorted(ids, key=lambda i: i[4:12]) == ids  # ordered by their time part as generated


def test_a_forked_child_draws_fresh_bytes() -> None:
    new_record_id()  # the parent holds buffered bytes now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, ",".join(new_record_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    child = os.read(read_end, 4096).decode().split(",")
    os.close(read_end)
    assert status == 0
    parent = [new_record_id() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(parent)
