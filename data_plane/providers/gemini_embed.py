"""OpenAI ``POST /v1/embeddings`` <-> Gemini ``batchEmbedContents`` (issue 13, not wired yet).

A pure translator like :mod:`gemini_chat`: every input (a string or an array of strings) is one
request of one ``batchEmbedContents`` call; ``dimensions`` -> ``outputDimensionality``;
``encoding_format: base64`` is applied to the answer (little-endian float32, as OpenAI encodes
it); ``user`` and unknown fields are dropped. Token-array inputs cannot be expressed (Gemini
embeds text): a 400.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

import orjson

from data_plane.providers.endpoint import encode_gemini_slug
from data_plane.providers.gemini_errors import error
from data_plane.providers.translator import OpenAIError, TranslatedModel, TranslationError, UpstreamCall

MAX_INPUTS = 100  # Gemini's batchEmbedContents limit


def inputs(body: Mapping[str, Any]) -> list[str]:
    """The texts to embed (TranslationError naming ``input``)."""
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise TranslationError("input must be a string or a non-empty array of strings", "input")
    if len(texts) > MAX_INPUTS:
        raise TranslationError(f"Gemini embeds at most {MAX_INPUTS} inputs per request", "input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TranslationError("Gemini embeds text only (no token arrays)", f"input[{i}]")
        if not text:
            raise TranslationError("input must not be empty", f"input[{i}]")
    return texts


class GeminiEmbeddings:
    """OpenAI embeddings over Gemini's ``batchEmbedContents``."""

    def request(self, body: Mapping[str, Any], model: TranslatedModel) -> UpstreamCall:
        try:
            slug = encode_gemini_slug(model.slug)
        except ValueError:
            raise TranslationError("the model has no Gemini model id", "model") from None
        dims = body.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
            raise TranslationError("dimensions must be a positive integer", "dimensions")
        if body.get("encoding_format", "float") not in ("float", "base64"):
            raise TranslationError("encoding_format must be float or base64", "encoding_format")
        name = "models/" + model.slug.removeprefix("models/")
        requests = []
        for text in inputs(body):
            one: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if dims is not None:
                one["outputDimensionality"] = dims
            requests.append(one)
        return UpstreamCall(path=f"/v1beta/models/{slug}:batchEmbedContents",
                            body=orjson.dumps({"requests": requests}), stream=False)

    def answer(self, body: bytes, model_name: str, encoding_format: str = "float") -> dict[str, Any]:
        """The 200 answer -> OpenAI's embeddings list (ValueError: not a Gemini embeddings answer)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        embeddings = doc.get("embeddings") if isinstance(doc, dict) else None
        if not isinstance(embeddings, list):
            raise ValueError("the upstream answer has no embeddings")  # noqa: TRY004 (a bad value, not a caller bug)
        data = []
        for i, item in enumerate(embeddings):
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
                raise ValueError("an upstream embedding is not a list of numbers")
            vector: Any = values
            if encoding_format == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        meta = doc.get("usageMetadata") if isinstance(doc, dict) else None
        tokens = meta.get("promptTokenCount") if isinstance(meta, dict) else None
        tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else 0
        return {"object": "list", "data": data, "model": model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def error(self, status: int, body: bytes) -> OpenAIError:
        return error(status, body)


EMBEDDINGS = GeminiEmbeddings()
