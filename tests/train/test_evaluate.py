"""Evaluation: the paper's decision rule and ten numbers, checked against the per-video reference."""

import numpy as np
import pytest
import torch

from avparse.core.checkpoint import save_checkpoint
from avparse.core.han import HANConfig, build_han
from avparse.core.metrics import SUMMARY_KEYS, summarize, video_scores
from avparse.core.profiles import LITE
from avparse.train.dataset import DataConfig, FeatureError, open_split
from avparse.train.evaluate import evaluate_checkpoint, format_table, predict_split, score_split
from avparse.train.featgen import PlantedSpec, write_planted_layout
from avparse.train.trainer import model_config_for

CLASSES = ("a", "b", "c")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = write_planted_layout(tmp_path_factory.mktemp("ev") / "llp", PlantedSpec(CLASSES, LITE), n_train=4,
                             n_val=10, n_test=9, seed=7)
    cfg = DataConfig(str(d), profile=LITE, classes=CLASSES)
    return cfg, open_split(cfg, "test")


def _model(split, seed=0):
    torch.manual_seed(seed)
    return build_han(model_config_for(HANConfig(d_model=16, dim_feedforward=16), split)).eval()


def test_scores_follow_the_paper_protocol(data):
    cfg, test = data
    m = _model(test)
    fp, gp = predict_split(m, test, batch_size=4)
    assert fp.shape == (9, 10, 2, 3) and gp.shape == (9, 3)
    with torch.no_grad():  # batching does not change the predictions
        one = m(*(torch.from_numpy(x) for x in test.batch([5])))
    assert np.allclose(one.frame_prob.numpy()[0], fp[5], atol=1e-6)
    # main_avvp.py eval(), written out: snippet >= 0.5 gated by the video-level >= 0.5, then video_scores
    per_video = []
    for i in range(len(test)):
        o = (gp[i] >= 0.5).astype(int)
        pa = (fp[i, :, 0, :] >= 0.5).astype(int) * o[None, :]
        pv = (fp[i, :, 1, :] >= 0.5).astype(int) * o[None, :]
        per_video.append(video_scores(pa.T, pv.T, test.gt_audio[i], test.gt_visual[i]))
    ref = summarize(per_video)
    got = score_split(m, test, batch_size=4)
    assert set(got) == set(SUMMARY_KEYS)
    for k in SUMMARY_KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-9)


def test_evaluate_checkpoint_and_table(data, tmp_path):
    cfg, test = data
    m = _model(test, seed=3)
    ck = save_checkpoint(tmp_path / "m.pt", m, classes=CLASSES, profile=LITE)
    out = evaluate_checkpoint(ck, cfg, "test")
    assert out["videos"] == 9 and out["split"] == "test"
    assert out["scores"] == pytest.approx(score_split(m, test))
    table = format_table(out["scores"])
    rows = table.splitlines()
    assert [r.split()[0] for r in rows[1:]] == ["audio", "visual", "audio-visual", "Type@AV", "Event@AV"]
    nums = [float(x) for r in rows[1:] for x in r.split()[-2:]]
    assert len(nums) == 10 and nums[0] == pytest.approx(out["scores"]["seg_a"], abs=0.05)
    # a checkpoint of other classes does not fit these CSVs (unknown labels) or features
    other = build_han(HANConfig(d_model=16, dim_feedforward=16, num_classes=4, audio_dim=LITE.audio_dim,
                                v2d_dim=LITE.v2d_dim, v3d_dim=LITE.v3d_dim))
    ck2 = save_checkpoint(tmp_path / "o.pt", other, classes=("w", "x", "y", "z"), profile=LITE)
    with pytest.raises(Exception) as e:
        evaluate_checkpoint(ck2, DataConfig(cfg.data_dir, profile=LITE), "test")
    assert isinstance(e.value, (FeatureError, ValueError))


def test_a_split_without_dense_labels_cannot_be_scored(data):
    cfg, _ = data
    tr = open_split(cfg, "train")
    with pytest.raises(FeatureError, match="dense"):
        score_split(_model(tr), tr)
