"""odockctl as an operator mistypes it: one stderr line, the documented exit status, nothing echoed at length."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.odockctl.runner import Ctl, assert_one_line_error
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned


@pytest.fixture(scope="module")
def ctl(cp: ControlPlaneProcess) -> Ctl:
    return Ctl(cp.address, cp.admin_token)


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("org", "get", "org_aaaaaaaaaaaaaaaaaaaaaaaaaa"), 1, "NOT_FOUND"),
    (("key", "revoke", "no-such-org", "key_x"), 1, "NOT_FOUND"),
    (("usage", "get", "req_000000000000000000000000"), 1, "NOT_FOUND"),
    (("credential", "create", "x", "c", "--family", "klingon", "--secret-env", "S"), 2, "--family"),
    (("key", "create", "x", "--rpm", "-1", "--all-models"), 2, "--rpm"),
    (("usage", "totals", "x", "--since", "yesterday-ish"), 2, "--since"),
    (("--address", "127.0.0.1:99999", "org", "list"), 2, "out of range"),
    (("apply", "-f", "/"), 2, "cannot read"),
])  # fmt: skip
def test_mistakes_are_one_line_with_the_right_exit(
    ctl: Ctl, args: tuple[str, ...], code: int, needle: str
) -> None:
    assert_one_line_error(ctl.run(*args), code, needle)


def test_unknown_yaml_field_is_named_but_clipped(ctl: Ctl, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("orgs:\n  - name: clip\n    " + "z" * 1000 + ": 1\n")
    line = assert_one_line_error(ctl.run("apply", "-f", str(path)), 2, "unknown field", "orgs[0].zzz")
    assert len(line) < 300


async def test_model_of_a_foreign_family_credential_is_refused(ctl: Ctl, org: Provisioned) -> None:
    result = ctl.run(
        "model",
        "create",
        org.org.name,
        "mixed",
        "--family",
        "anthropic",
        "--slug",
        "s",
        "--base-url",
        "https://example.invalid",
        "--credential",
        org.credentials["openai"].name,
    )
    assert_one_line_error(result, 1, "INVALID_ARGUMENT", "model.credential")
