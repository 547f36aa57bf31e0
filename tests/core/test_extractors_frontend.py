"""VGGish log-mel front end against the published reference, and image preprocessing.

``data/vggish_frontend_ref.npz`` was produced by running the reference front end
(harritaylor/torchvggish ``mel_features.py`` with ``vggish_params.py``, numpy,
float64 — the same code as tensorflow/models research/audioset/vggish) on
``make_signal()`` below: ``log_mel_spectrogram(...)`` framed into 96-frame
examples (``examples``, [2, 96, 64]) and ``spectrogram_to_mel_matrix`` for a
512-point FFT (``mel_matrix``, [257, 64]), both stored as float32. The
reference code itself is not in this repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avparse.core.extractors.frontend import LogMel, frames_to_clips, frames_to_images, mel_matrix
from avparse.core.profiles import LITE, PAPER

REF = Path(__file__).parent / "data" / "vggish_frontend_ref.npz"


def make_signal() -> np.ndarray:
    """2 s at 16 kHz: a 440 Hz tone, a rising chirp, seeded noise, 0.2 s of silence."""
    sr = 16000
    t = np.arange(2 * sr) / sr
    x = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    x += 0.05 * np.random.default_rng(0).standard_normal(t.size)
    x[int(0.9 * sr):int(1.1 * sr)] = 0.0
    return x.astype(np.float32)


def test_mel_matrix_matches_reference():
    ref = np.load(REF)["mel_matrix"]
    ours = mel_matrix(num_bins=257, sample_rate=16000, mel_bands=64, fmin=125.0, fmax=7500.0)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_log_mel_examples_match_reference():
    ref = np.load(REF)["examples"]
    ours = LogMel(PAPER)(torch.from_numpy(make_signal())[None])[0].numpy()
    assert ours.shape == ref.shape == (2, 96, 64)
    # float32 here vs float64 in the reference: measured max |diff| ~1e-5
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    # the silent stretch reaches the log floor log(0.01)
    assert ours.min() == pytest.approx(np.log(0.01), abs=1e-3)


def test_one_second_snippet_is_one_example_and_batches_agree():
    x = torch.from_numpy(make_signal())
    lm = LogMel(PAPER)
    one = lm(x[None, :16000])
    assert one.shape == (1, 1, 96, 64)
    both = lm(torch.stack([x[:16000], x[16000:]]))
    torch.testing.assert_close(both[:1], one)
    torch.testing.assert_close(both[1:], lm(x[None, 16000:]))
    # the reference frames a whole file: its 2nd example starts at 96 * 160 samples
    np.testing.assert_allclose(lm(x[None, 15360:31360])[0, 0].numpy(), np.load(REF)["examples"][1], atol=1e-4)
    with pytest.raises(ValueError, match="too short"):
        lm(x[None, :15000])


def test_image_preprocessing_shapes_and_normalisation():
    rng = np.random.default_rng(1)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 8, 240, 320, 3), dtype=np.uint8))
    img = frames_to_images(frames, PAPER)
    clip = frames_to_clips(frames, PAPER)
    assert img.shape == (16, 3, 224, 224) and clip.shape == (2, 3, 8, 112, 112)
    # a uniform grey frame maps to (v/255 - mean) / std exactly, whatever the resize
    grey = torch.full((1, 8, 90, 160, 3), 128, dtype=torch.uint8)
    g = frames_to_images(grey, PAPER)
    want = (128 / 255 - torch.tensor(PAPER.frame_mean)) / torch.tensor(PAPER.frame_std)
    torch.testing.assert_close(g[0, :, 0, 0], want.float())
    c = frames_to_clips(grey, LITE)
    assert c.shape == (1, 3, 8, LITE.clip_size, LITE.clip_size)


def test_resize_keeps_aspect_then_crops_centre():
    # left half black, right half white, 320x240: after shorter-side 256 and a
    # 224 centre crop the left columns stay black and the right ones white.
    f = np.zeros((1, 8, 240, 320, 3), dtype=np.uint8)
    f[..., 160:, :] = 255
    img = frames_to_images(torch.from_numpy(f), PAPER)
    lo = (0 - PAPER.frame_mean[0]) / PAPER.frame_std[0]
    hi = (1 - PAPER.frame_mean[0]) / PAPER.frame_std[0]
    assert img[0, 0, 100, 0].item() == pytest.approx(lo, abs=1e-5)
    assert img[0, 0, 100, -1].item() == pytest.approx(hi, abs=1e-5)
    # squash (the R(2+1)D clips): the edge stays at the middle column
    clip = frames_to_clips(torch.from_numpy(f), PAPER)
    assert clip[0, 0, 0, 50, 50].item() < 0 < clip[0, 0, 0, 50, 60].item()
