"""Batched inference: batching across streams, windows, lookahead, overlapping hops, max wait."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avparse.core.han import HANConfig, build_han
from avparse.stream.grid import SnippetGrid
from avparse.stream.inference import Inference, InferenceConfig
from avparse.stream.types import Snippet

F, H, W = 2, 4, 4
SR = 40  # samples per 1 s snippet in these tests


class TinyExtractor:
    """Deterministic stand-in: features are simple functions of the samples and pixels."""

    def __init__(self):
        self.batches = []

    def __call__(self, audio, frames):
        self.batches.append(len(audio))
        a = torch.from_numpy(np.asarray(audio, np.float32))
        fr = torch.from_numpy(np.asarray(frames)).float() / 255.0          # [N, F, H, W, 3]
        v2d = torch.stack([fr.mean(dim=(2, 3))[..., c] for c in range(3)], -1)  # [N, F, 3]
        return SimpleNamespace(audio=a[:, :4] * 3.0, v2d=v2d, v3d=torch.stack([a.mean(1), a.std(1)], -1))


def tiny_han():
    torch.manual_seed(0)
    cfg = HANConfig(audio_dim=4, v2d_dim=3, v3d_dim=2, frames_per_snippet=F, d_model=8, dim_feedforward=8,
                    num_classes=3, dropout=0.0)
    return build_han(cfg).eval()


def snippet(stream, k, *, hop=1.0, size=(H, W), wall=0.0):
    rng = np.random.default_rng(hash((stream, k)) % 2**32)
    return Snippet(stream, k, k * hop, rng.standard_normal(SR).astype(np.float32),
                   rng.integers(0, 255, (F, *size, 3), dtype=np.uint8), wall_time=wall)


def reference(model, ext, snips, members, pos):
    """HAN run directly on one window (no batching): frame_prob at pos and the window's global prob."""
    f = ext(np.stack([snips[i].audio for i in members]), np.stack([snips[i].frames for i in members]))
    with torch.inference_mode():
        out = model(f.audio[None], f.v2d.reshape(1, -1, f.v2d.shape[-1]), f.v3d[None])
    return out.frame_prob[0, pos].numpy(), out.global_prob[0].numpy()


def test_batches_snippets_of_all_streams():
    ext, model = TinyExtractor(), tiny_han()
    inf = Inference(InferenceConfig(window=4, max_batch=3), model, ext)
    streams = ["a", "b", "c"]
    snips = {s: [snippet(s, k) for k in range(6)] for s in streams}
    out = []
    for k in range(6):
        for s in streams:
            out += inf.push(snips[s][k])
    assert ext.batches == [3] * 6                # one extractor call per 3 snippets, across streams
    st = inf.stats()
    assert st["han_calls"] == 6 and st["windows"] == 18  # the 3 streams' windows share one HAN call
    assert st["mean_batch"] == 3.0
    assert sorted((p.stream, p.index) for p in out) == sorted((s, k) for s in streams for k in range(6))
    ref_ext = TinyExtractor()
    for p in out:
        members = list(range(max(0, p.index - 3), p.index + 1))
        fp, gp = reference(model, ref_ext, snips[p.stream], members, len(members) - 1)
        np.testing.assert_allclose(p.frame_prob, fp, atol=1e-5)
        np.testing.assert_allclose(p.global_prob, gp, atol=1e-5)
        assert p.frame_prob.shape == (2, 3) and p.a_prob.shape == p.v_prob.shape == (3,)


@pytest.mark.parametrize("lookahead", [0, 2])
def test_prediction_for_t_comes_after_t_plus_k(lookahead):
    ext, model = TinyExtractor(), tiny_han()
    inf = Inference(InferenceConfig(window=5, lookahead=lookahead, max_batch=1), model, ext)
    snips = [snippet("s", k) for k in range(8)]
    seen = []
    for n, s in enumerate(snips):
        out = inf.push(s)
        want = [n - lookahead] if n >= lookahead else []
        assert [p.index for p in out] == want
        for p in out:
            assert p.decided_at == pytest.approx(n + 1.0)
            end = p.index + lookahead
            members = list(range(max(0, end - 4), end + 1))
            fp, gp = reference(model, TinyExtractor(), snips, members, members.index(p.index))
            np.testing.assert_allclose(p.frame_prob, fp, atol=1e-5)
            np.testing.assert_allclose(p.global_prob, gp, atol=1e-5)
        seen += out
    tail = inf.flush()
    assert [p.index for p in tail] == list(range(8 - lookahead, 8))
    for p in tail:  # windows end at the newest snippet
        assert p.decided_at == pytest.approx(8.0) and p.info["window"] == 5
    assert inf.flush() == []


def test_overlapping_hop_windows_are_one_second_apart():
    ext, model = TinyExtractor(), tiny_han()
    cfg, grid = InferenceConfig(window=3, lookahead=1, max_batch=1), SnippetGrid(hop=0.25)
    assert grid.stride == 4
    inf = Inference(cfg, model, ext, grid=grid)
    snips = [snippet("s", k, hop=0.25) for k in range(14)]
    got = {}
    for n, s in enumerate(snips):
        out = inf.push(s)
        assert [p.index for p in out] == ([n - 4] if n >= 4 else [])
        got.update({p.index: p for p in out})
    p = got[5]  # window ends at 9: members 1, 5, 9 (1 s apart); target in the middle
    assert p.t0 == pytest.approx(1.25) and p.decided_at == pytest.approx(9 * 0.25 + 1.0)
    fp, gp = reference(model, TinyExtractor(), snips, [1, 5, 9], 1)
    np.testing.assert_allclose(p.frame_prob, fp, atol=1e-5)
    np.testing.assert_allclose(p.global_prob, gp, atol=1e-5)
    with pytest.raises(ValueError):
        SnippetGrid(hop=0.3)
    with pytest.raises(ValueError):
        InferenceConfig(window=3, lookahead=3)


def test_max_wait_is_measured_on_the_injected_clock():
    ext, model = TinyExtractor(), tiny_han()
    inf = Inference(InferenceConfig(window=4, max_batch=8, max_wait=0.05), model, ext)
    assert inf.deadline() is None
    assert inf.push(snippet("a", 0, wall=10.0)) == []
    assert inf.push(snippet("b", 0, wall=10.02)) == []
    assert inf.deadline() == pytest.approx(10.05)
    assert inf.poll(10.049) == []
    out = inf.poll(10.05)
    assert sorted(p.stream for p in out) == ["a", "b"] and ext.batches == [2]
    # a push whose own time is already past the oldest deadline runs the batch at once
    assert inf.push(snippet("a", 1, wall=11.0)) == []
    assert [p.index for p in inf.push(snippet("a", 2, wall=11.2))] == [1, 2]


def test_declared_streams_run_as_soon_as_each_has_a_snippet():
    ext, model = TinyExtractor(), tiny_han()
    inf = Inference(InferenceConfig(window=4, max_batch=8, max_wait=0.05), model, ext)
    inf.expect("a")
    # one stream: nothing else can join the batch, so no max_wait
    assert [p.index for p in inf.push(snippet("a", 0, wall=10.0))] == [0]
    inf.expect("b")
    assert inf.push(snippet("a", 1, wall=11.0)) == [] and inf.deadline() == pytest.approx(11.05)
    out = inf.push(snippet("b", 0, wall=11.01))   # both declared streams queued: run now, before the deadline
    assert sorted((p.stream, p.index) for p in out) == [("a", 1), ("b", 0)] and ext.batches == [1, 2]
    inf.flush("b")                                # b ended: a alone again
    assert [p.index for p in inf.push(snippet("a", 2, wall=12.0))] == [2]
    inf.flush()
    assert inf.push(snippet("c", 0, wall=13.0)) == []  # undeclared: batches by size and time only


def test_flush_one_stream_and_mixed_frame_sizes():
    ext, model = TinyExtractor(), tiny_han()
    inf = Inference(InferenceConfig(window=4, lookahead=2, max_batch=2), model, ext)
    out = []
    for k in range(3):
        out += inf.push(snippet("a", k))
        out += inf.push(snippet("b", k, size=(6, 8)))
    assert ext.batches == [1, 1] * 3  # one call per frame size within each batch
    assert sorted((p.stream, p.index) for p in out) == [("a", 0), ("b", 0)]
    done = inf.flush("a")
    assert sorted((p.stream, p.index) for p in done) == [("a", 1), ("a", 2)]
    assert [(p.stream, p.index) for p in inf.push(snippet("b", 3, size=(6, 8))) + inf.flush()] == [
        ("b", 1), ("b", 2), ("b", 3)]
    # a flushed stream starts afresh
    assert [p.index for p in inf.push(snippet("a", 0)) + inf.flush()] == [0]


def test_out_of_order_snippet_is_an_error():
    inf = Inference(InferenceConfig(max_batch=1), tiny_han(), TinyExtractor())
    inf.push(snippet("a", 3))
    with pytest.raises(ValueError, match="out of order"):
        inf.push(snippet("a", 2))
