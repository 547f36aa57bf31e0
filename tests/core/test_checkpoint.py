"""Checkpoints: round trip through plain types, and one clear line for every bad file."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avparse.core import profiles
from avparse.core.checkpoint import FORMAT_VERSION, CheckpointError, load_model, save_checkpoint
from avparse.core.han import HAN, HANConfig, build_han
from avparse.core.profiles import PAPER, FeatureProfile

TINY = HANConfig(audio_dim=8, v2d_dim=12, v3d_dim=6, frames_per_snippet=3, d_model=16, nhead=2,
                 num_layers=2, dim_feedforward=24, num_classes=5, layer_mode="stacked")
CLASSES = ("a", "b", "c", "d", "e")


@pytest.fixture
def tiny_profile(monkeypatch) -> FeatureProfile:
    p = FeatureProfile(name="tiny", audio_dim=8, v2d_dim=12, v3d_dim=6, frames_per_snippet=3,
                       description="test profile")
    monkeypatch.setitem(profiles.PROFILES, "tiny", p)
    return p


@pytest.fixture
def saved(tmp_path, tiny_profile):
    torch.manual_seed(0)
    model = build_han(TINY).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, classes=CLASSES, profile=tiny_profile,
                           extra={"epoch": 3, "metrics": {"seg_a": 41.5}, "note": None},
                           extractor_state={"audio": {"w": torch.arange(4.0)}})
    return path, model


def inputs(cfg, b=2, t=3):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, t, cfg.audio_dim, generator=g), torch.randn(b, t * cfg.frames_per_snippet, cfg.v2d_dim,
                                                                       generator=g),
            torch.randn(b, t, cfg.v3d_dim, generator=g))


def resave(src, dst, edit):
    d = torch.load(src, weights_only=True)
    edit(d)
    torch.save(d, dst)
    return dst


def test_round_trip(saved, tiny_profile):
    path, model = saved
    raw = torch.load(path, weights_only=True)  # plain types only
    assert raw["format"] == "avparse.han" and raw["version"] == FORMAT_VERSION
    assert raw["config"] == TINY.to_dict() and raw["classes"] == list(CLASSES)
    assert raw["profile"] == tiny_profile.to_dict()
    loaded = load_model(path)
    assert not loaded.model.training
    assert loaded.config == TINY and loaded.classes == CLASSES and loaded.profile == tiny_profile
    assert loaded.meta["extra"] == {"epoch": 3, "metrics": {"seg_a": 41.5}, "note": None}
    assert loaded.meta["version"] == FORMAT_VERSION and loaded.meta["source"] == "avparse"
    assert torch.equal(loaded.extractor_state["audio"]["w"], torch.arange(4.0))
    x = inputs(TINY)
    with torch.no_grad():
        a, b = model(*x), loaded.model(*x)
    for name in ("global_prob", "a_prob", "v_prob", "frame_prob"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_save_refuses_inconsistent_inputs(tmp_path, tiny_profile):
    model = build_han(TINY)
    with pytest.raises(ValueError, match="class names"):
        save_checkpoint(tmp_path / "x.pt", model, classes=CLASSES[:4], profile=tiny_profile)
    with pytest.raises(ValueError, match="audio_dim"):
        save_checkpoint(tmp_path / "x.pt", model, classes=CLASSES, profile=PAPER)
    with pytest.raises(TypeError, match="plain type"):
        save_checkpoint(tmp_path / "x.pt", model, classes=CLASSES, profile=tiny_profile, extra={"f": object()})
    assert not list(tmp_path.iterdir())  # nothing half-written


def expect_error(path, *fragments, **kw):
    with pytest.raises(CheckpointError) as e:
        load_model(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert e.value.__suppress_context__ or e.value.__cause__ is None
    return msg


def test_missing_file_and_directory(tmp_path):
    expect_error(tmp_path / "nope.pt", "no such file")
    expect_error(tmp_path, "directory")


def test_corrupt_and_truncated(tmp_path, saved):
    path, _ = saved
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    expect_error(junk, "cannot be read")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    expect_error(text, "cannot be read")
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    expect_error(cut, "cannot be read")


def test_not_a_checkpoint(tmp_path, saved):
    p = tmp_path / "list.pt"
    torch.save([1, 2, 3], p)
    expect_error(p, "not an avparse checkpoint")
    p = tmp_path / "sd.pt"
    torch.save({"weight": torch.zeros(2)}, p)
    expect_error(p, "not an avparse checkpoint")
    p = resave(saved[0], tmp_path / "fmt.pt", lambda d: d.update(format="other.thing"))
    expect_error(p, "unknown checkpoint format", "other.thing")
    # a pickled object that weights_only refuses
    p = tmp_path / "obj.pt"
    torch.save({"x": FeatureProfile(name="paper")}, p)
    expect_error(p, "weights-only", "FeatureProfile")


def test_newer_version(tmp_path, saved):
    p = resave(saved[0], tmp_path / "new.pt", lambda d: d.update(version=FORMAT_VERSION + 1))
    expect_error(p, f"version {FORMAT_VERSION + 1}", "upgrade avparse")


def test_mismatched_sizes(tmp_path, saved):
    def edit(d):
        d["config"]["dim_feedforward"] = 32
    p = resave(saved[0], tmp_path / "ff.pt", edit)
    expect_error(p, "size mismatch for temporal.layers.0.linear1.weight", "[24, 16]", "[32, 16]")

    def drop(d):
        del d["state_dict"]["fc_prob.bias"]
    expect_error(resave(saved[0], tmp_path / "miss.pt", drop), "lacks parameters fc_prob.bias")

    def add(d):
        d["state_dict"]["extra_layer.weight"] = torch.zeros(1)
    expect_error(resave(saved[0], tmp_path / "add.pt", add), "unexpected parameters extra_layer.weight")

    def classes(d):
        d["classes"] = d["classes"][:3]
    expect_error(resave(saved[0], tmp_path / "cls.pt", classes), "3 class names")

    def cfg(d):
        d["config"]["pooling"] = "median"
    expect_error(resave(saved[0], tmp_path / "cfg.pt", cfg), "invalid model config", "median")

    def cfg_type(d):
        d["config"]["d_model"] = "16"
    expect_error(resave(saved[0], tmp_path / "cfgt.pt", cfg_type), "invalid model config", "d_model")

    def cfg_field(d):
        d["config"]["depth"] = 3
    expect_error(resave(saved[0], tmp_path / "cfgf.pt", cfg_field), "invalid model config", "depth")

    def extra(d):
        d["extra"] = [1]
    expect_error(resave(saved[0], tmp_path / "extra.pt", extra), "extra is not a dict")

    def no_state(d):
        del d["state_dict"]
    expect_error(resave(saved[0], tmp_path / "nostate.pt", no_state), "lacks the fields state_dict")


def test_unknown_or_mismatched_profile(tmp_path, saved):
    def unknown(d):
        d["profile"]["name"] = "hires"
    expect_error(resave(saved[0], tmp_path / "u.pt", unknown), "unknown feature profile 'hires'")

    def field(d):
        d["profile"]["gamma"] = 2.2
    expect_error(resave(saved[0], tmp_path / "f.pt", field), "invalid feature profile", "gamma")

    def dims(d):
        d["profile"]["audio_dim"] = 128
    expect_error(resave(saved[0], tmp_path / "d.pt", dims), "audio_dim")


def _original_like(cfg: HANConfig) -> dict:
    """A raw MMIL_Net-style state dict (original names, unused modules included) of zeros."""
    sd = {}
    with torch.device("meta"):  # shapes only, no initialisation work
        shapes = HAN(cfg).state_dict()
    for k, v in shapes.items():
        sd[k.replace("temporal.", "hat_encoder.", 1)] = torch.zeros(v.shape)
    d, f = cfg.d_model, cfg.dim_feedforward
    for enc in ("audio_encoder", "visual_encoder", "cmt_encoder"):
        sd[f"{enc}.layers.0.self_attn.in_proj_weight"] = torch.zeros(3 * d, d)
        sd[f"{enc}.layers.0.linear1.weight"] = torch.zeros(f, d)
        sd[f"{enc}.layers.0.norm2.bias"] = torch.zeros(d)
    for enc in ("cmt_encoder", "hat_encoder"):
        sd[f"{enc}.norm1.weight"] = torch.zeros(d)
    return sd


def test_original_state_dict_errors(tmp_path):
    paper = HANConfig()
    sd = _original_like(paper)
    ok = tmp_path / "ok.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, ok)  # DataParallel prefix is accepted
    loaded = load_model(ok)
    assert loaded.config.layer_mode == "original" and loaded.profile == PAPER
    assert "audio_encoder.layers.0.linear1.weight" in loaded.meta["ignored"]

    p = tmp_path / "unknown.pt"
    torch.save({**sd, "fc_extra.weight": torch.zeros(2)}, p)
    expect_error(p, "unexpected parameter 'fc_extra.weight'", "original MMIL_Net")

    p = tmp_path / "missing.pt"
    torch.save({k: v for k, v in sd.items() if k != "fc_av_att.bias"}, p)
    expect_error(p, "lacks parameters fc_av_att.bias")

    p = tmp_path / "size.pt"
    torch.save({**sd, "fc_frame_att.weight": torch.zeros(20, 512)}, p)
    expect_error(p, "size mismatch for fc_frame_att.weight")

    p = tmp_path / "classes.pt"
    torch.save(_original_like(dataclasses.replace(paper, num_classes=10)), p)
    expect_error(p, "10 classes")

    p = tmp_path / "dims.pt"
    torch.save(_original_like(dataclasses.replace(paper, audio_dim=64)), p)
    expect_error(p, "audio_dim")


def test_profile_of_a_file_that_stores_none(tmp_path, saved):
    from avparse.core.profiles import PAPER_PCA

    p = tmp_path / "orig.pt"
    torch.save(_original_like(HANConfig()), p)
    assert load_model(p).profile == PAPER  # the LLP features' reading (avparse.core.registry)
    assert load_model(p, profile="paper-pca").profile == PAPER_PCA  # the other one, one argument away
    expect_error(p, "unknown feature profile 'nope'", profile="nope")
    path, _ = saved
    assert load_model(path, profile="tiny").profile.name == "tiny"
    expect_error(path, "trained on feature profile 'tiny', not 'paper'", profile="paper")


def test_calibration_entry_round_trip_and_rewrite(tmp_path, saved):
    """The tracker's calibrated rules: stored as plain values, read back, rewritten in place (the file
    keeps its permissions and everything else), removed with None; numpy scalars stored as numbers."""
    import numpy as np

    from avparse.core.checkpoint import write_calibration

    path, model = saved
    assert load_model(path).calibration is None
    path.chmod(0o644)
    cal = {"format": "avparse.decision-rules", "rules": [{"hop": 1.0, "on": [0.5, np.float64(0.7)]}],
           "f1": np.float64(0.9)}
    write_calibration(path, cal)
    loaded = load_model(path)   # weights-only: a numpy scalar left in would be refused here
    assert loaded.calibration == {"format": "avparse.decision-rules", "rules": [{"hop": 1.0, "on": [0.5, 0.7]}],
                                  "f1": 0.9}
    assert type(loaded.calibration["f1"]) is float and (path.stat().st_mode & 0o777) == 0o644
    assert loaded.meta["extra"]["epoch"] == 3 and loaded.extractor_state["audio"]["w"].tolist() == [0, 1, 2, 3]
    for (k, a), b in zip(loaded.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    other = write_calibration(path, None, out=tmp_path / "plain.pt")
    assert load_model(other).calibration is None and load_model(path).calibration is not None
    with pytest.raises(TypeError):
        write_calibration(path, {"bad": object()})
    torch.save({"fc_prob.weight": torch.zeros(1)}, tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="not an avparse checkpoint"):
        write_calibration(tmp_path / "raw.pt", cal)
    bad = torch.load(path, weights_only=True)
    bad["calibration"] = [1, 2]
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="calibration"):
        load_model(tmp_path / "bad.pt")
