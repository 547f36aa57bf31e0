"""An endless generated scene for the demo: scenes of one segment's length, one after another."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

SEGMENT_SECONDS = 60      # an endless generated scene is made of scenes this long, one after another


class ChainedScene:
    """Generated scenes of ``segment`` seconds one after another: a Scene (core.scene) that
    goes on for ``segments`` segments (a day by default, i.e. until the user quits).
    Segment k is ``make_scene((seed, k))``; a few are kept, the rest rebuilt on demand."""

    def __init__(self, seed: int, *, segment: int = SEGMENT_SECONDS, segments: int = 24 * 3600 // SEGMENT_SECONDS,
                 config=None):
        from avparse.train.synth import SYNTH_CLASSES, SynthConfig

        self.seed = seed
        self.config = replace(config or SynthConfig(), duration=segment)
        self.segment_seconds = segment
        self.segments = segments
        self.sample_rate = self.config.sample_rate
        self.fps = self.config.fps
        self.width, self.height = self.config.width, self.config.height
        self.duration = float(segment * segments)
        self.classes = SYNTH_CLASSES
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def segment(self, k: int):
        from avparse.train.synth import make_scene

        with self._lock:
            sc = self._cache.get(k)
            if sc is None:
                sc = make_scene((self.seed, k), self.config, name=f"demo_{self.seed}_{k}")
                self._cache[k] = sc
                while len(self._cache) > 3:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(k)
            return sc

    def render_audio(self, start: int, count: int):
        import numpy as np

        out = np.zeros(count, np.float32)
        n_seg = self.config.n_samples
        pos, end = max(0, start), min(start + count, int(self.duration * self.sample_rate))
        while pos < end:
            k, off = divmod(pos, n_seg)
            n = min(n_seg - off, end - pos)
            out[pos - start:pos - start + n] = self.segment(k).render_audio(off, n)
            pos += n
        return out

    def render_frame(self, index: int):
        k, i = divmod(index, self.config.n_frames)
        return self.segment(k).render_frame(i)

    def truth_between(self, t0: float, t1: float) -> list:
        """The true events of the segments that overlap [t0, t1], on the chained time line."""
        from avparse.core.scene import TrueEvent

        out = []
        seg = self.segment_seconds
        for k in range(max(0, int(t0 // seg)), min(self.segments, int(t1 // seg) + 1)):
            for e in self.segment(k).ground_truth():
                out.append(TrueEvent(e.label, e.modality, e.onset + k * seg, e.offset + k * seg))
        return out

    def ground_truth(self) -> list:
        return self.truth_between(0.0, float(self.segment_seconds))  # the first segment (the rest is made on demand)
