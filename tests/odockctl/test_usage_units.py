"""odockctl usage shows issue 15's units when some row has them (totals and list columns AUDIO S
and CHARS, get's audio/characters/batch id lines), and nothing new when none does."""

from __future__ import annotations

from datetime import timedelta

from control_plane import ids
from control_plane.usage import ingest_batch
from odockctl import usage_cmd
from tests.control_plane.usage.env import T0, UsageEnv, batch, record
from tests.odockctl.test_usage_cmd import ctl

SINCE, UNTIL = (T0 - timedelta(hours=1)).isoformat(), (T0 + timedelta(hours=2)).isoformat()


async def test_units_appear_where_there_are_some(env: UsageEnv) -> None:
    org = ids.new_id(ids.ORG)
    await ingest_batch(env.sessions, batch([
        record(org, request_id="u-audio", model="whisper", input_tokens=0, output_tokens=0, audio_milliseconds=61_500),
        record(org, request_id="u-speech", model="tts", input_tokens=0, output_tokens=0, input_characters=42,
               when=T0 + timedelta(minutes=1)),
        record(org, request_id="u-batch", model="gpt", batch_id="batch_abc", when=T0 + timedelta(minutes=2)),
    ]))  # fmt: skip
    code, out, err = await ctl(env, "usage", "totals", org, "--since", SINCE, "--until", UNTIL, "--by", "model")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    header = lines[0].split()
    assert header[-4:] == ["AUDIO", "S", "CHARS", "COST"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["whisper"][-3:-1] == ["61.5", "0"] and rows["tts"][-3:-1] == ["0", "42"]

    code, out, _ = await ctl(env, "usage", "list", org)
    assert code == 0 and "AUDIO S" in out.splitlines()[0] and "CHARS" in out.splitlines()[0]

    code, out, _ = await ctl(env, "usage", "get", "u-audio")
    fields = {k.strip(): v.strip() for k, v in (line.split(": ", 1) for line in out.splitlines())}
    assert fields["audio"] == "61.5s" and "characters" not in fields and "batch id" not in fields
    code, out, _ = await ctl(env, "usage", "get", "u-batch")
    fields = {k.strip(): v.strip() for k, v in (line.split(": ", 1) for line in out.splitlines())}
    assert fields["batch id"] == "batch_abc" and "audio" not in fields


async def test_no_unit_columns_without_units(env: UsageEnv) -> None:
    org = ids.new_id(ids.ORG)
    await ingest_batch(env.sessions, batch([record(org, request_id="plain-u")]))
    code, out, _ = await ctl(env, "usage", "totals", org, "--since", SINCE, "--until", UNTIL)
    assert code == 0 and "AUDIO" not in out and "CHARS" not in out
    code, out, _ = await ctl(env, "usage", "list", org)
    assert code == 0 and "AUDIO" not in out


def test_seconds_are_exact() -> None:
    texts = [usage_cmd.seconds_text(ms) for ms in (0, 1, 10, 999, 1000, 61_500, 3_600_001)]
    assert texts == ["0", "0.001", "0.01", "0.999", "1", "61.5", "3600.001"]
