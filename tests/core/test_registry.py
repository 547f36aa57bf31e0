"""The model registry: its facts agree with the code that uses them."""

from __future__ import annotations

import pytest

from avparse.core import registry


def test_published_addresses_are_the_libraries_own():
    from torchvision.models import MobileNet_V3_Small_Weights, ResNet152_Weights
    from torchvision.models.video import R2Plus1D_18_Weights

    assert registry.RESNET152.url == ResNet152_Weights.IMAGENET1K_V1.url
    assert registry.R2PLUS1D.url == R2Plus1D_18_Weights.KINETICS400_V1.url
    assert registry.MOBILENET_V3_SMALL.url == MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    for f in (registry.VGGISH, registry.VGGISH_PCA, registry.RESNET152, registry.R2PLUS1D,
              registry.MOBILENET_V3_SMALL):
        # torchvision's convention: the hex after the last '-' of the name starts the file's SHA-256
        assert f.name == f.url.rsplit("/", 1)[1] and f.name.rsplit("-", 1)[1].split(".")[0] == f.sha256


def test_the_authors_checkpoint_is_pinned_and_checked_by_its_git_blob():
    f = registry.MMIL_NET
    assert registry.AVVP_COMMIT in f.url and f.url.endswith("/models/MMIL_Net.pt")
    assert f.git_blob == "ef441b4279b7272f6509d6c9f8bc6d522e9145ed"


def test_profiles_and_classes_match_the_code():
    from avparse.core.labels import LLP_CLASSES
    from avparse.core.profiles import PROFILES
    from avparse.train.synth import SYNTH_CLASSES

    assert registry.LLP.classes == LLP_CLASSES
    assert registry.SCENE_CLASSES == tuple(SYNTH_CLASSES)
    assert set(registry.PROFILE_FILES) == set(PROFILES)
    for m in registry.MODELS.values():
        assert m.profile in PROFILES and all(p in PROFILES for p in m.profiles)
        assert m.licence and m.source and m.description
    assert registry.LLP.files() == (registry.MMIL_NET, registry.VGGISH, registry.RESNET152, registry.R2PLUS1D)
    assert registry.VGGISH_PCA in registry.LLP.files("paper-pca")
    assert "raw 128-d embedding" in registry.LLP.notes and "paper-pca" in registry.LLP.notes


def test_the_bundled_model_is_what_the_registry_says():
    from importlib.resources import files

    from avparse.core.checkpoint import load_model

    path = files("avparse.core") / "assets" / registry.DEMO.bundled
    if not path.is_file():
        pytest.skip("the bundled model is not installed")
    m = load_model(path)  # the classes and profile as the file holds them
    assert tuple(m.classes) == registry.DEMO.classes, \
        f"demo.pt holds the classes {m.classes}: update registry.SCENE_CLASSES (`avparse models` lists them)"
    assert m.profile.name == registry.DEMO.profile


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="demo, llp"):
        registry.get_model("whisper")
