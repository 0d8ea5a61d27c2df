"""Payload and provider-dialect tests: pure functions, no servers or fixtures needed."""
