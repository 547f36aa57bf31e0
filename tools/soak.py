"""A bounded soak of the live runtime on loopback: several generated scenes, several subscribers.

    python -m avparse.tools.soak --minutes 30 --streams 3 --subscribers 3 [--speed 4] [--model CKPT]

Runs ``--streams`` generated scenes of ``--minutes`` of scene time each through one Runtime
(paced at ``--speed`` times real time on the real clock, so latency means what it means live),
publishes on loopback ports with a JSON-lines event log, and keeps ``--subscribers`` Subscriber
clients (each in its own thread) reading everything. It stops by itself when the scenes end
(or after ``--max-wall`` seconds), then prints:

- memory: the process's RSS over time (one row per report interval), and its growth from the
  first to the last quarter of the run;
- latency over time: from the moment the newest evidence of an event (its stream's audio up to
  ``decided_at``) left the source to the event's arrival at a subscriber, per interval (median,
  p95, max);
- the runtime's input lag (capture to dequeue; * its maximum since the start) and the largest
  queue depth seen in the interval's stats;
- event counts: in the log, sent by the publisher, and at every subscriber, with gaps, restarts
  and whether each subscriber received exactly the logged events (by seq).

Exit status 0 when every subscriber received every logged event and no gap, 1 otherwise, 2 for
a user error. Run it at low priority on a shared machine: ``nice -n 19 python -m avparse.tools.soak``.
Without ``--model`` it uses a small random lite model (its events are arbitrary but many, which
is what a soak wants: the plumbing is what is measured).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from .errors import UserError, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avparse soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="scene time per stream (minutes)")
    p.add_argument("--streams", type=int, default=3, help="generated scenes run at once")
    p.add_argument("--subscribers", type=int, default=3, help="Subscriber clients reading everything")
    p.add_argument("--speed", type=float, default=1.0, help="pacing: times real time (1: live)")
    p.add_argument("--fast", action="store_true",
                   help="no pacing: scenes as fast as the pipeline goes, on a virtual clock (latency then "
                        "includes the wait in the full source queue)")
    p.add_argument("--model", metavar="CKPT", help="checkpoint (default: a small random lite model)")
    p.add_argument("--extractor", choices=("model", "stats"), default="model",
                   help="model: the checkpoint's extractors; stats: a cheap stand-in (RMS, zero crossings, "
                        "frame means) with a small random HAN, for long soaks on a small CPU")
    p.add_argument("--scene-size", type=int, default=128, help="generated frame width and height (pixels)")
    p.add_argument("--scene-fps", type=int, default=24, help="generated frame rate")
    p.add_argument("--on", type=float, default=0.5, help="tracker threshold")
    p.add_argument("--interval", type=float, default=60.0, help="wall seconds between report rows")
    p.add_argument("--max-wall", type=float, default=None,
                   help="stop after this many wall seconds whatever happens (default: the paced length + 120)")
    p.add_argument("--out", metavar="DIR", help="folder for the event log and the JSON report (default: a temp dir)")
    p.add_argument("--seed", type=int, default=100, help="seed of the first scene (then +1 per stream)")
    return p


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


def quantile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


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


class StatsExtractor:
    """A cheap stand-in extractor: audio RMS and zero-crossing rate, frame colour means and motion."""

    def __call__(self, audio, frames):
        import numpy as np
        import torch

        a = torch.from_numpy(np.asarray(audio, np.float32))
        fr = torch.from_numpy(np.asarray(frames)).float() / 255.0
        feat_a = torch.stack([a.pow(2).mean(1).sqrt() * 10, (a[:, 1:] * a[:, :-1] < 0).float().mean(1)], -1)
        return SimpleNamespace(audio=feat_a, v2d=fr.mean(dim=(2, 3)), v3d=fr.std(dim=(1, 2, 3, 4))[:, None])


def stand_in():
    """A small random HAN over the stand-in features, as a LoadedModel-like object."""
    import torch

    from avparse.core.han import HANConfig, build_han
    from avparse.train.synth import SYNTH_CLASSES

    torch.manual_seed(3)
    han = build_han(HANConfig(audio_dim=2, v2d_dim=3, v3d_dim=1, frames_per_snippet=8, d_model=8,
                              dim_feedforward=8, dropout=0.0, num_classes=len(SYNTH_CLASSES))).eval()
    profile = SimpleNamespace(name="stats", sample_rate=16000, snippet_seconds=1.0, frames_per_snippet=8,
                              frame_size=112)
    return SimpleNamespace(model=han, classes=tuple(SYNTH_CLASSES), profile=profile)


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


def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _run(args) -> int:
    if not (args.minutes > 0 and math.isfinite(args.minutes)) or args.streams < 1 or args.subscribers < 1:
        raise UserError("--minutes must be > 0, --streams and --subscribers >= 1")
    if not (args.speed > 0 and math.isfinite(args.speed)) or not args.interval > 0:
        raise UserError("--speed and --interval must be > 0")
    from avparse.core.checkpoint import CheckpointError, load_model
    from avparse.core.extractors import build_extractor
    from avparse.stream.pipeline import RealClock, Runtime, VirtualClock, pipeline_config
    from avparse.stream.publisher import Publisher, PublisherConfig, PublisherError
    from avparse.stream.sources import SceneSource
    from avparse.stream.tracker import TrackerConfig
    from avparse.train.synth import SynthConfig, make_scene

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="avparse-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.extractor == "stats":
        model_path = Path("stats stand-in")
        loaded = stand_in()
        extractor = StatsExtractor()
    else:
        model_path = Path(args.model) if args.model else tiny_model(out)
        try:
            loaded = load_model(model_path)
        except CheckpointError as e:
            raise UserError(str(e)) from None
        extractor = build_extractor(loaded.profile, weights=loaded.extractor_state)
    seconds = int(round(args.minutes * 60))
    try:
        tracker = TrackerConfig(on_threshold=args.on, off_threshold=args.on)
    except ValueError as e:
        raise UserError(f"--on: {e}") from None
    config = pipeline_config(profile=loaded.profile, tracker=tracker)
    clock = VirtualClock() if args.fast else RealClock()
    first: dict = {}
    sources = [TapSource(SceneSource(make_scene(args.seed + i, SynthConfig(duration=seconds, width=args.scene_size,
                                                                       height=args.scene_size, fps=args.scene_fps), name=f"s{i}"),
                                     sample_rate=loaded.profile.sample_rate, paced=not args.fast,
                                     clock=None if args.fast else clock,
                                     speed=args.speed, name=f"s{i}"), first)
               for i in range(args.streams)]
    log_path = out / "events.jsonl"
    if log_path.exists():
        log_path.unlink()
    pcfg = PublisherConfig(pub=free_endpoint(), snapshot=free_endpoint(), log_path=str(log_path), name="soak")
    try:
        publisher = Publisher(pcfg).open()
    except PublisherError as e:
        raise UserError(str(e)) from None
    stop = threading.Event()
    readers = [Reader(i, pcfg.pub, pcfg.snapshot, first, args.speed, stop) for i in range(args.subscribers)]
    for r in readers:
        r.start()
    for r in readers:
        r.ready.wait(10)
    runtime = Runtime(config, loaded, extractor, sources, clock=clock)
    runtime.add_sink(publisher)
    stats_sink = StatsSink()
    runtime.add_sink(stats_sink)
    max_wall = args.max_wall if args.max_wall is not None else \
        (seconds * args.streams if args.fast else seconds / args.speed + 120)
    t0 = time.monotonic()
    rss: list[tuple[float, float]] = [(0.0, rss_mb())]
    pace = "as fast as possible (virtual clock)" if args.fast else f"at {args.speed:g}x real time"
    print(f"avparse soak: {args.streams} stream(s) x {seconds} s of scene {pace}, "
          f"{args.subscribers} subscriber(s), model {model_path.name} ({loaded.profile.name}), pid {os.getpid()}, "
          f"nice {os.nice(0)}; pub {pcfg.pub}, log {log_path}", flush=True)
    done = threading.Event()

    def sampler():
        nxt = t0 + args.interval
        while not done.wait(max(0.0, min(5.0, nxt - time.monotonic()))):
            rss.append((time.monotonic() - t0, rss_mb()))
            if time.monotonic() >= nxt:
                _row(time.monotonic() - t0, rss, readers, stats_sink, t0, args.interval)
                nxt += args.interval
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
    _row(wall, rss, readers, stats_sink, t0, args.interval)
    return _summary(args, out, log_path, publisher, runtime, readers, rss, wall, seconds)


def _row(elapsed, rss, readers, stats_sink, t0, interval):
    lo = t0 + elapsed - interval
    lat = [x for r in readers for (t, x) in r.latency if t >= lo]
    st = [s for s in stats_sink.rows if s[0] >= lo]
    lag = max((s[1] for s in st if s[1] is not None), default=float("nan"))
    q = max((s[2] for s in st), default=0)
    n = len(readers[0].seqs) if readers else 0
    print(f"{elapsed:7.0f} {rss[-1][1]:7.1f} {n:7d} {quantile(lat, 0.5):8.3f} {quantile(lat, 0.95):8.3f} "
          f"{max(lat, default=float('nan')):8.3f} {lag:10.3f} {q:5d}", flush=True)


def _summary(args, out, log_path, publisher, runtime, readers, rss, wall, seconds) -> int:
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
        "streams": args.streams, "subscribers": args.subscribers, "scene_seconds": seconds, "speed": args.speed,
        "wall_seconds": round(wall, 1), "snippets": st.get("snippets"), "events_logged": len(logged),
        "log_bad_lines": bad_lines, "events_sent": publisher.counters.get("events"),
        "rss_mb": {"start": round(rss[0][1], 1), "first_quarter_median": round(rss_first, 1),
                   "last_quarter_median": round(rss_last, 1), "max": round(max(x for _, x in rss), 1)},
        "drops": st.get("drops"), "faults": st.get("faults"), "queue_max_depth": st.get("queue", {}).get("max_depth"),
        "subscribers_detail": [],
    }
    ok = bad_lines == 0 and len(logged) > 0
    print(f"\nscene time {seconds} s x {args.streams} streams in {wall:.0f} s wall; {st.get('snippets')} snippets; "
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
             "latency_s": {"p50": round(quantile(lat, 0.5), 4), "p95": round(quantile(lat, 0.95), 4),
                           "max": round(max(lat, default=float("nan")), 4),
                           "p50_first_quarter": round(quantile(lat[:h], 0.5), 4),
                           "p50_last_quarter": round(quantile(lat[-h:], 0.5), 4)}}
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
    (out / "soak.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"report: {out / 'soak.json'}; {'every subscriber got every logged event' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
