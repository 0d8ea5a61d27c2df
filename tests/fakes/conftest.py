"""Fixtures for the fake provider's own tests."""

from tests.fakes.fixtures import fake_provider

__all__ = ["fake_provider"]
