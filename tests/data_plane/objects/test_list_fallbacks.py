"""An object listed without a usable snapshot still has the shape strict clients validate.

A batch's output file whose lookup failed, or a snapshot over the ledger's bound, is listed from
the fields the ledger knows; openai-python (``_strict_response_validation``) refuses a page with
an object missing a required field, so the whole list would fail for one such object.
"""

from __future__ import annotations

import pytest
from openai.types import Batch, FileObject

from data_plane.objects.batch_list import stored
from data_plane.objects.ledger import Kind, OwnedObject
from data_plane.objects.listing import snapshot_json


def _owned(kind: Kind, purpose: str, snapshot: bytes) -> OwnedObject:
    return OwnedObject(kind=kind, id="obj-1", org_id="org", key_id="key", model_name="m", deployment="d",
                       purpose=purpose, created_at=1_700_000_000, snapshot=snapshot)  # fmt: skip


@pytest.mark.parametrize("snapshot", [b"", b"not json", b"[1]"])
def test_a_file_without_a_snapshot_is_a_valid_file_object(snapshot: bytes) -> None:
    listed = FileObject.model_validate(snapshot_json(_owned(Kind.FILE, "batch_output", snapshot)), strict=True)
    assert (listed.id, listed.purpose, listed.created_at) == ("obj-1", "batch_output", 1_700_000_000)


@pytest.mark.parametrize("snapshot", [b"", b"{broken"])
def test_a_batch_without_a_snapshot_is_a_valid_batch(snapshot: bytes) -> None:
    listed = Batch.model_validate(stored(_owned(Kind.BATCH, "/v1/chat/completions", snapshot)), strict=True)
    assert (listed.id, listed.endpoint, listed.created_at) == ("obj-1", "/v1/chat/completions", 1_700_000_000)


def test_a_readable_snapshot_is_listed_as_the_provider_sent_it() -> None:
    doc = b'{"id":"obj-1","object":"file","bytes":5,"created_at":1,"filename":"a.txt","purpose":"batch","status":"processed"}'
    assert snapshot_json(_owned(Kind.FILE, "batch", doc))["filename"] == "a.txt"
