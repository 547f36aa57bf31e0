"""Feature profiles: a named set of extractors and its snippet contract.

A profile fixes what one 1 s snippet is made of (audio rate and samples,
frames and their size), how it is preprocessed (log-mel front end, image
resize/crop/normalisation) and what features come out (models, sizes). Every
checkpoint stores its profile; a model is never fed features of another
profile (``check_compatible``).

Profiles:

- ``paper``: the LLP features of Tian et al. (ECCV 2020). VGGish on 16 kHz
  mono with its own log-mel front end (harritaylor/torchvggish
  ``vggish_params.py``: 25 ms window, 10 ms hop, 64 mel bands 125-7500 Hz, log
  offset 0.01, 96-frame examples); ResNet-152 on 8 frames per second, resized
  to 256 px on the shorter side and centre-cropped to 224 px with the ImageNet
  mean/std (YapengTian/AVVP-ECCV20 ``scripts/extract_rgb_feat.py`` uses
  pretrainedmodels' ``TransformImage``, scale 0.875: floor(224 / 0.875) = 256);
  R(2+1)D-18 on the 8 frames of each second, each frame resized (squashed)
  to 112 x 112 with the Kinetics mean/std (``scripts/utils.py``
  ``TransformImage``: ``Resize((112, 112))``, no crop).
- ``paper-pca``: ``paper`` with VGGish's PCA (whitening) and 8-bit
  quantisation post-processing (the AudioSet release format, values 0..255).
- ``lite``: small trainable CNNs for CPUs (see ``avparse.core.extractors.lite``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ResNet152_Weights.IMAGENET1K_V1.transforms()
_IMAGENET_STD = (0.229, 0.224, 0.225)
_KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # R2Plus1D_18_Weights.KINETICS400_V1.transforms()
_KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class FeatureProfile:
    name: str                      # "paper", "paper-pca" or "lite"
    sample_rate: int = 16000       # audio samples per second fed to the audio extractor
    snippet_seconds: float = 1.0   # length of one snippet (LLP: 1 s)
    frames_per_snippet: int = 8    # video frames sampled per snippet (paper: 8 fps)
    frame_size: int = 224          # side of the square 2D-CNN input (ResNet-152: 224)
    clip_size: int = 112           # side of the 3D-CNN clip input (R(2+1)D-18: 112)
    audio_dim: int = 128           # audio feature size per snippet (VGGish: 128)
    v2d_dim: int = 2048            # 2D feature size per frame (ResNet-152: 2048)
    v3d_dim: int = 512             # 3D feature size per snippet (R(2+1)D-18: 512)
    description: str = ""          # one line for humans
    # --- fields added by the extractor issue (all with the paper's defaults) ---
    audio_model: str = "vggish"            # audio extractor: "vggish" | "lite-audio"
    v2d_model: str = "resnet152"           # per-frame extractor: "resnet152" | "lite-2d"
    v3d_model: str = "r2plus1d_18"         # per-snippet clip extractor: "r2plus1d_18" | "lite-3d"
    audio_postprocess: str = "none"        # "none" (raw 128-d embedding) | "pca8" (VGGish PCA + 8-bit quantisation)
    stft_window_seconds: float = 0.025     # log-mel STFT window (VGGish: 25 ms, periodic Hann)
    stft_hop_seconds: float = 0.010        # log-mel STFT hop (VGGish: 10 ms)
    mel_bands: int = 64                    # mel bands (VGGish: 64, HTK mel scale)
    mel_fmin: float = 125.0                # lower edge of the lowest mel band in Hz (VGGish: 125)
    mel_fmax: float = 7500.0               # upper edge of the highest mel band in Hz (VGGish: 7500)
    log_offset: float = 0.01               # log(mel + offset) (VGGish: 0.01)
    example_frames: int = 96               # log-mel frames per example (VGGish: 96 = 0.96 s)
    frame_resize: int = 256                # 2D input: shorter side resized to this, then centre crop frame_size; 0 = squash to frame_size
    frame_mean: tuple = _IMAGENET_MEAN     # 2D input normalisation mean (RGB, on [0, 1])
    frame_std: tuple = _IMAGENET_STD       # 2D input normalisation std
    clip_resize: int = 0                   # 3D input: shorter side resize before centre crop clip_size; 0 = squash to clip_size (paper)
    clip_mean: tuple = _KINETICS_MEAN      # 3D input normalisation mean (RGB, on [0, 1])
    clip_std: tuple = _KINETICS_STD        # 3D input normalisation std

    @property
    def samples_per_snippet(self) -> int:
        return int(round(self.sample_rate * self.snippet_seconds))

    @property
    def win_length(self) -> int:
        """STFT window in samples (VGGish: 400)."""
        return int(round(self.sample_rate * self.stft_window_seconds))

    @property
    def hop_length(self) -> int:
        """STFT hop in samples (VGGish: 160)."""
        return int(round(self.sample_rate * self.stft_hop_seconds))

    @property
    def example_hop_samples(self) -> int:
        """Audio samples between the starts of consecutive examples when a
        whole file is framed at once (VGGish: 96 * 160 = 15360, i.e. 0.96 s)."""
        return self.example_frames * self.hop_length

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureProfile":
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown feature-profile fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def check_compatible(self, other: "FeatureProfile") -> None:
        """Raise ValueError naming the first field where two profiles differ."""
        a, b = self.to_dict(), other.to_dict()
        for k in a:
            if k != "description" and a[k] != b[k]:
                raise ValueError(
                    f"feature profile mismatch: {k} is {a[k]!r} in {self.name!r} but {b[k]!r} in {other.name!r}"
                )


PAPER = FeatureProfile(
    name="paper",
    description="VGGish 128-d, ResNet-152 2048-d on 8 frames/s, R(2+1)D-18 512-d (the LLP features)",
)

PAPER_PCA = replace(
    PAPER,
    name="paper-pca",
    audio_postprocess="pca8",
    description="paper with VGGish PCA whitening + 8-bit quantisation (AudioSet release format)",
)

LITE = FeatureProfile(
    name="lite",
    frames_per_snippet=8,
    frame_size=112,
    frame_resize=128,
    clip_size=64,
    clip_resize=0,
    audio_dim=128,
    v2d_dim=256,
    v3d_dim=128,
    audio_model="lite-audio",
    v2d_model="lite-2d",
    v3d_model="lite-3d",
    clip_mean=_IMAGENET_MEAN,
    clip_std=_IMAGENET_STD,
    description="CPU profile: log-mel CNN 128-d, MobileNetV3-Small 256-d per frame at 112 px, motion CNN 128-d",
)

PROFILES: dict[str, FeatureProfile] = {"paper": PAPER, "paper-pca": PAPER_PCA, "lite": LITE}


def get_profile(name: str) -> FeatureProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown feature profile {name!r}; known: {', '.join(PROFILES)}") from None
