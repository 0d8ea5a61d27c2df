"""A resolver seam for the data plane's egress check: names resolve to what a test says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from data_plane.upstream import egress


@pytest.fixture
def fake_dns() -> Iterator[dict[str, list[str]]]:
    """``answers[host] = [addresses]``; an unknown name fails as DNS would (DNS changed since create time)."""
    answers: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"no such name {host}")
        return answers[host]

    saved = egress.resolve
    egress.resolve = resolve
    try:
        yield answers
    finally:
        egress.resolve = saved
