"""odockctl model create/update/get/list with the registry fields (issue 13), through a real
control plane: flags, human and --json output, one-line errors for bad values."""

from __future__ import annotations

from tests.odockctl.runner import Ctl, assert_one_line_error

ANTHROPIC_SECRET = "sk-ant-test-registry-0001"
CLAUDE = ("--family", "anthropic", "--slug", "claude-sonnet-4-5", "--base-url", "https://api.anthropic.com",
          "--credential", "claude")  # fmt: skip


def _setup(ctl: Ctl, org: str) -> None:
    ctl.ok("org", "create", org)
    ctl.ok("credential", "create", org, "claude", "--family", "anthropic", stdin=ANTHROPIC_SECRET)


def test_create_get_list_update_round_trip(ctl: Ctl) -> None:
    _setup(ctl, "registry")
    created = ctl.json(
        "model", "create", "registry", "sonnet", *CLAUDE, "--openai-compatible", "--context-window", "200_000",
        "--max-output-tokens", "8192", "--capabilities", "streaming, tools",
    )  # fmt: skip
    assert created["openai_compatible"] is True
    assert (created["context_window"], created["max_output_tokens"]) == ("200000", "8192")
    assert created["capabilities"] == {"tools": True, "streaming": True}
    assert ctl.json("model", "get", "registry", "sonnet") == created

    human = ctl.ok("model", "get", "registry", "sonnet").out
    assert "openai compatible" in human and "tools,streaming" in human and "200000" in human
    assert "8192" in human
    table = ctl.ok("model", "list", "registry").lines()
    assert table[0].split()[-2:] == ["OPENAI", "CONTEXT"] and table[1].split()[-2:] == ["yes", "200000"]

    plain = ctl.json("model", "create", "registry", "haiku", *CLAUDE)
    assert plain["openai_compatible"] is False and plain["capabilities"] == {}
    assert "context_window" not in plain and "max_output_tokens" not in plain  # 0: unknown / default
    assert "capabilities" in ctl.ok("model", "get", "registry", "haiku").out
    assert "none" in ctl.ok("model", "get", "registry", "haiku").out

    updated = ctl.json(
        "model", "update", "registry", "sonnet", "--no-openai-compatible", "--capabilities", "none"
    )
    assert updated["openai_compatible"] is False and updated["capabilities"] == {}
    assert updated["context_window"] == "200000" and updated["max_output_tokens"] == "8192"  # untouched
    again = ctl.json(
        "model", "update", "registry", "sonnet", "--context-window", "0", "--capabilities", "vision"
    )
    assert "context_window" not in again and again["capabilities"] == {"vision": True}


def test_bad_values_are_one_line_errors(ctl: Ctl) -> None:
    _setup(ctl, "registry-bad")
    ctl.ok("model", "create", "registry-bad", "sonnet", *CLAUDE)
    update = ("model", "update", "registry-bad", "sonnet")
    assert_one_line_error(
        ctl.run(*update, "--capabilities", "tools,telepathy"), 2, "--capabilities", "telepathy"
    )
    assert_one_line_error(ctl.run(*update, "--context-window", "-1"), 2, "--context-window")
    assert_one_line_error(ctl.run(*update, "--max-output-tokens", "lots"), 2, "--max-output-tokens")
    assert_one_line_error(
        ctl.run(*update, "--context-window", "100000001"),
        1,
        "INVALID_ARGUMENT",
        "model.context_window",
        "at most",
    )
    assert_one_line_error(
        ctl.run(*update, "--max-output-tokens", "10000001"), 1, "INVALID_ARGUMENT", "model.max_output_tokens"
    )
    result = ctl.run(*update, "--openai-compatible", "--no-openai-compatible")
    assert result.code == 2 and "not allowed with argument" in result.err
    unchanged = ctl.json("model", "get", "registry-bad", "sonnet")
    assert unchanged["openai_compatible"] is False and "context_window" not in unchanged
