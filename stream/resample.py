"""A streaming sample-rate converter in numpy: polyphase windowed sinc.

The ratio ``out_rate / in_rate`` is reduced to ``L / M``. Conceptually the
input is upsampled by L (zeros between samples), low-pass filtered by one
Kaiser-windowed sinc at ``rolloff * min(in_rate, out_rate) / 2`` and
decimated by M; the polyphase form computes only the outputs that are kept,
each from ``taps`` input samples with one of the L phases of the filter.

It is stateful: blocks of any size go in, and the output is exactly the same
as converting the whole signal at once (no seams between blocks). The
filter's delay is compensated, so output sample ``k`` is the signal at time
``k / out_rate`` of the input's time line (input sample ``i`` at ``i /
in_rate``); the look-ahead that this costs is ``half_taps`` input samples
(under 1 ms at the defaults), returned by ``flush()`` at the end.

Numpy only (no scipy). The same object can be ``reset()`` for a new signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, gcd

import numpy as np


@dataclass(frozen=True)
class ResamplerConfig:
    zero_crossings: int = 16   # sinc lobes kept on each side (at the lower of the two rates): length vs. sharpness
    rolloff: float = 0.94      # cut-off as a fraction of the lower Nyquist frequency (the transition band lies above)
    kaiser_beta: float = 8.6   # Kaiser window shape (8.6: about 90 dB stop-band attenuation)


def design_filter(in_rate: int, out_rate: int, cfg: ResamplerConfig = ResamplerConfig()):
    """Return (L, M, phases [L, taps] float64, center) for the polyphase filter."""
    g = gcd(int(in_rate), int(out_rate))
    L, M = int(out_rate) // g, int(in_rate) // g
    # cut-off in cycles per upsampled sample (upsampled rate = L * in_rate)
    fc = cfg.rolloff * 0.5 * min(in_rate, out_rate) / (L * in_rate)
    period = 1.0 / (2.0 * fc)                      # upsampled samples per sinc zero crossing
    taps = int(ceil(2 * cfg.zero_crossings * period / L))
    taps += taps % 2                               # even: the center falls on a phase boundary
    n = taps * L                                   # filter length; center at n // 2
    center = n // 2
    j = np.arange(n + 1, dtype=np.float64) - center
    h = 2.0 * fc * np.sinc(2.0 * fc * j) * np.kaiser(n + 1, cfg.kaiser_beta)
    h = h[:n]                                      # h[n] mirrors h[0] (~0): drop it
    h *= L / h.sum()                               # unit gain at DC after upsampling by L
    # phase p holds h[p], h[p + L], h[p + 2L], ...: phases[p, t] = h[p + t L]
    phases = h.reshape(taps, L).T.copy()
    return L, M, phases, center


class StreamingResampler:
    """``process(block) -> float32 [k]``, ``flush() -> float32 [rest]``, ``reset()``.

    Mono float input. ``in_count``/``out_count`` say how many samples went in
    and came out so far; the output time line starts at 0 with the input's.
    """

    def __init__(self, in_rate: int, out_rate: int, config: ResamplerConfig = ResamplerConfig()):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate, self.out_rate, self.config = int(in_rate), int(out_rate), config
        self.identity = self.in_rate == self.out_rate
        if not self.identity:
            self.L, self.M, self._phases, self._center = design_filter(self.in_rate, self.out_rate, config)
            self.taps = self._phases.shape[1]
            # reversed along taps so that a forward slice of the input lines up with it
            self._rev = np.ascontiguousarray(self._phases[:, ::-1])
        self.reset()

    @property
    def half_taps(self) -> int:
        return 0 if self.identity else self.taps // 2

    def reset(self) -> None:
        self.in_count = 0       # input samples received
        self.out_count = 0      # output samples produced
        self._flushed = False
        if not self.identity:
            # history: input samples with global indices [in_count - len(hist), in_count);
            # starts with ``taps`` zeros that stand for the silence before the signal
            self._hist = np.zeros(self.taps, dtype=np.float64)

    def _available(self, n_in: int) -> int:
        """Outputs k whose newest input index floor((kM + c) / L) is < n_in."""
        # kM + c <= n_in * L - 1  ->  k <= (n_in L - 1 - c) / M
        lim = n_in * self.L - 1 - self._center
        return 0 if lim < 0 else lim // self.M + 1

    def process(self, block) -> np.ndarray:
        x = np.asarray(block, dtype=np.float64).reshape(-1)
        if self._flushed:
            raise RuntimeError("process() after flush(): call reset() first")
        if self.identity:
            self.in_count += len(x)
            self.out_count += len(x)
            return x.astype(np.float32)
        buf = np.concatenate([self._hist, x])
        g0 = self.in_count - len(self._hist)        # global index of buf[0]
        self.in_count += len(x)
        k_end = self._available(self.in_count)
        y = self._compute(buf, g0, self.out_count, k_end)
        self.out_count = max(self.out_count, k_end)
        # keep what the next outputs can still need: from their oldest input on
        oldest = (self.out_count * self.M + self._center) // self.L - (self.taps - 1)
        keep_from = max(0, min(len(buf), oldest - g0))
        self._hist = buf[keep_from:]
        return y

    def _compute(self, buf: np.ndarray, g0: int, k0: int, k1: int) -> np.ndarray:
        if k1 <= k0:
            return np.zeros(0, dtype=np.float32)
        k = np.arange(k0, k1, dtype=np.int64)
        n = k * self.M + self._center
        i0 = n // self.L                           # newest input index used by output k
        p = n % self.L                             # filter phase of output k
        start = i0 - (self.taps - 1) - g0          # buf index of the oldest of the taps inputs
        if start.min() < 0:  # only before enough history exists (cannot happen: history starts with zeros)
            raise AssertionError("resampler history underrun")
        idx = start[:, None] + np.arange(self.taps)[None, :]
        y = np.einsum("kt,kt->k", buf[idx], self._rev[p])
        return y.astype(np.float32)

    def flush(self) -> np.ndarray:
        """The remaining outputs: up to ``ceil(in_count * out_rate / in_rate)`` in all."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        total = -(-self.in_count * self.L // self.M)
        if total <= self.out_count:
            return np.zeros(0, dtype=np.float32)
        pad = self.taps + 1
        buf = np.concatenate([self._hist, np.zeros(pad)])
        g0 = self.in_count - len(self._hist)
        y = self._compute(buf, g0, self.out_count, total)
        self.out_count = total
        return y


def resample(x, in_rate: int, out_rate: int, config: ResamplerConfig = ResamplerConfig()) -> np.ndarray:
    """Convert a whole mono signal (same result as streaming it block by block)."""
    r = StreamingResampler(in_rate, out_rate, config)
    return np.concatenate([r.process(x), r.flush()])
