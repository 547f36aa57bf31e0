"""`--model llp` / `avparse.load("llp")` end to end on GENERATED STAND-IN FILES, not the real weights.

The real files (the authors' MMIL_Net.pt, VGGish, ResNet-152, R(2+1)D-18) cannot be downloaded on
this machine. Here every file of the llp entry is replaced by a generated one with the registry's
layout (the same cache file names, the same state-dict names and shapes, served by a loopback HTTP
server at the real hosts' paths); the stand-in entry carries the stand-ins' checksums. What this
shows: first use fetches, verifies and caches every file, the authors' state-dict format loads
with the paper's extractors, the commands and the API parse a real clip with the 25 LLP classes,
and a second run works offline from the cache. The events themselves mean nothing (random weights).
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from urllib.parse import urlparse

import pytest
import torch

pytestmark = pytest.mark.slow


def _original_state(seed: int) -> dict:
    """An MMIL_Net state dict as main_avvp.py saves it: HAN parameters under the original names plus
    the modules its forward never calls, random values."""
    from avparse.core.han import HAN, HANConfig

    g = torch.Generator().manual_seed(seed)
    cfg = HANConfig()
    with torch.device("meta"):
        shapes = HAN(cfg).state_dict()
    sd = {k.replace("temporal.", "hat_encoder.", 1): torch.randn(v.shape, generator=g) * 0.05
          for k, v in shapes.items()}
    d, f = cfg.d_model, cfg.dim_feedforward
    for enc in ("audio_encoder", "visual_encoder", "cmt_encoder"):
        sd[f"{enc}.layers.0.self_attn.in_proj_weight"] = torch.randn(3 * d, d, generator=g) * 0.05
        sd[f"{enc}.layers.0.linear1.weight"] = torch.randn(f, d, generator=g) * 0.05
    return sd


@pytest.fixture(scope="module")
def standin(tmp_path_factory, module_weight_host):
    """The llp entry with every file replaced by a generated stand-in, served on loopback."""
    import torchvision

    from avparse.core import hub, registry
    from avparse.core.extractors.vggish import VGGishTrunk

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("standin-files")
    states = {
        registry.MMIL_NET.name: _original_state(1),
        registry.VGGISH.name: VGGishTrunk().state_dict(),
        registry.VGGISH_PCA.name: {"pca_eigen_vectors": torch.linalg.qr(torch.randn(128, 128))[0],
                                   "pca_means": torch.randn(128)},
        registry.RESNET152.name: torchvision.models.resnet152(weights=None).state_dict(),
        registry.R2PLUS1D.name: torchvision.models.video.r2plus1d_18(weights=None).state_dict(),
    }
    host = module_weight_host
    files = {}
    for real in (registry.MMIL_NET, registry.VGGISH, registry.VGGISH_PCA, registry.RESNET152, registry.R2PLUS1D):
        p = d / real.name
        torch.save(states[real.name], p)
        u = urlparse(real.url)
        path = f"/{u.netloc}{u.path}"  # laid out like the real hosts
        host.files[path] = p.read_bytes()
        check = dict(git_blob=hub.digest(p, "git-blob")) if real.git_blob else dict(sha256=hub.digest(p, "sha256"))
        files[real.name] = hub.RemoteFile(name=real.name, url=host.url(path), what="STAND-IN " + real.what, **check)
    fs = lambda *fl: tuple(files[f.name] for f in fl)  # noqa: E731
    entry = dataclasses.replace(registry.LLP, checkpoint=files[registry.MMIL_NET.name])
    mp = pytest.MonkeyPatch()
    mp.setitem(registry.MODELS, "llp", entry)
    mp.setitem(registry.PROFILE_FILES, "paper", fs(registry.VGGISH, registry.RESNET152, registry.R2PLUS1D))
    mp.setitem(registry.PROFILE_FILES, "paper-pca", fs(registry.VGGISH, registry.VGGISH_PCA, registry.RESNET152,
                                                       registry.R2PLUS1D))
    home = tmp_path_factory.mktemp("torch-home")
    mp.setenv("TORCH_HOME", str(home))
    mp.delenv("AVPARSE_MIRROR", raising=False)
    yield host, home / "hub" / "checkpoints", files
    mp.undo()


def test_first_use_fetches_everything_and_parses_with_the_llp_classes(standin, llp_clip, monkeypatch):
    import avparse
    from avparse.core.labels import LLP_CLASSES

    host, cache, files = standin
    monkeypatch.delenv("AVPARSE_OFFLINE", raising=False)
    log = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no bundled-model notice for llp
        parser = avparse.load("llp", precision="bf16", progress=log)
        assert parser.classes == LLP_CLASSES and parser.profile.name == "paper"
        assert parser.loaded.meta["source"] == "original"  # the authors' state-dict format
        segs = parser.parse(llp_clip)
    fetched = sorted(p.rsplit("/", 1)[1] for p, _ in host.log)
    assert fetched == sorted(["MMIL_Net.pt", "vggish-10086976.pth", "resnet152-394f9c45.pth",
                              "r2plus1d_18-91a641e6.pth"])  # each once, from the real hosts' paths
    for name in ("AVVP-ECCV20-MMIL_Net-ef441b42.pt", "vggish-10086976.pth", "resnet152-394f9c45.pth",
                 "r2plus1d_18-91a641e6.pth"):
        assert (cache / name).is_file()
    assert log.getvalue().count("verified") == 4
    assert all(s.label in LLP_CLASSES and 0 <= s.onset < s.offset <= 10 for s in segs)


def test_the_commands_run_llp_offline_from_the_cache(standin, llp_clip, capsys, monkeypatch):
    from avparse.core.events import Event
    from avparse.core.labels import LLP_CLASSES
    from avparse.tools import models, parse

    host, cache, files = standin
    with monkeypatch.context() as m:  # (already cached when the test above ran first)
        m.delenv("AVPARSE_OFFLINE", raising=False)
        assert models.main(["llp", "--fetch"]) == 0
    capsys.readouterr()
    before = len(host.log)
    # (tests run with AVPARSE_OFFLINE=1: nothing may be fetched now)
    rc = parse.main([str(llp_clip), "--model", "llp", "--offline", "--precision", "bf16", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    events = [Event.from_dict(json.loads(x)) for x in out.splitlines()]
    assert events and all(e.label in LLP_CLASSES for e in events)
    assert "note:" not in err  # the honest notice is the bundled model's only
    assert len(host.log) == before
    assert models.main(["llp"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("cached, verified") == 4 and "missing" not in listing


def test_paper_pca_is_one_flag_and_fetches_only_the_pca_file(standin, monkeypatch):
    from avparse.core.profiles import PAPER_PCA
    from avparse.tools.common import load_model_parts

    host, cache, files = standin
    monkeypatch.delenv("AVPARSE_OFFLINE", raising=False)
    before = len(host.log)
    res, loaded, ext = load_model_parts({"model": "llp", "profile": "paper-pca", "precision": "bf16"})
    assert loaded.profile == PAPER_PCA and ext.audio_post is not None
    assert [p.rsplit("/", 1)[1] for p, _ in host.log[before:]] == ["vggish_pca_params-970ea276.pth"]


def test_run_and_demo_take_model_llp(standin, llp_clip, tmp_path, capsys, monkeypatch):
    """`avparse run ... --model llp` and `avparse demo ... --model llp` (the webcam path's commands, here
    on the real clip: the camera and microphone plumbing has its own tests) from the cache."""
    from avparse.tools import demo, models, run

    host, cache, files = standin
    with monkeypatch.context() as m:
        m.delenv("AVPARSE_OFFLINE", raising=False)
        assert models.main(["llp", "--fetch"]) == 0
    capsys.readouterr()
    log = tmp_path / "run.jsonl"
    assert run.main(["--file", str(llp_clip), "--fast", "--model", "llp", "--precision", "bf16", "--offline",
                     "--pub", "ipc://" + str(tmp_path / "pub"), "--snapshot", "none", "--log", str(log)]) == 0
    err = capsys.readouterr().err
    assert "note:" not in err and "events published" in err and log.read_text().count("\n") >= 1
    out = tmp_path / "demo.mp4"
    assert demo.main(["--file", str(llp_clip), "--model", "llp", "--precision", "bf16", "--offline", "--headless",
                      "--out", str(out), "--no-publish", "--quiet", "--duration", "4"]) == 0
    err = capsys.readouterr().err
    assert out.is_file() and "note:" not in err and "AVVP-ECCV20" not in err  # nothing fetched again


def test_parse_fetches_through_a_mirror_into_an_empty_cache(standin, llp_clip, tmp_path, capsys, monkeypatch):
    """`avparse parse --model llp --mirror URL` on a machine whose cache is empty: every file comes from
    the mirror (a flat folder of the files by name), none from the original hosts' paths."""
    from avparse.core.events import Event
    from avparse.core.labels import LLP_CLASSES
    from avparse.tools import parse

    host, cache, files = standin
    for name in files:  # the mirror: the same files, flat, by name
        real = urlparse(files[name].url).path
        host.files[f"/mirror/{name}"] = host.files[real]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("AVPARSE_OFFLINE", raising=False)
    before = len(host.log)
    rc = parse.main([str(llp_clip), "--model", "llp", "--mirror", host.url("/mirror"), "--precision", "bf16",
                     "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert sorted(p for p, _ in host.log[before:]) == sorted(
        f"/mirror/{n}" for n in ("AVVP-ECCV20-MMIL_Net-ef441b42.pt", "vggish-10086976.pth", "resnet152-394f9c45.pth",
                                 "r2plus1d_18-91a641e6.pth"))
    assert err.count("verified") == 4 and host.url("/mirror/") in err
    events = [Event.from_dict(json.loads(x)) for x in out.splitlines()]
    assert all(e.label in LLP_CLASSES for e in events)
    assert (tmp_path / "empty-home" / "hub" / "checkpoints" / "resnet152-394f9c45.pth").is_file()
