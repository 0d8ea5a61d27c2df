"""Every odockctl command group, human and --json output, through a real control plane."""

from __future__ import annotations

from pathlib import Path

from tests.odockctl.runner import Ctl, assert_one_line_error

OPENAI_SECRET = "sk-test-openai-secret-0001"


def _org(ctl: Ctl, name: str) -> dict[str, object]:
    return ctl.json("org", "create", name)  # type: ignore[no-any-return]


def _credential_and_model(ctl: Ctl, org: str) -> None:
    ctl.ok(
        "credential",
        "create",
        org,
        "openai",
        "--family",
        "openai",
        "--secret-env",
        "S",
        env={"S": OPENAI_SECRET},
    )
    ctl.ok(
        "model",
        "create",
        org,
        "gpt",
        "--family",
        "openai",
        "--slug",
        "gpt-4.1-mini",
        "--base-url",
        "https://api.openai.com/v1",
        "--credential",
        "openai",
    )


def test_org_and_tier_commands(ctl: Ctl) -> None:
    out = ctl.ok(
        "org",
        "create",
        "orgs-a",
        "--tier",
        "standard",
        "--rpm",
        "100",
        "--monthly-spend-cap",
        "12.5",
        "--outage-policy",
        "fail_closed",
        "--label",
        "team=a",
        "--default-model",
        "/v1/embeddings=emb",
    ).out
    assert "orgs-a" in out and "spend/month=$12.50" in out and "fail_closed" in out and "team=a" in out
    org = ctl.json("org", "get", "orgs-a")
    assert org["tier"] == "standard" and org["outage_policy"] == "OUTAGE_POLICY_FAIL_CLOSED"
    assert org["limits"] == {"requests_per_minute": "100", "monthly_spend_cap_micros": "12500000"}
    assert org["default_models"] == {"/v1/embeddings": "emb"}
    assert ctl.json("org", "get", org["id"])["name"] == "orgs-a"  # by id too

    table = ctl.ok("org", "list").lines()
    assert table[0].split()[:3] == ["NAME", "ID", "TIER"]
    assert any(line.split()[:2] == ["orgs-a", org["id"]] for line in table[1:])
    assert "orgs-a" in [o["name"] for o in ctl.json("org", "list")["orgs"]]

    updated = ctl.json("org", "update", "orgs-a", "--rpm", "none", "--tier", "free", "--name", "orgs-b")
    assert updated["name"] == "orgs-b" and updated["tier"] == "free"
    assert updated["limits"] == {"monthly_spend_cap_micros": "12500000"}
    assert updated["effective_limits"]["requests_per_minute"] == "60"  # inherited from free again

    assert ctl.ok("org", "delete", "orgs-b").out.strip() == f"deleted org orgs-b ({org['id']})"
    assert_one_line_error(ctl.run("org", "get", "orgs-b"), 1, "NOT_FOUND", "orgs-b")

    tiers = ctl.ok("tier", "list").out
    assert all(name in tiers for name in ("free", "standard", "enterprise", "custom"))
    free = {t["name"]: t for t in ctl.json("tier", "list")["tiers"]}["free"]
    assert free["limits"]["monthly_token_quota"] == "100000"


def test_org_delete_refused_then_forced(ctl: Ctl) -> None:
    _org(ctl, "orgs-force")
    _credential_and_model(ctl, "orgs-force")
    assert_one_line_error(ctl.run("org", "delete", "orgs-force"), 1, "FAILED_PRECONDITION")
    assert ctl.json("org", "delete", "orgs-force", "--force")["name"] == "orgs-force"


def test_credential_commands(ctl: Ctl, tmp_path: Path) -> None:
    _org(ctl, "creds")
    created = ctl.ok(
        "credential",
        "create",
        "creds",
        "openai",
        "--family",
        "openai",
        "--secret-env",
        "S",
        env={"S": OPENAI_SECRET},
    )
    assert OPENAI_SECRET not in created.out and "…0001" in created.out
    secret_file = tmp_path / "key.txt"
    secret_file.write_text("sk-ant-test-secret-0002\n")
    ctl.ok(
        "--json",
        "credential",
        "create",
        "creds",
        "anthropic",
        "--family",
        "anthropic",
        "--secret-file",
        str(secret_file),
    )
    from_stdin = ctl.json(
        "credential", "create", "creds", "gem", "--family", "gemini", stdin="AIza-test-secret-0003\n"
    )
    assert from_stdin["last4"] == "0003" and from_stdin["family"] == "PROVIDER_FAMILY_GEMINI"
    assert "secret" not in from_stdin

    warned = ctl.run(
        "credential", "create", "creds", "vllm", "--family", "vllm", "--secret", "vllm-secret-0004"
    )
    assert warned.code == 0 and warned.err.count("\n") == 1 and "process list" in warned.err

    listing = ctl.ok("credential", "list", "creds").out
    assert "anthropic" in listing and "…0002" in listing and "sk-ant" not in listing
    creds = ctl.json("credential", "list", "creds")["credentials"]
    assert sorted(c["name"] for c in creds) == ["anthropic", "gem", "openai", "vllm"]
    assert all("secret" not in c and "ciphertext" not in c for c in creds)
    assert "kek id:" in ctl.ok("credential", "get", "creds", "openai").out

    rotated = ctl.json("credential", "rotate", "creds", "openai", stdin="sk-test-openai-secret-9999")
    assert rotated["last4"] == "9999" and "rotate_time" in rotated

    ctl.ok(
        "model",
        "create",
        "creds",
        "gpt",
        "--family",
        "openai",
        "--slug",
        "gpt-4.1-mini",
        "--base-url",
        "https://api.openai.com/v1",
        "--credential",
        "openai",
    )
    assert_one_line_error(ctl.run("credential", "delete", "creds", "openai"), 1, "FAILED_PRECONDITION", "gpt")
    ctl.ok("model", "delete", "creds", "gpt")
    assert ctl.ok("credential", "delete", "creds", "openai").out.strip() == "deleted credential creds/openai"

    rewrap = ctl.json("credential", "rewrap")
    assert rewrap["kek_id"] == "kek1"
    assert "rewrapped:" in ctl.ok("credential", "rewrap").out

    assert_one_line_error(
        ctl.run("credential", "create", "creds", "x", "--family", "openai", "--secret-env", "NOPE"), 2, "NOPE"
    )


def test_model_commands(ctl: Ctl) -> None:
    _org(ctl, "models")
    ctl.ok("credential", "create", "models", "openai", "--family", "openai", stdin=OPENAI_SECRET)
    human = ctl.ok(
        "model",
        "create",
        "models",
        "gpt",
        "--family",
        "openai",
        "--slug",
        "gpt-4.1-mini",
        "--base-url",
        "https://api.openai.com/v1",
        "--credential",
        "openai",
        "--upstream-timeout",
        "90s",
        "--input-price",
        "0.15",
        "--output-price",
        "0.6",
    ).out
    assert "in $0.15 / out $0.60 per Mtok" in human and "1m30s" in human
    model = ctl.json("model", "get", "models", "gpt")
    assert model["pricing"] == {"input_per_mtok_micros": "150000", "output_per_mtok_micros": "600000"}
    assert model["timeout"] == "90s" and model["enabled"] is True

    updated = ctl.json(
        "model",
        "update",
        "models",
        "gpt",
        "--input-price",
        "0.2",
        "--cached-input-price",
        "0.05",
        "--disabled",
    )
    assert updated["pricing"] == {
        "input_per_mtok_micros": "200000",
        "output_per_mtok_micros": "600000",
        "cached_input_per_mtok_micros": "50000",
    }
    assert updated["enabled"] is False
    assert "gpt-4.1-mini" in ctl.ok("model", "list", "models").out
    assert len(ctl.json("model", "list", "models")["models"]) == 1

    assert_one_line_error(
        ctl.run("model", "update", "models", "gpt", "--base-url", "https://u:p@x/v1"),
        2,
        "--base-url",
        "userinfo",
    )
    assert_one_line_error(
        ctl.run("model", "update", "models", "gpt", "--input-price", "0.1234567"),
        2,
        "--input-price",
        "6 decimal",
    )
    assert ctl.ok("model", "delete", "models", "gpt").out.strip() == "deleted model models/gpt"
    assert_one_line_error(ctl.run("model", "get", "models", "gpt"), 1, "NOT_FOUND")


def test_key_commands(ctl: Ctl) -> None:
    _org(ctl, "keys")
    _credential_and_model(ctl, "keys")
    human = ctl.ok("key", "create", "keys", "--name", "web", "--all-models", "--label", "app=web").out
    secret_lines = [line.strip() for line in human.splitlines() if line.strip().startswith("odk-")]
    assert len(secret_lines) == 1 and len(secret_lines[0]) == 53 and "shown only once" in human

    created = ctl.json(
        "key",
        "create",
        "keys",
        "--name",
        "batch",
        "--model",
        "gpt",
        "--rpm",
        "5",
        "--budget",
        "1.5",
        "--expires",
        "2030-01-01T00:00:00Z",
    )
    secret, key = created["secret"], created["key"]
    assert secret.startswith("odk-") and key["models"] == ["gpt"]
    assert key["limits"] == {"requests_per_minute": "5", "budget_micros": "1500000"}
    assert key["expire_time"] == "2030-01-01T00:00:00Z"

    listing = ctl.ok("key", "list", "keys").out
    assert secret not in listing and key["display"] in listing
    assert ctl.json("key", "get", "keys", "batch")["id"] == key["id"]
    assert "scope:" in ctl.ok("key", "get", "keys", key["id"]).out

    updated = ctl.json("key", "update", "keys", "batch", "--all-models", "--tpm", "1000", "--no-expiry")
    assert updated["all_models"] is True and "expire_time" not in updated
    assert updated["limits"] == {
        "requests_per_minute": "5",
        "tokens_per_minute": "1000",
        "budget_micros": "1500000",
    }

    rotated = ctl.json("key", "rotate", "keys", "batch", "--grace", "1h")
    assert rotated["secret"] != secret and rotated["key"]["previous_display"] == key["display"]
    assert "rotated key secret" in ctl.ok("key", "rotate", "keys", "web").out

    revoked = ctl.json("key", "revoke", "keys", "batch")
    assert revoked["revoked"] is True
    assert [k["name"] for k in ctl.json("key", "list", "keys")["keys"]] == ["web"]
    assert len(ctl.json("key", "list", "keys", "--include-revoked")["keys"]) == 2
    assert_one_line_error(ctl.run("key", "create", "keys"), 2, "--all-models")
    assert_one_line_error(ctl.run("key", "get", "keys", "nope"), 1, "NOT_FOUND")


def test_token_commands(ctl: Ctl) -> None:
    _org(ctl, "tokens")
    _org(ctl, "tokens-other")
    human = ctl.ok("token", "create", "tokens", "ci").out
    assert "odka-" in human and "shown only once" in human
    created = ctl.json("token", "create", "tokens", "ops")
    org_token = created["secret"]
    assert org_token.startswith("odka-") and created["token"]["name"] == "ops"

    as_org = Ctl(ctl.address, org_token)
    assert as_org.json("org", "get", "tokens")["name"] == "tokens"
    assert_one_line_error(as_org.run("org", "list"), 1, "PERMISSION_DENIED")
    assert_one_line_error(as_org.run("org", "get", "tokens-other"), 1, "PERMISSION_DENIED")

    assert "ops" in ctl.ok("token", "list", "tokens").out
    assert {t["name"] for t in ctl.json("token", "list", "tokens")["tokens"]} == {"ci", "ops"}
    assert ctl.json("token", "revoke", "tokens", created["token"]["id"])["revoked"] is True
    assert "revoked:" in ctl.ok("token", "revoke", "tokens", "ci").out
    assert_one_line_error(as_org.run("org", "get", "tokens"), 1, "UNAUTHENTICATED")
