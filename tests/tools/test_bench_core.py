"""`avparse bench core --quick` runs and prints its figures (no timing asserts)."""

from __future__ import annotations

import re

import pytest

from avparse.tools import bench
from avparse.tools.harness import bench_core


@pytest.mark.slow
def test_bench_core_quick_prints_figures(llp_dir, capsys):
    assert bench.main(["core", "--quick", "--llp-dir", str(llp_dir)]) == 0
    out = capsys.readouterr().out
    assert "100 videos x 25 classes x 10 snippets" in out
    for name in ("per-video loop", "vectorised"):
        assert re.search(rf"metrics  {name} +median +[0-9.]+ ms", out), out
    assert re.search(r"ratio +[0-9.]+x .*same scores: yes", out), out
    assert re.search(r"scores \(%\) +seg_a [0-9.]+ .* evt_type [0-9.]+", out), out
    # HAN lines: figures for both quick batch sizes, or the one 'not available' line
    if "HAN      not available" not in out:
        for b in (1, 4):
            assert re.search(rf"HAN +batch +{b} +median +[0-9.]+ ms", out), out


def test_bench_core_user_errors(tmp_path, capsys):
    assert bench_core.main(["--no-han", "--llp-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LLP annotations not found" in err and "--llp-dir" in err
    assert bench_core.main(["--batches", "1,x"]) == 2
    assert "--batches" in capsys.readouterr().err
