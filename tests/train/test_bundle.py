"""The bundled demo model: a smoke run of its recipe, and the committed core/assets/demo.pt at work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avparse.core.checkpoint import load_model
from avparse.core.metrics import SUMMARY_KEYS

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "core" / "assets" / "demo.pt"
DEMO_METRICS = REPO / "core" / "assets" / "demo_metrics.json"


@pytest.mark.slow
def test_quick_recipe_end_to_end(tmp_path):
    """`avparse bundle --quick`: every step on a handful of 4 s clips, live evaluation included."""
    from avparse.tools.bundle import main

    out = tmp_path / "demo.pt"
    rc = main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)])
    assert rc == 0
    loaded = load_model(out)
    from avparse.train.synth import SYNTH_CLASSES

    assert loaded.classes == tuple(SYNTH_CLASSES)
    assert loaded.profile.name == "lite"
    st = loaded.extractor_state
    assert st is not None and {k.split(".")[0] for k in st} == {"audio_net", "v2d_net", "v3d_net"}
    assert all(v.dtype == torch.float16 for v in st.values() if v.is_floating_point())
    extra = loaded.meta["extra"]
    assert extra["weak_labels_only"] is True and set(extra["test_scores"]) == set(SUMMARY_KEYS)
    assert loaded.config.temporal == "han" and loaded.config.cross_attention
    assert 0.0 <= extra["test_leak"]["leak"] <= 100.0 and extra["bundle_config"]["recipe"]["recipe"] == "teacher"
    assert (tmp_path / "work" / "run" / "teacher" / "best.pt").is_file()
    m = json.loads((tmp_path / "demo_metrics.json").read_text())
    for mode in ("offline", "live"):
        assert set(m[mode]["scores"]) == set(SUMMARY_KEYS)
        assert all(0.0 <= v <= 100.0 for v in m[mode]["scores"].values())
    assert m["live"]["lookahead"] == 0 and m["live"]["videos"] == m["test_videos"] >= 1
    assert m["size_bytes"] == out.stat().st_size
    # the last step calibrated the tracker on scenes of its own and stored the rules in the checkpoint
    assert loaded.calibration is not None and [r["hop"] for r in loaded.calibration["rules"]] == [1.0]
    assert set(m["calibration"]["validation"]["1.0"]) == {"before", "after"}
    assert (tmp_path / "work" / "calibration" / "synth.json").is_file()
    # the features were made with the fp16-rounded weights the checkpoint holds
    saved = torch.load(tmp_path / "work" / "pretrain" / "extractor.pt", weights_only=True)
    for k, v in st.items():
        if v.is_floating_point():
            assert torch.equal(saved[k], v.float()), k
    # `avparse evaluate --live` on the same set scores the same way
    from avparse.tools.evaluate import main as evaluate

    live_json = tmp_path / "live.json"
    assert evaluate([str(out), "--live", "--data", str(tmp_path / "work" / "synth"), "--json", str(live_json)]) == 0
    lj = json.loads(live_json.read_text())
    assert lj["videos"] == m["live"]["videos"] and set(lj["scores"]) == set(SUMMARY_KEYS)
    assert set(m["live"]["leak"]) >= {"leak", "leak_a2v", "leak_v2a"} and "leak" in m["offline"]
    # a rerun reuses the finished steps (pretrain, synth, extract, pack) and gives the same features
    before = (tmp_path / "work" / "store" / "test.bin").read_bytes()
    rc = main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out), "--no-live"])
    assert rc == 0 and (tmp_path / "work" / "store" / "test.bin").read_bytes() == before


@pytest.mark.slow
def test_quick_ablations_on_both_presets(tmp_path):
    """`avparse bundle --ablations [--preset independent]` on the quick recipe: every row of the table
    (the paper's recipe, the Table 2 switches, the denoising recipes) trains and is scored; the
    independent preset's scenes go to WORK/independent and reuse the extractors."""
    from avparse.tools.bundle import main
    from avparse.train.bundle import ABLATIONS

    work = tmp_path / "work"
    assert main(["--quick", "--work", str(work), "--ablations"]) == 0
    rows = json.loads((work / "ablations.json").read_text())["rows"]
    assert [r["name"] for r in rows] == [a[0] for a in ABLATIONS]
    assert all(0.0 <= r["scores"]["seg_type"] <= 100.0 and 0.0 <= r["leak"]["leak"] <= 100.0 for r in rows)
    by = {r["recipe"]: r for r in rows}
    assert by["jomold"]["gate"] == "modality" and by["teacher"]["gate"] == "global"
    assert by["jomold"]["ratios"] is not None and by["teacher"]["teacher_stats"] is not None
    pre = (work / "pretrain" / "extractor.pt").stat().st_mtime_ns
    assert main(["--quick", "--work", str(work), "--ablations", "--preset", "independent"]) == 0
    ind = json.loads((work / "independent" / "ablations.json").read_text())
    assert ind["preset"] == "independent" and len(ind["rows"]) == len(ABLATIONS)
    assert json.loads((work / "independent" / "synth" / "synth.json").read_text())["config"]["layout"] == "independent"
    assert (work / "pretrain" / "extractor.pt").stat().st_mtime_ns == pre      # the extractors were reused


def test_bundled_model_is_small_and_self_describing():
    assert DEMO.is_file(), "core/assets/demo.pt is missing: run `avparse bundle`"
    assert DEMO.stat().st_size <= 20 * 2**20
    loaded = load_model(DEMO)
    from avparse.train.synth import SYNTH_CLASSES

    assert loaded.classes == tuple(SYNTH_CLASSES) and loaded.profile.name == "lite"
    assert loaded.extractor_state is not None
    m = json.loads(DEMO_METRICS.read_text())
    assert m["size_bytes"] == DEMO.stat().st_size
    assert loaded.meta["extra"]["test_scores"] == m["offline"]["scores"]
    # the paper's full HAN: hybrid attention with its cross-modal branch, attentive MMIL pooling
    c = loaded.config
    assert (c.temporal, c.cross_attention, c.pooling) == ("han", True, "attentive")
    assert loaded.meta["extra"]["weak_labels_only"] is True and loaded.meta["extra"]["gate"] == "global"
    assert m["offline"]["leak"]["leak"] == loaded.meta["extra"]["test_leak"]["leak"]


def _recall(events, truth) -> tuple[int, int]:
    """(true intervals found, true intervals): a true (label, modality) interval is found when an
    event segment of that label, in that modality or audiovisual, covers at least one of its seconds."""
    from avparse.stream.tracker import events_to_segments

    segs = events_to_segments(events)
    found = 0
    for tr in truth:
        ok = any(s.label == tr.label and s.modality in (tr.modality, "audiovisual")
                 and min(s.offset, tr.offset) - max(s.onset, tr.onset) >= 1.0 - 1e-6 for s in segs)
        found += ok
    return found, len(truth)


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine two threads are several times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_bundled_model_parses_a_fresh_scene(one_thread):
    """The committed model on scenes it never saw, through the live pipeline (causal): it finds
    most true events, and most of what it reports is true."""
    from avparse.core.extractors import build_extractor
    from avparse.stream.offline import parse_source
    from avparse.stream.pipeline import pipeline_config
    from avparse.stream.sources import SceneSource
    from avparse.stream.tracker import TrackerConfig, events_to_matrices
    from avparse.train.synth import make_scene

    loaded = load_model(DEMO)
    ext = build_extractor(loaded.profile, weights=loaded.extractor_state)
    cfg = pipeline_config(profile=loaded.profile, lookahead=0,
                          tracker=TrackerConfig(video_gate=True))
    found = total = tp = fp = 0
    for k in range(3):
        scene = make_scene((90210, k))  # a seed no bundle set uses
        events = parse_source(cfg, loaded, ext, SceneSource(scene, sample_rate=loaded.profile.sample_rate))
        assert all(e.label in loaded.classes for e in events)
        f, n = _recall(events, scene.ground_truth())
        found, total = found + f, total + n
        m = events_to_matrices(events, loaded.classes, int(scene.duration))
        for mod in ("audio", "visual"):
            pred, gt = m[mod].astype(bool), scene.dense(mod).astype(bool)
            tp += int((pred & gt).sum())
            fp += int((pred & ~gt).sum())
    assert total >= 3
    assert found / total >= 0.7, f"found {found} of {total} true events"
    assert tp / max(1, tp + fp) >= 0.7, f"{tp} true and {fp} false positive snippets"


@pytest.mark.slow
def test_bundled_model_does_not_flicker_on_the_demo_scene(one_thread):
    """The first 60 s of the scene `make demo` plays (ChainedScene(0)), through the live pipeline with
    the rules the demo uses (the checkpoint's calibration): a class never turns back on within 1 s of
    turning off unless the truth has two events there, and fewer one-second events that match no true
    event (collar 1 s) than the bare rule. Measured with the bundled model of 2026-12-02 (full HAN,
    calibrated on 30 scenes): calibrated 0 false re-onsets and 2 unmatched one-second events (bell
    audio at 29-30 s, 2 s after the calibrated bell's offset at 27 s, inside the true 20-30 s bell;
    bell visual at 48-49 s, a late onset of the true 46-49 s bell); the bare rule 2 false re-onsets
    (bell audio and audio-visual off at 23 s, on at 24 s, inside the true 20-30 s bell) and 4
    unmatched one-second events. The scene holds true one-second events (horns, a bell, a whistle):
    those are not flicker."""
    import collections

    from avparse.core.extractors import build_extractor
    from avparse.stream.eventscore import detections, with_audiovisual
    from avparse.stream.offline import parse_source
    from avparse.stream.pipeline import pipeline_config
    from avparse.stream.sources import SceneSource
    from avparse.tools.common import TrackerOptions, tracker_config
    from avparse.tools.demo_app.scenes import ChainedScene

    loaded = load_model(DEMO)
    assert loaded.calibration is not None, "the bundled model ships calibrated (avparse calibrate)"
    ext = build_extractor(loaded.profile, weights=loaded.extractor_state)
    scene = ChainedScene(0, segments=1)
    truth = scene.truth_between(0, 60)

    def intervals(calibrated):
        tracker, _ = tracker_config(loaded, hop=1.0, options=TrackerOptions(calibrated=calibrated))
        ev = parse_source(pipeline_config(profile=loaded.profile, tracker=tracker), loaded, ext,
                          SceneSource(scene, sample_rate=loaded.profile.sample_rate))
        return detections(ev)

    def false_reonsets(segs):
        by = collections.defaultdict(list)
        for s in sorted(segs, key=lambda s: s.onset):
            by[(s.label, s.modality)].append(s)
        out = []
        for (label, mod), v in by.items():
            mods = ("audio", "visual") if mod == "audiovisual" else (mod,)
            true = [t for t in truth if t.label == label and t.modality in mods]
            for a, b in zip(v, v[1:]):
                if b.onset - a.offset <= 1.0 + 1e-6 and not (any(abs(t.offset - a.offset) <= 1 for t in true)
                                                             and any(abs(t.onset - b.onset) <= 1 for t in true)):
                    out.append((label, mod, a.offset, b.onset))
        return out

    true_av = with_audiovisual(truth)

    def unmatched_one_second(segs):
        return [(s.label, s.modality, s.onset, s.offset) for s in segs if s.offset - s.onset <= 1.0 + 1e-6
                and not any(t.label == s.label and t.modality == s.modality and abs(t.onset - s.onset) <= 1.0
                            and abs(t.offset - s.offset) <= 1.0 for t in true_av)]

    cal, bare = intervals(True), intervals(False)
    assert false_reonsets(cal) == [], false_reonsets(cal)
    assert false_reonsets(bare), "the bare rule re-onsets on this scene: the check above can fail"
    assert len(unmatched_one_second(cal)) <= 2, unmatched_one_second(cal)   # measured: 2
    assert len(unmatched_one_second(cal)) < len(unmatched_one_second(bare)), (unmatched_one_second(cal),
                                                                              unmatched_one_second(bare))
