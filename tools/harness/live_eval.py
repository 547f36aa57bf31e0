"""Scoring a checkpoint through the LIVE runtime: causal events -> dense matrices -> the paper's ten numbers.

Each test clip is a stream of :class:`avparse.stream.pipeline.Runtime` fed by a
:class:`~avparse.stream.sources.FileSource` (the mp4 decoded with its real
timestamps, audio as the master clock) on a virtual clock, as fast as the
machine goes: the same assembler, batched extractors, sliding HAN windows and
tracker that ``avparse run`` drives on a camera. With ``lookahead=0`` every
snippet is decided from the window that ENDS at it (causal: no future
context), unlike the offline evaluation, which sees the whole 10 s clip.

The tracker applies the paper's decision rule (snippet probability >= 0.5 and
video-level probability >= 0.5, the video level being that of the causal
window), with no hysteresis and no minimum durations, so its events are the
per-snippet decisions. Their onsets and offsets are turned back into dense
[C, T] audio and visual matrices (``stream.tracker.events_to_matrices``) and
scored against the dense ground truth with ``core.metrics.dataset_scores``.

Several clips run at once (``streams`` per Runtime) so extractor batches fill
across streams, as they would with several cameras.

This is the harness behind ``avparse evaluate --live`` and ``avparse bundle``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

MEDIA_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


@dataclass(frozen=True)
class LiveEvalConfig:
    lookahead: int = 0          # 1 s steps of future context (0: causal, as live)
    hop: float = 1.0            # seconds between snippets (1: the LLP grid the ground truth is on)
    window: int = 10            # snippets per HAN window (LLP videos: 10)
    threshold: float = 0.5      # snippet and video-level decision threshold (paper: 0.5)
    video_gate: bool = True     # the paper's gate by the (causal window's) video-level probability
    streams: int = 16           # clips run at once, one stream each, in one Runtime
    max_batch: int = 16         # snippets per extractor call
    max_wait: float = 0.05      # runtime-clock seconds a snippet waits for a fuller batch
    num_snippets: int = 10      # snippets per clip scored (the ground truth's T)
    device: str = "cpu"         # torch device of extractors and HAN
    threads: int | None = None  # torch threads while running (None: leave as is)

    def __post_init__(self):
        if self.streams < 1 or self.num_snippets < 1:
            raise ValueError("streams and num_snippets must be >= 1")


@dataclass
class Clip:
    path: Path                  # media file
    name: str                   # the annotation filename (stream name)
    gt_audio: np.ndarray        # uint8 [C, T]
    gt_visual: np.ndarray       # uint8 [C, T]


def find_media(media_dir, name: str) -> Path | None:
    """``media_dir/<name><suffix>`` (or the LLP YouTube id's file) for a known media suffix, else None."""
    from avparse.train.llp import feature_stem

    d = Path(media_dir)
    for stem in dict.fromkeys((name, feature_stem(name))):
        for suf in MEDIA_SUFFIXES:
            p = d / f"{stem}{suf}"
            if p.is_file():
                return p
    return None


def annotation_files(labels_dir) -> dict[str, Path]:
    """Role -> file of the annotation CSVs in ``labels_dir``: LLP names (AVVP_*.csv) or a generated set's
    names (synth_*.csv). Raises FileNotFoundError if neither is complete."""
    from avparse.train.llp import LLP_FILES
    from avparse.train.synth import SYNTH_FILES

    d = Path(labels_dir)
    for names in (LLP_FILES, SYNTH_FILES):
        files = {r: d / names[r] for r in ("train", "val", "test", "audio", "visual")}
        if all(files[r].is_file() for r in ("test", "audio", "visual")) or \
                all(files[r].is_file() for r in ("val", "audio", "visual")):
            return files
    raise FileNotFoundError(f"{d} holds neither the LLP annotation files (AVVP_test_pd.csv, AVVP_eval_audio.csv, "
                            "AVVP_eval_visual.csv) nor a generated set's (synth_test.csv, synth_eval_audio.csv, ...)")


def load_clips(media_dir, labels_dir, split: str, classes: Sequence[str], *, num_snippets: int = 10) -> list[Clip]:
    """The clips of ``split`` with their dense truth; FileNotFoundError names the first missing media file."""
    from avparse.train.llp import read_dense, read_weak

    files = annotation_files(labels_dir)
    if not files[split].is_file():
        raise FileNotFoundError(f"{files[split]}: no {split} annotation file")
    ids, _ = read_weak(files[split], tuple(classes))
    gt_a = read_dense(files["audio"], ids, tuple(classes), num_snippets=num_snippets)
    gt_v = read_dense(files["visual"], ids, tuple(classes), num_snippets=num_snippets)
    clips = []
    for i, vid in enumerate(ids):
        p = find_media(media_dir, vid)
        if p is None:
            raise FileNotFoundError(f"no media file for {vid} in {media_dir} (tried {vid}.mp4 and others)")
        clips.append(Clip(p, vid, gt_a[i], gt_v[i]))
    return clips


def _Predictions(index: dict, fn):
    """A StageObserver handing every prediction to ``fn(clip index, probs)``."""
    from avparse.stream.types import StageObserver

    class Predictions(StageObserver):
        def prediction(self, probs) -> None:
            fn(index[probs.stream], probs)

    return Predictions()


def live_predictions(loaded, extractor, clips: Sequence[Clip], cfg: LiveEvalConfig = LiveEvalConfig(), *,
                     progress: Callable[[int, int], None] | None = None,
                     on_prediction: Callable[[int, object], None] | None = None,
                     on_events: Callable[[int, list], None] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run every clip through the Runtime; (pred_a [N,C,T], pred_v [N,C,T], info). ``on_prediction(i, p)``
    sees every prediction of clip i before the tracker (a StageObserver), ``on_events(i, events)`` clip
    i's events."""
    import torch

    from avparse.stream.clock import VirtualClock
    from avparse.stream.pipeline import EventLog, Runtime, pipeline_config
    from avparse.stream.sources import FileSource
    from avparse.stream.tracker import TrackerConfig, events_to_matrices

    profile, classes = loaded.profile, tuple(loaded.classes)
    tracker = TrackerConfig(on_threshold=cfg.threshold, off_threshold=cfg.threshold, min_on=0.0, min_off=0.0,
                            video_gate=cfg.video_gate, gate_threshold=cfg.threshold)
    pcfg = pipeline_config(profile=profile, hop=cfg.hop, window=cfg.window, lookahead=cfg.lookahead,
                           max_batch=cfg.max_batch, max_wait=cfg.max_wait, device=cfg.device, tracker=tracker)
    n, c, t = len(clips), len(classes), cfg.num_snippets
    pred_a = np.zeros((n, c, t), np.uint8)
    pred_v = np.zeros((n, c, t), np.uint8)
    info = {"snippets": 0, "events": 0, "faults": [], "late_frames": 0, "missing_frames": 0, "extract_seconds": 0.0,
            "han_seconds": 0.0}
    old = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    try:
        for g in range(0, n, cfg.streams):
            group = clips[g:g + cfg.streams]
            names = [f"s{g + j}" for j in range(len(group))]  # unique stream names (file stems may repeat)
            sources = [FileSource(cl.path, sample_rate=profile.sample_rate, name=nm) for cl, nm in zip(group, names)]
            rt = Runtime(pcfg, loaded, extractor, sources, clock=VirtualClock())
            if on_prediction is not None:
                rt.pipeline.observe(_Predictions({nm: g + j for j, nm in enumerate(names)}, on_prediction))
            log = EventLog()
            rt.add_sink(log)
            st = rt.run()
            info["snippets"] += st["snippets"]
            info["events"] += len(log.events)
            info["faults"] += st["faults"]
            info["late_frames"] += st["drops"]["late_frames"]
            info["missing_frames"] += st["drops"]["missing_frames"]
            info["extract_seconds"] += st["inference"]["extract_seconds"]
            info["han_seconds"] += st["inference"]["han_seconds"]
            for j, nm in enumerate(names):
                mine = [e for e in log.events if e.stream == nm]
                m = events_to_matrices(mine, classes, t, snippet_seconds=profile.snippet_seconds)
                pred_a[g + j], pred_v[g + j] = m["audio"], m["visual"]
                if on_events is not None:
                    on_events(g + j, mine)
            if progress is not None:
                progress(min(n, g + len(group)), n)
    finally:
        torch.set_num_threads(old)
    info["seconds"] = time.perf_counter() - t0
    return pred_a, pred_v, info


def live_scores(checkpoint, clips: Sequence[Clip], cfg: LiveEvalConfig = LiveEvalConfig(), *,
                progress: Callable[[int, int], None] | None = None, loaded=None,
                on_prediction: Callable[[int, object], None] | None = None,
                on_events: Callable[[int, list], None] | None = None) -> dict:
    """The paper's ten numbers (percent) of ``checkpoint`` through the live runtime on ``clips``
    (``on_prediction`` / ``on_events``: as ``live_predictions``)."""
    from avparse.core.checkpoint import load_model
    from avparse.core.extractors import build_extractor
    from avparse.core.metrics import SUMMARY_KEYS, dataset_scores

    if loaded is None:
        loaded = load_model(checkpoint, device=cfg.device)
    if loaded.extractor_state is None and loaded.profile.name == "lite":
        raise ValueError(f"{checkpoint}: a lite-profile checkpoint without extractor weights cannot run live")
    extractor = build_extractor(loaded.profile, weights=loaded.extractor_state, device=cfg.device)
    if not clips:
        raise ValueError("no clips to score")
    pred_a, pred_v, info = live_predictions(loaded, extractor, clips, cfg, progress=progress, on_prediction=on_prediction,
                                            on_events=on_events)
    gt_a = np.stack([cl.gt_audio for cl in clips])
    gt_v = np.stack([cl.gt_visual for cl in clips])
    scores = dataset_scores(pred_a, pred_v, gt_a, gt_v)
    from avparse.train.evaluate import leak_scores

    return {
        "checkpoint": str(checkpoint),
        "mode": "live",
        "videos": len(clips),
        "lookahead": cfg.lookahead,
        "hop": cfg.hop,
        "window": cfg.window,
        "threshold": cfg.threshold,
        "video_gate": cfg.video_gate,
        "scores": {k: float(scores[k]) for k in SUMMARY_KEYS},
        "leak": leak_scores(pred_a, pred_v, gt_a, gt_v),   # single-modality leak of the live decisions
        "run": {k: v for k, v in info.items() if k != "faults"},
        "faults": info["faults"][:10],
    }
