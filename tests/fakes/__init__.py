"""Fake upstream LLM providers (the only fake in the test suite)."""
