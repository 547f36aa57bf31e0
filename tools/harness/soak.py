"""The harness of `avparse soak` (tools/soak.py says what it reports): several generated scenes
through one Runtime on loopback ports, several Subscriber clients in threads, memory, latency
and event counts over time, and whether every subscriber received exactly the logged events."""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from avparse.tools.common import UserError

from .report import write_json
from .standins import StatsExtractor, stand_in
from .timing import nearest_rank


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 30.0          # scene time per stream (minutes)
    streams: int = 3               # generated scenes run at once
    subscribers: int = 3           # Subscriber clients reading everything, one thread each
    speed: float = 1.0             # pacing: times real time (1: live)
    fast: bool = False             # no pacing: as fast as the pipeline goes, on a virtual clock
    model: str | None = None       # checkpoint (None: a small random lite model)
    extractor: str = "model"       # "model": the checkpoint's extractors; "stats": the cheap stand-in (standins.py)
    scene_size: int = 128          # generated frame width and height (pixels)
    scene_fps: int = 24            # generated frame rate
    on: float = 0.5                # tracker threshold (on and off)
    interval: float = 60.0         # wall seconds between report rows
    max_wall: float | None = None  # stop after this many wall seconds (None: the paced length + 120)
    out: str | None = None         # folder for the event log and the JSON report (None: a temp dir)
    seed: int = 100                # seed of the first scene (then +1 per stream)


def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def tiny_model(folder: Path) -> Path:
    """A small random lite-profile checkpoint with its lite extractors bundled."""
    import torch

    from avparse.core.checkpoint import save_checkpoint
    from avparse.core.extractors import build_extractor
    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile
    from avparse.train.synth import SYNTH_CLASSES

    p = get_profile("lite")
    torch.manual_seed(0)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                              frames_per_snippet=p.frames_per_snippet, d_model=32, dim_feedforward=32,
                              num_classes=len(SYNTH_CLASSES), dropout=0.0))
    ext = build_extractor(p, weights="random")
    path = folder / "soak-random-lite.pt"
    save_checkpoint(path, han.eval(), classes=SYNTH_CLASSES, profile=p,
                    extractor_state={k: v.detach().cpu() for k, v in ext.state_dict().items()})
    return path


class TapSource:
    """Wraps a source: remembers when (time.monotonic) each whole second of its audio left it."""

    def __init__(self, source, released: dict):
        self.source = source
        self.name = source.name
        self.kinds = getattr(source, "kinds", None)
        self.released = released.setdefault(self.name, {})  # whole second -> monotonic time

    def open(self):
        self.source.open()

    def close(self):
        self.source.close()

    def read(self):
        from avparse.stream.types import AudioChunk

        for chunk in self.source.read():
            if isinstance(chunk, AudioChunk):
                s = int(chunk.end + 1e-6)
                if s not in self.released:
                    self.released[s] = time.monotonic()
                    self.released.pop(s - 600, None)  # bounded: the last 10 minutes of media
            yield chunk


class Reader(threading.Thread):
    """One Subscriber client in a thread: counts events by seq, gaps, restarts, latencies."""

    def __init__(self, i, pub, snap, first, speed, stop):
        super().__init__(name=f"soak-subscriber-{i}", daemon=True)
        self.i, self.pub, self.snap, self.first, self.speed, self.stop = i, pub, snap, first, speed, stop
        self.seqs: list[int] = []
        self.latency: list[tuple[float, float]] = []  # (monotonic at arrival, seconds)
        self.gaps = self.restarts = self.snapshot_onsets = 0
        self.error = None
        self.ready = threading.Event()

    def run(self):
        from avparse.stream.client import Gap, Restart, Subscriber

        try:
            with Subscriber(self.pub, snapshot=self.snap) as sub:
                self.ready.set()
                while not self.stop.is_set():
                    item = sub.recv(0.2)
                    if item is None:
                        continue
                    if isinstance(item, Gap):
                        self.gaps += 1
                    elif isinstance(item, Restart):
                        self.restarts += 1
                    elif item.from_snapshot:
                        self.snapshot_onsets += 1
                    else:
                        now = time.monotonic()
                        self.seqs.append(item.seq)
                        rel = self.first.get(item.event.stream, {}).get(int(item.event.decided_at + 1e-6))
                        if rel is not None:  # the newest evidence left its source at rel
                            self.latency.append((now, now - rel))
        except Exception as e:  # reported in the summary
            self.error = f"{type(e).__name__}: {e}"
            self.ready.set()


class StatsSink:
    """Keeps the runtime's stats messages (input lag, queue depth) with their time."""

    def __init__(self):
        self.rows = []

    def emit(self, event):
        pass

    def stats(self, d):
        self.rows.append((time.monotonic(), d.get("input_lag", {}).get("max"), d.get("queue", {}).get("depth", 0),
                          d.get("snippets", 0)))


def run(cfg: SoakConfig) -> int:
    """The soak; 0 when every subscriber received every logged event and no gap, else 1."""
    if not (cfg.minutes > 0 and math.isfinite(cfg.minutes)) or cfg.streams < 1 or cfg.subscribers < 1:
        raise UserError("--minutes must be > 0, --streams and --subscribers >= 1")
    if not (cfg.speed > 0 and math.isfinite(cfg.speed)) or not cfg.interval > 0:
        raise UserError("--speed and --interval must be > 0")
    from avparse.core.checkpoint import CheckpointError, load_model
    from avparse.core.extractors import build_extractor
    from avparse.stream.clock import RealClock, VirtualClock
    from avparse.stream.pipeline import Runtime, pipeline_config
    from avparse.stream.publisher import Publisher, PublisherConfig, PublisherError
    from avparse.stream.sources import SceneSource
    from avparse.stream.tracker import TrackerConfig
    from avparse.train.synth import SYNTH_CLASSES, SynthConfig, make_scene

    out = Path(cfg.out) if cfg.out else Path(tempfile.mkdtemp(prefix="avparse-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    if cfg.extractor == "stats":
        model_path = Path("stats stand-in")
        loaded = stand_in(SYNTH_CLASSES)
        extractor = StatsExtractor()
    else:
        model_path = Path(cfg.model) if cfg.model else tiny_model(out)
        try:
            loaded = load_model(model_path)
        except CheckpointError as e:
            raise UserError(str(e)) from None
        extractor = build_extractor(loaded.profile, weights=loaded.extractor_state)
    seconds = int(round(cfg.minutes * 60))
    try:
        tracker = TrackerConfig(on_threshold=cfg.on, off_threshold=cfg.on)
    except ValueError as e:
        raise UserError(f"--on: {e}") from None
    config = pipeline_config(profile=loaded.profile, tracker=tracker)
    clock = VirtualClock() if cfg.fast else RealClock()
    first: dict = {}
    sources = [TapSource(SceneSource(make_scene(cfg.seed + i, SynthConfig(duration=seconds, width=cfg.scene_size,
                                                                       height=cfg.scene_size, fps=cfg.scene_fps), name=f"s{i}"),
                                     sample_rate=loaded.profile.sample_rate, paced=not cfg.fast,
                                     clock=None if cfg.fast else clock,
                                     speed=cfg.speed, name=f"s{i}"), first)
               for i in range(cfg.streams)]
    log_path = out / "events.jsonl"
    if log_path.exists():
        log_path.unlink()
    pcfg = PublisherConfig(pub=free_endpoint(), snapshot=free_endpoint(), log_path=str(log_path), name="soak")
    try:
        publisher = Publisher(pcfg).open()
    except PublisherError as e:
        raise UserError(str(e)) from None
    stop = threading.Event()
    readers = [Reader(i, pcfg.pub, pcfg.snapshot, first, cfg.speed, stop) for i in range(cfg.subscribers)]
    for r in readers:
        r.start()
    for r in readers:
        r.ready.wait(10)
    runtime = Runtime(config, loaded, extractor, sources, clock=clock)
    runtime.add_sink(publisher)
    stats_sink = StatsSink()
    runtime.add_sink(stats_sink)
    max_wall = cfg.max_wall if cfg.max_wall is not None else \
        (seconds * cfg.streams if cfg.fast else seconds / cfg.speed + 120)
    t0 = time.monotonic()
    rss: list[tuple[float, float]] = [(0.0, rss_mb())]
    pace = "as fast as possible (virtual clock)" if cfg.fast else f"at {cfg.speed:g}x real time"
    print(f"avparse soak: {cfg.streams} stream(s) x {seconds} s of scene {pace}, "
          f"{cfg.subscribers} subscriber(s), model {model_path.name} ({loaded.profile.name}), pid {os.getpid()}, "
          f"nice {os.nice(0)}; pub {pcfg.pub}, log {log_path}", flush=True)
    done = threading.Event()

    def sampler():
        nxt = t0 + cfg.interval
        while not done.wait(max(0.0, min(5.0, nxt - time.monotonic()))):
            rss.append((time.monotonic() - t0, rss_mb()))
            if time.monotonic() >= nxt:
                _row(time.monotonic() - t0, rss, readers, stats_sink, t0, cfg.interval)
                nxt += cfg.interval
            if time.monotonic() - t0 > max_wall:
                runtime.stop("stopped")

    print(f"{'wall s':>7} {'RSS MB':>7} {'events':>7} {'lat p50':>8} {'lat p95':>8} {'lat max':>8} "
          f"{'lag max*':>10} {'queue':>5}", flush=True)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        runtime.run()
    finally:
        done.set()
        th.join(6)
        publisher.close(reason="stopped")
        time.sleep(1.0)  # the last messages reach the subscribers
        stop.set()
        for r in readers:
            r.join(5)
    wall = time.monotonic() - t0
    rss.append((wall, rss_mb()))
    _row(wall, rss, readers, stats_sink, t0, cfg.interval)
    return _summary(cfg, out, log_path, publisher, runtime, readers, rss, wall, seconds)


def _row(elapsed, rss, readers, stats_sink, t0, interval):
    lo = t0 + elapsed - interval
    lat = [x for r in readers for (t, x) in r.latency if t >= lo]
    st = [s for s in stats_sink.rows if s[0] >= lo]
    lag = max((s[1] for s in st if s[1] is not None), default=float("nan"))
    q = max((s[2] for s in st), default=0)
    n = len(readers[0].seqs) if readers else 0
    print(f"{elapsed:7.0f} {rss[-1][1]:7.1f} {n:7d} {nearest_rank(lat, 0.5):8.3f} {nearest_rank(lat, 0.95):8.3f} "
          f"{max(lat, default=float('nan')):8.3f} {lag:10.3f} {q:5d}", flush=True)


def _summary(cfg, out, log_path, publisher, runtime, readers, rss, wall, seconds) -> int:
    logged = []
    bad_lines = 0
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            try:
                logged.append(json.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):
                bad_lines += 1
    want = set(logged)
    st = runtime.stats()
    q = max(1, len(rss) // 4)
    rss_first = statistics.median(x for _, x in rss[:q])
    rss_last = statistics.median(x for _, x in rss[-q:])
    report = {
        "streams": cfg.streams, "subscribers": cfg.subscribers, "scene_seconds": seconds, "speed": cfg.speed,
        "wall_seconds": round(wall, 1), "snippets": st.get("snippets"), "events_logged": len(logged),
        "log_bad_lines": bad_lines, "events_sent": publisher.counters.get("events"),
        "rss_mb": {"start": round(rss[0][1], 1), "first_quarter_median": round(rss_first, 1),
                   "last_quarter_median": round(rss_last, 1), "max": round(max(x for _, x in rss), 1)},
        "drops": st.get("drops"), "faults": st.get("faults"), "queue_max_depth": st.get("queue", {}).get("max_depth"),
        "subscribers_detail": [],
    }
    ok = bad_lines == 0 and len(logged) > 0
    print(f"\nscene time {seconds} s x {cfg.streams} streams in {wall:.0f} s wall; {st.get('snippets')} snippets; "
          f"queue max depth {report['queue_max_depth']}; drops {st.get('drops')}")
    print(f"memory: RSS start {rss[0][1]:.1f} MB, first-quarter median {rss_first:.1f} MB, "
          f"last-quarter median {rss_last:.1f} MB, max {report['rss_mb']['max']:.1f} MB")
    print(f"events: {len(logged)} in the log ({bad_lines} unreadable lines), "
          f"{publisher.counters.get('events')} published")
    for r in readers:
        got = set(r.seqs)
        lat = [x for _, x in r.latency]
        h = max(1, len(lat) // 4)
        d = {"received": len(r.seqs), "missing_vs_log": len(want - got), "extra_vs_log": len(got - want),
             "duplicates": len(r.seqs) - len(got), "gaps": r.gaps, "restarts": r.restarts, "error": r.error,
             "latency_s": {"p50": round(nearest_rank(lat, 0.5), 4), "p95": round(nearest_rank(lat, 0.95), 4),
                           "max": round(max(lat, default=float("nan")), 4),
                           "p50_first_quarter": round(nearest_rank(lat[:h], 0.5), 4),
                           "p50_last_quarter": round(nearest_rank(lat[-h:], 0.5), 4)}}
        report["subscribers_detail"].append(d)
        good = not d["missing_vs_log"] and not d["extra_vs_log"] and not d["duplicates"] and not r.gaps \
            and r.error is None
        ok = ok and good
        print(f"subscriber {r.i}: {d['received']} events, missing {d['missing_vs_log']}, extra {d['extra_vs_log']}, "
              f"duplicates {d['duplicates']}, gaps {r.gaps}, restarts {r.restarts}; latency p50 "
              f"{d['latency_s']['p50']:.3f} s (first quarter {d['latency_s']['p50_first_quarter']:.3f}, last quarter "
              f"{d['latency_s']['p50_last_quarter']:.3f}), p95 {d['latency_s']['p95']:.3f} s, max "
              f"{d['latency_s']['max']:.3f} s{'' if r.error is None else '; error ' + r.error}"
              f"  {'OK' if good else 'FAILED'}")
    write_json(out / "soak.json", report)
    print(f"report: {out / 'soak.json'}; {'every subscriber got every logged event' if ok else 'FAILED'}")
    return 0 if ok else 1

