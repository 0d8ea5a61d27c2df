"""What a translator cannot write for its backend is the client's 400, never a 500 (issue 16 review)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from data_plane.providers.translator import TranslationError, native_body


def nested(levels: int) -> Any:
    doc: Any = {}
    for _ in range(levels):
        doc = {"a": doc}
    return doc


def test_a_writable_document_is_orjsons_bytes() -> None:
    doc = {"messages": [{"role": "user", "content": "hi é"}], "n": 2**64 - 1, "deep": nested(200)}
    assert native_body(doc) == orjson.dumps(doc)


@pytest.mark.parametrize(
    ("doc", "code", "words"),
    [
        (nested(300), "json_too_deep", "nests too deeply"),
        ({"max_tokens": 2**64}, "invalid_request_error", "out of range"),
        ({"x": [-(2**63) - 1]}, "invalid_request_error", "out of range"),
    ],
)
def test_what_orjson_cannot_write_is_a_translation_error(doc: Any, code: str, words: str) -> None:
    with pytest.raises(TranslationError) as caught:
        native_body(doc)
    assert caught.value.code == code and words in caught.value.message and caught.value.param is None


def test_a_value_json_has_no_type_for_is_not_blamed_on_the_client() -> None:
    """Only what the client sent can make a 400: a set in the translated document is a bug (500)."""
    with pytest.raises(TypeError) as caught:
        native_body({"tools": {"f", "g"}})
    assert "not JSON serializable" in str(caught.value)
