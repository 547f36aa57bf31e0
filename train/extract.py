"""Media files -> features in the LLP layout.

Output (``out_dir``), as the paper's feature folders (YapengTian/AVVP-ECCV20
README: ``feats/vggish``, ``feats/res152``, ``feats/r2plus1d_18``):

    vggish/<id>.npy        float32 [T, audio_dim]      (paper: 128)
    res152/<id>.npy        float32 [T * F, v2d_dim]    (paper: 8 frames per s, 2048)
    r2plus1d_18/<id>.npy   float32 [T, v3d_dim]        (paper: 512)
    profile.json           the feature profile (the full input contract) and how the features were made
    snippets.tsv           <id> TAB <T> for every finished file

``id`` is the file name without its extension. The ``lite`` profile uses the
same three folders with its own sizes. Each array is written to a temporary
name and renamed, and a file counts as done once its line is in
snippets.tsv: a rerun skips finished files and redoes a half-written one.

Snippets: audio is decoded to the profile's rate, mono (``avparse.core.media``);
frames at ``frames_per_snippet`` per second (FFmpeg's fps filter, as the
paper's ``ffmpeg -r 8``). T = whole seconds covered by both the audio and the
frames. Snippet k has frames k*F .. k*F+F-1 and the audio
[k*S, k*S + S) (``audio_framing="snippet"``, what the live pipeline sees) or
[k*H, k*H + S) with H = 0.96 s (``"file"``: VGGish's whole-file framing, as
the reference ``waveform_to_examples`` does on a whole clip; the paper's
audio features were computed that way from 16 kHz wav files).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from avparse.core.profiles import FeatureProfile

FOLDERS = ("vggish", "res152", "r2plus1d_18")  # audio, 2D, 3D (LLP layout names)
MEDIA_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts", ".wmv", ".3gp", ".ogv"}


@dataclass(frozen=True)
class ExtractConfig:
    out_dir: str                     # output folder (LLP layout)
    profile: str = "paper"           # feature profile name ("paper", "paper-pca", "lite")
    weights: str | None = None       # weight directory or extractor state file (None: hub cache / random lite); "random" for smoke runs
    backend: str = "eager"           # "eager" | "compile" | "tensorrt"
    device: str = "cpu"              # torch device
    precision: str = "auto"          # "auto" (fp32 CPU, fp16 GPU) | "fp32" | "bf16" (CPU, approximate)
    batch_snippets: int = 16         # snippets per extractor call
    audio_framing: str = "snippet"   # "snippet" (k * 1 s) | "file" (k * 0.96 s, VGGish whole-file framing)


@dataclass
class FileResult:
    path: str
    id: str
    status: str            # "done" | "skipped" (already done) | "failed"
    snippets: int = 0      # T
    error: str = ""        # the cause when failed
    seconds: float = 0.0   # wall time spent on it


class ExtractError(Exception):
    """A file cannot be turned into features (the message names the cause)."""


@dataclass
class ExtractReport:
    results: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]


def list_media(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named directly, plus the media files (by suffix) inside named folders, sorted."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in MEDIA_SUFFIXES)
        else:
            out.append(p)
    return out


# ---------------------------------------------------------------------------
def snippet_windows(num_samples: int, num_frames: int, profile: FeatureProfile, framing: str) -> tuple[int, np.ndarray]:
    """(T, audio start sample of each snippet) for a file with ``num_samples``
    audio samples and ``num_frames`` frames at ``frames_per_snippet`` per second."""
    s = profile.samples_per_snippet
    t = min(num_samples // s, num_frames // profile.frames_per_snippet)
    if framing == "snippet":
        hop = s
    elif framing == "file":
        hop = profile.example_hop_samples
    else:
        raise ValueError(f"unknown audio framing {framing!r}; use 'snippet' or 'file'")
    return t, np.arange(t, dtype=np.int64) * hop


def decode(path: Path, profile: FeatureProfile) -> tuple[np.ndarray, list[np.ndarray]]:
    """(mono float32 audio at the profile's rate, RGB frames at F per second)."""
    from avparse.core import media

    fps = profile.frames_per_snippet / profile.snippet_seconds
    try:
        info = media.probe(path)
        if not info.has_audio:
            raise ExtractError("no audio track")
        if not info.has_video:
            raise ExtractError("no video track")
        audio = media.read_audio(path, profile.sample_rate)
        frames = [img for _, img in media.iter_frames(path, fps=fps)]
    except media.MediaError as e:
        raise ExtractError(_strip_path(str(e), path)) from None
    return audio, frames


def _strip_path(msg: str, path: Path) -> str:
    for p in (str(path), str(Path(path).resolve())):
        if msg.startswith(p + ": "):
            return msg[len(p) + 2:]
    return msg


def features_of(extractor, audio: np.ndarray, frames: list[np.ndarray], config: ExtractConfig):
    """Features [T, A], [T*F, D2], [T, D3] of one decoded file, in batches."""
    import torch

    p = extractor.profile
    t, starts = snippet_windows(len(audio), len(frames), p, config.audio_framing)
    if t < 1:
        have = min(len(audio) / p.sample_rate, len(frames) / (p.frames_per_snippet / p.snippet_seconds))
        raise ExtractError(f"shorter than one snippet ({have:.2f} s of audio and video, need {p.snippet_seconds:g} s)")
    s, f = p.samples_per_snippet, p.frames_per_snippet
    outs: list[tuple] = []
    with torch.inference_mode():
        for b0 in range(0, t, config.batch_snippets):
            idx = range(b0, min(t, b0 + config.batch_snippets))
            a = np.stack([audio[starts[k]:starts[k] + s] for k in idx]).astype(np.float32, copy=False)
            v = np.stack([np.stack(frames[k * f:(k + 1) * f]) for k in idx])
            outs.append(extractor(a, v).numpy())
    aud, v2d, v3d = (np.concatenate(x) for x in zip(*outs))
    return t, aud, v2d.reshape(t * f, -1), v3d


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


class _Manifest:
    """snippets.tsv: <id> TAB <T> per finished file (rewritten atomically)."""

    def __init__(self, path: Path):
        self.path = path
        self.counts: dict[str, int] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) == 2 and parts[1].isdigit():
                    self.counts[parts[0]] = int(parts[1])

    def add(self, vid: str, t: int) -> None:
        self.counts[vid] = t
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        tmp.write_text("".join(f"{k}\t{v}\n" for k, v in self.counts.items()))
        os.replace(tmp, self.path)


def _check_profile_file(out: Path, record: dict) -> None:
    pf = out / "profile.json"
    if pf.is_file():
        try:
            old = json.loads(pf.read_text())
        except json.JSONDecodeError:
            raise ExtractError(f"{pf} is not valid JSON; remove it or use another output folder") from None
        if any(old.get(k) != record[k] for k in ("profile", "audio_framing", "precision")):
            raise ExtractError(
                f"{out} holds features of another profile, framing or precision ({old.get('profile', {}).get('name')!r}, "
                f"{old.get('audio_framing')!r}, {old.get('precision')!r}); use another output folder"
            )
    else:
        tmp = pf.with_name(".profile.json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, pf)


def run_extract(
    files: list[Path],
    config: ExtractConfig,
    *,
    extractor=None,
    on_file: Callable[[int, int, FileResult], None] | None = None,
) -> ExtractReport:
    """Extract every file into ``config.out_dir``; failures are recorded, the
    others go on. ``on_file(i, n, result)`` is called after each file."""
    from avparse.core.extractors import build_extractor

    if extractor is None:
        from avparse.core.extractors.extractor import ExtractorOptions

        extractor = build_extractor(config.profile, weights=config.weights, device=config.device,
                                    options=ExtractorOptions(backend=config.backend, precision=config.precision))
    profile = extractor.profile
    out = Path(config.out_dir)
    for d in FOLDERS:
        (out / d).mkdir(parents=True, exist_ok=True)
    _check_profile_file(out, {
        "profile": profile.to_dict(),
        "audio_framing": config.audio_framing,
        "precision": config.precision,
        "weights": "random" if config.weights == "random" else "published" if profile.name.startswith("paper") else "given",
        "layout": {"audio": f"{FOLDERS[0]}/<id>.npy [T, {profile.audio_dim}]",
                   "v2d": f"{FOLDERS[1]}/<id>.npy [T*{profile.frames_per_snippet}, {profile.v2d_dim}]",
                   "v3d": f"{FOLDERS[2]}/<id>.npy [T, {profile.v3d_dim}]"},
    })
    manifest = _Manifest(out / "snippets.tsv")
    report = ExtractReport()
    for i, path in enumerate(files):
        vid = path.stem
        t0 = time.perf_counter()
        res = FileResult(path=str(path), id=vid, status="done")
        if vid in manifest.counts and all((out / d / f"{vid}.npy").is_file() for d in FOLDERS):
            res.status, res.snippets = "skipped", manifest.counts[vid]
        else:
            try:
                if not path.is_file():
                    raise ExtractError("no such file")
                audio, frames = decode(path, profile)
                t, a, v2, v3 = features_of(extractor, audio, frames, config)
                for d, arr in zip(FOLDERS, (a, v2, v3)):
                    _save_atomic(out / d / f"{vid}.npy", arr.astype(np.float32))
                manifest.add(vid, t)
                res.snippets = t
            except ExtractError as e:
                res.status, res.error = "failed", str(e)
        res.seconds = time.perf_counter() - t0
        report.results.append(res)
        if on_file is not None:
            on_file(i, len(files), res)
    return report


def report_dict(report: ExtractReport) -> dict:
    return {"results": [asdict(r) for r in report.results]}
