"""The calibration harness: validation clips through the live runtime, recorded, calibrated, scored.

Behind ``avparse calibrate``, ``avparse evaluate --live`` (the event figures),
``avparse bundle`` (its calibration step) and ``avparse bench events``:

- :func:`record_clips`: every clip through :class:`~avparse.stream.pipeline.Runtime`
  (``harness.live_eval.live_predictions``: FileSource, virtual clock, causal
  windows) at one hop, keeping every snippet prediction before the tracker
  (a :class:`~avparse.stream.calibrate.Recording` per clip) and the events of the
  runtime's own tracker;
- :func:`record_features`: the same from a feature set (LLP features with the
  dense annotations, or a packed store): the inference stage fed the stored
  features, on the 1 s grid only;
- :func:`calibrate_checkpoint`: that for each hop, the search of
  ``stream.calibrate``, the validation figures of the bare rule and of the
  chosen rules (``stream.eventscore``: sed_eval), and the rules written into the
  checkpoint (``core.checkpoint.write_calibration``);
- :func:`calibrate_bundle`: the last step of ``avparse bundle`` (its own 60 s
  calibration scenes); :func:`live_event_scores`: ``evaluate --live``'s table;
- :func:`event_table`: the figures as a table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

TABLE_MODS = (("audio", "audio"), ("visual", "visual"), ("audiovisual", "audio-visual"))
CALIBRATED_HOPS = (1.0, 0.25)   # the hops calibrated by default: the LLP grid and the low-latency one


@dataclass(frozen=True)
class BundleCalibration:
    """The calibration step of ``avparse bundle``: generated scenes like those ``avparse run --scene``
    and ``avparse demo`` play (60 s, the default difficulty), from a seed the recipe's training scenes
    do not use, all in the validation split."""

    seed: int = 2                        # scene set seed (the recipe's scene set is seed 1)
    scenes: int = 30                     # scenes (30 x 60 s: 30 min of media, about 300 events per modality;
                                         # on held-out validation scenes 25 scenes beat 15: docs/calibration.md)
    seconds: int = 60                    # seconds per scene
    hops: tuple[float, ...] = CALIBRATED_HOPS  # hops calibrated
    jobs: int = 2                        # processes writing the scenes


def quick_calibration() -> BundleCalibration:
    """``avparse bundle --quick``: the same step on 2 scenes of 12 s at hop 1."""
    return BundleCalibration(scenes=2, seconds=12, hops=(1.0,), jobs=1)


def load_validation_clips(loaded, data, *, labels=None, media=None, split: str = "val", limit: int | None = None):
    """The clips of ``split`` (harness.live_eval.Clip) of a generated set or LLP media + annotations.
    ValueError (one line) for a folder that holds no such split."""
    import json

    from avparse.tools.harness.live_eval import load_clips

    d = Path(data)
    if not d.is_dir():
        raise ValueError(f"{data}: no such folder")
    lab = Path(labels) if labels else d
    med = Path(media) if media else (d / "media" if (d / "media").is_dir() else d)
    T = 10
    manifest = lab / "synth.json"
    if manifest.is_file():
        try:
            T = int(json.loads(manifest.read_text())["config"]["duration"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{manifest}: not a synth manifest") from None
    try:
        clips = load_clips(med, lab, split, loaded.classes, num_snippets=T)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    if limit is not None:
        clips = clips[:limit]
    if not clips:
        raise ValueError(f"{lab}: the {split} split has no clips")
    return clips


def is_feature_set(data) -> bool:
    """A packed store or an LLP feature layout (features, no media): calibrated on the 1 s grid only."""
    from avparse.train.dataset import feature_root, packed_index

    d = Path(data)
    return d.is_dir() and (feature_root(d) is not None or any(packed_index(d, s).is_file() for s in ("val", "test")))


def record_features(loaded, data, *, labels=None, split: str = "val", limit: int | None = None, streams: int = 16,
                    device: str = "cpu") -> list:
    """Recordings of a feature set's clips (LLP features with the dense annotations, or a packed store):
    the live pipeline's inference stage (``stream.inference.Inference``: causal windows of ``window``
    snippets, batched across ``streams`` clips) fed the stored features of each 1 s snippet instead of
    the extractors' output. Only the 1 s grid exists in such a set (hop 1)."""
    import numpy as np
    import torch

    from avparse.stream.calibrate import Recording
    from avparse.stream.eventscore import intervals_from_matrix
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.inference import Inference, InferenceConfig
    from avparse.stream.types import Snippet
    from avparse.train.dataset import DataConfig, FeatureError, open_split

    class StoredFeatures(Inference):
        """Inference whose extractor is the feature set: each snippet carries its features."""

        def _extract(self, batch):
            self.counters["extractor_calls"] += 1
            return [s.info["features"] for s in batch]

    try:
        fs = open_split(DataConfig(data_dir=str(data), labels_dir=labels, profile=loaded.profile,
                                   classes=tuple(loaded.classes)), split)
    except FeatureError as e:
        raise ValueError(str(e)) from None
    if not fs.has_dense:
        raise ValueError(f"{data}: the {split} split has no dense annotations to calibrate on")
    n = len(fs) if limit is None else min(limit, len(fs))
    if n < 1:
        raise ValueError(f"{data}: the {split} split has no clips")
    snippet, T, F = loaded.profile.snippet_seconds, fs.num_snippets, loaded.profile.frames_per_snippet
    cfg = InferenceConfig(device=device)
    grid = SnippetGrid.from_profile(loaded.profile, hop=snippet)
    model = loaded.model
    recs = []
    empty_audio, empty_frames = np.zeros(0, np.float32), np.zeros((0, 1, 1, 3), np.uint8)
    for g in range(0, n, streams):
        idx = list(range(g, min(n, g + streams)))
        a, v2, v3 = (torch.from_numpy(np.ascontiguousarray(x)) for x in fs.batch(idx))
        inf = StoredFeatures(cfg, model, extractor=None, grid=grid)
        names = [fs.ids[i] for i in idx]
        for name in names:
            inf.expect(name)
        probs: dict[str, list] = {name: [] for name in names}
        for t in range(T):
            for j, name in enumerate(names):
                feats = (a[j, t], v2[j, t * F:(t + 1) * F], v3[j, t])
                for p in inf.push(Snippet(name, t, t * snippet, empty_audio, empty_frames, info={"features": feats})):
                    probs[p.stream].append(p)
        for name in names:
            for p in inf.flush(name):
                probs[p.stream].append(p)
        for j, i in enumerate(idx):
            truth = (intervals_from_matrix(fs.gt_audio[i], loaded.classes, "audio", snippet_seconds=snippet)
                     + intervals_from_matrix(fs.gt_visual[i], loaded.classes, "visual", snippet_seconds=snippet))
            recs.append(Recording(names[j], sorted(probs[names[j]], key=lambda p: p.index), truth, float(T * snippet)))
    return recs


def calibrate_bundle(ckpt, work, cfg: BundleCalibration = BundleCalibration(), *,
                     log: Callable[[str], None] = print) -> dict:
    """Write the calibration scenes into ``work/calibration`` (reused when a rerun finds them) and
    calibrate ``ckpt`` on them in place. Returns calibrate_checkpoint's result."""
    import json
    from dataclasses import asdict

    from avparse.core.checkpoint import load_model
    from avparse.train.synth import MANIFEST, SynthConfig, WriteConfig, write_dataset

    synth = SynthConfig(duration=cfg.seconds)
    d = Path(work) / "calibration"
    man = d / MANIFEST
    done = False
    if man.is_file():
        try:
            m = json.loads(man.read_text())
            want = json.loads(json.dumps(asdict(synth)))   # as the manifest holds it (tuples as lists)
            done = (m.get("seed"), m.get("videos"), m.get("config")) == (cfg.seed, cfg.scenes, want)
        except (ValueError, OSError):
            done = False
    if done:
        log(f"calibration: reusing {d}")
    else:
        log(f"calibration: writing {cfg.scenes} scenes of {cfg.seconds} s (seed {cfg.seed}) to {d}")
        write_dataset(d, cfg.scenes, cfg.seed, synth, write=WriteConfig(val_fraction=1.0, test_fraction=0.0,
                                                                       jobs=cfg.jobs))
    clips = load_validation_clips(load_model(ckpt), d)
    return calibrate_checkpoint(ckpt, clips, hops=cfg.hops, log=log, source=f"{d} (val split)")


def truth_of(clip, classes: Sequence[str], snippet_seconds: float = 1.0) -> list:
    """A clip's dense audio and visual truth as intervals (stream.eventscore.Interval)."""
    from avparse.stream.eventscore import intervals_from_matrix

    return (intervals_from_matrix(clip.gt_audio, classes, "audio", snippet_seconds=snippet_seconds)
            + intervals_from_matrix(clip.gt_visual, classes, "visual", snippet_seconds=snippet_seconds))


def record_clips(loaded, extractor, clips, *, hop: float, streams: int = 16, device: str = "cpu",
                 threads: int | None = None, progress: Callable[[int, int], None] | None = None):
    """(recordings, events per clip of the runtime's paper-rule tracker, run info) of ``clips`` at ``hop``."""
    from avparse.stream.calibrate import Recording
    from avparse.tools.harness.live_eval import LiveEvalConfig, live_predictions

    snippet = loaded.profile.snippet_seconds
    T = clips[0].gt_audio.shape[1] if clips else 10
    cfg = LiveEvalConfig(hop=hop, streams=streams, device=device, threads=threads, num_snippets=T)
    probs: list[list] = [[] for _ in clips]
    events: list[list] = [[] for _ in clips]
    _, _, info = live_predictions(loaded, extractor, clips, cfg, progress=progress,
                                  on_prediction=lambda i, p: probs[i].append(p),
                                  on_events=lambda i, ev: events[i].extend(ev))
    recs = []
    for i, cl in enumerate(clips):
        ps = sorted(probs[i], key=lambda p: p.index)
        recs.append(Recording(cl.name, ps, truth_of(cl, loaded.classes, snippet), float(T * snippet)))
    return recs, events, info


def live_event_scores(loaded, clips, probs: Sequence[list], events: Sequence[list], *, hop: float,
                      paper_rule: str) -> dict:
    """Event-level figures (stream.eventscore) of clips that went through the live runtime: the runtime's
    own events (``paper_rule``: how its tracker decided), and the recorded predictions replayed through the
    bare rule and, for a calibrated checkpoint, its calibrated rules (what run, demo and parse publish)."""
    from avparse.stream.calibrate import Recording, figures
    from avparse.stream.decision import checkpoint_rules
    from avparse.stream.eventscore import detections, score_events, with_audiovisual
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.tracker import TrackerConfig

    snippet = loaded.profile.snippet_seconds
    recs = [Recording(cl.name, sorted(probs[i], key=lambda p: p.index), truth_of(cl, loaded.classes, snippet),
                      float(cl.gt_audio.shape[1] * snippet)) for i, cl in enumerate(clips)]
    truth = {r.name: with_audiovisual(r.truth) for r in recs}
    out = {paper_rule: score_events(truth, {r.name: detections(events[i]) for i, r in enumerate(recs)},
                                    loaded.classes, seconds={r.name: r.seconds for r in recs})}
    grid = SnippetGrid.from_profile(loaded.profile, hop=hop)
    out["bare rule"] = figures(recs, loaded.classes, TrackerConfig(), grid=grid)
    rules = checkpoint_rules(loaded.calibration, hop)
    if rules is not None:
        out["calibrated"] = figures(recs, loaded.classes, TrackerConfig(rules=rules), grid=grid)
    return out


def calibrate_checkpoint(ckpt, clips, *, hops: Sequence[float] = CALIBRATED_HOPS, config=None, out=None,
                         streams: int = 16, device: str = "cpu", threads: int | None = 1, write: bool = True,
                         log: Callable[[str], None] = print, source: str = "", recordings=None) -> dict:
    """Calibrate ``ckpt``'s tracker on ``clips`` at each hop; write the rules into the checkpoint (``out``:
    elsewhere) unless ``write`` is False. Returns the rules, figures before/after and timings.
    ``recordings`` (instead of clips: ``record_features``) are predictions already made at the first hop."""
    from avparse.core.checkpoint import load_model, write_calibration
    from avparse.core.extractors import build_extractor
    from avparse.stream.calibrate import CalibrateConfig, calibrate, figures, subsample
    from avparse.stream.decision import calibration_record
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.tracker import TrackerConfig

    config = config or CalibrateConfig()
    t_all = time.perf_counter()
    loaded = load_model(ckpt, device=device)
    if loaded.meta.get("source") != "avparse":
        raise ValueError(f"{ckpt}: an original MMIL_Net state dict cannot hold a calibration; "
                         "save it as an avparse checkpoint first")
    if recordings is None and loaded.extractor_state is None and loaded.profile.name == "lite":
        raise ValueError(f"{ckpt}: a lite-profile checkpoint without extractor weights cannot run live")
    n_clips = len(recordings) if recordings is not None else len(clips)
    result: dict = {"checkpoint": str(ckpt), "clips": n_clips, "hops": {}, "seconds": {}}
    # one run through the runtime at the finest hop; a coarser hop that is a whole multiple of it
    # takes the predictions of the snippets on its own grid (stream.calibrate.subsample)
    fine = min(hops)
    derived = all(abs(h / fine - round(h / fine)) < 1e-9 for h in hops)
    runs = [fine] if derived else list(hops)
    recorded = {}
    if recordings is not None:
        runs = []
        recorded[fine] = (list(recordings), {"from": "stored features"}, 0.0)
    else:
        extractor = build_extractor(loaded.profile, weights=loaded.extractor_state, device=device)
    for hop in runs:
        t0 = time.perf_counter()
        last = [t0]

        def progress(i, n, hop=hop):
            if time.perf_counter() - last[0] > 30 or i == n:
                last[0] = time.perf_counter()
                log(f"hop {hop:g}: {i}/{n} clips through the live runtime")

        recs, _, info = record_clips(loaded, extractor, clips, hop=hop, streams=streams, device=device,
                                     threads=threads, progress=progress)
        recorded[hop] = (recs, {k: v for k, v in info.items() if k != "faults"}, round(time.perf_counter() - t0, 1))
    all_rules = []
    for hop in hops:
        if hop in recorded:
            recs, info, rec_s = recorded[hop]
        else:
            recs, info, rec_s = subsample(recorded[fine][0], hop), {"from_hop": fine}, 0.0
        t1 = time.perf_counter()
        rules = calibrate(recs, loaded.classes, hop=hop, snippet_seconds=loaded.profile.snippet_seconds,
                          config=config, log=log)
        t2 = time.perf_counter()
        grid = SnippetGrid.from_profile(loaded.profile, hop=hop)
        before = figures(recs, loaded.classes, TrackerConfig(), grid=grid, collar=config.collar)
        after = figures(recs, loaded.classes, TrackerConfig(rules=rules), grid=grid, collar=config.collar)
        rules = replace(rules, info={**rules.info, "validation": {"before": _brief(before), "after": _brief(after)}})
        all_rules.append(rules)
        result["hops"][str(hop)] = {"rules": rules.to_dict(), "before": before, "after": after, "run": info,
                                    "seconds": {"record": rec_s, "search": round(t2 - t1, 1)}}
        log(f"hop {hop:g}: validation, bare rule -> calibrated ({n_clips} clips, "
            f"{before['minutes']:.1f} min of media):")
        log(event_table([("bare rule", before), ("calibrated", after)]))
    record = calibration_record(all_rules, data=source, clips=n_clips, collar=config.collar,
                                created=time.strftime("%Y-%m-%d %H:%M"), config=_plain(config))
    result["calibration"] = record
    if write:
        dest = write_calibration(ckpt, record, out=out)
        result["written"] = str(dest)
    result["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    return result


def calibration_summary(res: dict) -> dict:
    """The part of ``calibrate_checkpoint``'s result a bundle's metrics file keeps: where the rules were
    chosen, how long it took, the validation figures before and after per hop."""
    return {"data": res["calibration"]["data"], "seconds": res["seconds"],
            "validation": {h: {"before": v["rules"]["info"]["validation"]["before"],
                               "after": v["rules"]["info"]["validation"]["after"]} for h, v in res["hops"].items()}}


def update_metrics(path, ckpt, res: dict) -> Path:
    """Record a calibration in a bundle's metrics file (demo_metrics.json): its summary, and the
    checkpoint's new size (the file the metrics describe has changed)."""
    import json

    p = Path(path)
    m = json.loads(p.read_text())
    m["calibration"] = calibration_summary(res)
    m["size_bytes"] = Path(ckpt).stat().st_size
    p.write_text(json.dumps(m, indent=1, default=str) + "\n")
    return p


def _plain(cfg) -> dict:
    from dataclasses import asdict

    return {k: (list(map(list, v)) if k == "max_latency" else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(cfg).items()}


def _brief(fig: dict) -> dict:
    """The headline figures of ``eventscore.score_events`` (for the checkpoint's record)."""
    out = {m: {k: round(fig[m][k], 4) for k in ("precision", "recall", "f1", "spurious_per_min")}
           for m, _ in TABLE_MODS}
    out["spurious_per_min"] = round(fig["all"]["spurious_per_min"], 3)
    lat = fig["latency"]["audio+visual"]
    out["onset_latency_p50"] = lat["p50"]
    out["minutes"] = round(fig["minutes"], 2)
    return out


def event_table(rows: Sequence[tuple[str, dict]]) -> str:
    """Markdown table: per row (name, score_events figures) F1 (P/R) per modality, spurious events per
    minute (all modalities) and the median onset latency."""
    head = ("| tracker | " + " | ".join(f"{n} F1 (P / R)" for _, n in TABLE_MODS)
            + " | spurious / min (A, V, AV) | onset latency p50 (n) |")
    lines = [head, "|---" * (len(TABLE_MODS) + 3) + "|"]
    for name, f in rows:
        cells = [f"{f[m]['f1']:.3f} ({f[m]['precision']:.2f} / {f[m]['recall']:.2f})" for m, _ in TABLE_MODS]
        per_mod = ", ".join("%.2f" % f[m]["spurious_per_min"] for m, _ in TABLE_MODS)
        sp = f"{f['all']['spurious_per_min']:.2f} ({per_mod})"
        lat = f["latency"]["audio+visual"]
        ls = "-" if lat["p50"] is None else f"{lat['p50']:.3f} s ({lat['n']})"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sp} | {ls} |")
    return "\n".join(lines)
