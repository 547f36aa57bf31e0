"""Batched inference: snippets of all streams -> snippet probabilities.

A stage with an internal batch: ``push(snippet)`` queues a snippet; the batch
runs when it holds ``max_batch`` snippets, or a snippet of every stream being
parsed (no other can come before the next hop), or when ``poll(now)`` finds its
oldest snippet has waited ``max_wait`` seconds (``now`` and the snippets'
``wall_time`` come from the runtime's injected clock: this module reads no
clock), or on ``flush()``. A batch is

1. one extractor call for all its snippets (one per frame size, when streams
   of different frame sizes share a batch): features per snippet;
2. per stream, the features go into a sliding store; every new snippet ``n``
   completes the window of target snippet ``t = n - k*stride`` (lookahead
   ``k``), whose HAN input is the ``window`` snippets spaced ``stride`` apart
   ending at ``n``: ``[n - (W-1)*stride, ..., n - stride, n]`` (those >= 0);
3. one HAN call per window length T (early in a stream windows are shorter)
   for all the windows of all streams;
4. for each window, the probabilities at t's position: ``frame_prob[t]``
   (audio, visual) and the window's video-level probabilities.

Overlapping snippets (hop < snippet length): every ``stride = snippet_seconds / hop``
snippets (the grid's ``stride``) lie 1 s apart, so every window is W non-overlapping 1 s snippets,
like the LLP videos HAN was trained on, and the lookahead ``k`` counts those
1 s steps: the prediction for t comes when snippet ``t + k*stride`` (k seconds
later) has arrived. With hop = 1 s, stride = 1.

At the end of a stream (``flush(stream)``) the targets still waiting for their
lookahead are predicted from the windows ending at the newest snippet.
torch is imported by the calls that run the models, not with the module: the
commands read InferenceConfig's defaults for their flags without loading it
(``avparse parse`` starts decoding its file while torch loads).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

import numpy as np

from .grid import SnippetGrid
from .tracker import SnippetProbs
from .types import Snippet

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class InferenceConfig:
    window: int = 10             # snippets per HAN window (LLP videos: 10)
    lookahead: int = 0           # 1 s steps of future context before predicting a snippet (0: causal)
    max_batch: int = 16          # snippets (of all streams) per extractor call at most
    max_wait: float = 0.05       # seconds (runtime clock) the oldest queued snippet may wait for a fuller batch
    device: str = "cpu"          # torch device of the extractor and HAN
    backend: str = "eager"       # extractor backend ("eager", "compile", "tensorrt"), given to build_extractor

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0 <= self.lookahead < self.window:
            raise ValueError(f"lookahead must be in [0, window), got {self.lookahead} with window {self.window}")
        if self.max_batch < 1 or self.max_wait < 0:
            raise ValueError("max_batch must be >= 1 and max_wait >= 0")


class SnippetFeatures(NamedTuple):
    """The extractor's features of one snippet, kept per stream until no window needs them."""

    audio: torch.Tensor   # [A]
    v2d: torch.Tensor     # [F, D2]
    v3d: torch.Tensor     # [D3]
    t0: float             # media time of the snippet's start


@dataclass(frozen=True)
class Window:
    """One HAN input: the snippets spaced one snippet length apart ending at ``end``, and where
    the target snippet (the one this window predicts) sits among them."""

    stream: str
    target: int                          # snippet index predicted from this window
    position: int                        # the target's place in ``members``
    members: tuple[SnippetFeatures, ...]  # oldest first
    end: int                             # snippet index of the newest member


class _StreamState:
    def __init__(self):
        self.feats: "OrderedDict[int, SnippetFeatures]" = OrderedDict()  # snippet index -> its features
        self.next_target = 0  # first snippet index not yet predicted
        self.newest = -1      # newest snippet index with features


class Inference:
    """A stage: ``push(snippet) -> list[SnippetProbs]``, ``poll(now)``, ``flush(stream=None)``, ``reset()``.

    ``model``: a HAN (``model(audio, v2d, v3d) -> HANOutput``), in eval mode.
    ``extractor``: ``extractor(audio [N, S] float32, frames [N, F, H, W, 3] uint8) -> Features``
    with ``.audio [N, A]``, ``.v2d [N, F, D2]``, ``.v3d [N, D3]`` tensors.
    ``grid``: the snippet grid (windows are spaced ``grid.stride`` snippets apart).
    ``timer``: optional callable returning seconds, used only to time the
    extractor and HAN for the stats (the runtime passes ``time.perf_counter``).
    """

    def __init__(self, config: InferenceConfig, model, extractor, *, grid: SnippetGrid = SnippetGrid(),
                 timer: Optional[Callable[[], float]] = None):
        self.config = config
        self.grid = grid
        self.model = model
        self.extractor = extractor
        self.timer = timer
        self.reset()

    def reset(self) -> None:
        self._pending: list[Snippet] = []
        self._streams: dict[str, _StreamState] = {}
        self._expected: set[str] = set()   # streams declared with expect() and not yet flushed
        self.counters = {
            "snippets": 0, "batches": 0, "extractor_calls": 0, "han_calls": 0, "windows": 0, "predictions": 0,
            "extract_seconds": 0.0, "han_seconds": 0.0, "max_batch_seen": 0,
            "nonfinite_features": 0,  # snippets whose features held NaN/inf (replaced by zeros)
            "nonfinite_probs": 0,     # windows whose probabilities held NaN/inf (replaced by zeros)
        }

    def stats(self) -> dict:
        d = dict(self.counters)
        d["pending"] = len(self._pending)
        d["mean_batch"] = d["snippets"] / d["batches"] if d["batches"] else 0.0
        return d

    # ------------------------------------------------------------------ input
    def push(self, snippet: Snippet, *, now: float | None = None) -> list[SnippetProbs]:
        self._pending.append(snippet)
        if len(self._pending) >= self.config.max_batch or self._every_stream_pending():
            return self._run()
        return self.poll(snippet.wall_time if now is None else now)

    def expect(self, stream: str) -> None:
        """Declare a stream being parsed (the runtime does, per source). Once every declared
        stream has a snippet queued no other can join the batch before the next hop, so the
        batch runs at once instead of waiting ``max_wait`` (with one stream: every snippet).
        ``flush(stream)`` ends the declaration; undeclared streams only batch by size and time."""
        self._expected.add(stream)

    def _every_stream_pending(self) -> bool:
        return bool(self._expected) and {s.stream for s in self._pending}.issuperset(self._expected)

    def deadline(self) -> float | None:
        """Runtime-clock time at which the queued batch must run (None: nothing queued)."""
        if not self._pending:
            return None
        return self._pending[0].wall_time + self.config.max_wait

    def poll(self, now: float) -> list[SnippetProbs]:
        d = self.deadline()
        if d is not None and now >= d:
            return self._run()
        return []

    def flush(self, stream: str | None = None) -> list[SnippetProbs]:
        """Run the queued batch; then predict the remaining targets of ``stream`` (or of every
        stream) from the windows ending at its newest snippet, and forget the stream."""
        out = self._run() if self._pending else []
        names = list(self._streams) if stream is None else [stream]
        windows = []
        for name in names:
            st = self._streams.get(name)
            if st is None:
                continue
            while st.next_target <= st.newest:
                if st.next_target in st.feats:
                    windows.append(self._window(name, st, st.next_target))
                st.next_target += 1
        out += self._run_han(windows)
        for name in names:
            self._streams.pop(name, None)
        if stream is None:
            self._expected.clear()
        else:
            self._expected.discard(stream)
        return out

    # ------------------------------------------------------------- the work
    def _time(self) -> float:
        return self.timer() if self.timer else 0.0

    def _run(self) -> list[SnippetProbs]:
        batch, self._pending = self._pending, []
        if not batch:
            return []
        c = self.counters
        c["batches"] += 1
        c["snippets"] += len(batch)
        c["max_batch_seen"] = max(c["max_batch_seen"], len(batch))
        feats = self._extract(batch)
        windows = []
        for snip, f in zip(batch, feats):
            st = self._streams.get(snip.stream)
            if st is None:
                st = self._streams[snip.stream] = _StreamState()
                st.next_target = snip.index  # a stream may start anywhere on its grid
            if snip.index <= st.newest:
                raise ValueError(f"stream {snip.stream!r}: snippet {snip.index} after {st.newest} (out of order)")
            st.feats[snip.index] = SnippetFeatures(*f, snip.t0)
            st.newest = snip.index
            k_steps = self.config.lookahead * self.grid.stride
            while st.next_target <= st.newest - k_steps:
                if st.next_target in st.feats:
                    windows.append(self._window(snip.stream, st, st.next_target))
                st.next_target += 1
            self._prune(st)
        return self._run_han(windows)

    def _extract(self, batch: list[Snippet]) -> list[tuple]:
        """One extractor call per frame size in the batch -> per snippet (audio, v2d, v3d)."""
        import torch

        groups: "OrderedDict[tuple, list[int]]" = OrderedDict()
        for i, s in enumerate(batch):
            groups.setdefault(s.frames.shape, []).append(i)
        out: list = [None] * len(batch)
        t = self._time()
        with torch.inference_mode():
            for idx in groups.values():
                audio = np.stack([batch[i].audio for i in idx]).astype(np.float32, copy=False)
                frames = np.stack([batch[i].frames for i in idx])
                f = self.extractor(audio, frames)
                self.counters["extractor_calls"] += 1
                for j, i in enumerate(idx):
                    out[i] = _finite_or_zero((f.audio[j], f.v2d[j], f.v3d[j]), self.counters, "nonfinite_features")
        self.counters["extract_seconds"] += self._time() - t
        return out

    def _window(self, name: str, st: _StreamState, target: int) -> Window:
        cfg = self.config
        s = self.grid.stride
        end = target + min(cfg.lookahead, (st.newest - target) // s) * s
        members = [end - j * s for j in range(cfg.window) if end - j * s in st.feats][::-1]
        return Window(name, target, members.index(target), tuple(st.feats[i] for i in members), end)

    def _prune(self, st: _StreamState) -> None:
        keep_from = st.next_target - self.config.window * self.grid.stride
        while st.feats and next(iter(st.feats)) < keep_from:
            st.feats.popitem(last=False)

    def _run_han(self, windows: list[Window]) -> list[SnippetProbs]:
        if not windows:
            return []
        import torch

        cfg = self.config
        by_len: "OrderedDict[int, list[int]]" = OrderedDict()
        for i, w in enumerate(windows):
            by_len.setdefault(len(w.members), []).append(i)
        results: list = [None] * len(windows)
        device = next((q.device for q in getattr(self.model, "parameters", lambda: iter(()))()), cfg.device)
        t = self._time()
        with torch.inference_mode():
            for idx in by_len.values():
                audio = torch.stack([torch.stack([m.audio for m in windows[i].members]) for i in idx]).to(device)
                v2d = torch.stack([torch.cat([m.v2d for m in windows[i].members]) for i in idx]).to(device)
                v3d = torch.stack([torch.stack([m.v3d for m in windows[i].members]) for i in idx]).to(device)
                out = self.model(audio, v2d, v3d)
                self.counters["han_calls"] += 1
                fp, gp, ap, vp = (x.float().cpu().numpy() for x in
                                  (out.frame_prob, out.global_prob, out.a_prob, out.v_prob))
                if not all(np.isfinite(x).all() for x in (fp, gp, ap, vp)):
                    # a broken model (fp16 overflow, bad weights): no onset may come from NaN
                    self.counters["nonfinite_probs"] += len(idx)
                    fp, gp, ap, vp = (np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) for x in (fp, gp, ap, vp))
                for j, i in enumerate(idx):
                    results[i] = (fp[j], gp[j], ap[j], vp[j])
        self.counters["han_seconds"] += self._time() - t
        self.counters["windows"] += len(windows)
        probs = []
        for w, (fp, gp, ap, vp) in zip(windows, results):
            pos = w.position
            probs.append(SnippetProbs(
                stream=w.stream, index=w.target, t0=w.members[pos].t0, frame_prob=fp[pos], global_prob=gp, a_prob=ap,
                v_prob=vp, decided_at=w.members[-1].t0 + self.grid.snippet_seconds,
                info={"window": len(w.members), "position": pos},
            ))
        self.counters["predictions"] += len(probs)
        return probs


def _finite_or_zero(feats: tuple, counters: dict, key: str) -> tuple:
    """The features of one snippet with NaN/inf replaced by zeros (counted): a non-finite
    feature would spread through attention to every snippet of every window it is in."""
    import torch

    bad = [name for name, x in zip(("audio", "v2d", "v3d"), feats) if not bool(torch.isfinite(x).all())]
    if not bad:
        return feats
    counters[key] += 1
    if counters[key] == 1:   # once per runtime: the count is in the stats from then on
        warnings.warn(f"the extractor produced non-finite {'/'.join(bad)} features; they are replaced by zeros "
                      f"and counted ({key}). In fp16 on a GPU this is overflow: the extractor's precision fp32 "
                      "avoids it", RuntimeWarning, stacklevel=2)
    return tuple(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) for x in feats)
