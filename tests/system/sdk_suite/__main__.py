"""``scripts/openai-api-tests``: fetch, run the generated tests through the gateway, print the counts.

Exit 0 only when every selected test passed (none failed, none skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tests.system.sdk_suite.fetch import FetchError, cache_dir, fetch_all
from tests.system.sdk_suite.harness import SELECTED, SuiteResult, run_suite


def report(result: SuiteResult, verbose: bool) -> str:
    head = f"openai-python {result.sdk_version} generated API tests through the gateway"
    lines = [f"{head} ({result.seconds:.0f} s, pytest exit {result.exit_code}):"]
    for path, r in result.files.items():
        lines.append(f"  {path}: {r.passed} passed of {r.total} ({r.failed} failed, {r.skipped} skipped)")
    reached = sum(result.upstream.values())
    lines.append(f"  requests that reached the OpenAI mock through the gateway: {reached}")
    total = result.totals()
    lines += [f"  {f}" for f in total.failures]
    if verbose or not result.files:
        lines.append(result.output[-20000:])
    lines.append(f"{total.passed} passed, {total.failed} failed, {total.skipped} skipped")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openai-api-tests", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help=f"a subset of: {' '.join(SELECTED)}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's output too")
    args = parser.parse_args(argv)
    unknown = [f for f in args.files if f not in SELECTED]
    if unknown:
        parser.error(f"not a selected file: {unknown[0]}")
    try:
        art = fetch_all(cache_dir())
    except FetchError as exc:
        print(f"openai-api-tests: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(run_suite(art, tuple(args.files) or SELECTED))
    print(report(result, args.verbose))
    total = result.totals()
    return 0 if result.exit_code == 0 and total.failed == total.skipped == 0 and total.passed else 1


if __name__ == "__main__":
    sys.exit(main())
