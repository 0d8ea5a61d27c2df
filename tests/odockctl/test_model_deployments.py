"""odockctl model create/update/get/list with deployments and fallbacks (issue 14), through a
real control plane: the --deployment syntax, human and --json output (a proxy password never
shown), replacing the list, and one-line errors for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

from tests.odockctl.runner import Ctl, assert_one_line_error
from tests.support.tls_certs import make_pki

EU = "https://8.8.8.8/v1"
US = "https://8.8.4.4/v1"
PLAIN = ("--family", "openai", "--slug", "gpt-4.1-mini", "--base-url", EU, "--credential", "main")


def _setup(ctl: Ctl, org: str) -> None:
    ctl.ok("org", "create", org)
    ctl.ok("credential", "create", org, "main", "--family", "openai", stdin="sk-test-main-000000000001")
    ctl.ok("credential", "create", org, "second", "--family", "openai", stdin="sk-test-second-0000000002")


def test_deployments_and_fallbacks_round_trip(ctl: Ctl, tmp_path: Path) -> None:
    _setup(ctl, "dep")
    ctl.ok("model", "create", "dep", "backup", *PLAIN)
    ca = make_pki(tmp_path).ca
    created = ctl.json(
        "model", "create", "dep", "gpt", "--family", "openai",
        "--deployment", f"name=eu,base-url={EU},credential=main,slug=gpt-4.1-mini,weight=9,timeout=30s",
        "--deployment", f"name=us,base-url={US},credential=second,slug=gpt-4.1,priority=1,"
                        f"proxy=http://ops:s3cret@9.9.9.9:3128,ca-file={ca}",
        "--fallback", "backup",
    )  # fmt: skip
    eu, us = created["deployments"]
    assert (eu["name"], eu["base_url"], eu["credential"], eu["weight"], eu["timeout"]) == (
        "eu",
        EU,
        "main",
        9,
        "30s",
    )
    assert (us["name"], us["credential"], us["upstream_slug"], us["priority"]) == (
        "us",
        "second",
        "gpt-4.1",
        1,
    )
    assert us["proxy_url"] == "http://ops:***@9.9.9.9:3128" and "BEGIN CERTIFICATE" in us["ca_bundle"]
    assert created["fallbacks"] == ["backup"] and created["base_url"] == EU
    assert ctl.json("model", "get", "dep", "gpt") == created
    human = ctl.ok("model", "get", "dep", "gpt").out
    assert "eu: https://8.8.8.8/v1 slug=gpt-4.1-mini credential=main weight=9 priority=0 timeout=30s" in human
    assert "proxy=http://ops:***@9.9.9.9:3128" in human and "ca-bundle=" in human
    assert "fallbacks" in human and "backup" in human and "s3cret" not in human
    table = ctl.ok("model", "list", "dep").lines()
    assert "DEPLOYMENTS" in table[0]
    assert any(line.startswith("gpt ") and " eu,us " in line for line in table)
    assert any(line.startswith("backup ") and " default " in line for line in table)
    listed = ctl.json("model", "list", "dep")
    assert "s3cret" not in str(listed)

    # --deployment replaces the whole list; --no-fallbacks clears them
    updated = ctl.json(
        "model", "update", "dep", "gpt", "--deployment", f"base-url={US},credential=second,slug=gpt-4.1",
        "--no-fallbacks",
    )  # fmt: skip
    assert [(d["name"], d["base_url"]) for d in updated["deployments"]] == [("default", US)]
    assert "fallbacks" not in updated and updated["credential"] == "second"
    # a plain model keeps working with the old flags
    plain = ctl.json("model", "update", "dep", "backup", "--base-url", US)
    assert [(d["name"], d["base_url"]) for d in plain["deployments"]] == [("default", US)]


def test_deployment_mistakes_are_one_line_errors(ctl: Ctl, tmp_path: Path) -> None:
    _setup(ctl, "dep-bad")
    create = ("model", "create", "dep-bad", "gpt", "--family", "openai")
    good = f"base-url={EU},credential=main,slug=gpt-4.1"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for flag, needle in (
        ("base-url", "key=value"),
        (f"{good},colour=red", "unknown key 'colour'"),
        (f"{good},slug=x", "slug given twice"),
        (f"base-url={EU},credential=main", "slug= is required"),
        (f"{good},name=EU", "deployment name"),
        (f"{good},weight=1001", "weight must be at most 1000"),
        (f"{good},priority=-1", "--deployment"),
        (f"{good},timeout=soon", "not a duration"),
        (f"{good},proxy=https://p.example:3128", "https proxies are not supported"),
        (f"{good},proxy=http://p.example", "proxy must be"),
        (f"{good},ca-file={tmp_path / 'missing.pem'}", "cannot be read"),
        (f"{good},ca-file={not_pem}", "PEM"),
        ("base-url=ftp://x,credential=main,slug=s", "--deployment"),
    ):
        assert_one_line_error(ctl.run(*create, "--deployment", flag), 2, "--deployment", needle)
    # what only the control plane knows is its one-line error too
    assert_one_line_error(
        ctl.run(*create, "--deployment", good.replace("main", "nope")), 1,
        "INVALID_ARGUMENT: model.deployments[default].credential", "nope",
    )  # fmt: skip
    assert_one_line_error(
        ctl.run(*create, "--deployment", good, "--fallback", "ghost"), 1, "model.fallbacks", "ghost"
    )
    assert_one_line_error(ctl.run(*create), 2, "--slug", "--deployment")
    ctl.ok("model", "create", "dep-bad", "two", "--family", "openai", "--deployment", good,
           "--deployment", f"name=b,{good}")  # fmt: skip
    assert_one_line_error(
        ctl.run("model", "update", "dep-bad", "two", "--base-url", US), 1, "model.base_url", "2 deployments"
    )
    assert_one_line_error(
        ctl.run("model", "update", "dep-bad", "two", "--fallback", "x", "--no-fallbacks"), 2, "exclude"
    )
