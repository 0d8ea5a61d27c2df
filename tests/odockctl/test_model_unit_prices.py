"""odockctl's prices for units other than tokens (issue 15): --audio-second-price (USD per second,
stored x 10^12), --character-price (USD per million characters, like token prices) and
--batch-price-percent on model create|update, shown by model get, and the same units in apply's
``pricing:`` (audio_second, character, batch_percent), planned and changed like the other prices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from odockctl.pricing_units import parse_percent, parse_usd_per_second
from odockctl.values import ValueProblem
from tests.odockctl.runner import Ctl, assert_one_line_error

SECRET = "sk-test-openai-secret-units"
MODEL_FLAGS = ("--family", "openai", "--slug", "whisper-1", "--base-url", "https://api.openai.com/v1",
               "--credential", "openai")  # fmt: skip


def test_usd_per_second_is_exact_to_12_decimals_and_bounded() -> None:
    assert parse_usd_per_second("0.0001") == 100_000_000  # whisper-1: $0.006 a minute
    assert parse_usd_per_second(0.0001) == 100_000_000  # as YAML gives it
    assert parse_usd_per_second("$0.000000000001") == 1
    assert parse_usd_per_second("1") == 10**12
    for bad, says in (("0.0000000000001", "12 decimal"), ("1.01", "at most 1"), ("-1", "non-negative"),
                      ("x", "not a USD amount")):  # fmt: skip
        with pytest.raises(ValueProblem, match=says):
            parse_usd_per_second(bad)
    assert (parse_percent("0"), parse_percent("50%"), parse_percent(100)) == (0, 50, 100)
    with pytest.raises(ValueProblem, match="from 0 to 100"):
        parse_percent("101")


def test_model_flags_round_trip(ctl: Ctl) -> None:
    ctl.ok("org", "create", "units")
    ctl.ok("credential", "create", "units", "openai", "--family", "openai", "--secret-env", "S", env={"S": SECRET})
    human = ctl.ok("model", "create", "units", "whisper", *MODEL_FLAGS, "--audio-second-price", "0.0001",
                   "--character-price", "15", "--batch-price-percent", "40").out  # fmt: skip
    assert "audio $0.0001 per second / characters $15.00 per million / batch 40%" in human
    model = ctl.json("model", "get", "units", "whisper")
    assert model["pricing"] == {"per_million_audio_seconds_micros": "100000000",
                                "per_million_characters_micros": "15000000", "batch_price_percent": 40}  # fmt: skip
    updated = ctl.json("model", "update", "units", "whisper", "--input-price", "2.5",
                       "--batch-price-percent", "default")  # fmt: skip
    assert updated["pricing"] == {"input_per_mtok_micros": "2500000",
                                  "per_million_audio_seconds_micros": "100000000",
                                  "per_million_characters_micros": "15000000"}  # fmt: skip
    assert "batch 50% (default)" in ctl.ok("model", "get", "units", "whisper").out
    updated = ctl.json("model", "update", "units", "whisper", "--audio-second-price", "0")
    assert "per_million_audio_seconds_micros" not in updated["pricing"]
    assert updated["pricing"]["per_million_characters_micros"] == "15000000"
    assert_one_line_error(ctl.run("model", "update", "units", "whisper", "--batch-price-percent", "150"),
                          2, "--batch-price-percent", "0 to 100")  # fmt: skip
    assert_one_line_error(ctl.run("model", "update", "units", "whisper", "--audio-second-price", "2"),
                          2, "--audio-second-price", "at most 1")  # fmt: skip


def _config(**pricing: Any) -> dict[str, Any]:
    model = {"name": "tts", "upstream_slug": "tts-1", "credential": "openai", "base_url": "https://api.openai.com/v1",
             "pricing": pricing}  # fmt: skip
    return {"orgs": [{
        "name": "unitsapply",
        "credentials": [{"name": "openai", "family": "openai", "secret_env": "T_UNITS_KEY"}],
        "models": [model],
    }]}  # fmt: skip


def _apply(ctl: Ctl, tmp_path: Path, data: dict[str, Any], *flags: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return ctl.ok("apply", "-f", str(path), *flags, env={"T_UNITS_KEY": SECRET}).lines()


def _pricing(ctl: Ctl) -> dict[str, Any]:
    (model,) = ctl.state()["unitsapply"]["models"]
    return model["pricing"]  # type: ignore[no-any-return]


def test_apply_round_trip(ctl: Ctl, tmp_path: Path) -> None:
    prices = {"input": 1, "audio_second": 0.0001, "character": 15, "batch_percent": 30}
    assert "model unitsapply/tts: created" in _apply(ctl, tmp_path, _config(**prices))
    assert _pricing(ctl) == {"input_per_mtok_micros": "1000000", "per_million_audio_seconds_micros": "100000000",
                             "per_million_characters_micros": "15000000", "batch_price_percent": 30}  # fmt: skip
    assert "model unitsapply/tts: unchanged" in _apply(ctl, tmp_path, _config(**prices))
    changed = {**prices, "batch_percent": 0, "character": 30}
    before = ctl.state()
    assert "model unitsapply/tts: changed (pricing)" in _apply(ctl, tmp_path, _config(**changed), "--dry-run")
    assert ctl.state() == before
    assert "model unitsapply/tts: changed (pricing)" in _apply(ctl, tmp_path, _config(**changed))
    got = _pricing(ctl)
    assert (got["batch_price_percent"], got["per_million_characters_micros"]) == (0, "30000000")
    # absent from the file: no unit prices, the default batch percent
    assert "model unitsapply/tts: changed (pricing)" in _apply(ctl, tmp_path, _config(input=1))
    assert _pricing(ctl) == {"input_per_mtok_micros": "1000000"}


def test_apply_refuses_bad_unit_prices_in_one_line(ctl: Ctl, tmp_path: Path) -> None:
    for pricing, says in (({"audio_second": 0.0000000000001}, "12 decimal"), ({"batch_percent": 101}, "0 to 100"),
                          ({"characters": 1}, "characters")):  # fmt: skip
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(_config(**pricing), sort_keys=False))
        assert_one_line_error(ctl.run("apply", "-f", str(path), env={"T_UNITS_KEY": SECRET}), 2, "pricing", says)
