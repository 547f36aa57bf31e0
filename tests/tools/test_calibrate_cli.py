"""`avparse calibrate`: a generated validation set through the live runtime, rules chosen and written
into the checkpoint; run, parse and demo then use them by default; bad input is one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from avparse.core.checkpoint import load_model, save_checkpoint, write_calibration
from avparse.stream.decision import DecisionRules, calibration_record
from avparse.tools import calibrate, parse

pytest.importorskip("sed_eval")


def one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("avparse: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory):
    """A lite checkpoint on the synth classes (random extractors, a small HAN) and a generated set of
    three 4 s clips, all in the validation split."""
    from avparse.core.extractors import build_extractor
    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile
    from avparse.train.synth import SYNTH_CLASSES, SynthConfig, WriteConfig, write_dataset

    d = tmp_path_factory.mktemp("cal")
    p = get_profile("lite")
    torch.manual_seed(0)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim, num_classes=len(SYNTH_CLASSES),
                              frames_per_snippet=p.frames_per_snippet, d_model=16, dim_feedforward=16, dropout=0.0))
    ext = build_extractor(p, weights="random")
    ckpt = save_checkpoint(d / "m.pt", han, classes=SYNTH_CLASSES, profile=p,
                           extractor_state={k: v.detach().cpu() for k, v in ext.state_dict().items()})
    write_dataset(d / "val", 3, 5, SynthConfig(duration=4), write=WriteConfig(val_fraction=1.0, test_fraction=0.0))
    return ckpt, d / "val"


@pytest.mark.slow
def test_calibrate_writes_rules_that_run_with_the_checkpoint(synth_model, tmp_path, capsys):
    ckpt, data = synth_model
    work = shutil.copy(ckpt, tmp_path / "m.pt")
    rc = calibrate.main([str(work), "--data", str(data), "--hops", "1,0.5", "--json", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("| bare rule |") == 2 and out.count("| calibrated |") == 2
    loaded = load_model(work)
    assert [r["hop"] for r in loaded.calibration["rules"]] == [1.0, 0.5]
    res = json.loads((tmp_path / "c.json").read_text())
    assert set(res["hops"]) == {"1.0", "0.5"} and res["written"] == str(work)
    for h in res["hops"].values():
        for k in ("before", "after"):
            assert set(h[k]) >= {"audio", "visual", "audiovisual", "all", "latency"}
    # one run through the runtime, at the finest hop; hop 1 takes its grid
    assert res["hops"]["1.0"]["run"] == {"from_hop": 0.5} and res["hops"]["0.5"]["run"]["snippets"] > 0
    # --dry-run and --out leave the input alone
    fresh = shutil.copy(ckpt, tmp_path / "fresh.pt")
    assert calibrate.main([str(fresh), "--data", str(data), "--hops", "1", "--dry-run"]) == 0
    assert load_model(fresh).calibration is None
    assert calibrate.main([str(fresh), "--data", str(data), "--hops", "1", "--out", str(tmp_path / "o.pt")]) == 0
    assert load_model(fresh).calibration is None and load_model(tmp_path / "o.pt").calibration is not None
    # --metrics: a bundle's metrics file records the calibration and the checkpoint's new size
    metrics = tmp_path / "m_metrics.json"
    metrics.write_text(json.dumps({"size_bytes": 1, "offline": {}}))
    assert calibrate.main([str(fresh), "--data", str(data), "--hops", "1", "--metrics", str(metrics)]) == 0
    m = json.loads(metrics.read_text())
    assert m["size_bytes"] == fresh.stat().st_size and set(m["calibration"]["validation"]["1.0"]) == {"before", "after"}
    assert m["offline"] == {}


@pytest.mark.parametrize("argv, needle", [
    (["{ckpt}", "--data", "{tmp}/nothing"], "nothing"),
    (["{tmp}/none.pt", "--data", "{data}"], "none.pt"),
    (["{ckpt}", "--data", "{data}", "--hops", "0.3"], "--hops"),
    (["{ckpt}", "--data", "{data}", "--hops", "x"], "--hops"),
    (["{ckpt}", "--data", "{data}", "--max-latency", "1"], "--max-latency"),
    (["{ckpt}", "--data", "{data}", "--split", "test"], "test"),
    (["{ckpt}", "--data", "{data}", "--clips", "0"], "--clips"),
])
def test_bad_input_is_one_line(synth_model, tmp_path, capsys, argv, needle):
    ckpt, data = synth_model
    argv = [a.format(ckpt=ckpt, tmp=tmp_path, data=data) for a in argv]
    assert needle in one_line_error(capsys, calibrate.main(argv))


def test_an_original_state_dict_cannot_be_calibrated(synth_model, tmp_path, capsys):
    from avparse.core.han import HANConfig, build_han

    _, data = synth_model
    han = build_han(HANConfig(layer_mode="original"))
    sd = {k.replace("temporal.", "hat_encoder."): v for k, v in han.state_dict().items()}
    torch.save(sd, tmp_path / "orig.pt")
    rc = calibrate.main([str(tmp_path / "orig.pt"), "--data", str(data)])
    assert "MMIL_Net" in one_line_error(capsys, rc)


def _calibrated_copy(src, dst, **rule):
    """``src`` with uniform calibrated rules (``rule``: ModalityRule.uniform keywords) at hop 1."""
    loaded = load_model(src)
    shutil.copy(src, dst)
    write_calibration(dst, calibration_record([DecisionRules.uniform(loaded.classes, hop=1.0, **rule)]))
    return dst


def test_parse_uses_the_calibration_unless_told_otherwise(synth_model, tmp_path, capsys):
    """A calibration that never turns a class on: no events by default; --no-calibration or --on
    bring the bare rule's events back (the test model is unsure of many classes)."""
    ckpt, data = synth_model
    clip = sorted((data / "media").glob("*.mp4"))[0]
    bare = parse.main([str(clip), "--model", str(ckpt), "--json"])
    n_bare = len(capsys.readouterr().out.splitlines())
    assert bare == 0 and n_bare > 0
    cal = _calibrated_copy(ckpt, tmp_path / "never.pt", on=1.0, off=1.0)
    assert parse.main([str(clip), "--model", str(cal), "--json"]) == 0
    assert capsys.readouterr().out.strip() == ""
    assert parse.main([str(clip), "--model", str(cal), "--json", "--no-calibration"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == n_bare
    assert parse.main([str(clip), "--model", str(cal), "--json", "--on", "0.5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == n_bare
    # a calibration this avparse cannot read: one line naming the way out
    bad = tmp_path / "bad.pt"
    shutil.copy(ckpt, bad)
    write_calibration(bad, {"format": "avparse.decision-rules", "version": 1, "rules": [{"version": 9}]})
    assert "--no-calibration" in one_line_error(capsys, parse.main([str(clip), "--model", str(bad)]))


def test_run_description_keys_for_the_tracker(tmp_path):
    from avparse.tools.common import UserError
    from avparse.tools.run import load_toml

    p = tmp_path / "r.toml"
    p.write_text('calibration = false\noff = 0.3\ngate = true\n[[stream]]\nname = "a"\nscene = 1\n')
    spec = load_toml(str(p))
    assert spec.options == {"calibration": False, "off": 0.3, "gate": True}
    p.write_text('calibration = "no"\n[[stream]]\nname = "a"\nscene = 1\n')
    with pytest.raises(UserError, match="calibration"):
        load_toml(str(p))


def test_llp_features_with_dense_annotations(tmp_path, capsys):
    """A 25-class model on a feature set in the LLP layout (no media): the inference stage fed the stored
    features, calibrated on the 1 s grid; a request for hop 0.25 there is one line."""
    from avparse.core.han import HANConfig, build_han
    from avparse.core.labels import LLP_CLASSES
    from avparse.core.profiles import get_profile
    from avparse.train.featgen import PlantedSpec, write_planted_layout

    p = get_profile("lite")
    data = write_planted_layout(tmp_path / "llp", PlantedSpec(classes=LLP_CLASSES, profile=p), n_train=0, n_val=6)
    torch.manual_seed(0)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                              frames_per_snippet=p.frames_per_snippet, d_model=16, dim_feedforward=16, dropout=0.0))
    ckpt = save_checkpoint(tmp_path / "llp.pt", han, classes=LLP_CLASSES, profile=p)
    assert "--hops 1" in one_line_error(capsys, calibrate.main([str(ckpt), "--data", str(data), "--hops", "1,0.25"]))
    assert calibrate.main([str(ckpt), "--data", str(data), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "| calibrated |" in out
    rules = load_model(ckpt).calibration["rules"]
    assert [r["hop"] for r in rules] == [1.0] and rules[0]["classes"] == list(LLP_CLASSES)
    assert len(rules[0]["audio"]["on"]) == 25
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["clips"] == 6 and res["hops"]["1.0"]["run"] == {"from": "stored features"}
    # the predictions are the causal windows of the stored features, as the live inference makes them
    from avparse.tools.harness.calibration import record_features
    from avparse.train.dataset import DataConfig, open_split

    loaded = load_model(ckpt)
    recs = record_features(loaded, data, streams=4)
    fs = open_split(DataConfig(data_dir=str(data), profile=p, classes=LLP_CLASSES), "val")
    a, v2, v3 = (torch.from_numpy(x) for x in fs.batch([2]))
    F = p.frames_per_snippet
    with torch.no_grad():
        for t in (0, 4, 9):
            o = loaded.model(a[:, :t + 1], v2[:, :(t + 1) * F], v3[:, :t + 1])
            got = recs[2].probs[t]
            assert got.index == t and got.decided_at == t + 1.0
            torch.testing.assert_close(torch.from_numpy(got.frame_prob), o.frame_prob[0, t].float(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_demo_shows_the_calibrated_events(synth_model, tmp_path):
    """The demo applies the checkpoint's rules (here: never on, so no event at all) and says so."""
    import os
    import subprocess
    import sys

    ckpt, _ = synth_model
    cal = _calibrated_copy(ckpt, tmp_path / "never.pt", on=1.0, off=1.0)
    r = subprocess.run([sys.executable, "-m", "avparse.tools.cli", "demo", "--model", str(cal), "--headless",
                        "--out", str(tmp_path / "d.mp4"), "--duration", "3", "--size", "640x360", "--no-publish"],
                       cwd=tmp_path, env=dict(os.environ, DISPLAY=""), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "tracker: the checkpoint's calibrated rules (chosen at hop 1 s)" in r.stderr
    assert "[scene]" not in r.stdout and "avparse demo: 0 events" in r.stderr
