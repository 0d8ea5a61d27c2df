"""Every kind of bad input or failure: exactly one stderr line, a distinct non-zero exit, no traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.odockctl.runner import Ctl, assert_one_line_error

VALID = "orgs:\n  - name: errs\n    credentials:\n      - {name: c, family: openai, secret_env: K}\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_control_plane(tmp_path: Path) -> None:
    ctl = Ctl(f"127.0.0.1:{_closed_port()}", "x" * 40)
    assert_one_line_error(
        ctl.run("org", "list", "--timeout", "5"), 3, "cannot reach the control plane", "127.0.0.1"
    )
    path = tmp_path / "f.yaml"
    path.write_text(VALID)
    assert_one_line_error(ctl.run("apply", "-f", str(path), env={"K": "sk-1234567890ab"}), 3, "cannot reach")


def test_wrong_and_missing_token(ctl: Ctl, tmp_path: Path) -> None:
    wrong = Ctl(ctl.address, "wrong-token-" + "x" * 32)
    assert_one_line_error(wrong.run("org", "list"), 1, "UNAUTHENTICATED")
    path = tmp_path / "f.yaml"
    path.write_text(VALID)
    assert_one_line_error(
        wrong.run("apply", "-f", str(path), env={"K": "sk-1234567890ab"}), 1, "UNAUTHENTICATED"
    )
    assert_one_line_error(ctl.run("org", "list", env={"ODOCK_ADMIN_TOKEN": ""}), 2, "no admin token")
    token_file = tmp_path / "token"
    token_file.write_text(ctl.token + "\n")
    from_file = ctl.run(
        "--json", "tier", "list", env={"ODOCK_ADMIN_TOKEN": "", "ODOCK_ADMIN_TOKEN_FILE": str(token_file)}
    )
    assert from_file.code == 0 and "free" in from_file.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "required"),
        (("org",), "required"),
        (("org", "frobnicate"), "invalid choice"),
        (("org", "list", "--bogus"), "unrecognized arguments: --bogus"),
        (("--timeout", "soon", "org", "list"), "--timeout"),
        (("--timeout", "0", "org", "list"), "--timeout"),
        (("org", "create", "x", "--monthly-spend-cap", "1.0000001"), "--monthly-spend-cap"),
        (("org", "update", "x"), "nothing to update"),
        (("key", "rotate", "o", "k", "--grace", "forever"), "--grace"),
        (("--tls-ca", "/nonexistent/ca.pem", "org", "list"), "--tls-ca"),
        (("apply",), "-f"),
        (("apply", "-f", "/nonexistent/file.yaml"), "/nonexistent/file.yaml"),
    ],
)
def test_usage_errors(ctl: Ctl, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(ctl.run(*args), 2, needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("orgs: [\n", "invalid YAML at line 2"),
        ("orgs:\n  - name: a\n    name: b\n", "duplicate key 'name'"),
        ("- just\n- a list\n", "expected a mapping"),
        ("version: 2\norgs: []\n", "version"),
        ("orgs:\n  - name: errs\n    keys:\n      - {name: k}\n", "all_models"),
        ("orgs:\n  - name: errs\n    default_models: {/v1/embeddings: ghost}\n", "ghost"),
    ],
)
def test_bad_file_shapes(ctl: Ctl, tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    assert_one_line_error(ctl.run("apply", "-f", str(path)), 2, needle)


def test_file_from_stdin_and_unwritable_keys_out(ctl: Ctl, tmp_path: Path) -> None:
    text = "orgs:\n  - name: errs-stdin\n    keys: [{name: k, all_models: true}]\n"
    bad_out = tmp_path / "missing-dir" / "keys.jsonl"
    assert_one_line_error(
        ctl.run("apply", "-f", "-", "--keys-out", str(bad_out), stdin=text), 2, "--keys-out"
    )
    assert "errs-stdin" not in [o["name"] for o in ctl.state()["orgs"]]
    result = ctl.ok("apply", "-f", "-", stdin=text)
    assert result.lines()[0] == "org errs-stdin: created"


def test_key_revoked_elsewhere_is_reported_not_refused(ctl: Ctl, tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("orgs:\n  - name: errs-revoked\n    keys: [{name: k, all_models: true}]\n")
    ctl.ok("apply", "-f", str(path))
    ctl.ok("key", "revoke", "errs-revoked", "k")
    result = ctl.ok("apply", "-f", str(path))  # exit 0: the rest of the file still applies
    assert "key errs-revoked/k: revoked elsewhere: left revoked" in result.out and result.err == ""
