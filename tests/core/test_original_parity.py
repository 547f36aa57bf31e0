"""Parity with the authors' code: a loaded original MMIL_Net gives the original's outputs.

How the reference (tests/core/data/original_reference.npz) was produced, once,
outside the repo (neither the original code nor the script is committed):

1. The original model: YapengTian/AVVP-ECCV20 at commit
   fde56118f2c2e7c19188dfefa2569a37b70054fe, file nets/net_audiovisual.py, class
   MMIL_Net, unmodified (it imports only torch, numpy, copy, math; no shims),
   run with torch 2.14.1 on CPU.
2. Its state dict (all 74 tensors, the unused audio_encoder, visual_encoder,
   cmt_encoder and encoder norms included) was filled by :func:`fill_state_dict`
   below, the names and shapes being ``MMIL_Net().state_dict()``'s; they are
   stored in the npz (``names``, ``shapes``).
3. Inputs from :func:`make_inputs` (B=2, T=10 and T=3); the model was put in
   eval mode and run under torch.no_grad(); its four outputs (global_prob,
   a_prob, v_prob, frame_prob) were stored as ``t{T}_{name}``.
   A few input values are stored too (``t{T}_probe``) to catch a drift of the
   generator.

The script imported fill_state_dict and make_inputs from this file, so the test
regenerates exactly the same weights and inputs. Here the weights are saved as a
raw state dict (as main_avvp.py does), loaded with ``load_model`` and run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from avparse.core.checkpoint import load_model
from avparse.core.labels import LLP_CLASSES
from avparse.core.profiles import PAPER

DATA = Path(__file__).parent / "data" / "original_reference.npz"
OUTPUTS = ("global_prob", "a_prob", "v_prob", "frame_prob")
LENGTHS = (10, 3)


def fill_state_dict(names_shapes) -> dict:
    """Deterministic weights: in sorted name order, each tensor is drawn from one
    numpy RandomState(0) as uniform(-1, 1, shape) (float64), then LayerNorm
    weights (names ending ``norm<k>.weight``) become 1 + 0.5 u and every other
    tensor u / sqrt(fan_in) (fan_in = shape[1] for matrices, shape[0] for vectors);
    cast to float32."""
    rs = np.random.RandomState(0)
    out = {}
    for name, shape in sorted(names_shapes):
        u = rs.uniform(-1.0, 1.0, size=tuple(shape))
        if re.search(r"norm\d*\.weight$", name):
            val = 1.0 + 0.5 * u
        else:
            fan_in = shape[1] if len(shape) == 2 else shape[0]
            val = u / np.sqrt(fan_in)
        out[name] = torch.from_numpy(val.astype(np.float32))
    return out


def make_inputs(t: int, b: int = 2):
    """Inputs for length t: RandomState(1000 + t); audio standard normal, v2d and v3d
    absolute standard normal (CNN features after ReLU are >= 0); float32."""
    rs = np.random.RandomState(1000 + t)
    audio = rs.standard_normal((b, t, 128)).astype(np.float32)
    v2d = np.abs(rs.standard_normal((b, 8 * t, 2048))).astype(np.float32)
    v3d = np.abs(rs.standard_normal((b, t, 512))).astype(np.float32)
    return torch.from_numpy(audio), torch.from_numpy(v2d), torch.from_numpy(v3d)


def probe(inputs) -> np.ndarray:
    return np.concatenate([x.reshape(-1)[:4].numpy() for x in inputs] + [np.array([float(x.sum()) for x in inputs],
                                                                                 dtype=np.float32)])


def names_shapes(ref) -> list:
    return [(str(n), tuple(int(s) for s in shp[:nd])) for n, shp, nd in zip(ref["names"], ref["shapes"], ref["ndims"])]


@pytest.fixture(scope="module")
def reference():
    if not DATA.is_file():
        pytest.fail(f"{DATA} is missing (see this file's docstring for how it was made)")
    with np.load(DATA, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def original_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("orig") / "MMIL_Net.pt"
    torch.save(fill_state_dict(names_shapes(reference)), path)  # a raw state dict, like main_avvp.py
    return path


def test_reference_is_the_full_original_state_dict(reference):
    ns = dict(names_shapes(reference))
    assert len(ns) == 74
    assert ns["fc_v.weight"] == (512, 2048)
    assert ns["hat_encoder.layers.0.cm_attn.in_proj_weight"] == (1536, 512)
    assert "audio_encoder.layers.0.self_attn.in_proj_weight" in ns  # unused modules are present


def test_loads_original_as_paper_config(original_file):
    loaded = load_model(original_file)
    cfg = loaded.config
    assert (cfg.layer_mode, cfg.temporal, cfg.pooling) == ("original", "han", "attentive")
    assert (cfg.d_model, cfg.nhead, cfg.num_layers, cfg.dim_feedforward, cfg.num_classes) == (512, 1, 1, 512, 25)
    assert loaded.classes == LLP_CLASSES
    assert loaded.profile == PAPER
    assert loaded.meta["source"] == "original"
    assert len(loaded.meta["ignored"]) == 74 - 30  # 14 fc tensors + 16 in the HAN layer are used
    assert not loaded.model.training


@pytest.mark.parametrize("t", LENGTHS)
def test_same_outputs_as_original(reference, original_file, t):
    inputs = make_inputs(t)
    np.testing.assert_allclose(probe(inputs), reference[f"t{t}_probe"], rtol=1e-6, atol=1e-4)
    model = load_model(original_file).model
    with torch.no_grad():
        out = model(*inputs)
    for name in OUTPUTS:
        got = getattr(out, name).numpy()
        want = reference[f"t{t}_{name}"]
        assert got.shape == want.shape, name
        err = float(np.abs(got - want).max())
        assert err <= 1e-5, f"T={t} {name}: max abs diff {err:.3g}"
    # the reference is not degenerate: probabilities spread, so a wrong layer would show
    assert reference[f"t{t}_frame_prob"].std() > 0.05
