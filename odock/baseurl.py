"""Upstream base-URL conventions per provider family, shared by the control plane (model create and
update) and ``odockctl apply`` (which checks a whole file before changing anything)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from odock.v1 import common_pb2

# Unambiguous base-URL mistakes per family (docs/architecture.md "Upstream base URLs"): the data
# plane appends the native path, so these would reach the provider as /v1/v1/messages and the like
# and come back as the provider's bare 404. Only path endings no working proxy uses are refused:
# OpenAI-compatible servers live under many prefixes (/openai/v1, /api/v1, /inference/v1) and some
# at the root (DeepSeek, Perplexity), so an OpenAI base URL without /v1 is refused only for
# api.openai.com itself.
_ENDPOINT_SUFFIXES = (
    "/chat/completions", "/completions", "/responses", "/embeddings", "/messages",
    ":generatecontent", ":streamgeneratecontent", "/models",
)  # fmt: skip
_ROOT_SUFFIXES: dict[int, tuple[str, ...]] = {
    common_pb2.PROVIDER_FAMILY_ANTHROPIC: ("/v1",),
    common_pb2.PROVIDER_FAMILY_GEMINI: ("/v1", "/v1beta", "/v1alpha"),
}


def convention_problem(value: str, family_value: int) -> str | None:
    """Why a base URL cannot work for ``family`` (a message that says how to fix it), or None."""
    parts = urlsplit(value)
    path = _normalized_path(parts.path)
    name = common_pb2.ProviderFamily.Name(family_value).removeprefix("PROVIDER_FAMILY_").lower()  # type: ignore[arg-type]
    article = "an" if name[:1] in "aeiou" else "a"
    if path.endswith(_ENDPOINT_SUFFIXES):
        return (
            f"{article} {name} base URL must not include the endpoint path ({parts.path[:80]!r});"
            " give what the provider's SDK takes as its base URL (docs/architecture.md)"
        )
    for suffix in _ROOT_SUFFIXES.get(family_value, ()):
        if path.endswith(suffix):
            return (
                f"{article} {name} base URL is the server root (the SDK path includes {suffix});"
                f" drop the trailing {suffix}"
            )
    host = (parts.hostname or "").rstrip(".")
    exact = _normalized_path(parts.path, lower=False)
    if family_value == common_pb2.PROVIDER_FAMILY_OPENAI and host == "api.openai.com" and exact != "/v1":
        hint = f"not {parts.path[:80]!r}: paths are case-sensitive" if path == "/v1" else "add /v1"
        return f"the OpenAI API's base URL is https://api.openai.com/v1 ({hint})"
    return None


_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")


def _normalized_path(path: str, *, lower: bool = True) -> str:
    """``path`` as a server sees it (RFC 3986 6.2.2): unreserved escapes decoded ("%76%31" is
    "v1"), dot segments resolved ("/v1/." is "/v1"), without trailing slashes; lower-cased."""
    path = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment not in (".", ""):
            out.append(segment)
    normalized = "/" + "/".join(out) if out else ""
    return normalized.lower() if lower else normalized
