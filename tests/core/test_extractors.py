"""Extractors: profiles, published weight files, batching, training, backends.

Weight files are generated here with the published names and the published
state-dict names and shapes (values are placeholders): nothing is downloaded.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from avparse.core.extractors import build_extractor
from avparse.core.extractors.extractor import ExtractorOptions
from avparse.core.extractors.vggish import VGGISH_FILE, VGGISH_PCA_FILE, PCAQuantize, VGGishTrunk
from avparse.core.profiles import LITE, PAPER, PAPER_PCA, PROFILES, FeatureProfile, get_profile
from avparse.core.weights import WeightsError, WeightsNotFoundError

RESNET_FILE = "resnet152-394f9c45.pth"    # torchvision ResNet152_Weights.IMAGENET1K_V1
R21D_FILE = "r2plus1d_18-91a641e6.pth"    # torchvision R2Plus1D_18_Weights.KINETICS400_V1


def _rand_snippets(n, profile, h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((n, profile.samples_per_snippet))).astype(np.float32)
    frames = rng.integers(0, 256, (n, profile.frames_per_snippet, h, w, 3), dtype=np.uint8)
    return audio, frames


# -- profiles ------------------------------------------------------------------
def test_profiles_define_their_contract_and_round_trip():
    assert set(PROFILES) >= {"paper", "lite"}
    assert (PAPER.audio_dim, PAPER.v2d_dim, PAPER.v3d_dim) == (128, 2048, 512)
    assert (PAPER.win_length, PAPER.hop_length, PAPER.example_frames, PAPER.mel_bands) == (400, 160, 96, 64)
    assert (PAPER.frame_size, PAPER.frame_resize, PAPER.clip_size, PAPER.clip_resize) == (224, 256, 112, 0)
    for p in PROFILES.values():
        d = p.to_dict()
        assert FeatureProfile.from_dict(d) == p
        assert FeatureProfile.from_dict(torch_round_trip(d)) == p
    with pytest.raises(ValueError, match="clip_mean"):
        PAPER.check_compatible(replace(PAPER, clip_mean=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="audio_postprocess"):
        PAPER.check_compatible(replace(PAPER_PCA, name="paper"))
    with pytest.raises(ValueError, match="unknown feature profile"):
        get_profile("nope")


def torch_round_trip(d):
    import io

    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# -- published weight files -------------------------------------------------------
def _placeholder_state(module: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if v.dtype.is_floating_point:
            out[k] = torch.randn(v.shape, generator=g) * 0.01
            if "running_var" in k:
                out[k] = out[k].abs() + 1.0
        else:
            out[k] = v.clone()
    return out


@pytest.fixture(scope="module")
def published_dir(tmp_path_factory):
    """The four paper files, with the published names, in a user directory."""
    import torchvision

    d = tmp_path_factory.mktemp("weights")
    with torch.device("meta"):
        r152, r21d = torchvision.models.resnet152(), torchvision.models.video.r2plus1d_18()
    for net, name, seed in ((r152, RESNET_FILE, 1), (r21d, R21D_FILE, 2)):
        torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in net.state_dict().items()}, d / name)
    vgg = _placeholder_state(VGGishTrunk(), 3)
    torch.save(vgg, d / VGGISH_FILE)
    g = torch.Generator().manual_seed(4)
    # as torchvggish's file: means as a flat [128] vector (reshaped to [128, 1] on load)
    pca = {"pca_eigen_vectors": torch.linalg.qr(torch.randn(128, 128, generator=g))[0], "pca_means": torch.randn(128, generator=g)}
    torch.save(pca, d / VGGISH_PCA_FILE)
    return d, vgg, pca


@pytest.mark.slow
def test_missing_weights_name_every_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(WeightsNotFoundError) as e:
        build_extractor("paper-pca")
    msg = str(e.value)
    for name in (VGGISH_FILE, VGGISH_PCA_FILE, RESNET_FILE, R21D_FILE):
        assert name in msg
    assert str(tmp_path / "th" / "hub" / "checkpoints") in msg and "avparse models --fetch" in msg
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "mine")):
        build_extractor("paper", weights=tmp_path / "mine")


@pytest.mark.slow
def test_paper_weights_load_from_a_named_dir_and_from_the_hub_cache(published_dir, tmp_path, monkeypatch):
    from avparse.core.weights import find_weight_file

    d, vgg, pca = published_dir
    # the hub-cache route: $TORCH_HOME/hub/checkpoints/<file name of the enum url>
    cache = tmp_path / "th" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    for f in d.iterdir():
        if f.name != VGGISH_PCA_FILE:
            (cache / f.name).symlink_to(f)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    url = "https://download.pytorch.org/models/" + RESNET_FILE
    assert find_weight_file(url) == cache / RESNET_FILE
    assert find_weight_file(url, d) == d / RESNET_FILE  # a named directory comes first
    # paper-pca: the PCA file only in the named directory, the rest from the cache
    only_pca = tmp_path / "mine"
    only_pca.mkdir()
    (only_pca / VGGISH_PCA_FILE).symlink_to(d / VGGISH_PCA_FILE)
    ext = build_extractor("paper-pca", weights=only_pca)
    torch.testing.assert_close(ext.audio_net.embeddings[4].weight, vgg["embeddings.4.weight"])
    torch.testing.assert_close(ext.audio_net.features[0].bias, vgg["features.0.bias"])
    torch.testing.assert_close(ext.audio_post.pca_means, pca["pca_means"].reshape(128, 1))
    assert float(ext.v2d_net.net.layer4[2].conv3.weight.detach().abs().sum()) == 0.0  # the zero file was loaded
    audio, frames = _rand_snippets(1, PAPER)
    with torch.inference_mode():
        out = ext(audio, frames)
    assert out.audio.shape == (1, 128) and out.v2d.shape == (1, 8, 2048) and out.v3d.shape == (1, 512)
    assert out.audio.dtype == out.v2d.dtype == out.v3d.dtype == torch.float32
    assert float(out.audio.min()) >= 0 and float(out.audio.max()) <= 255  # quantised


def test_wrong_or_corrupt_weight_files_are_clear_errors(tmp_path, published_dir):
    d, vgg, pca = published_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in d.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / VGGISH_FILE).unlink()
    wrong = dict(vgg)
    wrong["embeddings.4.weight"] = torch.zeros(64, 4096)
    torch.save(wrong, bad / VGGISH_FILE)
    with pytest.raises(WeightsError, match=r"vggish-10086976\.pth.*embeddings\.4\.weight"):
        build_extractor("paper", weights=bad)
    (bad / VGGISH_FILE).write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read weight file"):
        build_extractor("paper", weights=bad)


def test_pca_file_with_numpy_arrays_and_the_reference_formula(tmp_path):
    from avparse.core.extractors.vggish import load_pca
    from avparse.core.weights import load_state_dict

    rng = np.random.default_rng(5)
    vec, means = rng.standard_normal((128, 128)) * 0.2, rng.standard_normal(128)
    torch.save({"pca_eigen_vectors": vec, "pca_means": means}, tmp_path / VGGISH_PCA_FILE)
    post = PCAQuantize()
    load_pca(post, load_state_dict(tmp_path / VGGISH_PCA_FILE))
    emb = rng.random((4, 128)) * 3
    # torchvggish Postprocessor.postprocess, in numpy
    pca = (vec @ (emb.T - means.reshape(-1, 1))).T
    want = np.round((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))
    got = post(torch.from_numpy(emb).float()).numpy()
    assert np.abs(got - want).max() <= 1.0  # float32 vs float64 can flip a .5 rounding
    assert (got == want).mean() > 0.99 and got.min() >= 0 and got.max() <= 255


# -- batching, training, state ----------------------------------------------------
def _calibrate(ext, audio, frames):
    """Batch-norm running statistics from one batch (a randomly initialised
    MobileNetV3 in eval mode with unit running variances maps every input to
    almost the same vector; a trained one does not)."""
    bns = [m for m in ext.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = 1.0
    ext.train()
    with torch.no_grad():
        ext(audio, frames)
    ext.eval()
    for m in bns:
        m.momentum = 0.1
    return ext


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return _calibrate(build_extractor("lite", weights="random"), *_rand_snippets(4, LITE, seed=9))


@pytest.mark.slow
def test_one_call_extracts_many_snippets_like_one_at_a_time(lite):
    audio, frames = _rand_snippets(3, LITE)
    with torch.inference_mode():
        batch = lite(audio, frames)
        single = [lite(audio[i:i + 1], frames[i:i + 1]) for i in range(3)]
    assert batch.audio.shape == (3, 128) and batch.v2d.shape == (3, 8, 256) and batch.v3d.shape == (3, 128)
    for i, s in enumerate(single):
        torch.testing.assert_close(batch.audio[i:i + 1], s.audio, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batch.v2d[i:i + 1], s.v2d, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batch.v3d[i:i + 1], s.v3d, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batch.v2d[0], batch.v2d[1])  # different inputs, different features


def test_input_contract_is_checked(lite):
    audio, frames = _rand_snippets(2, LITE)
    with pytest.raises(ValueError, match="16000"):
        lite(audio[:, :8000], frames)
    with pytest.raises(ValueError, match=r"\[N, 8, H, W, 3\]"):
        lite(audio, frames[:, :4])
    with pytest.raises(ValueError, match="uint8"):
        lite(audio, frames.astype(np.float32))


@pytest.mark.slow
def test_lite_trains_and_its_state_round_trips(tmp_path):
    torch.manual_seed(1)
    ext = build_extractor("lite", weights="random")
    audio, frames = _rand_snippets(2, LITE)
    ext.train()
    out = ext(audio, frames)
    (out.audio.sum() + out.v2d.sum() + out.v3d.sum()).backward()
    for name in ("audio_net", "v2d_net", "v3d_net"):
        grads = [p.grad for p in getattr(ext, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    ext.eval()
    state = {k: v.clone() for k, v in ext.state_dict().items()}
    again = build_extractor("lite", weights=state)
    with torch.inference_mode():
        a, b = ext(audio, frames), again(audio, frames)
    torch.testing.assert_close(a.v3d, b.v3d)
    torch.testing.assert_close(a.audio, b.audio)
    # a checkpoint-like file bundling the extractor state next to another state dict
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extractor_state": state}, tmp_path / "ck.pt")
    from_file = build_extractor("lite", weights=tmp_path / "ck.pt")
    torch.testing.assert_close(from_file.v2d_net.proj.weight, ext.v2d_net.proj.weight)
    with pytest.raises(WeightsError, match="lite"):
        build_extractor("lite", weights={"nope": torch.zeros(1)})


# -- backends ---------------------------------------------------------------------
def test_tensorrt_without_gpu_falls_back_to_compile_with_one_warning():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ext = build_extractor("lite", weights="random", backend="tensorrt")
    msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    assert len(msgs) == 1 and "falling back to torch.compile" in msgs[0]
    assert ext.backend == "compile"
    with pytest.raises(Exception, match="unknown backend"):
        build_extractor("lite", weights="random", backend="onnx")


@pytest.mark.slow
def test_cpu_bf16_is_close_to_fp32(lite):
    """bf16 autocast (opt-in, approximate): a sanity bound, not an accuracy
    claim. Relative L2 error of every feature below 1e-1; measured here ~4.5e-2
    for lite's 2D features (random MobileNetV3, depthwise convs and squeeze-
    excitation are sensitive) and ~4.5e-3 for ResNet-152 on 8 frames."""
    bf = build_extractor("lite", weights=lite.state_dict(), options=ExtractorOptions(precision="bf16"))
    audio, frames = _rand_snippets(2, LITE, seed=3)
    with torch.inference_mode():
        a, b = lite(audio, frames), bf(audio, frames)
    for x, y in zip(a.numpy(), b.numpy()):
        assert y.dtype == np.float32
        assert 0 < np.linalg.norm(x - y) / np.linalg.norm(x) < 1e-1


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        build_extractor("lite", weights="random", options=ExtractorOptions(precision="fp16"))


@pytest.mark.slow
def test_compile_matches_eager_on_cpu(lite):
    """torch.compile (Inductor, frozen weights) vs eager on the lite profile:
    max |diff| <= 1e-4 absolute + 1e-4 relative. Marked slow: Inductor's C++
    compilation of the three networks takes tens of seconds on 2 cores."""
    audio, frames = _rand_snippets(2, LITE)
    comp = build_extractor("lite", weights=lite.state_dict(), backend="compile")
    assert comp.backend == "compile"
    with torch.inference_mode():
        a, b = lite(audio, frames), comp(audio, frames)
    for x, y in zip(a.numpy(), b.numpy()):
        np.testing.assert_allclose(y, x, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_gpu_fp16_and_tensorrt_match_fp32_eager(tmp_path):
    """On a GPU: fp16 eager and tensorrt (fp16, engine cached and reused) vs
    fp32 eager on the lite profile, within 2e-2 relative to the feature scale."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    ref = build_extractor("lite", weights="random", device="cuda", options=ExtractorOptions(precision="fp32"))
    audio, frames = _rand_snippets(4, LITE)
    with torch.inference_mode():
        want = ref(audio, frames).numpy()
    opts = ExtractorOptions(backend="tensorrt", engine_dir=str(tmp_path))
    for backend_opts in (ExtractorOptions(), opts, opts):  # the second tensorrt build reuses the engines
        ext = build_extractor("lite", weights=ref.state_dict(), device="cuda", options=backend_opts)
        with torch.inference_mode():
            got = ext(audio, frames).numpy()
        for x, y in zip(want, got):
            assert np.abs(x - y).max() <= 2e-2 * max(1.0, np.abs(x).max())
    assert len(list(tmp_path.glob("*.ep"))) == 3
