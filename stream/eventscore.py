"""Event-level scores of onsets and offsets against dense truth: what a subscriber gets.

The figures are the field's standard collar-based event metrics (Mesaros,
Heittola, Virtanen, "Metrics for polyphonic sound event detection", Applied
Sciences 6(6):162, 2016) computed by ``sed_eval`` (the DCASE challenges'
evaluation toolbox), ``sed_eval.sound_event.EventBasedMetrics``: a detected
event is a true positive when it has the class of a true event, its onset is
within ``collar`` seconds of the true onset and its offset within ``collar``
seconds of the true offset (``percentage_of_length = 0``: the offset collar is
``collar`` too), each true event matched at most once (maximum bipartite
matching, sed_eval's "optimal" matching). Precision, recall and F1 are
micro-averaged over classes, per modality.

- **audio-visual truth** is where a class's audio and visual truths overlap;
- **spurious events**: detected events that match no true event under this
  rule (sed_eval's false positives, ``Nsys - Ntp``), per minute of media;
- **onset latency**: for every true onset with a detected onset of the same
  class and modality within ``collar`` (onsets alone, matched one to one the
  same way), ``decided_at`` of the detected onset minus the true onset: the
  media time the decision waited for (evidence, grid, lookahead, minimum
  durations). Compute and transport come on top (``avparse bench live``).

:func:`count_matches` is the same rule on arrays, for searches that score
thousands of candidate rules (``stream.calibrate``); its counts equal
sed_eval's (tested) and every figure this module reports comes from sed_eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from avparse.core.events import Event
from avparse.core.labels import MODALITIES

COLLAR = 1.0   # seconds: onset and offset collar (one LLP snippet)


@dataclass(frozen=True)
class Interval:
    label: str        # class name
    modality: str     # "audio", "visual" or "audiovisual"
    onset: float      # seconds
    offset: float     # seconds
    decided_at: float | None = None  # detections: media time at which the onset was decided


def intervals_from_matrix(mat: np.ndarray, classes: Sequence[str], modality: str, *,
                          snippet_seconds: float = 1.0) -> list[Interval]:
    """The runs of 1s of a dense [C, T] matrix as intervals (LLP's dense truth -> events)."""
    out = []
    m = np.asarray(mat).astype(bool)
    for c in range(m.shape[0]):
        row = np.concatenate([[False], m[c], [False]]).astype(np.int8)
        d = np.diff(row)
        for a, b in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]):
            out.append(Interval(classes[c], modality, a * snippet_seconds, b * snippet_seconds))
    return out


def with_audiovisual(truth: Iterable[Interval]) -> list[Interval]:
    """Audio and visual truth plus the audio-visual truth: per class, the overlaps of its audio and
    visual intervals (any audio-visual intervals given are replaced)."""
    truth = [t for t in truth if t.modality in ("audio", "visual")]
    out = list(truth)
    by: dict[str, dict[str, list]] = {}
    for t in truth:
        by.setdefault(t.label, {"audio": [], "visual": []})[t.modality].append(t)
    for label, d in by.items():
        for a in d["audio"]:
            for v in d["visual"]:
                lo, hi = max(a.onset, v.onset), min(a.offset, v.offset)
                if hi > lo:
                    out.append(Interval(label, "audiovisual", lo, hi))
    return sorted(out, key=lambda t: (t.modality, t.label, t.onset))


def detections(events: Iterable[Event], *, end: float | None = None) -> list[Interval]:
    """The closed intervals of a stream's events (onset paired with its offset). An onset left open
    is closed at ``end`` when given, else dropped."""
    open_: dict[tuple, Event] = {}
    out = []
    for e in events:
        k = (e.label, e.modality)
        if e.kind == "onset":
            open_[k] = e
        elif k in open_:
            on = open_.pop(k)
            out.append(Interval(e.label, e.modality, on.media_time, e.media_time, on.decided_at))
    if end is not None:
        out += [Interval(e.label, e.modality, e.media_time, max(end, e.media_time), e.decided_at)
                for e in open_.values()]
    return out


# ----------------------------------------------------------------- the library's figures
def _sed_eval():
    import warnings

    try:
        with warnings.catch_warnings():   # dcase_util imports pkg_resources, deprecated by setuptools
            warnings.simplefilter("ignore")
            import dcase_util
            import sed_eval
    except ImportError as e:  # a broken install: the dependency is declared in pyproject.toml
        raise RuntimeError(f"event scoring needs sed_eval ({e}); reinstall avparse (pip install -e .)") from None
    return sed_eval, dcase_util


def score_events(truth: Mapping[str, Sequence[Interval]], detected: Mapping[str, Sequence[Interval]],
                 classes: Sequence[str], *, seconds: Mapping[str, float], collar: float = COLLAR) -> dict:
    """Collar-based event scores per modality, spurious events per minute and onset latency.

    ``truth`` / ``detected``: file -> intervals (truth with its audio-visual part, :func:`with_audiovisual`);
    ``seconds``: file -> media seconds scored. Returns ``{modality: {precision, recall, f1, tp, fp, fn,
    n_ref, n_sys, spurious_per_min}, "all": {...}, "latency": {...}, "minutes": m}``.
    """
    sed_eval, dcase_util = _sed_eval()
    files = sorted(set(truth) | set(detected))
    minutes = sum(float(seconds[f]) for f in files) / 60.0
    out: dict = {"minutes": minutes, "collar": collar}
    for mod in MODALITIES:
        metric = sed_eval.sound_event.EventBasedMetrics(
            event_label_list=list(classes), evaluate_onset=True, evaluate_offset=True, t_collar=float(collar),
            percentage_of_length=0.0, event_matching_type="optimal", empty_system_output_handling="zero_score")
        for f in files:
            ref = [{"file": f, "event_label": t.label, "onset": t.onset, "offset": t.offset}
                   for t in truth.get(f, ()) if t.modality == mod]
            est = [{"file": f, "event_label": d.label, "onset": d.onset, "offset": d.offset}
                   for d in detected.get(f, ()) if d.modality == mod]
            metric.evaluate(dcase_util.containers.MetaDataContainer(ref), dcase_util.containers.MetaDataContainer(est))
        o = metric.overall
        fm = metric.overall_f_measure()
        tp, n_sys, n_ref = int(o["Ntp"]), int(o["Nsys"]), int(o["Nref"])
        out[mod] = {"precision": float(fm["precision"]), "recall": float(fm["recall"]),
                    "f1": float(fm["f_measure"]), "tp": tp, "fp": n_sys - tp, "fn": n_ref - tp,
                    "n_ref": n_ref, "n_sys": n_sys,
                    "spurious_per_min": (n_sys - tp) / minutes if minutes else 0.0}
    tot = {k: sum(out[m][k] for m in MODALITIES) for k in ("tp", "fp", "fn", "n_ref", "n_sys")}
    tot["spurious_per_min"] = tot["fp"] / minutes if minutes else 0.0
    out["all"] = tot
    out["latency"] = onset_latency(truth, detected, collar=collar)
    return out


def onset_latency(truth: Mapping[str, Sequence[Interval]], detected: Mapping[str, Sequence[Interval]], *,
                  collar: float = COLLAR) -> dict:
    """``decided_at`` of detected onsets minus the true onsets they match (same class and modality,
    onset within ``collar``, one to one by sed_eval's matching): p50/p90 and n per modality and over
    audio + visual (the scenes' own truths; audio-visual truth is derived)."""
    sed_eval, _ = _sed_eval()
    validate = sed_eval.sound_event.EventBasedMetrics.validate_onset
    lat: dict[str, list[float]] = {m: [] for m in MODALITIES}
    for f in sorted(set(truth) | set(detected)):
        for mod in MODALITIES:
            for label in sorted({t.label for t in truth.get(f, ()) if t.modality == mod}):
                ref = [t for t in truth.get(f, ()) if t.modality == mod and t.label == label]
                est = [d for d in detected.get(f, ()) if d.modality == mod and d.label == label]
                graph: dict[int, list[int]] = {}
                for j, d in enumerate(est):
                    for i, t in enumerate(ref):
                        if validate({"onset": t.onset}, {"onset": d.onset}, t_collar=collar):
                            graph.setdefault(j, []).append(i)
                if not graph:
                    continue
                for i, j in sed_eval.util.bipartite_match(graph).items():
                    if est[j].decided_at is not None:
                        lat[mod].append(est[j].decided_at - ref[i].onset)
    out = {m: _quantiles(v) for m, v in lat.items()}
    out["audio+visual"] = _quantiles(lat["audio"] + lat["visual"])
    return out


def _quantiles(v: Sequence[float]) -> dict:
    if not v:
        return {"n": 0, "p50": None, "p90": None, "mean": None}
    a = np.asarray(v, np.float64)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean())}


# ----------------------------------------------------------------- the same rule on arrays
def count_matches(ref_on: np.ndarray, ref_off: np.ndarray, est_on: np.ndarray, est_off: np.ndarray, *,
                  collar: float = COLLAR) -> int:
    """True positives of one class in one file under the collar rule (onset and offset within
    ``collar``), matched one to one: the size of a maximum bipartite matching (sed_eval's)."""
    if not len(ref_on) or not len(est_on):
        return 0
    hit = (np.abs(ref_on[:, None] - est_on[None, :]) <= collar) & (np.abs(ref_off[:, None] - est_off[None, :]) <= collar)
    if not hit.any():
        return 0
    if (hit.sum(axis=0) <= 1).all() and (hit.sum(axis=1) <= 1).all():
        return int(hit.sum())
    sed_eval, _ = _sed_eval()
    graph = {int(j): [int(i) for i in np.nonzero(hit[:, j])[0]] for j in range(hit.shape[1]) if hit[:, j].any()}
    return len(sed_eval.util.bipartite_match(graph))
