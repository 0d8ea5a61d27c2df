"""openai-python's own generated API tests run through the gateway (docs/sdk-tests.md)."""
