"""OpenAI embeddings <-> Gemini batchEmbedContents (a pure translator, validated by the strict fake)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from openai.types import CreateEmbeddingResponse

from data_plane.providers.gemini_embed import EMBEDDINGS
from data_plane.providers.translator import TranslatedModel, TranslationError
from tests.fakes.gemini_generate import embed_problems

MODEL = TranslatedModel(name="emb", slug="models/text-embedding-004")


def _native(body: dict[str, Any]) -> dict[str, Any]:
    call = EMBEDDINGS.request(body, MODEL)
    assert call.path == "/v1beta/models/text-embedding-004:batchEmbedContents" and not call.stream
    native: dict[str, Any] = orjson.loads(call.body)
    assert embed_problems(native, "text-embedding-004") == [], native
    return native


def test_request_one_and_many_inputs() -> None:
    one = _native({"model": "emb", "input": "hello", "user": "u", "future": 1})
    assert one == {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]}}]}
    many = _native({"model": "emb", "input": ["a", "b"], "dimensions": 256, "encoding_format": "base64"})
    assert [r["outputDimensionality"] for r in many["requests"]] == [256, 256]
    assert [r["content"]["parts"][0]["text"] for r in many["requests"]] == ["a", "b"]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": []}, "input"), ({"input": 5}, "input"), ({"input": ["a", ""]}, "input[1]"),
    ({"input": [[1, 2, 3]]}, "input[0]"), ({"input": ["x"] * 101}, "input"),
    ({"input": "x", "dimensions": 0}, "dimensions"), ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
])
def test_bad_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        EMBEDDINGS.request(body, MODEL)
    assert caught.value.param == param


def test_validator_rejects_a_mismatched_model_and_empty_text() -> None:
    good = _native({"input": "x"})
    assert embed_problems(good, "other-model")
    good["requests"][0]["content"]["parts"][0]["text"] = ""
    assert embed_problems(good, "text-embedding-004")


def test_answer_float_and_base64() -> None:
    body = orjson.dumps({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}],
                         "usageMetadata": {"promptTokenCount": 4}})
    out = EMBEDDINGS.answer(body, "emb")
    parsed = CreateEmbeddingResponse.model_validate(out)
    assert [d.embedding for d in parsed.data] == [[0.5, -1.0], [0.25, 2.0]]
    assert (parsed.model, parsed.usage.prompt_tokens, parsed.usage.total_tokens) == ("emb", 4, 4)
    packed = EMBEDDINGS.answer(body, "emb", "base64")["data"][1]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (0.25, 2.0)
    assert EMBEDDINGS.answer(orjson.dumps({"embeddings": []}), "emb")["usage"] == {"prompt_tokens": 0,
                                                                                  "total_tokens": 0}


@pytest.mark.parametrize("body", [b"", b"[]", b'{"embeddings": [{"values": ["x"]}]}', b'{"embedding": {}}'])
def test_answer_not_embeddings(body: bytes) -> None:
    with pytest.raises(ValueError, match="embedding"):
        EMBEDDINGS.answer(body, "emb")


def test_errors_shared_with_chat() -> None:
    err = EMBEDDINGS.error(429, b'{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}')
    assert (err.status, err.code) == (429, "rate_limit_exceeded")
