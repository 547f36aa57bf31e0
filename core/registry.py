"""Named models: what ``--model NAME`` and ``avparse.load(NAME)`` mean.

An entry says everything needed to run a model and to trust its files: the
HAN checkpoint (bundled in the package, or published with an address and a
checksum), the published extractor weights its feature profile needs, the
profile, the classes, the licence and the source. Files are fetched, checked
and cached by :mod:`avparse.core.hub`. Data only: importing this module loads
neither torch nor numpy.

Add a trained model by adding a ``ModelEntry`` to ``MODELS`` (its checkpoint as
a ``RemoteFile`` with its address and SHA-256).
"""

from __future__ import annotations

from dataclasses import dataclass

from avparse.core.hub import RemoteFile

# ----------------------------------------------------------------------------- published files
# Sizes: exact byte counts are not known on the machine this was written on (no network);
# ``approx_mb`` is torchvision's ``_file_size`` metadata (MiB, converted) or the parameter count x 4 bytes.

_TORCHVGGISH = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"

VGGISH = RemoteFile(
    name="vggish-10086976.pth", url=_TORCHVGGISH + "vggish-10086976.pth", sha256="10086976", approx_mb=288.6,
    what="VGGish (AudioSet), harritaylor/torchvggish release v0.1, Apache-2.0")
VGGISH_PCA = RemoteFile(
    name="vggish_pca_params-970ea276.pth", url=_TORCHVGGISH + "vggish_pca_params-970ea276.pth", sha256="970ea276",
    approx_mb=0.13, what="VGGish PCA whitening parameters (paper-pca profile only), torchvggish v0.1, Apache-2.0")
RESNET152 = RemoteFile(
    name="resnet152-394f9c45.pth", url="https://download.pytorch.org/models/resnet152-394f9c45.pth",
    sha256="394f9c45", approx_mb=241.6,
    what="ResNet-152 ImageNet, torchvision ResNet152_Weights.IMAGENET1K_V1 (BSD-3-Clause code; ImageNet terms)")
R2PLUS1D = RemoteFile(
    name="r2plus1d_18-91a641e6.pth", url="https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth",
    sha256="91a641e6", approx_mb=126.2,
    what="R(2+1)D-18 Kinetics-400, torchvision R2Plus1D_18_Weights.KINETICS400_V1 (BSD-3-Clause code)")
MOBILENET_V3_SMALL = RemoteFile(
    name="mobilenet_v3_small-047dcff4.pth", url="https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
    sha256="047dcff4", approx_mb=10.3,
    what="MobileNetV3-Small ImageNet (optional start of the lite 2D trunk), torchvision IMAGENET1K_V1")

# The authors' trained HAN: YapengTian/AVVP-ECCV20, branch master, models/MMIL_Net.pt, last changed in
# commit 0b28c1a7eafbd952d8ed5aac67a722fb09306ae4 (2020-08-18, "AVVP"), git blob
# ef441b4279b7272f6509d6c9f8bc6d522e9145ed (`git ls-tree HEAD models/MMIL_Net.pt` at master fde56118
# gives the same blob). A plain git blob (the repository has no .gitattributes, so no Git LFS
# pointer): raw.githubusercontent.com serves its bytes. The address pins the commit, and the blob id
# verifies the bytes whatever host serves them. Size: not readable here (the blob is absent from the
# snapshot available offline); ~37 MB from its 9,307,723 parameters (MMIL_Net with the unused
# audio/visual/cmt encoders) in fp32.
AVVP_COMMIT = "0b28c1a7eafbd952d8ed5aac67a722fb09306ae4"
MMIL_NET = RemoteFile(
    name="AVVP-ECCV20-MMIL_Net-ef441b42.pt",
    url=f"https://raw.githubusercontent.com/YapengTian/AVVP-ECCV20/{AVVP_COMMIT}/models/MMIL_Net.pt",
    git_blob="ef441b4279b7272f6509d6c9f8bc6d522e9145ed", approx_mb=37.2,
    what="HAN trained on LLP by Tian, Li, Xu (ECCV 2020): YapengTian/AVVP-ECCV20 models/MMIL_Net.pt, GPL-3.0")

# The published extractor files each feature profile needs (lite: none; its weights travel in the checkpoint).
PROFILE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "paper": (VGGISH, RESNET152, R2PLUS1D),
    "paper-pca": (VGGISH, VGGISH_PCA, RESNET152, R2PLUS1D),
    "lite": (),
}

# Every published file avparse knows, by file name: a copy found on disk is checked against it.
KNOWN_FILES: dict[str, RemoteFile] = {f.name: f for f in (VGGISH, VGGISH_PCA, RESNET152, R2PLUS1D,
                                                          MOBILENET_V3_SMALL, MMIL_NET)}

# ----------------------------------------------------------------------------- the classes

LLP_CLASSES_NAMES = (  # avparse.core.labels.LLP_CLASSES (repeated so this module stays import-free; a test compares)
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)", "Basketball_bounce", "Fire_alarm", "Chainsaw",
    "Cello", "Banjo", "Singing", "Chicken_rooster", "Violin_fiddle", "Vacuum_cleaner", "Baby_laughter",
    "Accordion", "Lawn_mower", "Motorcycle", "Helicopter", "Acoustic_guitar", "Telephone_bell_ringing",
    "Baby_cry_infant_cry", "Blender", "Clapping",
)
SCENE_CLASSES = (  # avparse.train.synth.SYNTH_CLASSES, the bundled model's classes (a test compares with demo.pt)
    "siren", "drum", "bell", "whistle", "engine", "hiss", "bird", "alarm", "clap", "horn",
)

# ----------------------------------------------------------------------------- the evidence

LLP_AUDIO_EVIDENCE = """\
The LLP audio features (feats/vggish/*.npy of the Google Drive archive linked from the README of
YapengTian/AVVP-ECCV20) are VGGish's raw 128-d embedding, after the ReLU of its last layer, with no PCA
and no 8-bit quantisation: the `paper` profile. Evidence (the LLP .npy files themselves cannot be
fetched here, so this is inferred, not measured on them):
1. YapengTian/AVVP-ECCV20 README: "Audio feature extractor can be found from [here]" links Google Drive
   file 1TJL3cIpZsPHGVAdMgyr43u_vlsxcghKY, the same archive that YapengTian/AVE-ECCV18's README calls
   "Scripts for generating audio and visual features". The AVVP dataloader (dataloader.py) feeds the
   .npy arrays to the model unchanged (no division by 255, no dequantisation).
2. Features made with those scripts are published in YapengTian/AVE-ECCV18 (data/audio_feature_noisy.h5,
   dataset "avadataset", 178 x 10 x 128 float64): min 0.0, max 4.54, mean 0.122, 65.3% exact zeros, no
   negative value, no whole-number pattern. The PCA-whitened release format is whole numbers 0..255;
   whitened-but-unquantised values would be signed. Non-negative with most values exactly zero is a
   ReLU output: the raw embedding.
3. Follow-up works that re-extract LLP audio features ship that extractor: MCG-NJU/JoMoLD (2022) and
   MengyuanChen21/CVPR2023-CMPAE (2023), feature_extractor/audio_feature_extractor.py (identical in
   both), write the `vggish/embedding` tensor to data/feats/vggish/<id>.npy with the PCA parameters path
   commented out and no postprocessor call; their vggish_slim.py gives the last layer (fc2) the
   arg_scope's ReLU. Both READMEs use the features of YapengTian/AVVP-ECCV20 for training.
4. Trap: harritaylor/torchvggish's VGGish(postprocess=True) is its default (hubconf.vggish()), so a
   re-extraction with torchvggish's defaults gives the PCA + 8-bit format; avparse's `paper` profile
   runs the trunk only (the ReLU included, as in torchvggish's VGG.embeddings).
The other reading stays one flag away: --profile paper-pca (avparse.load("llp", profile="paper-pca"))
applies VGGish's PCA whitening and 8-bit quantisation (values 0..255)."""


# ----------------------------------------------------------------------------- the entries


@dataclass(frozen=True)
class ModelEntry:
    name: str                               # what users type: --model NAME, avparse.load(NAME)
    description: str                        # one line for `avparse models`
    profile: str                            # feature profile the model expects (avparse.core.profiles)
    classes: tuple                          # class names in the model's output order
    checkpoint: RemoteFile | None = None    # the published HAN checkpoint (None: bundled)
    bundled: str = ""                       # file name in avparse.core's assets (bundled models)
    profiles: tuple = ()                    # other profiles a user may choose with --profile (e.g. paper-pca)
    licence: str = ""                       # licence of the weights, per file where they differ
    source: str = ""                        # where the weights come from, and how they were made
    notes: str = ""                         # what else a user must know (evidence for the input contract)
    real_world: bool = True                 # False: trained on generated scenes only (the honest notice)

    def extractor_files(self, profile: str | None = None) -> tuple:
        """The published extractor files for ``profile`` (default: the model's own)."""
        return PROFILE_FILES.get(profile or self.profile, ())

    def files(self, profile: str | None = None) -> tuple:
        """Every file to fetch: the checkpoint (unless bundled) and the extractor files."""
        return ((self.checkpoint,) if self.checkpoint else ()) + self.extractor_files(profile)


DEMO = ModelEntry(
    name="demo",
    description="bundled: generated scenes only (10 synthetic classes), lite extractors, fast on a CPU",
    profile="lite",
    classes=SCENE_CLASSES,
    bundled="demo.pt",
    licence="MIT (avparse)",
    source="avparse bundle: lite extractors and HAN trained on generated scenes (docs/bundled_model.md)",
    notes="Knows only the generated scenes' 10 classes; on real video it answers with those classes anyway. "
          "For real video use the llp model.",
    real_world=False,
)

LLP = ModelEntry(
    name="llp",
    description="the authors' HAN trained on LLP (25 everyday classes), the paper's extractors",
    profile="paper",
    classes=LLP_CLASSES_NAMES,
    checkpoint=MMIL_NET,
    profiles=("paper-pca",),
    licence="HAN weights: GPL-3.0 (YapengTian/AVVP-ECCV20 README; the repository has no LICENSE file); "
            "VGGish: Apache-2.0 (torchvggish); ResNet-152, R(2+1)D-18: torchvision (BSD-3-Clause code; the "
            "weights carry their datasets' terms, ImageNet and Kinetics-400)",
    source="Tian, Li, Xu, ECCV 2020: YapengTian/AVVP-ECCV20 models/MMIL_Net.pt (commit 0b28c1a7), trained with "
           "main_avvp.py on the LLP features (VGGish, ResNet-152, R(2+1)D-18); extractors from torchvggish and "
           "torchvision",
    notes=LLP_AUDIO_EVIDENCE,
)

MODELS: dict[str, ModelEntry] = {m.name: m for m in (DEMO, LLP)}
DEFAULT_MODEL = "demo"


def get_model(name: str) -> ModelEntry:
    """The entry called ``name``; ValueError listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)} (or give a checkpoint path)") \
            from None
