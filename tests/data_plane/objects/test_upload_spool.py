"""Receiving an upload form into a spool file: bounded, paced, failures answered cleanly, nothing left behind."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from data_plane.errors import GatewayError
from data_plane.objects.upload import Form, Spool, receive_form, upstream_form, write_all
from data_plane.settings import Timeouts

Writer = Callable[[int, bytes], None]


class World:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.write: Writer | None = None
        self.limit = 1 << 30
        self.received: tuple[Form, bytes] | None = None


WORLD: web.AppKey[World] = web.AppKey("world", World)


async def handle(request: web.Request) -> web.StreamResponse:
    world = request.app[WORLD]
    try:
        spool = Spool(world.directory) if world.write is None else Spool(world.directory, world.write)
        async with spool:
            form = await receive_form(request, spool, Timeouts(), lambda f: world.limit)
            assert form.file is not None
            content_type, body = upstream_form([("purpose", form.fields.get("purpose", ""))], form.file,
                                               spool.path, spool.size)
            sent = b"".join([chunk async for chunk in body.chunks()])
            assert len(sent) == body.length
            world.received = (form, Path(spool.path).read_bytes())
            return web.Response(body=sent, content_type="application/octet-stream",
                                headers={"X-Upstream-Type": content_type})
    except GatewayError as err:
        return web.json_response({"code": err.code}, status=err.status)


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[World, httpx.AsyncClient]]:
    world = World(tmp_path)
    app = web.Application()
    app[WORLD] = world
    app.router.add_post("/upload", handle)
    server = TestServer(app)
    await server.start_server()
    async with httpx.AsyncClient(base_url=str(server.make_url("/"))) as http:
        yield world, http
    await server.close()


async def post(http: httpx.AsyncClient, data: bytes, purpose: str = "batch") -> httpx.Response:
    return await http.post("/upload", data={"purpose": purpose}, files={"file": ("in.jsonl", data, "application/jsonl")})


async def test_the_file_is_spooled_whole_and_rebuilt_around_the_fields(served: tuple[World, httpx.AsyncClient]) -> None:
    world, http = served
    data = os.urandom(3 * 1024 * 1024 + 17)
    answer = await post(http, data)
    assert answer.status_code == 200
    assert world.received is not None
    form, spooled = world.received
    assert spooled == data and form.fields["purpose"] == "batch"
    assert form.file is not None and form.file.filename == "in.jsonl" and form.file.content_type == "application/jsonl"
    # the rebuilt form parses back to the same fields and bytes
    rebuilt = httpx.Response(200, content=answer.content, headers={"Content-Type": answer.headers["X-Upstream-Type"]})
    assert b'name="purpose"\r\n\r\nbatch\r\n' in rebuilt.content
    assert data in rebuilt.content
    assert list(world.directory.iterdir()) == []


@pytest.mark.parametrize(("failure", "status", "code"), [
    (errno.ENOSPC, 507, "insufficient_storage"),
    (errno.EIO, 503, "upload_spool_failed"),
])
async def test_a_failing_disk_is_a_clear_error_and_leaves_nothing(
    served: tuple[World, httpx.AsyncClient], failure: int, status: int, code: str
) -> None:
    world, http = served
    calls = []

    def write(fd: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(failure, os.strerror(failure))
        os.write(fd, data)

    world.write = write
    answer = await post(http, os.urandom(4 * 1024 * 1024))
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert world.received is None
    assert list(world.directory.iterdir()) == []


async def test_a_short_write_is_completed_and_a_write_of_nothing_fails(
    served: tuple[World, httpx.AsyncClient]
) -> None:
    world, http = served

    def short(fd: int, data: bytes) -> None:  # the OS takes at most 1000 bytes per call
        write_all(fd, data, lambda f, view: os.write(f, view[:1000]))

    world.write = short
    data = os.urandom(50_000)
    assert (await post(http, data)).status_code == 200
    assert world.received is not None and world.received[1] == data

    def nothing(fd: int, data: bytes) -> None:  # the OS takes no byte at all
        write_all(fd, data, lambda f, view: 0)

    world.write, world.received = nothing, None
    answer = await post(http, data)
    assert (answer.status_code, answer.json()["code"]) == (503, "upload_spool_failed")
    assert list(world.directory.iterdir()) == []


async def test_the_limit_is_enforced_while_the_file_arrives(served: tuple[World, httpx.AsyncClient]) -> None:
    world, http = served
    world.limit = 100_000
    answer = await post(http, os.urandom(2 * 1024 * 1024))
    assert answer.status_code == 413
    assert list(world.directory.iterdir()) == []


@pytest.mark.parametrize(("content_type", "body", "code"), [
    ("application/json", b"{}", "invalid_multipart"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--xyz--\r\n",
     "missing_file"),
    ("multipart/form-data; boundary=xyz", b"garbage without any boundary", "invalid_multipart"),
])
async def test_malformed_forms(served: tuple[World, httpx.AsyncClient], content_type: str, body: bytes,
                               code: str) -> None:
    world, http = served
    answer = await http.post("/upload", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400 and answer.json()["code"] == code
    assert list(world.directory.iterdir()) == []


async def test_a_request_cancelled_mid_write_never_closes_the_descriptor_under_the_write(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    seen: dict[str, int | str] = {}

    def slow(fd: int, data: bytes) -> None:
        seen["fd"] = fd
        started.set()
        release.wait(10)
        try:
            os.fstat(fd)  # still this spool's descriptor: not closed under the write
            write_all(fd, data)
        except OSError as exc:
            seen["error"] = str(exc)
            raise

    spool = Spool(tmp_path, slow)

    async def upload() -> None:
        async with spool:
            seen["path"] = spool.path
            await spool.write(b"data")

    task = asyncio.create_task(upload())
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert Path(str(seen["path"])).exists()  # removal waits for the write in flight
    release.set()
    for _ in range(100):
        if not Path(str(seen["path"])).exists():
            break
        await asyncio.sleep(0.05)
    assert list(tmp_path.iterdir()) == []
    assert "error" not in seen
