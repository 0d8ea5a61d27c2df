"""Base-URL conventions per family, seen through the spellings a server reads the same way:
trailing slashes, upper case, dot segments, escaped letters; a query is no part of a base URL."""

from __future__ import annotations

import pytest

from control_plane import validation
from control_plane.errors import InvalidArgument
from odock.v1 import common_pb2

OPENAI = common_pb2.PROVIDER_FAMILY_OPENAI
ANTHROPIC = common_pb2.PROVIDER_FAMILY_ANTHROPIC
GEMINI = common_pb2.PROVIDER_FAMILY_GEMINI
VLLM = common_pb2.PROVIDER_FAMILY_VLLM

CONVENTION_REFUSED = [
    (ANTHROPIC, "https://api.anthropic.com/v1/"), (ANTHROPIC, "https://api.anthropic.com/V1"),
    (ANTHROPIC, "https://api.anthropic.com/v1//"), (ANTHROPIC, "https://api.anthropic.com/v1/."),
    (ANTHROPIC, "https://api.anthropic.com/%76%31"), (ANTHROPIC, "https://api.anthropic.com/x/../v1"),
    (GEMINI, "https://generativelanguage.googleapis.com/V1BETA/"), (GEMINI, "https://generativelanguage.googleapis.com/v1beta/."),
    (GEMINI, "https://generativelanguage.googleapis.com/v1beta/models/"), (OPENAI, "https://api.openai.com/V1"),
    (OPENAI, "https://api.openai.com"), (OPENAI, "https://api.openai.com./"), (OPENAI, "https://api.openai.com/v1/chat/completions/."),
    (VLLM, "http://vllm.example.com:8000/v1/Chat/Completions/"),
]  # fmt: skip
CONVENTION_ACCEPTED = [
    (OPENAI, "https://api.openai.com/v1/"), (OPENAI, "https://API.OPENAI.COM/v1"), (OPENAI, "https://api.openai.com:443/v1"),
    (ANTHROPIC, "https://api.anthropic.com/"), (GEMINI, "https://generativelanguage.googleapis.com/"),
    (VLLM, "http://vllm.example.com:8000/v1/"), (OPENAI, "https://proxy.example.com/V1"),
]  # fmt: skip


def test_base_url_conventions_see_through_spelling() -> None:
    """Dot segments, escaped letters and an upper-case /V1 reached the provider as a bare 404 before the fix."""
    for family, url in CONVENTION_REFUSED:
        validation.base_url("model.base_url", url)
        with pytest.raises(InvalidArgument) as info:
            validation.base_url_convention("model.base_url", url, family)
        assert "base URL" in str(info.value), (url, info.value)
    for family, url in CONVENTION_ACCEPTED:
        validation.base_url("model.base_url", url)
        validation.base_url_convention("model.base_url", url, family)
    with pytest.raises(InvalidArgument, match="paths are case-sensitive"):
        validation.base_url_convention("f", "https://api.openai.com/V1", OPENAI)
    for url in ("https://api.anthropic.com/v1?beta=true", "https://api.anthropic.com?x"):
        with pytest.raises(InvalidArgument, match="must not contain a query"):
            validation.base_url("model.base_url", url)
