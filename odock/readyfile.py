"""The ready file both planes write once serving: what a supervisor or test waits for."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_ready_file(path: Path, listener: str, address: str, metrics: str | None = None) -> None:
    """Atomically write ``{listener: address, "pid": N}`` (and ``"metrics": HOST:PORT``) to ``path``.

    ``listener`` names the main port's protocol (``"grpc"``, ``"http"``); the write is a rename,
    so a reader never sees a half-written file.
    """
    content: dict[str, object] = {listener: address, "pid": os.getpid()}
    if metrics is not None:
        content["metrics"] = metrics
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content), encoding="utf-8")
    os.replace(tmp, path)
