"""Calibrating the tracker for event-level accuracy (``avparse calibrate``).

Input: the snippet probabilities the live pipeline produced on validation
clips (recorded once, before the tracker: ``Pipeline.observe``) and the
clips' dense truth. Output: :class:`~avparse.stream.decision.DecisionRules`
for one hop, chosen to maximise the collar-based event F1 of each modality
(``stream.eventscore``), subject to a bound on the median onset latency.

The search space is small on purpose (a validation set has a few dozen events
per class):

- per modality, shared by its classes: the hysteresis ratio (``off = ratio *
  on``), ``min_on``, ``min_off``, the video-level gate (none, the window's, the
  modality's own), the causal median (cells) and the HMM forward filter's
  switch probability: coordinate ascent from the bare rule, one parameter at a
  time, all its values in one replay, a few rounds until nothing changes;
- per class: only the on threshold, and only where two-fold cross-validation
  over the clips says per-class thresholds beat one threshold for the
  modality (otherwise one threshold for all).

Every candidate is the tracker's own decision path (``decision.Smoother``,
``gate_source``, ``DecisionBank``, ``snippet_cell``) replayed over the
recorded probabilities with one column per (modality, class, candidate), and
counted with the collar rule (``eventscore.count_matches``, sed_eval's
matching). The figures reported before and after come from the real
``Tracker`` and ``eventscore.score_events`` (sed_eval).

Numpy (and sed_eval for the matching); no torch, no clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from .decision import (
    GATES, MODALITIES, DecisionBank, DecisionRules, ModalityRule, Smoother, gate_source, snippet_cell,
)
from .eventscore import COLLAR, Interval, count_matches, detections, score_events, with_audiovisual
from .grid import SnippetGrid
from .tracker import SnippetProbs, Tracker, TrackerConfig

PARAMS = ("off_ratio", "gate", "gate_threshold", "min_off", "min_on", "median", "switch")


@dataclass
class Recording:
    """One validation clip: the pipeline's predictions for it, in order, and its truth."""

    name: str                    # clip name (one stream)
    probs: list[SnippetProbs]    # every prediction of the clip's stream, in snippet order
    truth: list[Interval]        # audio and visual truth intervals (audio-visual is derived)
    seconds: float               # media seconds of the clip


@dataclass(frozen=True)
class CalibrateConfig:
    collar: float = COLLAR       # onset and offset collar of the event F1 (seconds)
    on: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # candidate on thresholds
    off_ratio: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3, 0.15)  # candidate off thresholds as a share of on
    min_on: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)       # candidate seconds on before an onset
    min_off: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)  # candidate seconds off before an offset
    gate: tuple[str, ...] = GATES                          # candidate video-level gates
    gate_threshold: tuple[float, ...] = (0.5, 0.3, 0.7)   # candidate gate thresholds (the paper's 0.5 first)
    median: tuple[int, ...] = (1, 3, 5)                    # candidate causal median lengths (cells)
    switch: tuple[float, ...] = (0.5, 0.3, 0.2, 0.1, 0.05)  # candidate HMM switch probabilities (0.5: none)
    # bound on the median onset latency (decided_at - true onset, media seconds) per hop: the issue's
    # end-to-end targets (1.2 s at hop 1, 0.75 s at hop 0.25) less 0.1 s for compute and transport
    # (avparse bench live on a 2-core CPU); other hops: no worse than the bare rule on the same clips
    max_latency: tuple[tuple[float, float], ...] = ((1.0, 1.1), (0.25, 0.65))
    per_class: str = "auto"      # per-class on thresholds: "auto" (if two-fold CV prefers them), "yes", "no"
    rounds: int = 3              # coordinate-ascent rounds over the shared parameters at most
    folds: int = 2               # folds of the per-class cross-validation

    def __post_init__(self):
        if self.per_class not in ("auto", "yes", "no"):
            raise ValueError(f"per_class must be auto, yes or no, got {self.per_class!r}")
        if not self.on or any(not 0 < v <= 1 for v in self.on):
            raise ValueError("on thresholds must be in (0, 1]")
        if not self.off_ratio or any(not 0 <= v <= 1 for v in self.off_ratio):
            raise ValueError("off ratios must be in [0, 1]")
        if self.collar <= 0 or self.rounds < 1 or self.folds < 2:
            raise ValueError("collar must be > 0, rounds >= 1 and folds >= 2")

    def latency_bound(self, hop: float) -> float | None:
        for h, b in self.max_latency:
            if abs(h - hop) < 1e-9:
                return b
        return None


def subsample(recordings: Sequence[Recording], hop: float) -> list[Recording]:
    """The recordings at a coarser ``hop`` (a whole multiple of theirs): the predictions of the snippets
    that start on the coarser grid, re-indexed. These are the coarser run's own predictions: a snippet
    at t0 holds the same audio and frames on either grid, and its HAN window (``window`` snippets 1 s
    apart, ending at it) is the same, so only float rounding of differently composed batches differs
    (measured: at most 6e-7 between hop 0.25 and hop 1 on the bundled model)."""
    out = []
    for r in recordings:
        keep = []
        for p in r.probs:
            k = p.t0 / hop
            if abs(k - round(k)) < 1e-6:
                keep.append(replace(p, index=int(round(k))))
        out.append(Recording(r.name, keep, r.truth, r.seconds))
    return out


# ----------------------------------------------------------------- replay
@dataclass
class _Shared:
    """A modality's shared (per-modality) parameters."""

    off_ratio: float = 1.0
    gate: str = "none"
    gate_threshold: float = 0.5
    min_off: float = 0.0
    min_on: float = 0.0
    median: int = 1
    switch: float = 0.5

    def with_(self, name, value) -> "_Shared":
        return replace(self, **{name: value})


@dataclass
class _Columns:
    row: np.ndarray       # modality index per column
    cls: np.ndarray       # class index per column
    on: np.ndarray
    off: np.ndarray
    min_on: np.ndarray
    min_off: np.ndarray
    gate: np.ndarray      # index into GATES
    gate_thr: np.ndarray
    median: np.ndarray
    switch: np.ndarray
    key: list = field(default_factory=list)   # (row, value index, class, on index) per column


def _columns(specs: list[tuple[int, int, _Shared]], num_classes: int, on_grid: Sequence[float]) -> _Columns:
    """One column per (row, value index, shared params) x class x on threshold."""
    rows, keys, p = [], [], []
    for row, v, sh in specs:
        for c in range(num_classes):
            for k, on in enumerate(on_grid):
                rows.append((row, c))
                keys.append((row, v, c, k))
                p.append((on, on * sh.off_ratio, sh.min_on, sh.min_off, GATES.index(sh.gate),
                          sh.gate_threshold if sh.gate != "none" else -1.0, sh.median, sh.switch))
    a = np.array(p, np.float64)
    r = np.array(rows, np.int64)
    return _Columns(r[:, 0], r[:, 1], a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4].astype(np.int64), a[:, 5],
                    a[:, 6].astype(np.int64), a[:, 7], keys)


def _replay(rec: Recording, cols: _Columns, hop: float, snippet_seconds: float) -> list[list[tuple]]:
    """Per column, the intervals (onset, offset, decided_at of the onset) the tracker's decision path
    gives on ``rec`` (closed at the end as ``Tracker.flush`` closes them)."""
    J = len(cols.row)
    smoother = Smoother(cols.median, cols.switch)
    bank = DecisionBank(cols.on, cols.off, cols.min_on, cols.min_off)
    gated = cols.gate_thr >= 0
    out: list[list[tuple]] = [[] for _ in range(J)]
    onset_decided = np.zeros(J)
    end = 0.0
    for p in rec.probs:
        fp = np.asarray(p.frame_prob, np.float64)
        x3 = np.concatenate([fp, fp.min(axis=0, keepdims=True)], axis=0)
        x = smoother.push(x3[cols.row, cols.cls])
        if gated.any():
            g = np.zeros(J)
            for gi, kind in enumerate(GATES):
                sel = cols.gate == gi
                if kind == "none" or not sel.any():
                    continue
                srcs = np.stack([gate_source(kind, m, p.global_prob, p.a_prob, p.v_prob) for m in range(3)])
                g[sel] = srcs[cols.row[sel], cols.cls[sel]]
            x = np.where(gated & ~(g >= cols.gate_thr), 0.0, x)
        lo, hi = snippet_cell(p.index, p.t0, hop, snippet_seconds)
        end = hi
        onsets, offsets = bank.step(x, lo, hi)
        for j in np.nonzero(onsets)[0]:
            onset_decided[j] = p.decided_at
        for j in np.nonzero(offsets)[0]:
            out[j].append((bank.onset[j], bank.off_start[j], onset_decided[j]))
    falling = bank.falling_mask()
    for j in np.nonzero(bank.open_mask())[0]:
        out[j].append((bank.onset[j], bank.off_start[j] if falling[j] else end, onset_decided[j]))
    return out


# ----------------------------------------------------------------- counting
@dataclass
class _Counts:
    tp: np.ndarray        # [F, J] true positives per file and column
    sys: np.ndarray       # [F, J] detected events
    ref: np.ndarray       # [F, J] true events of the column's modality and class
    lat: list             # per column: onset latencies of onset-matched true events


def _count(recs: Sequence[Recording], truth: list[dict], cols: _Columns, hop: float, snippet_seconds: float,
           collar: float) -> _Counts:
    F, J = len(recs), len(cols.row)
    tp, ns, nr = np.zeros((F, J), np.int64), np.zeros((F, J), np.int64), np.zeros((F, J), np.int64)
    lat: list[list[float]] = [[] for _ in range(J)]
    for f, rec in enumerate(recs):
        ivs = _replay(rec, cols, hop, snippet_seconds)
        for j in range(J):
            ref = truth[f].get((int(cols.row[j]), int(cols.cls[j])))
            est = ivs[j]
            ns[f, j] = len(est)
            if ref is None:
                continue
            r_on, r_off = ref
            nr[f, j] = len(r_on)
            if not est:
                continue
            e = np.asarray(est, np.float64)
            tp[f, j] = count_matches(r_on, r_off, e[:, 0], e[:, 1], collar=collar)
            lat[j] += _onset_latencies(r_on, e[:, 0], e[:, 2], collar)
    return _Counts(tp, ns, nr, lat)


def _onset_latencies(r_on: np.ndarray, e_on: np.ndarray, e_dec: np.ndarray, collar: float) -> list[float]:
    """decided_at - true onset of onsets matched one to one within the collar (eventscore.onset_latency)."""
    hit = np.abs(r_on[:, None] - e_on[None, :]) <= collar
    if not hit.any():
        return []
    if (hit.sum(axis=0) <= 1).all() and (hit.sum(axis=1) <= 1).all():
        i, j = np.nonzero(hit)
        return list(e_dec[j] - r_on[i])
    from .eventscore import _sed_eval

    sed_eval, _ = _sed_eval()
    graph = {int(j): [int(i) for i in np.nonzero(hit[:, j])[0]] for j in range(hit.shape[1]) if hit[:, j].any()}
    return [float(e_dec[j] - r_on[i]) for i, j in sed_eval.util.bipartite_match(graph).items()]


def _truth_index(recs: Sequence[Recording], classes: Sequence[str]) -> list[dict]:
    """Per file: (row, class) -> (onsets, offsets) arrays of the truth (audio-visual derived)."""
    idx = {c: i for i, c in enumerate(classes)}
    out = []
    for rec in recs:
        d: dict = {}
        for t in with_audiovisual(rec.truth):
            if t.label in idx:
                d.setdefault((MODALITIES.index(t.modality), idx[t.label]), []).append((t.onset, t.offset))
        out.append({k: (np.array([a for a, _ in v]), np.array([b for _, b in v])) for k, v in d.items()})
    return out


# ----------------------------------------------------------------- selection
def _f1(tp, ns, nr) -> float:
    den = ns + nr
    return 2.0 * tp / den if den else 0.0


def _choose_per_class(tp: np.ndarray, ns: np.ndarray, nr: np.ndarray) -> np.ndarray:
    """[C] on-threshold index per class maximising the micro F1 2*sum(tp) / (sum(ns) + sum(nr)) over
    tables [C, K] (Dinkelbach: a few passes of independent per-class choices). Ties: the lower index."""
    nr_tot = nr.sum()
    lam = 0.0
    choice = np.zeros(tp.shape[0], np.int64)
    for _ in range(50):
        gain = 2.0 * tp - lam * ns
        choice = gain.argmax(axis=1)
        t, n = tp[np.arange(len(choice)), choice].sum(), ns[np.arange(len(choice)), choice].sum()
        new = 2.0 * t / (n + nr_tot) if n + nr_tot else 0.0
        if abs(new - lam) < 1e-12:
            break
        lam = new
    return choice


def _choose_shared(tp: np.ndarray, ns: np.ndarray, nr: np.ndarray) -> np.ndarray:
    """[C] the same on-threshold index for every class (the best micro F1; ties: the lower index)."""
    t, n = tp.sum(axis=0), ns.sum(axis=0)
    f = np.where(n + nr.sum() > 0, 2.0 * t / np.maximum(n + nr.sum(), 1), 0.0)
    return np.full(tp.shape[0], int(f.argmax()), np.int64)


@dataclass
class _Choice:
    f1: float
    latency: float | None     # median onset latency of the choice (None: no onset matched)
    on_index: np.ndarray      # [C]
    feasible: bool


def _evaluate_choice(cnt: _Counts, sel: np.ndarray, on_index: np.ndarray, bound: float | None) -> _Choice:
    """F1 and latency of choosing column sel[c, on_index[c]] per class (sel: [C, K] column ids)."""
    cols = sel[np.arange(sel.shape[0]), on_index]
    tp, ns, nr = cnt.tp[:, cols].sum(), cnt.sys[:, cols].sum(), cnt.ref[:, cols].sum()
    lats = [x for j in cols for x in cnt.lat[j]]
    lat = float(np.percentile(lats, 50)) if lats else None
    ok = bound is None or lat is None or lat <= bound + 1e-9
    return _Choice(_f1(tp, ns, nr), lat, on_index, ok)


def _best(cnt: _Counts, sel: np.ndarray, bound: float | None, per_class: bool) -> _Choice:
    """The best on thresholds for one candidate (sel: [C, K] column ids), within the latency bound:
    the F1-optimal choice, else (if it is too late) the best single threshold that is within it."""
    tp, ns, nr = (x.sum(axis=0)[sel] for x in (cnt.tp, cnt.sys, cnt.ref))
    nr1 = nr[:, 0]
    first = _choose_per_class(tp, ns, nr1) if per_class else _choose_shared(tp, ns, nr1)
    ch = _evaluate_choice(cnt, sel, first, bound)
    if ch.feasible:
        return ch
    # too late: lower the thresholds, all to one value or those above it to it (the best within the bound)
    alts = [_evaluate_choice(cnt, sel, idx, bound) for k in range(sel.shape[1])
            for idx in (np.full(sel.shape[0], k, np.int64), np.minimum(first, k))]
    ok = [a for a in alts if a.feasible]
    return max(ok, key=lambda a: a.f1) if ok else ch


def _cv_f1(cnt: _Counts, sel: np.ndarray, folds: np.ndarray, per_class: bool) -> float:
    """Micro F1 of thresholds chosen on the other folds, counted on each held-out fold."""
    tp_all = ns_all = nr_all = 0
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        tp, ns, nr = (x[train].sum(axis=0)[sel] for x in (cnt.tp, cnt.sys, cnt.ref))
        choice = _choose_per_class(tp, ns, nr[:, 0]) if per_class else _choose_shared(tp, ns, nr[:, 0])
        cols = sel[np.arange(sel.shape[0]), choice]
        tp_all += cnt.tp[test][:, cols].sum()
        ns_all += cnt.sys[test][:, cols].sum()
        nr_all += cnt.ref[test][:, cols].sum()
    return _f1(tp_all, ns_all, nr_all)


def _grid(cfg: CalibrateConfig, name: str, hop: float) -> list:
    """The values of a shared parameter, without those that behave the same at this hop (durations
    count whole cells; medians and switches as given)."""
    values = list(getattr(cfg, name))
    if name in ("min_on", "min_off"):
        seen, out = set(), []
        for v in sorted(values):
            cells = max(1, math.ceil(v / hop - 1e-9))
            if cells not in seen:
                seen.add(cells)
                out.append(float(v))
        return out
    return values


# ----------------------------------------------------------------- the search
def _median_latency(cnt: _Counts, cols: Sequence[int]) -> float | None:
    lats = [x for j in cols for x in cnt.lat[j]]
    return float(np.percentile(lats, 50)) if lats else None


def _latency_bound(recordings, truth, C: int, hop: float, snippet_seconds: float,
                   config: CalibrateConfig) -> tuple[float | None, str]:
    """(the bound on the median onset latency the search keeps to, why it is not the configured one).

    The configured bound of the hop, unless no rule can keep it: when the bare rule's onsets come later
    than the bound at every on threshold of the grid (the model's probabilities rise too late), no
    candidate would be feasible and the search could change nothing (it compares feasible candidates
    only). The bound is then the bare rule's own median latency on the same clips: calibration may not
    delay onsets beyond what the checkpoint gives without it. A hop without a configured bound gets
    that bound too."""
    set_bound = config.latency_bound(hop)
    ons = (0.5,) + tuple(v for v in config.on if v != 0.5)
    cols = _columns([(m, 0, _Shared()) for m in range(3)], C, ons)
    cnt = _count(recordings, truth, cols, hop, snippet_seconds, config.collar)
    by_on = [[j for j, key in enumerate(cols.key) if key[3] == k] for k in range(len(ons))]
    bare = _median_latency(cnt, by_on[0])
    if set_bound is None:   # no target at this hop: no later than the bare rule on the same clips
        return bare, ""
    earliest = [lat for lat in (_median_latency(cnt, js) for js in by_on) if lat is not None]
    if bare is None or not earliest or min(earliest) <= set_bound + 1e-9:
        return set_bound, ""
    return max(set_bound, bare), (
        f"latency bound {set_bound:g} s cannot be kept: the bare rule's median onset latency is "
        f"{bare:g} s (at best {min(earliest):g} s with any one on threshold); bound {max(set_bound, bare):g} s, "
        f"the bare rule's own")


def calibrate(recordings: Sequence[Recording], classes: Sequence[str], *, hop: float, snippet_seconds: float = 1.0,
              config: CalibrateConfig = CalibrateConfig(), log: Callable[[str], None] | None = None) -> DecisionRules:
    """The decision rules for ``hop`` chosen on ``recordings`` (see the module docstring)."""
    if not recordings:
        raise ValueError("no validation clips to calibrate on")
    t_start = time.perf_counter()
    C, K = len(classes), len(config.on)
    log = log or (lambda s: None)
    truth = _truth_index(recordings, classes)
    if not any(truth):
        raise ValueError("the validation clips hold no true events: nothing to calibrate on")
    bound, bound_note = _latency_bound(recordings, truth, C, hop, snippet_seconds, config)
    if bound_note:
        log(f"hop {hop:g}: {bound_note}")
    state = [_Shared() for _ in MODALITIES]
    best: list[_Choice | None] = [None, None, None]
    history = []
    for rnd in range(config.rounds):
        changed = False
        for name in PARAMS:
            values = _grid(config, name, hop)
            specs = [(m, v, state[m].with_(name, val)) for m in range(3) for v, val in enumerate(values)]
            cols = _columns(specs, C, config.on)
            cnt = _count(recordings, truth, cols, hop, snippet_seconds, config.collar)
            base = {k: j for j, k in enumerate(cols.key)}
            for m in range(3):
                choices = []
                for v in range(len(values)):
                    sel = np.array([[base[(m, v, c, k)] for k in range(K)] for c in range(C)])
                    choices.append(_best(cnt, sel, bound, per_class=False))
                cur = values.index(getattr(state[m], name)) if getattr(state[m], name) in values else 0
                pick = cur
                for v, ch in enumerate(choices):
                    if ch.feasible and (not choices[pick].feasible or ch.f1 > choices[pick].f1 + 1e-9):
                        pick = v
                if pick != cur:
                    changed = True
                    state[m] = state[m].with_(name, values[pick])
                best[m] = choices[pick]
                history.append({"round": rnd, "param": name, "modality": MODALITIES[m], "value": values[pick],
                                "f1": round(float(choices[pick].f1), 4), "latency_p50": choices[pick].latency})
            log(f"hop {hop:g}: round {rnd + 1} {name}: " + ", ".join(
                f"{MODALITIES[m]} {getattr(state[m], name)} (F1 {best[m].f1:.3f})" for m in range(3)))
        if not changed:
            break
    # the on thresholds: one per modality, or one per class where cross-validation prefers it
    cols = _columns([(m, 0, state[m]) for m in range(3)], C, config.on)
    cnt = _count(recordings, truth, cols, hop, snippet_seconds, config.collar)
    base = {k: j for j, k in enumerate(cols.key)}
    folds = np.arange(len(recordings)) % config.folds
    rules, facts = [], {}
    for m in range(3):
        sel = np.array([[base[(m, 0, c, k)] for k in range(K)] for c in range(C)])
        cv = {"shared": _cv_f1(cnt, sel, folds, False), "per_class": _cv_f1(cnt, sel, folds, True)}
        per_class = config.per_class == "yes" or (config.per_class == "auto" and cv["per_class"] > cv["shared"] + 1e-9)
        ch = _best(cnt, sel, bound, per_class=per_class)
        on = tuple(float(config.on[k]) for k in ch.on_index)
        sh = state[m]
        rules.append(ModalityRule(on=on, off=tuple(round(v * sh.off_ratio, 6) for v in on), min_on=sh.min_on,
                                  min_off=sh.min_off, gate=sh.gate,
                                  gate_threshold=sh.gate_threshold, median=int(sh.median), switch=sh.switch))
        per_class = len(set(ch.on_index.tolist())) > 1   # what was chosen (the latency bound may level them)
        facts[MODALITIES[m]] = {"f1": round(float(ch.f1), 4), "latency_p50": ch.latency, "per_class": per_class,
                                "cv_f1": {k: round(v, 4) for k, v in cv.items()}}
        log(f"hop {hop:g}: {MODALITIES[m]}: {'per-class' if per_class else 'one'} on threshold "
            f"(two-fold CV F1 shared {cv['shared']:.3f}, per class {cv['per_class']:.3f}); validation F1 "
            f"{ch.f1:.3f}, onset latency p50 {ch.latency if ch.latency is None else round(ch.latency, 3)} s")
    info = {"search": facts, "latency_bound": None if bound is None else float(bound),
            "latency_bound_set": config.latency_bound(hop), "latency_bound_note": bound_note, "clips": len(recordings),
            "seconds": round(time.perf_counter() - t_start, 1), "history": history}
    return DecisionRules(hop=hop, classes=tuple(classes), audio=rules[0], visual=rules[1], audiovisual=rules[2],
                         info=info)


# ----------------------------------------------------------------- figures
def tracker_events(recordings: Sequence[Recording], classes: Sequence[str], tracker: TrackerConfig, *,
                   grid: SnippetGrid) -> dict:
    """file -> detected intervals of the real Tracker (cells on ``grid``) on the recorded predictions."""
    out = {}
    for rec in recordings:
        tr = Tracker(tracker, classes=classes, grid=grid)
        events = []
        for p in rec.probs:
            events += tr.push(p)
        events += tr.flush()
        out[rec.name] = detections(events)
    return out


def figures(recordings: Sequence[Recording], classes: Sequence[str], tracker: TrackerConfig, *,
            grid: SnippetGrid, collar: float = COLLAR) -> dict:
    """``eventscore.score_events`` of the real Tracker with ``tracker`` on the recorded predictions."""
    truth = {r.name: with_audiovisual(r.truth) for r in recordings}
    return score_events(truth, tracker_events(recordings, classes, tracker, grid=grid), classes,
                        seconds={r.name: r.seconds for r in recordings}, collar=collar)
