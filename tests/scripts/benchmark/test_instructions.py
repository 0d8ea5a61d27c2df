"""``scripts/bench-instructions``: its arguments are checked before anything starts, and the
instruction count is read from callgrind's dump (the run itself takes minutes: docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.benchmark import instructions


@pytest.mark.parametrize(
    "argv",
    [
        ["--arms", "floor,gatewy"],
        ["--tree", "before"],
        ["--tree", "x=/nonexistent"],
        ["--scenario", "translated", "--arms", "floor,gateway"],
    ],
)
def test_a_wrong_arm_or_tree_is_refused_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert instructions.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench-instructions: unknown arm") and err.count("\n") == 1


def test_the_count_is_callgrinds_totals_line(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text("# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\nevents: Ir\n"
                    "fl=(1) x.c\nfn=(1) main\n3 1200\nsummary: 1234567\ntotals: 1234567\n")  # fmt: skip
    assert instructions._totals(dump) == 1_234_567
    dump.write_text("events: Ir\n")
    with pytest.raises(RuntimeError, match="no totals"):
        instructions._totals(dump)
