"""`avparse bench extract --quick` runs and prints a row per profile and batch (no timing asserts)."""

from __future__ import annotations


def test_bench_extract_quick_smoke(capsys, tmp_path, monkeypatch):
    from avparse.tools.harness.bench_extract import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no published files: lite is random anyway
    rc = main(["--quick", "--profiles", "lite"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("lite ")]
    assert [r[2] for r in rows] == ["1", "2"]  # batch 1 and 2
    assert all(float(r[6]) > 0 for r in rows)  # total ms per snippet
    assert all(r[-1] in ("ok", "MISSED") and r[8] == "cpu" for r in rows)  # CPU time shown; compared with the 150 ms target
    assert "random init" in out
