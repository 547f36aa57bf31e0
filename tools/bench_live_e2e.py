"""End-to-end measurement harness of `avparse bench live`.

One *run* is the real live runtime (``stream.pipeline.Runtime``) on K generated
scenes, paced in real time (or ``speed`` times real time) by their
``SceneSource``s, publishing through the real ``Publisher`` (ZeroMQ XPUB on
loopback), with a real ``Subscriber`` in a separate process (spawned, so it
shares no GIL with the runtime) stamping every message as it arrives.

Probes record, on ``time.monotonic`` (one clock for every process of the
machine), without changing what the stages do:

- each source's media origin: the moment its media time 0 was due, from the
  pacing (every chunk carries ``wall_time``; ``wall_time - t / speed`` is the
  pacer's start plus any delay, so its minimum over the stream is the origin);
- each snippet when it reaches the inference stage (ready), each extractor and
  HAN call (start, end, size), each prediction when it reaches the tracker and
  the events it produced, each event when it is handed to the publisher, and
  each message when the subscriber receives it.

The summary maps every ground-truth onset/offset to wall time
(``origin + t / speed``) and measures how late its message arrived, splits
every event's latency into its parts (evidence, capture, batch wait,
extraction, HAN, tracking + publishing, transport), and checks the stream:
every event that was emitted was received, in order, with no gap in ``seq``.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass, field

# ----------------------------------------------------------------- statistics


def spread(xs, scale: float = 1.0) -> dict:
    """n, mean, p10, p50, p90, p95, p99, min, max of ``xs`` (times ``scale``); empty -> n 0."""
    v = sorted(float(x) * scale for x in xs if x is not None and math.isfinite(x))
    if not v:
        return {"n": 0}

    def q(p):
        if len(v) == 1:
            return v[0]
        k = p * (len(v) - 1)
        lo = int(math.floor(k))
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (k - lo)

    return {"n": len(v), "mean": sum(v) / len(v), "p10": q(0.10), "p50": q(0.50), "p90": q(0.90),
            "p95": q(0.95), "p99": q(0.99), "min": v[0], "max": v[-1]}


def slope(xs, ys) -> float:
    """Least-squares slope of ys over xs (0.0 with fewer than 3 points)."""
    n = len(xs)
    if n < 3:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


# ----------------------------------------------------------------- set-up


@dataclass(frozen=True)
class LiveOption:
    """One configuration of the live runtime to measure."""

    name: str                 # label in the tables and plots
    backend: str = "eager"    # extractor backend
    hop: float = 1.0          # seconds between snippets
    lookahead: int = 0        # 1 s steps of future context

    def describe(self) -> str:
        return f"{self.backend}, hop {self.hop:g} s, lookahead {self.lookahead}"


@dataclass(frozen=True)
class RunSpec:
    """What one end-to-end run does."""

    streams: int = 1            # K generated scenes, one stream each
    seconds: int = 30           # scene length (media seconds per stream)
    speed: float = 1.0          # pacing: media seconds per wall second (0: as fast as possible, no latency figures)
    seed: int = 0               # scene k of the run is make_scene((seed, k))
    max_batch: int = 16         # snippets per extractor call at most
    window: int = 10            # snippets per HAN window
    time_limit: float | None = None  # stop the runtime after this many wall seconds (None: 1.5 x media + 20 s
                                     # when paced, no limit when as fast as possible; 0: no limit)
    subscriber: str = "process"  # "process" (spawned, no shared GIL) or "thread"


@dataclass
class Probes:
    origin: dict = field(default_factory=dict)       # stream -> monotonic time of media time 0
    snippets: list = field(default_factory=list)     # (stream, index, t0, ready)
    extract_calls: list = field(default_factory=list)  # (start, end, n)
    han_calls: list = field(default_factory=list)    # (start, end, batch, T)
    predictions: list = field(default_factory=list)  # (stream, index, t0, decided_at, start, end)
    event_pred: dict = field(default_factory=dict)   # id(event) -> index into predictions
    emitted: list = field(default_factory=list)      # (event, emit time, emit cost s, prediction index or None)


class _OriginSource:
    """A source passed through unchanged, noting its media origin on the monotonic clock."""

    def __init__(self, source, probes: Probes, speed: float):
        self.src = source
        self.name = source.name
        self.kinds = getattr(source, "kinds", None)
        self._p = probes
        self._speed = speed if speed > 0 else 1.0

    def open(self):
        self.src.open()

    def close(self):
        self.src.close()

    def read(self):
        from avparse.stream.types import EndOfStream

        best = math.inf
        for c in self.src.read():
            if not isinstance(c, EndOfStream):
                o = c.wall_time - c.t / self._speed
                if o < best:
                    best = o
                    self._p.origin[self.name] = o
            yield c


class _TimedExtractor:
    def __init__(self, ext, probes: Probes):
        self.ext, self._p = ext, probes
        self.profile = getattr(ext, "profile", None)

    def __call__(self, audio, frames):
        t = time.monotonic()
        out = self.ext(audio, frames)
        self._p.extract_calls.append((t, time.monotonic(), len(audio)))
        return out


class _TimedModel:
    def __init__(self, model, probes: Probes):
        self.model, self._p = model, probes
        self.config = getattr(model, "config", None)

    def parameters(self):
        return self.model.parameters()

    def __call__(self, audio, v2d, v3d):
        t = time.monotonic()
        out = self.model(audio, v2d, v3d)
        self._p.han_calls.append((t, time.monotonic(), int(audio.shape[0]), int(audio.shape[1])))
        return out


class _TimedPublisher:
    """Sink in front of the Publisher: stamps each event when it is handed over, and the cost of emit()."""

    def __init__(self, publisher, probes: Probes):
        self.pub, self._p = publisher, probes

    def emit(self, event):
        t = time.monotonic()
        self.pub.emit(event)
        t2 = time.monotonic()
        self._p.emitted.append((event, t, t2 - t, self._p.event_pred.get(id(event))))

    def stats(self, d):
        self.pub.stats(d)


def _probe_pipeline(pipe, probes: Probes) -> None:
    """Wrap the inference and tracker stages' push (instance attributes of this run's Pipeline)."""
    inf_push = pipe.inference.push
    trk_push = pipe.tracker.push

    def inference_push(snippet, *, now=None):
        probes.snippets.append((snippet.stream, snippet.index, snippet.t0, time.monotonic()))
        return inf_push(snippet, now=now)

    def tracker_push(p):
        t = time.monotonic()
        out = trk_push(p)
        probes.predictions.append((p.stream, p.index, p.t0, p.decided_at, t, time.monotonic()))
        for e in out:
            probes.event_pred[id(e)] = len(probes.predictions) - 1
        return out

    pipe.inference.push = inference_push
    pipe.tracker.push = tracker_push


# ----------------------------------------------------------------- the subscriber


def subscriber_main(pub: str, snap: str | None, conn) -> None:
    """Subscribe (Clone handshake), report ready, stamp every message on arrival until told
    the last seq (or 10 s of silence after that), then send everything back over ``conn``."""
    from avparse.stream.client import Gap, Restart, Subscriber

    recs, gaps, restarts = [], [], []
    last_seq, final, deadline = 0, None, None
    try:
        sub = Subscriber(pub, snapshot=snap, types=("onset", "offset", "heartbeat"), handshake_timeout=10.0,
                         snapshot_timeout=10.0)
        sub.open()
    except Exception as e:  # reported to the parent as one line
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    try:
        while True:
            if final is None and conn.poll():
                final = conn.recv()[1]
                deadline = time.monotonic() + 10.0
            item = sub.recv(timeout=0.05)
            now = time.monotonic()
            if item is None:
                if final is not None and (last_seq >= final or now > deadline):
                    break
                continue
            if isinstance(item, Gap):
                gaps.append(item.describe())
                continue
            if isinstance(item, Restart):
                restarts.append(item.describe())
                continue
            last_seq = max(last_seq, item.seq)
            if item.event is not None:
                recs.append((now, item.seq, item.from_snapshot, item.event.to_dict()))
            if final is not None and last_seq >= final:
                deadline = min(deadline, now + 0.2)  # drain a moment, then stop
        conn.send(("done", {"records": recs, "gaps": gaps, "restarts": restarts, "last_seq": last_seq,
                            "counters": dict(sub.counters)}))
    finally:
        sub.close()


class SubscriberHandle:
    """The subscriber, in a spawned process or a thread of this one."""

    def __init__(self, pub: str, snap: str | None, mode: str = "process"):
        import multiprocessing as mp

        if mode not in ("process", "thread"):
            raise ValueError(f"subscriber must be 'process' or 'thread', got {mode!r}")
        self.mode = mode
        if mode == "process":
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._worker = ctx.Process(target=subscriber_main, args=(pub, snap, child), daemon=True,
                                       name="avparse-bench-subscriber")
        else:
            self._conn, child = mp.Pipe()
            self._worker = threading.Thread(target=subscriber_main, args=(pub, snap, child), daemon=True,
                                            name="avparse-bench-subscriber")
        self._worker.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self._conn.poll(timeout):
            self.kill()
            raise RuntimeError(f"the subscriber did not complete its handshake within {timeout:g} s")
        what, payload = self._conn.recv()
        if what != "ready":
            self.kill()
            raise RuntimeError(f"the subscriber failed: {payload}")

    def finish(self, final_seq: int, timeout: float = 60.0) -> dict:
        self._conn.send(("final", final_seq))
        if not self._conn.poll(timeout):
            self.kill()
            raise RuntimeError("the subscriber sent no results")
        what, payload = self._conn.recv()
        self._worker.join(timeout=5.0)
        if what != "done":
            raise RuntimeError(f"the subscriber failed: {payload}")
        return payload

    def kill(self) -> None:
        if self.mode == "process" and self._worker.is_alive():
            self._worker.terminate()
            self._worker.join(timeout=2.0)


# ----------------------------------------------------------------- one run


def make_scenes(spec: RunSpec, scene_config=None):
    from avparse.train.synth import SynthConfig, make_scene

    cfg = scene_config or SynthConfig(duration=int(spec.seconds))
    return [make_scene((spec.seed, k), cfg, name=f"s{k}") for k in range(spec.streams)]


def run_live(loaded, extractor, option: LiveOption, spec: RunSpec, *, device: str = "cpu",
             scenes=None) -> dict:
    """Run the live runtime once; return the raw records (see ``summarize``)."""
    from avparse.stream.pipeline import Runtime, VirtualClock, pipeline_config
    from avparse.stream.publisher import Publisher, PublisherConfig
    from avparse.stream.source_base import SystemClock
    from avparse.stream.sources import SceneSource

    profile = loaded.profile
    scenes = scenes if scenes is not None else make_scenes(spec)
    fast = spec.speed <= 0
    config = pipeline_config(profile=profile, hop=option.hop, window=spec.window, lookahead=option.lookahead,
                             max_batch=spec.max_batch, device=device, backend=option.backend)
    probes = Probes()
    clock = VirtualClock() if fast else SystemClock()
    sources = [_OriginSource(SceneSource(sc, sample_rate=profile.sample_rate, paced=not fast,
                                         speed=spec.speed if not fast else 1.0, name=sc.name), probes, spec.speed)
               for sc in scenes]
    runtime = Runtime(config, _TimedModel(loaded.model, probes), _TimedExtractor(extractor, probes), sources,
                      clock=clock, classes=loaded.classes)
    _probe_pipeline(runtime.pipeline, probes)
    publisher = Publisher(PublisherConfig(pub="tcp://127.0.0.1:*", snapshot="tcp://127.0.0.1:*",
                                          name="avparse-bench")).open()
    sub = None
    timer = None
    try:
        sub = SubscriberHandle(publisher.pub_endpoint, publisher.snapshot_endpoint, spec.subscriber)
        sub.wait_ready()
        runtime.add_sink(_TimedPublisher(publisher, probes))
        limit = spec.time_limit
        if limit is None:
            limit = 1.5 * spec.seconds / spec.speed + 20.0 if spec.speed > 0 else 0.0
        stopped = threading.Event()

        def stop():
            stopped.set()
            runtime.stop("stopped")

        cpu0, wall0 = time.process_time(), time.monotonic()
        if limit > 0:
            timer = threading.Timer(limit, stop)
            timer.daemon = True
            timer.start()
        stats = runtime.run()
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        if timer is not None:
            timer.cancel()
        publisher.close(reason="stopped")
        final_seq = publisher.seq
        received = sub.finish(final_seq)
    except BaseException:
        if sub is not None:
            sub.kill()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        publisher.close(reason="stopped")
    return {
        "option": option, "spec": spec, "profile": profile.name, "classes": tuple(loaded.classes),
        "truth": {sc.name: list(sc.ground_truth()) for sc in scenes},
        "duration": {sc.name: float(sc.duration) for sc in scenes},
        "probes": probes, "stats": stats, "publisher": dict(publisher.counters), "final_seq": final_seq,
        "received": received, "wall": wall, "cpu": cpu, "stopped_early": stopped.is_set(),
        "snippet_seconds": profile.snippet_seconds,
    }


# ----------------------------------------------------------------- summary


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
    return (d["kind"], d["stream"], d["label"], d["modality"], round(float(d["media_time"]), 6))


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
        closing = d["kind"] == "offset" and d.get("reason") != "ended"
        if not closing:
            rx_events.append((d["label"], d["modality"], d["kind"], d["media_time"], (t_rx, d)))
        if w is None or closing:
            continue
        if d["media_time"] <= 1e-9:  # on from the stream's start: it did not happen during the stream
            at_start += 1
            continue
        ev_lat[d["kind"]].append(t_rx - w)
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
