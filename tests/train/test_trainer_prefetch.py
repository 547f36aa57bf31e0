"""The trainer's batch prefetching: the same batches in the same order, errors at the
batch they belong to, and a run with it equal to a run without it."""

import numpy as np
import pytest
import torch

from avparse.core.han import HANConfig
from avparse.core.profiles import LITE
from avparse.train.dataset import DataConfig, FeatureError, open_split
from avparse.train.featgen import PlantedSpec, write_planted_layout
from avparse.train.pack import pack_split
from avparse.train.trainer import TrainConfig, batch_stream, train

CLASSES = ("c0", "c1", "c2")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefetch")
    lay = write_planted_layout(root / "llp", PlantedSpec(CLASSES, LITE), n_train=24, n_val=8, seed=3)
    cfg = DataConfig(str(lay), profile=LITE, classes=CLASSES)
    for s in ("train", "val"):
        pack_split(cfg, s, root / "store")
    d = DataConfig(str(root / "store"))
    return open_split(d, "train"), open_split(d, "val")


@pytest.mark.parametrize("prefetch", [False, True])
def test_batch_stream_yields_the_batches_in_order(store, prefetch):
    tr, _ = store
    batches = [np.array(b) for b in ([3, 1, 7], [0], [5, 6, 2, 9], [4, 8])]
    got = list(batch_stream(tr, iter(batches), prefetch=prefetch))   # any iterable, not only lists
    assert [list(i) for i, _ in got] == [list(b) for b in batches]
    for idx, arrays in got:
        for x, y in zip(arrays, tr.batch(idx)):
            assert x.shape == y.shape and np.array_equal(x, y)
    assert list(batch_stream(tr, [], prefetch=prefetch)) == []


class _Failing:
    """A split whose third batch cannot be read."""

    def __init__(self, split):
        self.split, self.calls = split, 0

    def batch(self, idx):
        self.calls += 1
        if self.calls == 3:
            raise FeatureError("x.bin", "v3", "truncated")
        return self.split.batch(idx)


def test_batch_stream_error_surfaces_at_its_batch(store):
    tr, _ = store
    stream = batch_stream(_Failing(tr), [np.array([i]) for i in range(5)], prefetch=True)
    assert [list(next(stream)[0]) for _ in range(2)] == [[0], [1]]
    with pytest.raises(FeatureError, match="truncated"):
        next(stream)


def test_run_with_prefetch_equals_run_without(store, tmp_path):
    tr, va = store
    mc = HANConfig(d_model=16, dim_feedforward=16)
    runs = [train(mc, TrainConfig(epochs=1, batch_size=5, num_threads=1, lr=3e-3, prefetch=p), tr, va,
                  tmp_path / f"p{p}") for p in (False, True)]
    h0, h1 = (r.history[0] for r in runs)
    assert h0["loss_trace"] == h1["loss_trace"] and h0["val"] == h1["val"]
    s0, s1 = (torch.load(r.best_path, map_location="cpu", weights_only=True) for r in runs)
    sd0, sd1 = s0["state_dict"], s1["state_dict"]
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
