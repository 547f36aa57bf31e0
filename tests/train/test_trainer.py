"""The trainer: learns a planted signal, is reproducible and resumable, covers Table 2's switches."""

import json

import numpy as np
import pytest
import torch

from avparse.core.checkpoint import load_model
from avparse.core.han import HANConfig, build_han
from avparse.core.profiles import LITE
from avparse.train.dataset import DataConfig, FeatureError, FrameMeanSplit, PackedSplit, open_split
from avparse.train.evaluate import score_split
from avparse.train.featgen import PlantedSpec, write_planted_layout
from avparse.train.losses import LossConfig
from avparse.train.pack import pack_split
from avparse.train.trainer import Callbacks, TrainConfig, model_config_for, train

CLASSES = ("c0", "c1", "c2", "c3")
SMALL = HANConfig(d_model=32, dim_feedforward=32)


def _store(root, n_train, n_val, seed):
    lay = write_planted_layout(root / "llp", PlantedSpec(CLASSES, LITE), n_train=n_train, n_val=n_val, seed=seed)
    cfg = DataConfig(str(lay), profile=LITE, classes=CLASSES)
    for s in ("train", "val"):
        pack_split(cfg, s, root / "store")
    d = DataConfig(str(root / "store"))
    return open_split(d, "train"), open_split(d, "val")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("planted"), 192, 48, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("tiny"), 40, 12, seed=1)


def _cfg(**kw):
    kw.setdefault("num_threads", 1)
    kw.setdefault("lr", 3e-3)
    return TrainConfig(**kw)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_learns_the_planted_signal(planted, tmp_path, precision):
    tr, va = planted
    torch.manual_seed(1)
    untrained = score_split(build_han(model_config_for(SMALL, tr)), va)
    res = train(SMALL, _cfg(epochs=6, lr_step=100, precision=precision), tr, va, tmp_path / "run")
    best = load_model(res.best_path)
    trained = score_split(best.model, va, leak=True)   # validation records the leak figures too
    assert trained == pytest.approx(res.history[res.best_epoch - 1]["val"])
    for k in ("seg_a", "seg_v", "seg_event", "evt_a", "evt_v", "evt_event"):
        assert trained[k] > untrained[k] + 15, (k, untrained[k], trained[k])
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_outputs_checkpoint_and_recipe(tiny, tmp_path):
    tr, va = tiny
    res = train(SMALL, _cfg(epochs=3, lr_step=2), tr, va, tmp_path / "run")
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    # StepLR(step 2, gamma 0.1) stepped once per epoch: lr of epochs 1, 2, 3
    assert [h["lr"] for h in res.history] == pytest.approx([3e-3, 3e-3, 3e-4])
    # best by segment-level Type@AV, ties to the later epoch (paper: F >= best_F)
    scores = [h["val"]["seg_type"] for h in res.history]
    assert res.best_epoch == max(i + 1 for i, s in enumerate(scores) if s == max(scores))
    m = load_model(res.best_path)
    assert m.classes == CLASSES and m.profile == LITE and m.config.d_model == 32
    extra = m.meta["extra"]
    assert extra["epoch"] == res.best_epoch and extra["val"]["seg_type"] == pytest.approx(max(scores))
    assert TrainConfig.from_dict(extra["train_config"]) == _cfg(epochs=3, lr_step=2)
    png = tmp_path / "run" / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["epoch"] == 3


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_same_seed_same_checkpoint(tiny, tmp_path):
    tr, va = tiny
    runs = [train(SMALL, _cfg(epochs=2, validate=False), tr, None, tmp_path / f"r{i}") for i in range(2)]
    a, b = (_state(r.best_path)["state_dict"] for r in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = _state(train(SMALL, _cfg(epochs=2, validate=False, seed=2), tr, None, tmp_path / "r2").best_path)
    assert not all(torch.equal(a[k], other["state_dict"][k]) for k in a)


def test_frame_means_in_memory_give_the_same_run_bit_for_bit(tiny, tmp_path):
    tr, va = tiny
    f = tr.profile.frames_per_snippet
    assert f > 1
    fm = FrameMeanSplit(tr)
    a, v2, v3 = fm.batch([3, 1])
    assert v2.shape == (2, tr.num_snippets, tr.profile.v2d_dim)   # one vector per snippet, not F
    ref = tr.batch([3, 1])[1].reshape(2, tr.num_snippets, f, -1)
    np.testing.assert_allclose(v2, ref.mean(axis=2), rtol=1e-6, atol=1e-6)
    runs = [train(SMALL, _cfg(epochs=2, frame_means=m), tr, va, tmp_path / f"m{m}") for m in (True, False)]
    s1, s2 = (_state(r.best_path)["state_dict"] for r in runs)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[1].history]
    assert [h["val"] for h in runs[0].history] == [h["val"] for h in runs[1].history]


class _Interrupt(Callbacks):
    def __init__(self, after):
        self.after = after

    def on_epoch_end(self, record):
        if record["epoch"] == self.after:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_weights(tiny, tmp_path):
    tr, va = tiny
    cfg = _cfg(epochs=3, lr_step=2)
    full = train(SMALL, cfg, tr, va, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(SMALL, cfg, tr, va, tmp_path / "cut", callbacks=_Interrupt(2))
    assert _state(tmp_path / "cut" / "resume.pt")["epoch"] == 2
    resumed = train(SMALL, cfg, tr, va, tmp_path / "cut", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    s1, s2 = _state(tmp_path / "full" / "resume.pt"), _state(tmp_path / "cut" / "resume.pt")
    for key in ("model",):
        assert all(torch.equal(s1[key][k], s2[key][k]) for k in s1[key])
    assert [h["val"] for h in full.history] == [h["val"] for h in resumed.history]
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    b1, b2 = _state(full.best_path)["state_dict"], _state(resumed.best_path)["state_dict"]
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    # resuming with other settings is refused
    with pytest.raises(FeatureError, match="other training settings"):
        train(SMALL, _cfg(epochs=4, lr=1e-2), tr, va, tmp_path / "cut", resume=True)
    with pytest.raises(FeatureError, match=r"other training settings \(precision\)"):
        train(SMALL, _cfg(epochs=4, lr_step=2, precision="bf16"), tr, va, tmp_path / "cut", resume=True)
    # a state written before a setting existed resumes with that setting's default
    st = _state(tmp_path / "cut" / "resume.pt")
    del st["train_config"]["precision"]
    torch.save(st, tmp_path / "cut" / "resume.pt")
    assert [h["epoch"] for h in train(SMALL, _cfg(epochs=4, lr_step=2), tr, va, tmp_path / "cut",
                                      resume=True).history] == [1, 2, 3, 4]


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("model_kw,loss_kw", [
    (dict(), dict(terms="weak")),                    # L_wsl only
    (dict(), dict(terms="guided")),                  # L_g only
    (dict(pooling="max"), dict()),
    (dict(pooling="mean"), dict()),
    (dict(temporal="none"), dict()),
    (dict(temporal="gru"), dict()),
    (dict(temporal="transformer"), dict()),
    (dict(), dict(noisy="none")),
    (dict(), dict(noisy="bootstrap")),
    (dict(), dict(noisy="bootstrap", bootstrap_mode="hard")),
])
def test_table2_switches_train(tiny, tmp_path, model_kw, loss_kw):
    tr, va = tiny
    mc = HANConfig(d_model=32, dim_feedforward=32, **model_kw)
    res = train(mc, _cfg(epochs=1, loss=LossConfig(**loss_kw)), tr, va, tmp_path / "run")
    m = load_model(res.best_path)
    for k, v in model_kw.items():
        assert getattr(m.config, k) == v
    assert TrainConfig.from_dict(m.meta["extra"]["train_config"]).loss == LossConfig(**loss_kw)
    assert np.isfinite(res.history[0]["train_loss"])


def test_nan_in_training_features_names_the_video(tmp_path):
    tr, va = _store(tmp_path, 24, 8, seed=5)
    meta = json.loads((tmp_path / "store" / "train.json").read_text())
    spec = meta["arrays"]["audio"]
    arr = np.memmap(tmp_path / "store" / "train.bin", dtype=spec["dtype"], mode="r+", offset=spec["offset"],
                    shape=tuple(spec["shape"]))
    arr[9, 0, 0] = np.nan
    arr.flush()
    del arr
    tr = PackedSplit(tmp_path / "store" / "train.json")
    with pytest.raises(FeatureError) as e:
        train(SMALL, _cfg(epochs=1, log_every=1), tr, va, tmp_path / "run")
    assert meta["ids"][9] in str(e.value) and "NaN" in str(e.value)


def test_validation_needs_dense_annotations(tiny, tmp_path):
    tr, va = tiny
    with pytest.raises(FeatureError, match="dense"):
        train(SMALL, _cfg(epochs=1), tr, tr, tmp_path / "run")


# ------------------------------------------------------------------ the schedule counted in optimiser steps


class _Lrs(Callbacks):
    """Records the learning rate seen at every optimiser step (through the optimiser the test holds)."""

    def __init__(self):
        self.steps = []

    def on_epoch_start(self, epoch, steps):
        self.steps.append(steps)


def test_step_schedule_counts_optimiser_steps(tiny, tmp_path):
    """schedule "steps": StepLR counts optimiser steps, the run is `steps` long in `rounds` rounds (the
    last takes the rest), consecutive shuffled passes over the data; it resumes to the same weights."""
    tr, va = tiny                                      # 40 clips, batch 16: 3 steps per pass
    cfg = _cfg(schedule="steps", steps=10, lr_step_steps=4, rounds=3)
    cb = _Lrs()
    res = train(SMALL, cfg, tr, va, tmp_path / "full", callbacks=cb)
    assert cb.steps == [3, 3, 4] and [h["steps_done"] for h in res.history] == [3, 6, 10]
    # lr at the first step of each round: steps 0, 3 (before the drop at 4), 6 (after it)
    assert [h["lr"] for h in res.history] == pytest.approx([3e-3, 3e-3, 3e-4])
    st = _state(tmp_path / "full" / "resume.pt")
    assert st["scheduler"]["last_epoch"] == 10          # stepped once per optimiser step
    assert "schedule: steps (10 optimiser steps at batch 16" in cfg.describe(len(tr))
    with pytest.raises(KeyboardInterrupt):
        train(SMALL, cfg, tr, va, tmp_path / "cut", callbacks=_Interrupt(2))
    resumed = train(SMALL, cfg, tr, va, tmp_path / "cut", resume=True)
    s1, s2 = st["model"], _state(tmp_path / "cut" / "resume.pt")["model"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [h["val"] for h in res.history] == [h["val"] for h in resumed.history]


def test_step_batches_are_consecutive_passes():
    from avparse.train import distributed as D
    from avparse.train.trainer import _batches, _step_batches

    info = D.DistInfo()
    cfg = TrainConfig(batch_size=4, seed=3)
    whole = [b for e in (1, 2, 3) for b in _batches(10, cfg, info, e)]          # 3 batches per pass
    got = list(_step_batches(10, cfg, info, 2, 8))
    assert [b.tolist() for b in got] == [b.tolist() for b in whole[2:8]]


def test_auto_schedule_keeps_the_papers_epochs_on_llp_size_data():
    from avparse.train.trainer import schedule_for

    paper = TrainConfig(schedule="auto")
    assert schedule_for(paper, 10_000).schedule == "epochs"      # 40 x 625 = 25,000 steps: the paper, unchanged
    assert schedule_for(paper, 9_000).schedule == "steps"
    small = schedule_for(paper, 420)
    assert small.schedule == "steps" and (small.steps, small.lr_step_steps, small.rounds) == (25_000, 6_250, 40)
    assert TrainConfig().schedule == "epochs"                     # the API's default is the paper's code
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="weeks")
    with pytest.raises(ValueError, match="rounds"):
        TrainConfig(schedule="steps", steps=5, rounds=6)
