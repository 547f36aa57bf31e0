"""The streaming polyphase resampler: right frequency, right time line, no seams."""

from __future__ import annotations

import numpy as np
import pytest

from avparse.stream.resample import StreamingResampler, resample


def stream_through(r: StreamingResampler, x: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 2000))
        out.append(r.process(x[i:i + n]))
        i += n
    out.append(r.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("in_rate,out_rate,freq", [(44100, 16000, 1000.0), (48000, 16000, 3000.0),
                                                    (8000, 16000, 440.0), (22050, 16000, 250.0)])
def test_sine_in_sine_out_on_the_right_time_line(in_rate, out_rate, freq):
    x = np.sin(2 * np.pi * freq * np.arange(in_rate) / in_rate)
    y = stream_through(StreamingResampler(in_rate, out_rate), x)
    assert len(y) == out_rate                       # ceil(n * out / in)
    ref = np.sin(2 * np.pi * freq * np.arange(len(y)) / out_rate)
    inner = slice(out_rate // 20, -out_rate // 20)  # away from the start/end transients
    assert np.abs(y[inner] - ref[inner]).max() < 1e-3   # same phase: delay compensated, no seams


def test_blocks_give_exactly_the_one_shot_result():
    x = np.random.default_rng(3).standard_normal(30000)
    one = resample(x, 44100, 16000)
    for seed in range(3):
        np.testing.assert_allclose(stream_through(StreamingResampler(44100, 16000), x, seed), one, atol=1e-6)


def test_no_discontinuity_across_blocks():
    """Block sizes that do not divide the ratio: the output's second difference
    stays that of a smooth sine everywhere (a seam would spike it)."""
    fi, fo, f = 44100, 16000, 500.0
    x = np.sin(2 * np.pi * f * np.arange(fi) / fi)
    r = StreamingResampler(fi, fo)
    y = np.concatenate([r.process(x[i:i + 441]) for i in range(0, fi, 441)] + [r.flush()])
    d2 = np.abs(np.diff(y[800:-800], 2))
    bound = (2 * np.pi * f / fo) ** 2 * 1.01       # max |second difference| of a unit sine
    assert d2.max() < bound


def test_alias_is_suppressed():
    """A 10 kHz tone cannot exist at 16 kHz: it must be removed, not folded to 6 kHz."""
    fi = 44100
    x = np.sin(2 * np.pi * 10000 * np.arange(fi) / fi)
    y = resample(x, fi, 16000)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) < 1e-3


def test_identity_and_reset():
    r = StreamingResampler(16000, 16000)
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(r.process(x), x)
    r2 = StreamingResampler(48000, 16000)
    a = r2.process(np.ones(4800))
    r2.reset()
    b = r2.process(np.ones(4800))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        StreamingResampler(0, 16000)
