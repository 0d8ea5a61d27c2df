"""The official SDK clients pointed at the gateway, as the product docs configure them."""

from __future__ import annotations

import anthropic
import openai
from google import genai
from google.genai import types


def openai_client(gateway: str, key: str) -> openai.AsyncOpenAI:
    """OpenAI SDK: base_url = gateway + /v1."""
    return openai.AsyncOpenAI(api_key=key, base_url=gateway + "/v1", max_retries=0, timeout=20)


def vllm_client(gateway: str, key: str) -> openai.AsyncOpenAI:
    """OpenAI SDK for vLLM routes: base_url = gateway + /v1/vllm."""
    return openai.AsyncOpenAI(api_key=key, base_url=gateway + "/v1/vllm", max_retries=0, timeout=20)


def anthropic_client(gateway: str, key: str) -> anthropic.AsyncAnthropic:
    """Anthropic SDK: base_url = gateway root (it appends /v1/messages)."""
    return anthropic.AsyncAnthropic(api_key=key, base_url=gateway, max_retries=0, timeout=20)


def gemini_client(gateway: str, key: str) -> genai.Client:
    """google-genai: base_url = gateway root, api_version v1beta, no retries."""
    return genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=gateway, api_version="v1beta", timeout=20_000,
        retry_options=types.HttpRetryOptions(attempts=1)))
