"""Request-body inspection and model rewriting (JSON and multipart), pure functions."""

from data_plane.payload.errors import PayloadError
from data_plane.payload.json_body import ABSENT, DEFAULT_MAX_DEPTH, JsonFacts, inspect_json, with_model
from data_plane.payload.multipart import MultipartFacts, form_flag, inspect_multipart, multipart_with_model

__all__ = [
    "ABSENT",
    "DEFAULT_MAX_DEPTH",
    "JsonFacts",
    "MultipartFacts",
    "PayloadError",
    "form_flag",
    "inspect_json",
    "inspect_multipart",
    "multipart_with_model",
    "with_model",
]
