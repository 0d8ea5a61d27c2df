"""OpenAI files and batches: a stateful fake, one store per fake provider (``FakeProvider.objects``).

Objects belong to the provider account that created them (the bearer key of the upload / create),
as at OpenAI: another account gets the same 404 as for a missing id and never sees them in a list.
Uploads with purpose ``batch`` are validated like OpenAI's JSONL input (``custom_id`` unique, ``method``
POST, ``url`` a batch endpoint, ``body`` an object naming one ``model`` for the whole file); the parsed
lines are kept (``StoredFile.lines``) so a test can check which upstream model each line arrived with.
A batch is created ``validating``; tests move it on with :meth:`OpenAIObjects.start`, :meth:`complete`
(which writes a real output file, and an error file for failed lines), :meth:`fail` and
:meth:`finish_cancel`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.fakes.errors import native_error
from tests.fakes.multipart import field as form_field
from tests.fakes.openai_audio import invalid
from tests.fakes.reply import CREATED, Ask, JsonReply, StreamReply, dumps

PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
BATCH_ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions",
                   "/v1/moderations", "/v1/images/generations", "/v1/images/edits")
MAX_BATCH_LINES = 50_000
CONTENT_CHUNK = 64 * 1024
FILE_LIST_MAX, BATCH_LIST_MAX = 10_000, 100
_OBJECT = re.compile(r"^/v1/(files|batches)/([^/]+)(/content|/cancel)?$")
Handler = Callable[[Ask], JsonReply | StreamReply]


@dataclass
class StoredFile:
    meta: dict[str, Any]  # the FileObject JSON
    content: bytes
    account: str  # the bearer key that uploaded it
    lines: list[dict[str, Any]] = field(default_factory=list)  # purpose=batch: the parsed JSONL lines
    model: str = ""  # purpose=batch: the one model its lines name


@dataclass
class StoredBatch:
    meta: dict[str, Any]  # the Batch JSON
    account: str


def no_file(file_id: str) -> JsonReply:
    """OpenAI's answer for a missing (or another account's) file."""
    return invalid(f"No such File object: {file_id}", "id", 404)


def no_batch(batch_id: str) -> JsonReply:
    """OpenAI's answer for a missing (or another account's) batch."""
    return invalid(f"No batch found with id '{batch_id}'.", None, 404)


def _account(headers: Any) -> str:
    auth = str(headers.get("Authorization", ""))
    return auth[7:] if auth.startswith("Bearer ") else ""


class OpenAIObjects:
    """Files and batches per provider account."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}
        self._clock = CREATED

    def route(self, method: str, native_path: str, headers: Any) -> Handler | None:
        """The handler for an OpenAI files/batches request, or None when the path is not one."""
        account = _account(headers)
        if native_path in ("/v1/files", "/v1/batches"):
            kind = native_path[4:]
            table: dict[tuple[str, str], Handler] = {
                ("POST", "files"): lambda ask: self._upload(ask, account),
                ("GET", "files"): lambda ask: self._list_files(ask, account),
                ("POST", "batches"): lambda ask: self._create_batch(ask, account),
                ("GET", "batches"): lambda ask: self._list_batches(ask, account),
            }
            return table.get((method, kind))
        m = _OBJECT.match(native_path)
        if m is None:
            return None
        kind, oid, tail = m.group(1), unquote(m.group(2)), m.group(3) or ""
        ops: dict[tuple[str, str, str], Handler] = {
            ("GET", "files", ""): lambda ask: self._file_op(oid, account, "retrieve"),
            ("DELETE", "files", ""): lambda ask: self._file_op(oid, account, "delete"),
            ("GET", "files", "/content"): lambda ask: self._file_op(oid, account, "content"),
            ("GET", "batches", ""): lambda ask: self._batch_op(oid, account, "retrieve"),
            ("POST", "batches", "/cancel"): lambda ask: self._batch_op(oid, account, "cancel"),
        }
        return ops.get((method, kind, tail))

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    # files

    def add_file(self, account: str, filename: str, content: bytes, purpose: str) -> StoredFile:
        """Store a file as if uploaded by ``account`` (also used for batch output files)."""
        fid = "file-" + secrets.token_hex(11)
        meta = {"id": fid, "object": "file", "bytes": len(content), "created_at": self._tick(),
                "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None,
                "status_details": None}
        stored = StoredFile(meta, content, account)
        self.files[fid] = stored
        return stored

    def file(self, file_id: str) -> StoredFile:
        """A stored file (KeyError when missing)."""
        return self.files[file_id]

    def _upload(self, ask: Ask, account: str) -> JsonReply:
        if not ask.form:
            return invalid("Invalid Content-Type header (expected multipart/form-data).")
        part = form_field(ask.form, "file")
        if part is None or part.filename is None:
            return invalid("Missing required parameter: 'file'.", "file")
        purpose_part = form_field(ask.form, "purpose")
        if purpose_part is None:
            return invalid("Missing required parameter: 'purpose'.", "purpose")
        purpose = purpose_part.data.decode("utf-8", "replace")
        if purpose not in PURPOSES:
            return invalid(f"Invalid value for 'purpose': '{purpose[:64]}'.", "purpose")
        lines: list[dict[str, Any]] = []
        model = ""
        if purpose == "batch":
            if not part.filename.endswith(".jsonl"):
                return invalid("Invalid file format for Batch API. Must be .jsonl", "file")
            checked = parse_batch_lines(part.data)
            if isinstance(checked, JsonReply):
                return checked
            lines, model = checked
        stored = self.add_file(account, part.filename, part.data, purpose)
        stored.lines, stored.model = lines, model
        seconds = form_field(ask.form, "expires_after[seconds]")
        if seconds is not None and seconds.data.isdigit():
            stored.meta["expires_at"] = stored.meta["created_at"] + int(seconds.data)
        return JsonReply(stored.meta)

    def _list_files(self, ask: Ask, account: str) -> JsonReply:
        order = ask.query.get("order", "desc")
        if order not in ("asc", "desc"):
            return invalid(f"Invalid value for 'order': '{order[:16]}'.", "order")
        limit = _limit(ask.query, FILE_LIST_MAX, FILE_LIST_MAX)
        if limit is None:
            return invalid(f"Invalid 'limit': must be between 1 and {FILE_LIST_MAX}.", "limit")
        purpose = ask.query.get("purpose")
        mine = [f.meta for f in self.files.values()
                if f.account == account and (purpose is None or f.meta["purpose"] == purpose)]
        return _page(mine if order == "asc" else mine[::-1], ask.query.get("after"), limit)

    def _file_op(self, file_id: str, account: str, op: str) -> JsonReply | StreamReply:
        stored = self.files.get(file_id)
        if stored is None or stored.account != account:
            return no_file(file_id)
        if op == "delete":
            del self.files[file_id]
            return JsonReply({"id": file_id, "object": "file", "deleted": True})
        if op == "retrieve":
            return JsonReply(stored.meta)
        data = stored.content
        frames = [data[i:i + CONTENT_CHUNK] for i in range(0, len(data), CONTENT_CHUNK)] or [b""]
        return StreamReply(frames, len(frames) - 1, content_type="application/octet-stream")

    # batches

    def batch(self, batch_id: str) -> dict[str, Any]:
        """A batch's JSON (KeyError when missing)."""
        return self.batches[batch_id].meta

    def _create_batch(self, ask: Ask, account: str) -> JsonReply:
        p = ask.payload
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(p.get(name), str):
                return invalid(f"Missing required parameter: '{name}'.", name)
        if p["endpoint"] not in BATCH_ENDPOINTS:
            return invalid(f"Invalid value for 'endpoint': '{p['endpoint'][:64]}'.", "endpoint")
        if p["completion_window"] != "24h":
            return invalid("Invalid value for 'completion_window': only '24h' is supported.", "completion_window")
        metadata = p.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16):
            return invalid("Invalid 'metadata': at most 16 string pairs.", "metadata")
        source = self.files.get(p["input_file_id"])
        if source is None or source.account != account:
            return no_file(p["input_file_id"])
        if source.meta["purpose"] != "batch":
            return invalid(f"File {source.meta['id']} has purpose '{source.meta['purpose']}'; a batch input "
                           "file must have purpose 'batch'.", "input_file_id")
        now = self._tick()
        meta: dict[str, Any] = {
            "id": "batch_" + secrets.token_hex(12), "object": "batch", "endpoint": p["endpoint"],
            "model": source.model or None, "errors": None, "input_file_id": source.meta["id"],
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86_400, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": _usage(0, 0), "metadata": metadata,
        }
        self.batches[meta["id"]] = StoredBatch(meta, account)
        wrong = [i for i, line in enumerate(source.lines, 1) if line["url"] != p["endpoint"]]
        if wrong:
            self.fail(meta["id"], [{"code": "invalid_url", "line": n, "param": "url",
                                    "message": f"The URL provided for this request does not match the batch "
                                               f"endpoint {p['endpoint']}."} for n in wrong])
        return JsonReply(meta)

    def _list_batches(self, ask: Ask, account: str) -> JsonReply:
        limit = _limit(ask.query, 20, BATCH_LIST_MAX)
        if limit is None:
            return invalid(f"Invalid 'limit': must be between 1 and {BATCH_LIST_MAX}.", "limit")
        mine = [b.meta for b in self.batches.values() if b.account == account][::-1]
        return _page(mine, ask.query.get("after"), limit)

    def _batch_op(self, batch_id: str, account: str, op: str) -> JsonReply:
        stored = self.batches.get(batch_id)
        if stored is None or stored.account != account:
            return no_batch(batch_id)
        meta = stored.meta
        if op == "cancel":
            if meta["status"] not in ("validating", "in_progress", "finalizing"):
                return invalid(f"Cannot cancel a batch with status '{meta['status']}'.", None, 409)
            meta.update(status="cancelling", cancelling_at=self._tick())
        return JsonReply(meta)

    def start(self, batch_id: str) -> dict[str, Any]:
        """validating -> in_progress."""
        meta = self.batch(batch_id)
        total = len(self.files[meta["input_file_id"]].lines) if meta["input_file_id"] in self.files else 0
        meta.update(status="in_progress", in_progress_at=self._tick(),
                    request_counts={"total": total, "completed": 0, "failed": 0})
        return meta

    def complete(self, batch_id: str, usage: dict[str, Any] | None = None, failed: int = 0) -> dict[str, Any]:
        """-> completed: writes the output file (and an error file for the last ``failed`` lines).

        ``usage`` defaults to the sum of the successful lines' usage (see :func:`line_usage`).
        """
        stored = self.batches[batch_id]
        meta = stored.meta
        if meta["in_progress_at"] is None:
            self.start(batch_id)
        source = self.files.get(meta["input_file_id"])
        lines = source.lines if source is not None else []
        good, bad = lines[: len(lines) - failed], lines[len(lines) - failed:]
        out = b"".join(dumps(output_line(line, meta["endpoint"])) + b"\n" for line in good)
        meta["output_file_id"] = self.add_file(stored.account, f"{batch_id}_output.jsonl", out,
                                               "batch_output").meta["id"]
        if bad:
            err = b"".join(dumps(error_line(line)) + b"\n" for line in bad)
            meta["error_file_id"] = self.add_file(stored.account, f"{batch_id}_error.jsonl", err,
                                                  "batch_output").meta["id"]
        if usage is None:
            ins, outs = zip(*(line_usage(line, meta["endpoint"]) for line in good), strict=True) if good else ((), ())
            usage = _usage(sum(ins), sum(outs))
        meta.update(status="completed", finalizing_at=self._tick(), completed_at=self._tick(), usage=usage,
                    request_counts={"total": len(lines), "completed": len(good), "failed": len(bad)})
        return meta

    def fail(self, batch_id: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
        """-> failed with ``errors`` (OpenAI's {code, line, message, param} items)."""
        meta = self.batch(batch_id)
        meta.update(status="failed", failed_at=self._tick(), errors={"object": "list", "data": errors})
        return meta

    def finish_cancel(self, batch_id: str) -> dict[str, Any]:
        """cancelling -> cancelled."""
        meta = self.batch(batch_id)
        meta.update(status="cancelled", cancelled_at=self._tick())
        return meta


def parse_batch_lines(data: bytes) -> tuple[list[dict[str, Any]], str] | JsonReply:
    """OpenAI's batch input checks; the lines and their one model, or the 400 naming the line."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    model = ""
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        if len(lines) >= MAX_BATCH_LINES:
            return invalid(f"Batch input file has more than {MAX_BATCH_LINES} requests.", "file")
        try:
            line = json.loads(raw)
        except ValueError:
            return invalid(f"Line {n}: invalid JSON.", "file")
        if not isinstance(line, dict):
            return invalid(f"Line {n}: expected a JSON object.", "file")
        custom_id, body = line.get("custom_id"), line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            return invalid(f"Line {n}: missing 'custom_id'.", "file")
        if custom_id in seen:
            return invalid(f"Line {n}: duplicate custom_id '{custom_id[:64]}'.", "file")
        seen.add(custom_id)
        if line.get("method") != "POST":
            return invalid(f"Line {n}: 'method' must be 'POST'.", "file")
        if line.get("url") not in BATCH_ENDPOINTS:
            return invalid(f"Line {n}: unsupported 'url' {str(line.get('url'))[:64]!r}.", "file")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return invalid(f"Line {n}: 'body' must be an object naming a 'model'.", "file")
        if model and body["model"] != model:
            return invalid(f"Line {n}: all requests in a batch input file must use the same model "
                           f"(found '{body['model'][:64]}' after '{model[:64]}').", "file")
        model = body["model"]
        lines.append(line)
    if not lines:
        return invalid("Batch input file is empty.", "file")
    return lines, model


def line_usage(line: dict[str, Any], endpoint: str) -> tuple[int, int]:
    """The fake's (input, output) tokens for one batch line: body bytes // 4 + 1, and 3 (0 for embeddings)."""
    return len(dumps(line["body"])) // 4 + 1, 0 if endpoint == "/v1/embeddings" else 3


def output_line(line: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """A successful batch output line in OpenAI's shape."""
    model = line["body"]["model"]
    ins, outs = line_usage(line, endpoint)
    if endpoint == "/v1/embeddings":
        body: dict[str, Any] = {"object": "list", "model": model,
                                "data": [{"object": "embedding", "index": 0, "embedding": [0.125, 0.25]}],
                                "usage": {"prompt_tokens": ins, "total_tokens": ins}}
    else:
        body = {"id": "chatcmpl-" + secrets.token_hex(8), "object": "chat.completion", "created": CREATED,
                "model": model, "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": "piece0 piece1 piece2 ", "refusal": None, "annotations": []},
                    "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": ins, "completion_tokens": outs, "total_tokens": ins + outs}}
    return {"id": "batch_req_" + secrets.token_hex(8), "custom_id": line["custom_id"],
            "response": {"status_code": 200, "request_id": "req_" + secrets.token_hex(8), "body": body},
            "error": None}


def error_line(line: dict[str, Any]) -> dict[str, Any]:
    """A failed batch line as it appears in the error file."""
    return {"id": "batch_req_" + secrets.token_hex(8), "custom_id": line["custom_id"],
            "response": {"status_code": 400, "request_id": "req_" + secrets.token_hex(8),
                         "body": native_error("openai", 400, "fake: this request failed")},
            "error": None}


def _usage(ins: int, outs: int) -> dict[str, Any]:
    return {"input_tokens": ins, "output_tokens": outs, "total_tokens": ins + outs,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def _limit(query: dict[str, str], default: int, most: int) -> int | None:
    raw = query.get("limit")
    if raw is None:
        return default
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= most else None


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> JsonReply:
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    data = items[:limit]
    return JsonReply({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit})
