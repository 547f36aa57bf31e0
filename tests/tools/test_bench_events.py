"""`avparse bench events --quick`: run --fast on unseen scenes, scored before and after calibration, and
the tracker's cost (figures printed and written; no timing asserts)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from avparse.tools import bench
from avparse.tools.harness import bench_events

DEMO = Path(__file__).resolve().parents[2] / "core" / "assets" / "demo.pt"
pytest.importorskip("sed_eval")


@pytest.mark.slow
@pytest.mark.skipif(not DEMO.is_file(), reason="needs the bundled demo model core/assets/demo.pt")
def test_quick_smoke(tmp_path, capsys):
    assert bench.main(["events", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "replay of the run's tracker equals its events: yes" in out
    assert "| before: bare rule |" in out and "| after: calibrated |" in out
    assert re.search(r"tracker cost per snippet: [0-9.]+ ms p50 \([0-9.]+ p90\) for 25 classes", out), out
    res = json.loads((tmp_path / "results.json").read_text())
    h = res["hops"]["1.0"]
    assert res["calibrated"] and h["replay_equals_run"] and "calibrated rules" in h["tracker"]
    for k in ("before", "after"):
        for m in ("audio", "visual", "audiovisual"):
            assert 0.0 <= h[k][m]["f1"] <= 1.0
        assert h[k]["minutes"] == pytest.approx(2 * 12 / 60)
    assert res["tracker_cost"]["every_feature"]["classes"] == 25
    assert (tmp_path / "results.md").read_text().startswith("# avparse bench events")


def test_user_errors_are_one_line(capsys):
    assert bench_events.main(["--scenes", "0"]) == 2
    assert bench_events.main(["--hops", "0.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(x.startswith("avparse: error:") for x in err)
