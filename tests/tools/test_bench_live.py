"""`avparse bench live --quick` (the smoke mode) and the pieces it stands on. No timing asserts:
what is checked is that every section runs, that the event stream lost nothing, that latencies
are causal (a message never arrives before its event happened in the media), and that the
markdown, JSON and PNG outputs are written."""

from __future__ import annotations

import json
import types

import pytest

from avparse.core.scene import TrueEvent
from avparse.tools import bench
from avparse.tools.harness import bench_live
from avparse.tools.harness.live_summary import match, truth_marks
from avparse.tools.harness.timing import slope, spread


@pytest.mark.slow
def test_quick_smoke_writes_every_section(tmp_path, capsys):
    out = tmp_path / "res"
    assert bench.main(["live", "--quick", "--threads", "1", "--minutes", "0.05", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()

    st = res["stages"]
    assert st["capture"]["render_ms_per_media_second"]["p50"] > 0
    assert [(r["profile"], r["backend"], r["batch"]) for r in st["extraction"]] == [("lite", "eager", 1)]
    assert st["han"][0]["ms_per_window"]["n"] >= 1
    assert st["publish"]["received"] == st["publish"]["events"] and st["publish"]["seq_gaps"] == 0

    assert list(res["e2e"]) == ["baseline", "lookahead1"]
    runs = list(res["e2e"].values()) + res["capacity"]["runs"] + [res["soak"]]
    for s in runs:
        sm = s["stream"]
        assert sm["nothing_lost"], sm
        assert sm["received"] == sm["emitted"] == sm["published"]
        assert sm["last_seq_received"] == sm["final_seq"] > 0
        assert s["counts"]["snippets"] >= 2 * s["streams"]
    for s in res["e2e"].values():
        lat = s["latency_samples"]["events"]
        assert all(x > 0 for x in lat), lat  # causality: the clock mapping holds (truth matches of a
        # random model may precede the true time, so only events against their own media time)
        # an event decided by the snippet ending at its own media time + hop cannot arrive sooner
        ev = s["event_latency"]["onset"]
        if ev.get("n"):
            assert ev["min"] >= (1 + s["lookahead"]) * s["hop"] * 0.5
    assert res["ratios"]["baseline"]["compute_per_snippet"] == pytest.approx(1.0)
    assert res["capacity"]["swept"] == [1, 2]
    assert res["capacity"]["runs"][0]["wall_seconds"] == res["e2e"]["baseline"]["wall_seconds"]  # K=1 reused
    assert res["soak"]["speed"] == 0.0
    assert {t["target"].split(",")[0] for t in res["targets"]} >= {"onset latency p50"}

    assert "| baseline (eager, hop 1 s, lookahead 0) |" in md and "| lookahead1 (eager, hop 1 s, lookahead 1) |" in md
    for head in ("## Stages alone", "## End to end", "### Where the time goes", "## Capacity",
                 "## Nothing lost (soak)", "## Targets"):
        assert head in md, head
    assert "wrote" in printed
    for name in ("latency.png", "where_time_goes.png", "capacity.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_truth_marks_audiovisual_and_scene_end():
    truth = [TrueEvent("bell", "audio", 1.0, 4.0), TrueEvent("bell", "visual", 2.0, 10.0),
             TrueEvent("drum", "audio", 0.0, 2.0), TrueEvent("drum", "audio", 2.0, 3.0)]
    marks = truth_marks(truth, duration=10.0)
    assert ("bell", "audiovisual", "onset", 2.0) in marks and ("bell", "audiovisual", "offset", 4.0) in marks
    assert ("bell", "visual", "offset", 10.0) not in marks  # the stream's end closes it, not an event
    # touching intervals of one class are one event
    assert [m for m in marks if m[0] == "drum"] == [("drum", "audio", "onset", 0.0), ("drum", "audio", "offset", 3.0)]


def test_match_one_to_one_closest_first_within_tolerance():
    marks = [("bell", "audio", "onset", 2.0), ("bell", "audio", "onset", 5.0), ("drum", "visual", "onset", 1.0)]
    events = [("bell", "audio", "onset", 2.5, "a"), ("bell", "audio", "onset", 2.0, "b"),
              ("bell", "audio", "onset", 7.5, "c"), ("drum", "audio", "onset", 1.0, "d")]
    pairs, missed, spurious = match(marks, events, tolerance=1.0)
    assert [(m[3], e[4]) for m, e in pairs] == [(2.0, "b")]
    assert missed == [marks[1], marks[2]]  # 7.5 is too far from 5.0; drum differs in modality
    assert [e[4] for e in spurious] == ["a", "c", "d"]


def test_spread_and_slope():
    s = spread([3, 1, 2, 4, 5])
    assert (s["n"], s["p50"], s["min"], s["max"], s["mean"]) == (5, 3, 1, 5, 3)
    assert spread([]) == {"n": 0} and spread([1.0], 1000)["p99"] == 1000
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)


def test_user_errors_are_one_line(tmp_path, capsys):
    assert bench_live.main(["--options", "hop0.5,warp", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warp" in err and "hop0.25" in err
    assert bench_live.main(["--model", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert bench_live.main(["--sweep", "2,x"]) == 2
    assert "--sweep" in capsys.readouterr().err


def test_bench_without_suite_runs_every_suite(monkeypatch, capsys):
    calls = []

    def fake(name):
        suite = name.rsplit("_", 1)[1]
        rc = 3 if suite == "train" else 0
        return types.SimpleNamespace(main=lambda argv: calls.append((suite, argv)) or rc)

    monkeypatch.setattr(bench.importlib, "import_module", fake)
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: object())
    assert bench.main(["all", "--quick"]) == 1  # one suite failed
    assert calls == [(s, ["--quick"]) for s in bench.SUITES]
    out = capsys.readouterr().out
    assert "train    FAILED (exit 3)" in out and "live     ok" in out
    calls.clear()
    assert bench.main([]) == 1 and [c[0] for c in calls] == list(bench.SUITES)
    assert bench.main(["all", "--out", "x"]) == 2
    assert "only --quick" in capsys.readouterr().err


def test_gpu_streams_estimate_and_missing_gpu(tmp_path, capsys):
    import torch

    from avparse.tools.harness import bench_gpu

    cfg = bench_gpu.GPUBenchConfig(hops=(1.0, 0.25))
    ext = [{"profile": "paper", "backend": "eager", "batch": b, "ms_per_batch_p50": ms}
           for b, ms in ((1, 20.0), (64, 300.0), (256, 700.0))]
    han = [{"profile": "paper", "batch": 1, "ms_per_batch_p50": 2.0}, {"profile": "paper", "batch": 64, "ms_per_batch_p50": 8.0}]
    est = {r["hop"]: r for r in bench_gpu.estimate(ext, han, cfg)}
    # hop 1: batch 256 (700 ms + HAN scaled from 64: 32 ms) fits and is the fastest per snippet
    assert est[1.0]["batch"] == 256 and est[1.0]["streams"] == int(256 / 0.732)
    # hop 0.25: only batch 1 (22 ms) fits within 250 ms; each stream needs 4 snippets per second
    assert est[0.25]["batch"] == 1 and est[0.25]["streams"] == int(1 / 0.022 * 0.25)
    if not torch.cuda.is_available():
        assert bench_gpu.main(["--require-cuda", "--out", str(tmp_path / "g.json")]) == 3
        assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "g.json").exists()


@pytest.mark.slow
def test_gpu_bench_training_section_at_dry_run_sizes():
    """The GPU script's training section, run through its CPU fallback: both contenders and the
    real trainer in both precisions produce figures (the H100 figures come from the same code)."""
    from avparse.tools.harness import bench_gpu

    cfg = bench_gpu._dry(bench_gpu.GPUBenchConfig(train_videos=32, train_steps=1))
    out = bench_gpu.training(cfg, bench_gpu.Budget(300))
    assert set(out["videos_per_s"]) == {"paper", "avparse_fp32", "avparse_bf16"}
    assert all(v > 0 for v in out["videos_per_s"].values())
    for prec in ("fp32", "bf16"):
        run = out["trainer"][prec]
        assert run["videos_per_s"] > 0 and run["projected_full_recipe_minutes"] > 0
        assert 0 < run["train_loss"] < 10
