"""openai-python's generated API tests (audio, moderations, files, batches, models) pass through the gateway.

One run of the whole selection (``harness.py``; docs/sdk-tests.md): every test passes, none is
skipped, except ``DEVIATIONS``, which must fail (so a change in the gateway that fixes or widens
one shows up here), and the requests really reached the OpenAI mock through the gateway.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.system.sdk_suite.fetch import cache_dir, fetch_all
from tests.system.sdk_suite.harness import SELECTED, SuiteResult, run_suite

# Test (class::name without the client parameter) -> (what its failure says, why the gateway answers so).
DEVIATIONS = {
    **{
        f"test_models.TestModels::{name}": ("Error code: 405", "a key may not delete the provider's models")
        for name in ("test_method_delete", "test_raw_response_delete", "test_streaming_response_delete")
    },
}
DEVIATIONS |= {test.replace(".Test", ".TestAsync"): why for test, why in DEVIATIONS.items()}

# Per file, as recorded in docs/sdk-tests.md for RECORDED_VERSION (another SDK release may add or
# drop tests): sync tests run with 2 clients (loose, strict), async ones with 3 (+ aiohttp).
RECORDED_VERSION = "3.63.0"
EXPECTED_TOTALS = {
    "tests/api_resources/audio/test_transcriptions.py": 40,
    "tests/api_resources/audio/test_translations.py": 20,
    "tests/api_resources/audio/test_speech.py": 20,
    "tests/api_resources/test_moderations.py": 20,
    "tests/api_resources/test_files.py": 120,
    "tests/api_resources/test_batches.py": 80,
    "tests/api_resources/test_models.py": 55,
}


def _deviation(failure: str) -> str | None:
    """The known test a failure line is of, if it failed as stated in DEVIATIONS."""
    # "tests.api_resources.test_files.TestFiles::test_x[strict]: message"
    test, _, message = failure.partition(": ")
    test = test.split("[", 1)[0]
    known = next((k for k in DEVIATIONS if test.endswith("." + k)), None)
    return known if known is not None and DEVIATIONS[known][0] in message else None


@pytest.fixture(scope="module")
def suite() -> SuiteResult:
    return asyncio.run(run_suite(fetch_all(cache_dir())))


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first run downloads the tests, the spec and Prism
def test_generated_api_tests_pass_through_the_gateway(suite: SuiteResult) -> None:
    assert set(suite.files) == set(SELECTED), suite.output[-5000:]
    for path, expected in EXPECTED_TOTALS.items():
        result = suite.files[path]
        if suite.sdk_version == RECORDED_VERSION:
            assert result.total == expected, (path, result, suite.output[-5000:])
        assert result.total > 0 and result.skipped == 0, (path, result.failures, suite.output[-5000:])
    total = suite.totals()
    unexpected = [f for f in total.failures if _deviation(f) is None]
    assert unexpected == [], "\n".join(unexpected)
    # Each deviation fails, as stated, with every client (2 sync, 3 async).
    deviating = Counter(_deviation(f) for f in total.failures)
    assert deviating == {test: 3 if ".TestAsync" in test else 2 for test in DEVIATIONS}, deviating
    # The answers came from the mock, through the gateway: every endpoint family was reached.
    reached = {path.split("/")[1] for _method, path, status in suite.upstream if status < 400}
    assert {"audio", "moderations", "files", "batches"} <= reached, suite.upstream
