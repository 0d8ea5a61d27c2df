"""Every ODOCK_* name written anywhere in deploy/ or the operator docs is a real variable."""

from __future__ import annotations

from tests.system.deploy.envcheck import DEPLOY, REPO, cli_vars, mentioned, plane_vars

# deploy/examples/ belongs to the CLI's example files; secrets/ holds generated values.
SKIP_DIRS = {DEPLOY / "examples", DEPLOY / "secrets"}


def known() -> frozenset[str]:
    names = plane_vars("control_plane").allowed | plane_vars("data_plane").allowed | cli_vars()
    # Sanity: the parsers found the variables docs/architecture.md lists.
    assert {"ODOCK_KEKS", "ODOCK_DATABASE_URL", "ODOCK_NODE_TOKENS"} <= plane_vars("control_plane").allowed
    assert {"ODOCK_NODE_TOKEN", "ODOCK_MAX_STALENESS_SECONDS", "ODOCK_WORKERS"} <= plane_vars(
        "data_plane"
    ).allowed
    assert plane_vars("data_plane").required_secrets == {"ODOCK_NODE_TOKEN", "ODOCK_KEY_PEPPER"}
    return names


def test_every_variable_named_in_deploy_and_the_runbook_exists() -> None:
    allowed = known()
    files = [
        p for p in DEPLOY.rglob("*")
        if p.is_file() and not any(d in p.parents for d in SKIP_DIRS)
    ]  # fmt: skip
    files += [REPO / "docs" / name for name in
              ("operations.md", "production.md", "troubleshooting.md", "permissions.md")]  # fmt: skip
    seen: set[str] = set()
    for path in files:
        names = mentioned(path.read_text(encoding="utf-8"))
        seen |= names
        assert names <= allowed, f"{path.relative_to(REPO)}: unknown {sorted(names - allowed)}"
    assert len(seen) > 15
