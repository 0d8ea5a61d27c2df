"""Copied to ``tests/api_resources/conftest.py`` of openai-python's extracted test tree (never
imported from this repository): what makes its generated tests run through the gateway.

- The SDK's ``client`` fixtures use the module constant ``api_key`` ("My API Key"): it becomes the
  gateway's virtual key (``ODOCK_SDK_SUITE_KEY``). ``TEST_API_BASE_URL`` is the gateway's /v1.
- ``respx2_mock``: instead of answering on the client side (the request would never leave the
  test), a mocked answer is programmed into the upstream front (``ODOCK_SDK_SUITE_FRONT``): the
  request crosses the gateway and Prism validates it, and the test sees the programmed answer
  only if the gateway relayed it faithfully. So the aiohttp variants, which the SDK skips because
  respx cannot intercept aiohttp, run too.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest

FRONT = os.environ["ODOCK_SDK_SUITE_FRONT"]
CONTROL = FRONT + "/__front/program"
OWN = FRONT + "/__front/own"
sys.modules["tests.conftest"].api_key = os.environ["ODOCK_SDK_SUITE_KEY"]  # type: ignore[attr-defined]
_AIOHTTP_SKIP = "aiohttp client is not compatible with respx2_mock"


class _Route:
    def __init__(self, method: str, path: str) -> None:
        self.method, self.path = method, path

    def mock(self, return_value: httpx2.Response) -> _Route:
        body = return_value.read()
        headers = [[k, v] for k, v in return_value.headers.items() if k.lower() != "content-length"]
        resp = httpx.post(CONTROL, timeout=10, json={
            "method": self.method, "path": self.path, "status": return_value.status_code, "headers": headers,
            "body": base64.b64encode(body).decode("ascii"),
        })  # fmt: skip
        resp.raise_for_status()
        return self


class UpstreamMock:
    """What the generated tests use of respx's MockRouter: ``.get/.post(path).mock(return_value=...)``."""

    def _route(self, method: str, path: str) -> _Route:
        return _Route(method, path)

    def get(self, path: str, **_: Any) -> _Route:
        return self._route("GET", path)

    def post(self, path: str, **_: Any) -> _Route:
        return self._route("POST", path)

    def delete(self, path: str, **_: Any) -> _Route:
        return self._route("DELETE", path)


@pytest.fixture(autouse=True)
def _owned_ids() -> None:
    """The literal ids ("file_id", "batch_id") are the org's before every test, as a real client's
    own objects would be: an earlier test's delete must not turn a later retrieve into a 404."""
    httpx.post(OWN, timeout=30).raise_for_status()


@pytest.fixture
def respx2_mock() -> Iterator[UpstreamMock]:
    yield UpstreamMock()
    httpx.delete(CONTROL, timeout=10).raise_for_status()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.own_markers[:] = [
            m for m in item.own_markers if not (m.name == "skip" and m.kwargs.get("reason") == _AIOHTTP_SKIP)
        ]
