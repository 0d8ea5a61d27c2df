"""Odock's hot-path benchmark: fake upstream, bare floor proxy, load generators, scenarios, report.

Run it with ``scripts/bench`` (see docs/benchmarks.md); the modules are also importable for the
smoke tests under tests/system/bench.
"""
