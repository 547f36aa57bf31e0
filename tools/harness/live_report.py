"""`avparse bench live`, part 3: the report: ratios to the baseline, the targets' verdicts, the
capacity summary, ``results.md`` (and, with ``--report``, everything again from ``results.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from avparse.tools.common import UserError

from .live_summary import MAX_LAG_SLOPE, PARTS, realtime_verdict
from .report import write_results

TARGETS = {"onset_p50_hop1": 1.2, "onset_p50_hop0.25": 0.75, "lite_compute_per_snippet": 0.150,
           "soak_minutes": 10.0}


def fmt(x, unit="s", nd=2):
    if x is None:
        return "n/a"
    return f"{x:.{nd}f}{(' ' + unit) if unit else ''}"


def one_line(s: dict) -> str:
    ev = s.get("event_latency", {}).get("onset", {})
    gt = s.get("latency", {}).get("onset", {})
    st = s["stream"]
    parts = [f"onset(truth) p50 {fmt(gt.get('p50'))} (n={gt.get('n', 0)})",
             f"onset(events) p50 {fmt(ev.get('p50'))}",
             f"compute {s['compute']['total_ms_per_snippet']:.0f} ms/snippet",
             f"RTF {fmt(s['rtf']['compute_per_stream'], '')}",
             f"events {st['received']}/{st['emitted']} {'in order, no gap' if st['nothing_lost'] else 'LOST/GAP'}"]
    if "realtime" in s:
        parts.append(("real time" if s["realtime"] else "NOT real time") + f" ({s['realtime_why']})")
    return "; ".join(parts)


def capacity_summary(runs: list[dict], prompt_lag: float) -> dict:
    """Largest K that kept up (and that kept up promptly) among the sweep's runs."""
    runs = sorted(runs, key=lambda r: r["streams"])
    ok = [r["streams"] for r in runs if r.get("realtime")]
    best = max(ok) if ok else 0
    prompt = [r["streams"] for r in runs if r.get("realtime") and
              ((r.get("lag") or {}).get("decision") or {}).get("p95", 1e9) <= prompt_lag]
    rtf = [r["rtf"]["compute_per_stream"] for r in runs if r["rtf"]["compute_per_stream"]]
    return {"runs": runs, "max_realtime_streams": best, "max_prompt_streams": max(prompt) if prompt else 0,
            "prompt_lag": prompt_lag,
            "swept": [r["streams"] for r in runs],
            "estimate_from_rtf": (int(1.0 / min(rtf)) if rtf and min(rtf) > 0 else None),
            "criterion": "the decision lag (end of a snippet's evidence -> its prediction at the tracker) does "
                         "not grow: its least-squares slope over media time, after the first 20% of the run, is "
                         f"<= {MAX_LAG_SLOPE:g} s per s ({60 * MAX_LAG_SLOPE:.1f} s per minute), and the run ends "
                         "within 1.5 x its media time + 20 s"}


def ratios(e2e: dict) -> dict:
    base = e2e.get("baseline")
    if not base:
        return {}

    def r(a, b):
        return (a / b) if (a is not None and b not in (None, 0)) else None

    def g(s, *path):
        for p in path:
            s = s.get(p) if isinstance(s, dict) else None
        return s

    out = {}
    for name, s in e2e.items():
        out[name] = {
            "onset_truth_p50": r(g(s, "latency", "onset", "p50"), g(base, "latency", "onset", "p50")),
            "onset_events_p50": r(g(s, "event_latency", "onset", "p50"), g(base, "event_latency", "onset", "p50")),
            "events_p95": r(g(s, "event_latency", "all", "p95"), g(base, "event_latency", "all", "p95")),
            "compute_per_snippet": r(g(s, "compute", "total_ms_per_snippet"), g(base, "compute", "total_ms_per_snippet")),
            "compute_per_media_second": r(g(s, "rtf", "compute_per_stream"), g(base, "rtf", "compute_per_stream")),
        }
    return out


def targets(res: dict) -> list[dict]:
    e2e = res.get("e2e", {})
    rows = []

    def onset_row(name, key, limit):
        s = e2e.get(name)
        if not s:
            rows.append({"target": key, "limit": limit, "measured": None, "verdict": "not run"})
            return
        gt = s["latency"]["onset"]
        ev = s["event_latency"]["onset"]
        if gt.get("n", 0) >= 3 and not res.get("model", "").startswith("RANDOM"):
            m, how = gt["p50"], f"ground-truth onsets (n={gt['n']})"
        else:
            why = "random model: its matches with the truth are chance" if res.get("model", "").startswith("RANDOM") \
                else "fewer than 3 true onsets matched"
            m, how = ev.get("p50"), f"{why}; every published onset against its own media time (n={ev.get('n', 0)})"
        rows.append({"target": key, "limit": limit, "measured": m, "how": how,
                     "verdict": "n/a" if m is None else ("met" if m <= limit else "MISSED")})

    onset_row("baseline", "onset latency p50, hop 1 s (s)", TARGETS["onset_p50_hop1"])
    onset_row("hop0.25", "onset latency p50, hop 0.25 s (s)", TARGETS["onset_p50_hop0.25"])
    ex = [r for r in res.get("stages", {}).get("extraction", [])
          if r.get("profile") == "lite" and r.get("backend") == "eager" and r.get("batch") == 1]
    han = [r for r in res.get("stages", {}).get("han", []) if r["batch"] == 1]
    if ex:
        m = ex[0]["ms_per_snippet"]["p50"] / 1000 + (han[0]["ms_per_window"]["p50"] / 1000 if han else 0.0)
        rows.append({"target": "lite compute per 1 s snippet, batch 1, eager (s): extraction + HAN window",
                     "limit": TARGETS["lite_compute_per_snippet"], "measured": m,
                     "verdict": "met" if m <= TARGETS["lite_compute_per_snippet"] else "MISSED"})
    sk = res.get("soak")
    if sk:
        st = sk["stream"]
        enough = sk["scene_minutes"] >= TARGETS["soak_minutes"] - 1e-9
        rows.append({"target": f"nothing lost over >= {TARGETS['soak_minutes']:g} min of scene time",
                     "limit": TARGETS["soak_minutes"], "measured": sk["scene_minutes"],
                     "how": f"{st['received']}/{st['emitted']} events, {st['seq_gaps']} seq gaps, "
                            f"identical and in order: {st['identical_in_order']}",
                     "verdict": ("met" if st["nothing_lost"] else "MISSED") if enough else
                                ("no loss (run shorter than the target)" if st["nothing_lost"] else "MISSED")})
    return rows


def sp(d: dict | None, key="p50", unit="", scale=1.0, nd=2) -> str:
    if not d or not d.get("n"):
        return "n/a"
    return f"{d[key] * scale:.{nd}f}{unit}"


def spread_cell(d: dict | None, nd=1) -> str:
    if not d or not d.get("n"):
        return "n/a"
    return f"{d['p50']:.{nd}f} [{d['p10']:.{nd}f}-{d['p90']:.{nd}f}]"


def markdown(res: dict) -> str:
    m = res["machine"]
    L = [f"# avparse bench live: {m['date']}", "",
         f"Machine: {m['cores']} cores, {m['cpu']}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
         + f"; torch {m['torch']} ({m['threads']} threads); device {res['config']['device']}; "
         f"load average at start {m['load']} and end {res.get('load_end')} (1/5/15 min).",
         f"Model: {res['model']}; profile {res['profile']}.", ""]
    st = res.get("stages")
    if st:
        L += ["## Stages alone (after warm-up; median [p10-p90])", "",
              "| stage | figure | median [p10-p90] |", "|---|---|---|"]
        c = st["capture"]
        L.append(f"| capture | render a generated scene ({c['scene']}), ms per media second | "
                 f"{spread_cell(c['render_ms_per_media_second'])} |")
        for k, v in c.items():
            if k.startswith("assembler_ms_per_snippet"):
                L.append(f"| capture -> snippet | assembler, ms per snippet, hop {k.rsplit('hop', 1)[1]} s | "
                         f"{spread_cell(v, 2)} |")
        for r in st["extraction"]:
            if "error" in r:
                L.append(f"| extraction | {r['profile']} / {r['backend']} | not run: {r['error']} |")
            else:
                L.append(f"| extraction | {r['profile']} / {r['backend']}, batch {r['batch']}, ms per snippet | "
                         f"{spread_cell(r['ms_per_snippet'])} |")
        for r in st["han"]:
            L.append(f"| HAN | batch {r['batch']} windows of T={r['T']}, ms per window | {spread_cell(r['ms_per_window'], 2)} |")
        L.append(f"| tracking | {st['tracker']['note']}, ms per prediction | "
                 f"{spread_cell(st['tracker']['ms_per_prediction'], 3)} |")
        pb = st["publish"]
        L.append(f"| publishing | emit(), ms per event | {spread_cell(pb['emit_ms'], 3)} |")
        L.append(f"| publishing | emit -> receipt at a subscriber ({pb['subscriber']}), ms "
                 f"(p99 {sp(pb['transport_ms'], 'p99', nd=2)}) | {spread_cell(pb['transport_ms'], 2)} |")
        L.append("")
    e2e = res.get("e2e")
    if e2e:
        any_s = next(iter(e2e.values()))
        L += [f"## End to end: {any_s['streams']} stream(s) x {any_s['seconds']} s of generated scene, paced at "
              f"{any_s['speed']:g}x real time, subscriber in another process", "",
              "Latency: from the moment an onset/offset happened in the media to its message at the subscriber "
              f"(seconds). Truth: ground-truth marks matched within {res['config']['tolerance']:g} s; "
              "events: every published onset/offset against its own media time. Neither counts onsets at media "
              "time 0 (under way when the stream starts)."
              + (" The model has random weights: matches with the truth are chance, and so are their latencies "
                 "(one can be negative: an event decided before a true onset within the tolerance)."
                 if res.get("model", "").startswith("RANDOM") else ""), "",
              "| config | onset p50 / p95 / p99 (truth) | offset p50 / p95 / p99 (truth) | matched / missed / spurious "
              "| onset p50 / p95 (events) | compute ms per snippet | compute s per media s per stream | real time | "
              "nothing lost |", "|---|---|---|---|---|---|---|---|---|"]
        for name, s in e2e.items():
            lat, ev, t = s["latency"], s["event_latency"], s["truth"]
            L.append(f"| {name} ({s['describe']}) | {sp(lat['onset'])} / {sp(lat['onset'], 'p95')} / "
                     f"{sp(lat['onset'], 'p99')} (n={lat['onset'].get('n', 0)}) | {sp(lat['offset'])} / "
                     f"{sp(lat['offset'], 'p95')} / {sp(lat['offset'], 'p99')} | {t['matched']} / {t['missed']} / "
                     f"{t['spurious']} | {sp(ev['onset'])} / {sp(ev['onset'], 'p95')} (n={ev['onset'].get('n', 0)}) | "
                     f"{s['compute']['total_ms_per_snippet']:.1f} | {fmt(s['rtf']['compute_per_stream'], '', 3)} | "
                     f"{'yes' if s.get('realtime') else 'no'} ({s.get('realtime_why', '')}) | "
                     f"{'yes' if s['stream']['nothing_lost'] else 'NO'} ({s['stream']['received']}/"
                     f"{s['stream']['emitted']}) |")
        L += ["", "### Where the time goes", "",
              "Mean seconds per event, from the moment it happened in the media to its receipt "
              "(evidence: waiting for the snippets that decide it; capture: end of that evidence -> snippet "
              "at the inference stage; batch wait; extraction; HAN; tracking + publishing; transport), "
              "and compute per snippet by stage (ms).", "",
              "| config | " + " | ".join(PARTS) + " | sum | assembler | extraction | HAN | tracking | publishing |",
              "|---|" + "---|" * (len(PARTS) + 6)]
        for name, s in e2e.items():
            lp, w = s.get("latency_parts", {}), s["compute"]["where_ms_per_snippet"]
            tot = sum(v for v in lp.values() if v is not None) if lp else None
            L.append(f"| {name} | " + " | ".join(fmt(lp.get(k), "", 3) for k in PARTS) + f" | {fmt(tot, '', 3)} | "
                     + " | ".join(f"{w[k]:.1f}" for k in ("assembler", "extraction", "HAN", "tracking", "publishing"))
                     + " |")
        L += ["", "### Stages inside the live runs (median [p10-p90])", "",
              "| config | capture -> snippet ready (s) | snippet ready -> prediction (s) | extraction ms per snippet "
              "(mean batch) | HAN ms per window | tracking ms per prediction | emit ms per event | emit -> receipt "
              "ms (p99) |", "|---|---|---|---|---|---|---|---|"]
        for name, s in e2e.items():
            c, sn, tr = s["compute"], s.get("snippets", {}), s["stream"].get("transport")
            L.append(f"| {name} | {spread_cell(sn.get('capture_to_ready'), 3)} | "
                     f"{spread_cell(sn.get('ready_to_prediction'), 3)} | {spread_cell(c['extract_ms_per_snippet'])} "
                     f"({c['mean_batch']:.1f}) | {spread_cell(c['han_ms_per_window'], 2)} | "
                     f"{spread_cell(c['tracker_ms_per_prediction'], 3)} | {spread_cell(c['publish_ms_per_event'], 3)} | "
                     f"{sp(tr, scale=1000)} ({sp(tr, 'p99', scale=1000)}) |")
        rt = res.get("ratios", {})
        if rt:
            L += ["", "### Ratios to the baseline (option / baseline)", "",
                  "| config | onset p50 (truth) | onset p50 (events) | events p95 | compute per snippet | "
                  "compute per media second |", "|---|---|---|---|---|---|"]
            for name, r in rt.items():
                L.append(f"| {name} | " + " | ".join(fmt(r[k], "", 2) for k in (
                    "onset_truth_p50", "onset_events_p50", "events_p95", "compute_per_snippet",
                    "compute_per_media_second")) + " |")
        L.append("")
    cap = res.get("capacity")
    if cap:
        L += ["## Capacity (baseline configuration)", "",
              f"Largest number of real-time streams: **{cap['max_realtime_streams']}** (swept K = "
              f"{', '.join(map(str, cap['swept']))}); of those, with p95 decision lag <= {cap.get('prompt_lag', 1.0):g} s: "
              f"**{cap.get('max_prompt_streams', 'n/a')}**; estimate from the best compute RTF (1 / compute s per media s): "
              f"{cap['estimate_from_rtf']}. Criterion: {cap['criterion']}.", "",
              "| K | compute s per media s per stream | CPU s per media s per stream (all threads) | decision lag p50 / "
              "p95 (s) | lag slope (s/s) | onset p50 (events) | real time |", "|---|---|---|---|---|---|---|"]
        for s in cap["runs"]:
            lag = s.get("lag", {})
            L.append(f"| {s['streams']} | {fmt(s['rtf']['compute_per_stream'], '', 3)} | "
                     f"{fmt(s['rtf']['cpu_per_stream'], '', 3)} | {sp(lag.get('decision'))} / "
                     f"{sp(lag.get('decision'), 'p95')} | {fmt(lag.get('slope'), '', 3)} | "
                     f"{sp(s['event_latency']['onset'])} | {'yes' if s.get('realtime') else 'no'} "
                     f"({s.get('realtime_why', '')}) |")
        L.append("")
    sk = res.get("soak")
    if sk:
        st2 = sk["stream"]
        pace = f"paced at {sk['speed']:g}x real time" if sk["speed"] > 0 else "as fast as the pipeline goes"
        L += ["## Nothing lost (soak)", "",
              f"{sk['streams']} scenes x {sk['seconds']} s = {sk['scene_minutes']:.1f} min of scene time, {pace}, "
              f"in {sk['wall_seconds']:.0f} s wall ({sk['scene_minutes'] * 60 / sk['wall_seconds']:.2f}x real time "
              f"over all streams): {st2['emitted']} events emitted, "
              f"{st2['received']} received, identical and in order: {st2['identical_in_order']}, seq gaps: "
              f"{st2['seq_gaps']}, restarts: {st2['restarts']}, last seq {st2['last_seq_received']} of "
              f"{st2['final_seq']}; emit -> receipt p50 {sp(st2.get('transport'), scale=1000)} ms, p99 "
              f"{sp(st2.get('transport'), 'p99', scale=1000)} ms; nothing lost: "
              f"**{'yes' if st2['nothing_lost'] else 'NO'}**.", ""]
    tg = res.get("targets")
    if tg:
        L += ["## Targets", "", "| target | limit | measured | verdict |", "|---|---|---|---|"]
        for t in tg:
            L.append(f"| {t['target']} | {t['limit']} | {fmt(t['measured'], '', 3)}"
                     + (f" ({t['how']})" if t.get("how") else "") + f" | {t['verdict']} |")
        L.append("")
    if res.get("plots"):
        L += ["Plots: " + ", ".join(f"`{Path(p).name}`" for p in res["plots"]), ""]
    return "\n".join(L)


def report(folder: Path, plots: bool = True) -> None:
    """results.md and the plots from an earlier run's results.json."""
    path = folder / "results.json"
    try:
        res = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; pass --report with the --out folder of an earlier run") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the results: {e}") from None
    # the verdicts again, from the stored lag figures (the criterion may have changed since)
    runs = [s for s in (res.get("e2e") or {}).values()] + list((res.get("capacity") or {}).get("runs", []))
    for s in runs:
        if s.get("speed", 0) > 0 and s.get("lag"):
            s["realtime"], s["realtime_why"] = realtime_verdict(s)
    if res.get("capacity"):
        res["capacity"] = capacity_summary(res["capacity"]["runs"], res["capacity"].get("prompt_lag", 1.0))
    res["targets"] = targets(res)
    if plots:
        from .plots import write_plots

        res["plots"] = [str(p) for p in write_plots(res, folder)]
    write_results(folder, res, markdown(res))
    print(f"wrote {folder / 'results.md'}" + (f" and {len(res['plots'])} plots" if plots else ""))
