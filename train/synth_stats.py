"""Annotation statistics of LLP and of generated scene sets, side by side (`avparse synth --stats`).

What is counted, the same way for both (numpy only; the LLP files are read with
:mod:`avparse.train.llp`, generated scenes are planned without rendering):

* a *pair* is a (video, class) with at least one annotated second in some
  modality; it is audio-only, visual-only or both (its modality shares);
* an *interval* is one dense row (one run of seconds of one class in one
  modality); rows that mark nothing (LLP's audio file has six with
  ``offset <= onset``) are left out and counted;
* the A/V IoU of a both-modality pair is |audio seconds AND visual seconds| /
  |audio seconds OR visual seconds|;
* a clip has an audio-visual second when some class is heard and seen in the
  same second;
* classes per video count the weak labels, events per video the intervals.

For LLP the val and test splits are used (the only ones with dense labels:
1,849 clips), rows naming videos of no split are skipped, as in the paper's
evaluation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The tolerances for "the generated scenes have LLP's statistics" (docs/synth.md):
# modality shares within 3 points, mean interval length within 1 s, A/V IoU within 0.05,
# events and classes per video within 10 %.
TOLERANCES = {"shares": 3.0, "mean_interval_s": 1.0, "iou_both": 0.05, "events_per_video": 0.10,
              "classes_per_video": 0.10}


@dataclass(frozen=True)
class Interval:
    video: str
    label: str
    modality: str   # "audio" or "visual"
    onset: int      # first second
    offset: int     # end second (exclusive)


def llp_annotations(llp_dir) -> tuple[dict[str, list[str]], list[Interval], int]:
    """(weak labels of val + test, their dense intervals, rows skipped for marking nothing)."""
    from avparse.core.labels import LLP_CLASSES

    from .llp import LLP_FILES, read_dense_rows, read_weak

    d = Path(llp_dir)
    weak: dict[str, list[str]] = {}
    for split in ("val", "test"):
        ids, y = read_weak(d / LLP_FILES[split], LLP_CLASSES)
        for vid, row in zip(ids, y):
            weak[vid] = [LLP_CLASSES[c] for c in np.flatnonzero(row)]
    rows, empty = [], 0
    for modality in ("audio", "visual"):
        for r in read_dense_rows(d / LLP_FILES[modality], LLP_CLASSES):
            if r.filename not in weak:
                continue
            if r.offset <= r.onset:
                empty += 1
                continue
            rows.append(Interval(r.filename, r.label, modality, r.onset, r.offset))
    return weak, rows, empty


def synth_annotations(videos: int, seed: int, config) -> tuple[dict[str, list[str]], list[Interval]]:
    """Weak labels and intervals of ``videos`` planned scenes of the set ``seed`` (nothing rendered)."""
    from .synth import SYNTH_CLASSES, _key, clip_name, plan_events

    weak: dict[str, list[str]] = {}
    rows: list[Interval] = []
    for i in range(videos):
        name = clip_name(seed, i)
        plan = plan_events(np.random.default_rng([*_key((seed, i)), 0]), config)  # as make_scene draws it
        weak[name] = [c for c in SYNTH_CLASSES if any(e.label == c for e in plan)]
        for e in plan:
            for modality, iv in (("audio", e.audio), ("visual", e.visual)):
                if iv is not None:
                    rows.append(Interval(name, e.label, modality, int(iv[0]), int(iv[1])))
    return weak, rows


def annotation_stats(weak: dict[str, list[str]], rows: list[Interval]) -> dict:
    """The statistics of one annotated set (see the module docstring)."""
    secs: dict[str, dict[tuple[str, str], set]] = {"audio": defaultdict(set), "visual": defaultdict(set)}
    lengths: dict[str, list[int]] = {"audio": [], "visual": []}
    for r in rows:
        secs[r.modality][(r.video, r.label)].update(range(r.onset, r.offset))
        lengths[r.modality].append(r.offset - r.onset)
    sa, sv = secs["audio"], secs["visual"]
    pairs = set(sa) | set(sv)
    kind = {p: "both" if p in sa and p in sv else "audio" if p in sa else "visual" for p in pairs}
    n = max(1, len(pairs))
    share = {k: 100.0 * sum(1 for v in kind.values() if v == k) / n for k in ("audio", "visual", "both")}
    both = [p for p, k in kind.items() if k == "both"]
    iou = float(np.mean([len(sa[p] & sv[p]) / len(sa[p] | sv[p]) for p in both])) if both else float("nan")
    vids = sorted(weak)
    no_av = sum(1 for v in vids if not any(sa.get((v, c), set()) & sv.get((v, c), set()) for c in weak[v]))
    per_class = {}
    for label in sorted({p[1] for p in pairs}):
        ks = [k for p, k in kind.items() if p[1] == label]
        per_class[label] = {"pairs": len(ks), **{k: 100.0 * ks.count(k) / len(ks) for k in ("audio", "visual", "both")}}
    nv = max(1, len(vids))
    all_len = lengths["audio"] + lengths["visual"]
    return {
        "videos": len(vids),
        "pairs": len(pairs),
        "intervals": len(rows),
        "share_audio_only": share["audio"],
        "share_visual_only": share["visual"],
        "share_both": share["both"],
        "iou_both": iou,
        "mean_interval_s": float(np.mean(all_len)) if all_len else float("nan"),
        "mean_audio_interval_s": float(np.mean(lengths["audio"])) if lengths["audio"] else float("nan"),
        "mean_visual_interval_s": float(np.mean(lengths["visual"])) if lengths["visual"] else float("nan"),
        "full_clip_intervals": 100.0 * np.mean([x >= 10 for x in all_len]) if all_len else float("nan"),
        "no_av_clips": 100.0 * no_av / nv,
        "events_per_video": len(rows) / nv,
        "audio_events_per_video": len(lengths["audio"]) / nv,
        "visual_events_per_video": len(lengths["visual"]) / nv,
        "classes_per_video": sum(len(v) for v in weak.values()) / nv,
        "per_class": per_class,
    }


# (key, label, format, tolerance kind): the rows of the side-by-side table
_ROWS = (
    ("share_audio_only", "audio-only pairs, %", "{:.1f}", "shares"),
    ("share_visual_only", "visual-only pairs, %", "{:.1f}", "shares"),
    ("share_both", "audio-visual pairs, %", "{:.1f}", "shares"),
    ("iou_both", "A/V IoU of audio-visual pairs", "{:.3f}", "iou_both"),
    ("mean_interval_s", "mean interval, s", "{:.2f}", "mean_interval_s"),
    ("mean_audio_interval_s", "  audio intervals, s", "{:.2f}", None),
    ("mean_visual_interval_s", "  visual intervals, s", "{:.2f}", None),
    ("full_clip_intervals", "intervals of 10 s, %", "{:.1f}", None),
    ("events_per_video", "events (intervals) per video", "{:.2f}", "events_per_video"),
    ("audio_events_per_video", "  audio", "{:.2f}", None),
    ("visual_events_per_video", "  visual", "{:.2f}", None),
    ("classes_per_video", "classes per video", "{:.2f}", "classes_per_video"),
    ("no_av_clips", "clips with no audio-visual second, %", "{:.1f}", None),
)


def within(key_kind: str | None, ref: float, value: float) -> bool | None:
    """Whether ``value`` is within the issue's tolerance of the LLP figure ``ref`` (None: no tolerance)."""
    if key_kind is None:
        return None
    tol = TOLERANCES[key_kind]
    if key_kind in ("events_per_video", "classes_per_video"):
        return abs(value - ref) <= tol * ref
    return abs(value - ref) <= tol


def format_stats(gen: dict, gen_name: str, llp: dict | None = None) -> str:
    """A markdown table of the statistics, with LLP's beside them when given, then per-class tables."""
    lines = []
    if llp is not None:
        lines += [f"| statistic | LLP (val + test, {llp['videos']} clips) | {gen_name} ({gen['videos']} clips) "
                  "| within tolerance |", "|---|---:|---:|---|"]
        for key, label, fmt, kind in _ROWS:
            ok = within(kind, llp[key], gen[key])
            lines.append(f"| {label} | {fmt.format(llp[key])} | {fmt.format(gen[key])} | "
                         f"{'' if ok is None else 'yes' if ok else 'NO'} |")
    else:
        lines += [f"| statistic | {gen_name} ({gen['videos']} clips) |", "|---|---:|"]
        for key, label, fmt, _ in _ROWS:
            lines.append(f"| {label} | {fmt.format(gen[key])} |")
    for name, st in ((gen_name, gen),) + ((("LLP", llp),) if llp is not None else ()):
        lines += ["", f"per class, {name}: share of the class's pairs that are audio-only / visual-only / both",
                  "", "| class | pairs | audio-only % | visual-only % | both % |", "|---|---:|---:|---:|---:|"]
        for label, c in sorted(st["per_class"].items(), key=lambda kv: -kv[1]["audio"]):
            lines.append(f"| {label} | {c['pairs']} | {c['audio']:.0f} | {c['visual']:.0f} | {c['both']:.0f} |")
    return "\n".join(lines)
