"""The figures of one end-to-end run of `avparse bench live` (records from ``live_e2e.run_live``).

The summary maps every ground-truth onset/offset to wall time
(``origin + t / speed``) and measures how late its message arrived, splits
every event's latency into its parts (evidence, capture, batch wait,
extraction, HAN, tracking + publishing, transport), and checks the stream:
every event that was emitted was received, in order, with no gap in ``seq``.
"""

from __future__ import annotations

import bisect

from .live_e2e import LiveOption, Probes, RunSpec
from .timing import slope, spread


def _merge(intervals):
    out = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1e-9:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [tuple(x) for x in out]


def truth_marks(truth, duration: float) -> list[tuple]:
    """Ground-truth (label, modality, kind, time) of one stream: audio and visual intervals as
    given, audio-visual where both hold. Offsets at the scene's end are not marks (the stream's
    end closes them)."""
    by = {}
    for e in truth:
        by.setdefault((e.label, e.modality), []).append((float(e.onset), float(e.offset)))
    by = {k: _merge(v) for k, v in by.items()}
    labels = {k[0] for k in by}
    for lab in labels:
        a, v = by.get((lab, "audio"), []), by.get((lab, "visual"), [])
        both = [(max(x0, y0), min(x1, y1)) for x0, x1 in a for y0, y1 in v if min(x1, y1) > max(x0, y0)]
        if both:
            by[(lab, "audiovisual")] = _merge(both)
    marks = []
    for (lab, mod), ivs in by.items():
        for a, b in ivs:
            if a < duration - 1e-9:
                marks.append((lab, mod, "onset", a))
            if b < duration - 1e-9:
                marks.append((lab, mod, "offset", b))
    return sorted(marks, key=lambda m: (m[3], m[0], m[1], m[2]))


def match(marks, events, tolerance: float):
    """Greedy one-to-one matching of truth marks to events of the same label, modality and kind,
    closest media times first, within ``tolerance`` seconds. ``events``: (label, modality, kind,
    media_time, payload). Returns (pairs [(mark, event)], unmatched marks, unmatched events)."""
    cand = []
    for i, m in enumerate(marks):
        for j, e in enumerate(events):
            if m[0] == e[0] and m[1] == e[1] and m[2] == e[2]:
                d = abs(m[3] - e[3])
                if d <= tolerance + 1e-9:
                    cand.append((d, i, j))
    cand.sort()
    used_m, used_e, pairs = set(), set(), []
    for _, i, j in cand:
        if i not in used_m and j not in used_e:
            used_m.add(i)
            used_e.add(j)
            pairs.append((marks[i], events[j]))
    return (pairs, [m for i, m in enumerate(marks) if i not in used_m],
            [e for j, e in enumerate(events) if j not in used_e])


def _event_key(d: dict) -> tuple:
    return (d["type"], d["stream"], d["class"], d["modality"], round(float(d["media_time"]), 6))


PARTS = ("evidence", "capture", "batch wait", "extraction", "HAN", "tracking + publishing", "transport")


def summarize(raw: dict, *, tolerance: float = 1.0) -> dict:
    """Figures of one run (seconds unless the key says ms)."""
    p: Probes = raw["probes"]
    spec: RunSpec = raw["spec"]
    opt: LiveOption = raw["option"]
    S = raw["snippet_seconds"]
    fast = spec.speed <= 0
    speed = spec.speed if not fast else 1.0
    rec = raw["received"]

    # -- the stream: every emitted event received, in order, no seq gap
    emitted = [(e.to_dict(), t, cost, pi) for e, t, cost, pi in p.emitted]
    got = [r for r in rec["records"] if not r[2]]  # from_snapshot ones are not new messages
    em_keys = [_event_key(d) for d, *_ in emitted]
    rx_keys = [_event_key(r[3]) for r in got]
    seqs = [r[1] for r in got]
    stream = {
        "emitted": len(emitted), "received": len(got), "published": raw["publisher"].get("events", 0),
        "identical_in_order": em_keys == rx_keys,
        "seq_increasing": all(b > a for a, b in zip(seqs, seqs[1:])),
        "seq_gaps": len(rec["gaps"]), "gap_notes": rec["gaps"][:5], "restarts": len(rec["restarts"]),
        "malformed": rec["counters"].get("malformed", 0), "final_seq": raw["final_seq"],
        "last_seq_received": rec["last_seq"], "send_dropped": raw["publisher"].get("send_dropped", 0),
        "from_snapshot": sum(1 for r in rec["records"] if r[2]),
    }
    stream["nothing_lost"] = (stream["identical_in_order"] and stream["seq_gaps"] == 0
                              and stream["last_seq_received"] >= stream["final_seq"] and stream["restarts"] == 0)
    # received time of each emitted event (k-th occurrence of a key <-> k-th occurrence)
    rx_times: dict = {}
    for r, k in zip(got, rx_keys):
        rx_times.setdefault(k, []).append(r[0])
    seen: dict = {}
    recv_of = []
    for k in em_keys:
        i = seen.get(k, 0)
        seen[k] = i + 1
        lst = rx_times.get(k, [])
        recv_of.append(lst[i] if i < len(lst) else None)

    stream["transport"] = spread([r - t for (_, t, _, _), r in zip(emitted, recv_of) if r is not None])
    out = {"option": opt.name, "describe": opt.describe(), "backend": opt.backend, "hop": opt.hop,
           "lookahead": opt.lookahead, "streams": spec.streams, "seconds": spec.seconds, "speed": spec.speed,
           "wall_seconds": raw["wall"], "stopped_early": raw["stopped_early"], "stream": stream}

    # -- compute per stage (seconds of the loop thread)
    st = raw["stats"]
    n_snip = max(1, st.get("snippets", 0))
    ext_per = [(b - a) / n for a, b, n in p.extract_calls if n]
    han_per = [(b - a) / max(1, B) for a, b, B, T in p.han_calls]
    trk = [b - a for *_, a, b in p.predictions]
    pub_cost = [c for _, _, c, _ in p.emitted]
    asm_s = st["stages"]["assembler"]["seconds"]
    compute = {
        "assembler_ms_per_snippet": 1000 * asm_s / n_snip,
        "extract_ms_per_snippet": spread(ext_per, 1000),
        "han_ms_per_window": spread(han_per, 1000),
        "tracker_ms_per_prediction": spread(trk, 1000),
        "publish_ms_per_event": spread(pub_cost, 1000),
        "mean_batch": (sum(n for *_, n in p.extract_calls) / len(p.extract_calls)) if p.extract_calls else 0.0,
    }
    ext_total = sum(b - a for a, b, _ in p.extract_calls)
    han_total = sum(b - a for a, b, _, _ in p.han_calls)
    total = asm_s + ext_total + han_total + sum(trk) + sum(pub_cost)
    compute["total_ms_per_snippet"] = 1000 * total / n_snip
    compute["where_ms_per_snippet"] = {
        "assembler": 1000 * asm_s / n_snip, "extraction": 1000 * ext_total / n_snip,
        "HAN": 1000 * han_total / n_snip, "tracking": 1000 * sum(trk) / n_snip,
        "publishing": 1000 * sum(pub_cost) / n_snip}
    media = sum(raw["duration"].values())
    out["compute"] = compute
    out["rtf"] = {"compute_per_stream": total / media if media else None,
                  "cpu_per_stream": raw["cpu"] / media if media else None,
                  "snippets_per_media_second": n_snip / media if media else None}
    out["counts"] = {"snippets": st.get("snippets", 0), "predictions": len(p.predictions), "events": len(emitted),
                     "extractor_calls": len(p.extract_calls), "han_calls": len(p.han_calls),
                     "late_frames": st.get("drops", {}).get("late_frames"),
                     "missing_frames": st.get("drops", {}).get("missing_frames"),
                     "queue_max_depth": st.get("queue", {}).get("max_depth")}
    if fast:
        return out

    origin = p.origin

    def wall_of(stream_name, t):
        o = origin.get(stream_name)
        return None if o is None else o + t / speed

    # -- snippets: capture -> ready, and lag of predictions behind real time
    ready = {}
    cap = []
    for s, idx, t0, tr in p.snippets:
        ready[(s, idx)] = tr
        w = wall_of(s, t0 + S)
        if w is not None:
            cap.append(tr - w)
    lag_t, lag = [], []
    for s, idx, t0, dec, a, b in p.predictions:
        w = wall_of(s, dec)
        if w is not None:
            lag_t.append(dec)
            lag.append(a - w)
    pred_lag = []
    for s, idx, t0, dec, a, b in p.predictions:
        r = ready.get((s, idx))
        if r is not None:
            pred_lag.append(a - r)
    out["snippets"] = {"capture_to_ready": spread(cap), "ready_to_prediction": spread(pred_lag)}
    # how far behind real time the decisions fall, and whether that grows
    skip = 0.2 * spec.seconds
    tail = [(t, y) for t, y in zip(lag_t, lag) if t >= skip]
    q = [(t, y) for t, y in zip(lag_t, lag) if t >= 0.75 * spec.seconds]
    out["lag"] = {"decision": spread(lag),
                  "slope": slope([t for t, _ in tail], [y for _, y in tail]) * speed,
                  "last_quarter_max": max((y for _, y in q), default=None)}

    # -- every event: latency and its parts
    starts = [a for a, _, _ in p.extract_calls]
    ev_lat = {"onset": [], "offset": []}
    parts = {k: [] for k in PARTS}
    rx_events = []
    at_start = 0
    for (d, t_emit, cost, pi), t_rx in zip(emitted, recv_of):
        if t_rx is None:
            continue
        w = wall_of(d["stream"], d["media_time"])
        closing = d["type"] == "offset" and d.get("reason") != "ended"
        if not closing:
            rx_events.append((d["class"], d["modality"], d["type"], d["media_time"], (t_rx, d)))
        if w is None or closing:
            continue
        if d["media_time"] <= 1e-9:  # on from the stream's start: it did not happen during the stream
            at_start += 1
            continue
        ev_lat[d["type"]].append(t_rx - w)
        if pi is None:
            continue
        s, idx, t0, dec, a, b = p.predictions[pi]
        w_dec = wall_of(s, dec)
        snip_idx = next((k for k in (int(round((dec - S) / opt.hop)),) if (s, k) in ready), None)
        if snip_idx is None:
            continue
        r = ready[(s, snip_idx)]
        k = bisect.bisect_left(starts, r)
        if k >= len(p.extract_calls):
            continue
        e0, e1, _ = p.extract_calls[k]
        vals = ((dec - d["media_time"]) / speed, r - w_dec, e0 - r, e1 - e0, a - e1, t_emit - a, t_rx - t_emit)
        if min(vals) < -0.05:  # a link that does not hold (should not happen): keep it out
            continue
        for name, v in zip(PARTS, vals):
            parts[name].append(v)
    out["event_latency"] = {k: spread(v) for k, v in ev_lat.items()}
    out["event_latency"]["all"] = spread(ev_lat["onset"] + ev_lat["offset"])
    out["event_latency"]["at_stream_start"] = at_start
    out["latency_parts"] = {k: (sum(v) / len(v) if v else None) for k, v in parts.items()}
    out["latency_parts_n"] = len(parts["evidence"])

    # -- against the ground truth
    gt_lat = {"onset": [], "offset": []}
    by_mod: dict = {}
    n_marks = n_missed = n_spur = 0
    for name, truth in raw["truth"].items():
        marks = truth_marks(truth, raw["duration"][name])
        evs = [e for e in rx_events if e[4][1]["stream"] == name]
        pairs, missed, spurious = match(marks, evs, tolerance)
        n_marks += len(marks)
        n_missed += len(missed)
        n_spur += len(spurious)
        for m, e in pairs:
            w = wall_of(name, m[3])
            if w is not None and m[3] > 1e-9:  # not timed: true events under way when the stream starts
                gt_lat[m[2]].append(e[4][0] - w)
        for m in marks:
            by_mod.setdefault(m[1], {"truth": 0, "matched": 0, "spurious": 0})["truth"] += 1
        for m, _ in pairs:
            by_mod[m[1]]["matched"] += 1
        for e in spurious:
            by_mod.setdefault(e[1], {"truth": 0, "matched": 0, "spurious": 0})["spurious"] += 1
    out["truth"] = {"marks": n_marks, "matched": n_marks - n_missed, "missed": n_missed, "spurious": n_spur,
                    "tolerance": tolerance, "by_modality": by_mod,
                    "classes_known": sorted({m.label for t in raw["truth"].values() for m in t}
                                            - set(raw["classes"]))}
    out["latency"] = {k: spread(v) for k, v in gt_lat.items()}
    out["latency"]["all"] = spread(gt_lat["onset"] + gt_lat["offset"])
    out["latency_samples"] = {"onset": gt_lat["onset"], "offset": gt_lat["offset"],
                              "events": ev_lat["onset"] + ev_lat["offset"]}
    return out


MAX_LAG_SLOPE = 0.01  # s of decision lag gained per s of media: above it a run does not keep up


def realtime_verdict(s: dict, *, max_slope: float = MAX_LAG_SLOPE) -> tuple[bool, str]:
    """Whether a run kept up: the decision lag (end of a snippet's evidence -> its prediction
    at the tracker) did not grow over the run (least-squares slope over media time, after the
    first 20%, <= ``max_slope`` s per s) and the run was not stopped at its time limit."""
    lag = s.get("lag")
    if not lag or lag.get("last_quarter_max") is None:
        return False, "no predictions"
    if s.get("stopped_early"):
        return False, "stopped at the time limit"
    worst = f"worst lag in the last quarter {lag['last_quarter_max']:.2f} s"
    if lag["slope"] > max_slope:
        return False, f"lag grows {lag['slope']:.3f} s per s; {worst}"
    return True, f"lag slope {lag['slope']:+.3f} s/s; {worst}"
