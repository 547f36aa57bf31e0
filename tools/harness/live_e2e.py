"""End-to-end measurement harness of `avparse bench live` (and the GPU bench's live section).

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

``live_summary.summarize`` turns the records into figures.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field


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


def _probe(probes: Probes):
    """A Pipeline observer recording when each snippet reaches inference and what the tracker costs
    per prediction (and which prediction each event came from)."""
    from avparse.stream.types import StageObserver

    class Probe(StageObserver):
        def snippet(self, s):
            probes.snippets.append((s.stream, s.index, s.t0, time.monotonic()))

        def prediction(self, p):
            self.t = time.monotonic()

        def tracked(self, p, events):
            probes.predictions.append((p.stream, p.index, p.t0, p.decided_at, self.t, time.monotonic()))
            for e in events:
                probes.event_pred[id(e)] = len(probes.predictions) - 1

    return Probe()


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
    from avparse.stream.clock import RealClock, VirtualClock
    from avparse.stream.pipeline import Runtime, pipeline_config
    from avparse.stream.publisher import Publisher, PublisherConfig
    from avparse.stream.sources import SceneSource

    profile = loaded.profile
    scenes = scenes if scenes is not None else make_scenes(spec)
    fast = spec.speed <= 0
    config = pipeline_config(profile=profile, hop=option.hop, window=spec.window, lookahead=option.lookahead,
                             max_batch=spec.max_batch, device=device, backend=option.backend)
    probes = Probes()
    clock = VirtualClock() if fast else RealClock()
    sources = [_OriginSource(SceneSource(sc, sample_rate=profile.sample_rate, paced=not fast,
                                         speed=spec.speed if not fast else 1.0, name=sc.name), probes, spec.speed)
               for sc in scenes]
    runtime = Runtime(config, _TimedModel(loaded.model, probes), _TimedExtractor(extractor, probes), sources,
                      clock=clock, classes=loaded.classes)
    runtime.pipeline.observe(_probe(probes))
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
