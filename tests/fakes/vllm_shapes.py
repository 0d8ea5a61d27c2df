"""vLLM-only endpoints: tokenize, detokenize, pooling, classify, score, rerank, audio."""

from __future__ import annotations

from typing import Any

from tests.fakes.multipart import field
from tests.fakes.reply import CREATED, Ask, JsonReply


def _usage(ask: Ask) -> dict[str, Any]:
    return {"prompt_tokens": ask.prompt_tokens, "total_tokens": ask.prompt_tokens,
            "completion_tokens": 0, "prompt_tokens_details": None}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def tokenize(ask: Ask) -> JsonReply:
    """POST /tokenize."""
    tokens = [100 + i for i in range(ask.prompt_tokens)]
    return JsonReply({"count": len(tokens), "max_model_len": 8192, "tokens": tokens, "token_strs": None})


def detokenize(ask: Ask) -> JsonReply:
    """POST /detokenize."""
    tokens = _list(ask.payload.get("tokens", []))
    return JsonReply({"prompt": " ".join(f"t{t}" for t in tokens)})


def pooling(ask: Ask) -> JsonReply:
    """POST /pooling."""
    data = [{"index": i, "object": "pooling", "data": [0.25 * (i + 1), 0.5, 0.75]}
            for i, _ in enumerate(_list(ask.payload.get("input", "")))]
    return JsonReply({"id": "pool-fake0001", "object": "list", "created": CREATED, "model": ask.model,
                      "data": data, "usage": _usage(ask)})


def classify(ask: Ask) -> JsonReply:
    """POST /classify."""
    data = [{"index": i, "label": "positive", "probs": [0.125, 0.875], "num_classes": 2}
            for i, _ in enumerate(_list(ask.payload.get("input", "")))]
    return JsonReply({"id": "classify-fake0001", "object": "list", "created": CREATED, "model": ask.model,
                      "data": data, "usage": _usage(ask)})


def score(ask: Ask) -> JsonReply:
    """POST /score."""
    data = [{"index": i, "object": "score", "score": round(1.0 / (i + 2), 6)}
            for i, _ in enumerate(_list(ask.payload.get("text_2", "")))]
    return JsonReply({"id": "score-fake0001", "object": "list", "created": CREATED, "model": ask.model,
                      "data": data, "usage": _usage(ask)})


def rerank(ask: Ask) -> JsonReply:
    """POST /rerank: results sorted by relevance, cut to top_n."""
    docs = _list(ask.payload.get("documents", []))
    results = [{"index": i, "document": {"text": d if isinstance(d, str) else None},
                "relevance_score": round(1.0 / (i + 1), 6)} for i, d in enumerate(docs)]
    top_n = ask.payload.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        results = results[:top_n]
    return JsonReply({"id": "rerank-fake0001", "model": ask.model,
                      "usage": {"prompt_tokens": ask.prompt_tokens, "total_tokens": ask.prompt_tokens},
                      "results": results})


def audio(ask: Ask) -> JsonReply:
    """POST /v1/audio/transcriptions|translations (multipart); echoes the audio size in the text."""
    file_part = field(ask.form, "file")
    size = len(file_part.data) if file_part is not None else 0
    return JsonReply({"text": f"{ask.text}({size} bytes)", "usage": {"type": "duration", "seconds": 1}})
