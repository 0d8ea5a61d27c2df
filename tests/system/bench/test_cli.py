"""``scripts/bench``'s command line: a control-plane setting given with ``--cp-env``."""

from __future__ import annotations

import pytest

from scripts.benchmark.__main__ import parse_args


def test_cp_env_is_repeatable_and_kept_as_given() -> None:
    args = parse_args(["--cp-env", "ODOCK_USAGE_INGEST_CPU_PRIORITY=idle", "--cp-env", "ODOCK_X=a=b"])
    assert args.cp_env == {"ODOCK_USAGE_INGEST_CPU_PRIORITY": "idle", "ODOCK_X": "a=b"}
    assert parse_args([]).cp_env == {}


@pytest.mark.parametrize("bad", ["ODOCK_USAGE_INGEST_CPU_PRIORITY", "PATH=/tmp", "=idle"])
def test_cp_env_that_is_not_an_odock_setting_is_refused_in_one_line(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--cp-env", bad])
    assert exit_.value.code == 2
    assert f"--cp-env: expected ODOCK_NAME=VALUE, got {bad!r}" in capsys.readouterr().err
