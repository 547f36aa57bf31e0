"""The live runtime: sources -> assembler -> batched inference -> tracker -> sinks.

Two layers:

- :class:`Pipeline` wires the stages for any number of streams, with no
  threads and no clock of its own: ``feed(chunk, now)``, ``poll(now)``,
  ``end_stream(name, reason, now)``, ``stop(reason, now)`` each return the
  events they caused. Offline parsing (``avparse.stream.offline``) drives it
  straight from a file source as fast as the machine goes.
- :class:`Runtime` runs one thread per source, each putting chunks on one
  queue, and a loop (in the caller's thread) that takes chunks off the queue
  and drives the Pipeline, waking for the inference batch deadline and the
  stats interval on the injected clock. Events go to the sinks as they are
  decided; stats (per-stage timings, queue depth, drops, faults) go to the
  sinks every ``stats_interval`` seconds and at the end.

A stream is every source that shares one ``name`` (a camera and a microphone,
or one file). Its audio is the master clock; a stream whose only audio source
ends or fails is closed (offsets with reason "end-of-stream" or
"source-lost"); a failing video-only source is reported and the stream goes
on with black frames.

Over 500 lines on purpose: ``Pipeline`` (the stages per snippet) and ``Runtime`` (threads,
queues, pacing, shedding and stream ends around it) share the per-stream bookkeeping that the
event stream's rules depend on (which offsets a stream's end or a source's loss produces); they
are kept side by side so that those rules are read in one file.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from avparse.core.events import Event

from .assembler import AssemblerConfig, SnippetAssembler
from .clock import Clock, RealClock
from .grid import SnippetGrid
from .inference import Inference, InferenceConfig
from .source_base import SourceError
from .tracker import Tracker, TrackerConfig
from .types import AudioChunk, EndOfStream, StageObserver, VideoFrame


@dataclass(frozen=True)
class PipelineConfig:
    grid: SnippetGrid = field(default_factory=SnippetGrid)                 # the snippet grid every stage is handed
    assembler: AssemblerConfig = field(default_factory=AssemblerConfig)   # alignment, waiting, faults
    inference: InferenceConfig = field(default_factory=InferenceConfig)   # batching, window, lookahead
    tracker: TrackerConfig = field(default_factory=TrackerConfig)         # thresholds, durations, gate
    queue_size: int = 512          # chunks of all sources queued at most
    drop_when_full: bool = False   # True: a full queue drops the chunk (live capture must not block);
                                   # False: the source thread waits (files and scenes: no loss)
    stats_interval: float = 1.0    # seconds of runtime clock between stats sent to the sinks
    max_lag: Optional[float] = 3.0  # seconds (runtime clock) from capture to processing beyond which a
                                    # real-time runtime sheds snippets (assembles but does not analyse
                                    # them, counted) instead of falling further behind; None: never shed.
                                    # A virtual clock (as-fast-as-possible replay) never sheds.


_I = InferenceConfig  # the defaults below are its fields' defaults


def pipeline_config(*, profile=None, hop: float = SnippetGrid.hop, window: int = _I.window,
                    lookahead: int = _I.lookahead, max_batch: int = _I.max_batch, max_wait: float = _I.max_wait,
                    device: str = _I.device, backend: str = _I.backend, tracker: TrackerConfig | None = None,
                    assembler: AssemblerConfig | None = None, **runtime) -> PipelineConfig:
    """A PipelineConfig whose grid is the profile's snippet contract at ``hop`` (no profile: the paper's)."""
    grid = SnippetGrid.from_profile(profile, hop=hop) if profile is not None else SnippetGrid(hop=hop)
    inf = InferenceConfig(window=window, lookahead=lookahead, max_batch=max_batch, max_wait=max_wait,
                          device=device, backend=backend)
    return PipelineConfig(grid=grid, assembler=assembler or AssemblerConfig(), inference=inf,
                          tracker=tracker or TrackerConfig(), **runtime)


@dataclass
class _Timing:
    seconds: float = 0.0   # time spent in one stage (the Pipeline's timer)
    calls: int = 0         # calls of that stage


class Pipeline:
    """The stages of every stream, driven synchronously. No threads, no clock of its own."""

    def __init__(self, config: PipelineConfig, model, extractor, *, classes: Sequence[str],
                 timer: Optional[Callable[[], float]] = None):
        self.config = config
        self.classes = tuple(classes)
        self.timer = timer
        self.inference = Inference(config.inference, model, extractor, grid=config.grid, timer=timer)
        self.tracker = Tracker(config.tracker, classes=self.classes, grid=config.grid)
        self.assemblers: dict[str, SnippetAssembler] = {}
        self._video: dict[str, bool] = {}
        self._timing = {k: _Timing() for k in ("assembler", "inference", "tracker")}
        self.events = 0
        self.snippets = 0
        self._ended_counters: dict[str, dict] = {}  # assembler counters of streams that ended
        self._observers: list[StageObserver] = []
        self.shed: dict[str, int] = {}  # stream -> snippets assembled but not analysed (feed(..., shed=True))

    def observe(self, observer: StageObserver) -> None:
        """Show ``observer`` every snippet, prediction and tracker decision from now on."""
        self._observers.append(observer)

    def add_stream(self, name: str, *, video: bool = True, wait_for_video: bool = False,
                   separate_clocks: bool = False) -> None:
        """``wait_for_video``: no bound on the wait for frames (replays on a virtual clock, where a
        camera thread may fall behind a microphone thread by any amount of media time).
        ``separate_clocks``: audio and video come from different devices; map video time onto
        audio time through the capture times (AssemblerConfig.sync = "capture")."""
        if name not in self.assemblers:
            cfg = replace(self.config.assembler, video=video)
            if separate_clocks:
                cfg = replace(cfg, sync="capture")
            if wait_for_video:
                cfg = replace(cfg, late_tolerance=float("inf"))
            self.assemblers[name] = SnippetAssembler(cfg, grid=self.config.grid, stream=name)
            self.inference.expect(name)

    def _t(self) -> float:
        return self.timer() if self.timer else 0.0

    def _timed(self, stage: str, fn, *args, **kw):
        t = self._t()
        out = fn(*args, **kw)
        tm = self._timing[stage]
        tm.seconds += self._t() - t
        tm.calls += 1
        return out

    # ---------------------------------------------------------------- driving
    def feed(self, chunk, now: float = 0.0, *, shed: bool = False) -> list[Event]:
        """Push one chunk; ``shed``: the snippets it completes are counted (``stats()["shed"]``) but not
        analysed (the runtime is behind real time). The grid goes on; inference and tracker see a gap
        in the snippet indices (windows hold the snippets that were analysed; open events stay open)."""
        if isinstance(chunk, EndOfStream):
            return self.end_stream(chunk.stream, chunk.reason, now)
        if chunk.stream not in self.assemblers:
            self.add_stream(chunk.stream)
        snippets = self._timed("assembler", self.assemblers[chunk.stream].push, chunk)
        if shed and snippets:
            self.shed[chunk.stream] = self.shed.get(chunk.stream, 0) + len(snippets)
            return []
        return self._snippets(snippets, now)

    def end_video(self, stream: str, now: float = 0.0) -> list[Event]:
        asm = self.assemblers.get(stream)
        return self._snippets(asm.end_video(), now) if asm else []

    def _snippets(self, snippets, now: float) -> list[Event]:
        probs = []
        for s in snippets:
            s.wall_time = now
            self.snippets += 1
            for o in self._observers:
                o.snippet(s)
            probs += self._timed("inference", self.inference.push, s, now=now)
        return self._track(probs, now)

    def _track(self, probs, now: float) -> list[Event]:
        out = []
        for p in probs:
            p.wall_time = now
            for o in self._observers:
                o.prediction(p)
            events = self._timed("tracker", self.tracker.push, p)
            for o in self._observers:
                o.tracked(p, events)
            out += events
        self.events += len(out)
        return out

    def poll(self, now: float) -> list[Event]:
        return self._track(self._timed("inference", self.inference.poll, now), now)

    def deadline(self) -> float | None:
        return self.inference.deadline()

    def end_stream(self, stream: str, reason: str = "end-of-stream", now: float = 0.0) -> list[Event]:
        """The stream ended (or was lost): its last snippets, their predictions, offsets for open events."""
        out = []
        asm = self.assemblers.pop(stream, None)
        if asm is not None:
            snippets = self._timed("assembler", asm.flush)
            out += self._snippets(snippets, now)
            self._ended_counters[stream] = asm.stats()
        out += self._track(self._timed("inference", self.inference.flush, stream), now)
        closed = self.tracker.flush(reason, stream=stream)
        self.events += len(closed)
        return out + closed

    def stop(self, reason: str = "stopped", now: float = 0.0) -> list[Event]:
        out = []
        for name in list(self.assemblers):
            out += self.end_stream(name, reason, now)
        return out

    def stats(self) -> dict:
        streams = dict(self._ended_counters)
        streams.update({n: a.stats() for n, a in self.assemblers.items()})
        return {
            "stages": {k: {"seconds": round(v.seconds, 6), "calls": v.calls} for k, v in self._timing.items()},
            "inference": self.inference.stats(),
            "streams": streams,
            "snippets": self.snippets,
            "shed": dict(self.shed),
            "events": self.events,
        }


def source_kinds(source) -> frozenset:
    """What an opened source yields: its ``kinds``, else its ``has_audio``/``has_video``
    (FileSource), else guessed from its type name."""
    kinds = getattr(source, "kinds", None)
    if kinds:
        return frozenset(kinds)
    if hasattr(source, "has_audio") and hasattr(source, "has_video"):
        k = {n for n, flag in (("audio", source.has_audio), ("video", source.has_video)) if flag}
        if k:
            return frozenset(k)
    name = type(source).__name__.lower()
    if "microphone" in name or "audio" in name:
        return frozenset({"audio"})
    if "camera" in name:
        return frozenset({"video"})
    return frozenset({"audio", "video"})


def no_audio_error(name: str, sources) -> SourceError:
    """A stream without audio would never give a snippet (its audio is its clock): say so at start."""
    what = ", ".join(str(getattr(s, "path", None) or type(s).__name__) for s in sources)
    return SourceError(f"stream {name!r} has no audio ({what}): the audio track is the stream's clock; "
                       f"give a file with an audio track, or a microphone with the camera")


def classes_of(model, classes):
    """``classes``, else the LLP classes for 25 (or unknown) model outputs, else class0, class1, ..."""
    if classes is not None:
        return tuple(classes)
    n = getattr(getattr(model, "config", None), "num_classes", None)
    from avparse.core.labels import LLP_CLASSES

    if n is None or n == len(LLP_CLASSES):
        return tuple(LLP_CLASSES)
    return tuple(f"class{i}" for i in range(n))


class EventLog:
    """A sink that keeps every event and the last stats (tests, parse, small tools)."""

    def __init__(self):
        self.events: list[Event] = []
        self.last_stats: dict = {}
        self.stats_count = 0

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def stats(self, d: dict) -> None:
        self.last_stats = d
        self.stats_count += 1


@dataclass(frozen=True)
class _Chunk:
    """A runtime queue item: a chunk read from source number ``source``."""

    source: int
    chunk: AudioChunk | VideoFrame


@dataclass(frozen=True)
class _Ended:
    """A runtime queue item: source number ``source`` ended (``reason``); ``error`` says why when it
    failed (its EndOfStream's error, or the exception its thread raised)."""

    source: int
    reason: str
    error: str | None = None


class Runtime:
    """Several streams in one process: one thread per source, one loop driving the stages.

    ``model`` is a HAN (or a LoadedModel, whose ``.model`` and ``.classes`` are used);
    ``extractor`` the profile's extractor; ``sources`` objects with ``name``, ``open()``,
    ``read()`` (an iterator of chunks) and ``close()``. ``clock``: a RealClock (default)
    or a VirtualClock (as-fast-as-possible replay: it follows the media consumed).
    """

    def __init__(self, config: PipelineConfig, model, extractor, sources, *, clock: Clock | None = None,
                 classes: Sequence[str] | None = None):
        if hasattr(model, "model") and hasattr(model, "classes"):
            classes = classes if classes is not None else model.classes
            model = model.model
        self.config = config
        self.clock = clock or RealClock()
        self.sources = list(sources)
        names = [getattr(s, "name", None) for s in self.sources]
        if not self.sources or any(not n for n in names):
            raise ValueError("every source needs a stream name, and there must be at least one source")
        self.classes = classes_of(model, classes)
        self.pipeline = Pipeline(config, model, extractor, classes=self.classes, timer=time.perf_counter)
        self.sinks: list = []
        self._q: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self._threads: list[threading.Thread] = []
        self._kinds: list[frozenset] = []  # what each source yields, known once it is open
        self._live = set(range(len(self.sources)))
        self._stream_live: dict[str, set] = {}
        self.faults: list[str] = []
        self._audio_end: dict[str, float] = {}   # stream -> media time of the end of its newest audio
        self._audio_done: dict[str, float] = {}  # stream -> audio end, once its audio source ended cleanly
        self.sink_errors = 0
        self._sink_failed: set = set()  # (sink id, method) that failed once already
        self.queue_drops: dict[str, int] = {}
        self.max_depth = 0
        self._lag_sum, self._lag_n, self._lag_max = 0.0, 0, 0.0
        self._started = False
        self._running = False
        self.notices: list[str] = []  # one-time messages for the user (behind real time, ...)
        self.on_notice: Optional[Callable[[str], None]] = None  # called with each notice as it happens

    def add_sink(self, sink) -> None:
        self.sinks.append(sink)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Open every source (errors surface here, before any thread) and start their threads."""
        opened = []
        try:
            for s in self.sources:
                s.open()
                opened.append(s)
        except BaseException:
            for s in opened:
                _quiet_close(s)
            raise
        self._kinds = [source_kinds(s) for s in self.sources]
        for i, s in enumerate(self.sources):
            self._stream_live.setdefault(s.name, set()).add(i)
        for name, idx in self._stream_live.items():
            if not any("audio" in self._kinds[i] for i in idx):
                for s in opened:
                    _quiet_close(s)
                raise no_audio_error(name, [self.sources[i] for i in idx])
        for name, idx in self._stream_live.items():
            separate = len(idx) > 1
            self.pipeline.add_stream(name, video=any("video" in self._kinds[i] for i in idx),
                                     wait_for_video=self.clock.follows_media and separate,
                                     separate_clocks=separate)
        for i, s in enumerate(self.sources):
            th = threading.Thread(target=self._reader, args=(i, s), name=f"avparse-source-{s.name}-{i}",
                                  daemon=True)
            self._threads.append(th)
        self._started = True
        for th in self._threads:
            th.start()

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to end: open events are closed with offsets saying ``reason``."""
        self._stop_reason = reason
        self._stop.set()

    def run(self) -> dict:
        """Start (unless started) and drive the stages until every source ended or stop() was called."""
        if not self._started:
            self.start()
        self._running = True
        last_stats = self.clock.now()
        try:
            while self._live and not self._stop.is_set():
                now = self.clock.now()
                deadline = self.pipeline.deadline()
                wait = self.config.stats_interval - (now - last_stats)
                if deadline is not None and not self.clock.follows_media:
                    wait = min(wait, deadline - now)
                try:
                    item = self._q.get(timeout=min(max(wait, 0.001), 0.25))
                except queue.Empty:
                    item = None
                if item is not None:
                    self._handle(item)
                now = self.clock.now()
                self._emit(self.pipeline.poll(now))
                if now - last_stats >= self.config.stats_interval:
                    last_stats = now
                    self._send_stats()
            reason = self._stop_reason if self._stop.is_set() else "end-of-stream"
            self._stop.set()
            for s in self.sources:
                _quiet_close(s)
            self._emit(self.pipeline.stop(reason, self.clock.now()))
        finally:  # also when a stage raised: no source or thread is left running
            self._stop.set()
            for s in self.sources:
                _quiet_close(s)
            for th in self._threads:
                th.join(timeout=2.0)
            self._running = False
        st = self.stats()
        self._send_stats(st)
        return st

    # ------------------------------------------------------------ internals
    def _reader(self, i: int, source) -> None:
        try:
            for chunk in source.read():
                if self._stop.is_set():
                    break
                if isinstance(chunk, EndOfStream):
                    self._put(_Ended(i, chunk.reason, chunk.error), block=True)
                    return
                self._put(_Chunk(i, chunk), block=not self.config.drop_when_full)
            self._put(_Ended(i, "end-of-stream"), block=True)
        except BaseException as e:  # a source failing while running is reported, and survived
            self._put(_Ended(i, "source-lost", f"{type(e).__name__}: {e}"), block=True)

    def _put(self, item: _Chunk | _Ended, *, block: bool) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1 if block else 0)
                return
            except queue.Full:
                if not block:
                    name = self.sources[item.source].name
                    self.queue_drops[name] = self.queue_drops.get(name, 0) + 1
                    return

    def _handle(self, item: _Chunk | _Ended) -> None:
        self.max_depth = max(self.max_depth, self._q.qsize() + 1)
        i = item.source
        source = self.sources[i]
        name = source.name
        if isinstance(item, _Chunk):
            chunk = item.chunk
            self.clock.advance(chunk.end if isinstance(chunk, AudioChunk) else chunk.t)
            if isinstance(chunk, AudioChunk):
                self._audio_end[name] = chunk.end
            shed = False
            if chunk.wall_time and not self.clock.follows_media:
                lag = self.clock.now() - chunk.wall_time  # capture -> taken off the queue
                self._lag_max = max(self._lag_max, lag)
                self._lag_sum += lag
                self._lag_n += 1
                shed = self.config.max_lag is not None and lag > self.config.max_lag
            before = sum(self.pipeline.shed.values())
            self._emit(self.pipeline.feed(chunk, self.clock.now(), shed=shed))
            if shed and sum(self.pipeline.shed.values()) > before:
                self._behind(lag)
            elif not shed and not self.notices:
                self._check_speed()
            # audio ended cleanly, video went on: end once the video has passed the audio's end
            done = self._audio_done.get(name)
            if done is not None and isinstance(chunk, VideoFrame) and \
                    chunk.t >= done + self.config.assembler.late_tolerance:
                self._end_stream(name, "end-of-stream")
            return
        # the source ended or failed
        self._live.discard(i)
        failed = item.error is not None
        if failed:
            self.faults.append(f"stream {name!r}: source {type(source).__name__} failed: {item.error}")
        live = self._stream_live.get(name, set())
        live.discard(i)
        audio_left = any("audio" in self._kinds[j] for j in live)
        if not live:
            self._end_stream(name, "source-lost" if failed else item.reason)
        elif "audio" in self._kinds[i] and not audio_left:
            if failed:  # the master clock is gone: the stream cannot go on
                self._end_stream(name, "source-lost")
            else:  # let the video catch up with the audio's end (as-fast-as-possible replay)
                self._audio_done[name] = self._audio_end.get(name, 0.0)
        elif not any("video" in self._kinds[j] for j in live):
            self._emit(self.pipeline.end_video(name, self.clock.now()))

    def real_time_factor(self) -> Optional[float]:
        """Compute seconds (extractors + HAN) per second of media analysed, all streams together
        (> 1: the machine cannot keep up in real time); None before the first snippets."""
        c = self.pipeline.inference.counters
        n = c["snippets"]
        if n < 3:
            return None
        streams = max(1, len(self._stream_live))
        return (c["extract_seconds"] + c["han_seconds"]) / (n * self.config.grid.hop / streams)

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            try:
                self.on_notice(text)
            except Exception:
                pass

    def _check_speed(self) -> None:
        """Once, after a few snippets: say so when the analysis is slower than real time."""
        if self.clock.follows_media or self.pipeline.inference.counters["snippets"] < 5:
            return
        rtf = self.real_time_factor()
        if rtf is not None and rtf > 1.0:
            then = ("the delay grows (shedding is off)" if self.config.max_lag is None else
                    f"once input waits more than {self.config.max_lag:g} s, snippets are shed (not analysed; "
                    "counted in the stats, drops.shed_snippets)")
            self._notice(f"this machine needs {rtf:.2f} s to analyse each second of media (real-time factor "
                         f"{rtf:.2f} > 1): it cannot keep up in real time; {then}. Faster: --precision bf16, "
                         "--device cuda, or a lighter model")

    def _behind(self, lag: float) -> None:
        if any(n.startswith("behind real time") for n in self.notices):
            return
        rtf = self.real_time_factor()
        rate = f"real-time factor {rtf:.2f}" if rtf is not None else "real-time factor not measured yet"
        self._notice(f"behind real time: input waited {lag:.1f} s (> max_lag {self.config.max_lag:g} s, {rate}); "
                     "shedding snippets to stay live: they are not analysed, events stay as they were across "
                     "them, and the stats count them (drops.shed_snippets)")

    def _end_stream(self, name: str, reason: str) -> None:
        self._audio_done.pop(name, None)
        self._emit(self.pipeline.end_stream(name, reason, self.clock.now()))
        for j in list(self._stream_live.get(name, ())):  # the rest of the stream's sources stop counting
            self._live.discard(j)
        self._stream_live[name] = set()

    def _emit(self, events) -> None:
        for e in events:
            self._to_sinks("emit", e)

    def _send_stats(self, st: dict | None = None) -> None:
        self._to_sinks("stats", st or self.stats())

    def _to_sinks(self, method: str, arg) -> None:
        """``sink.<method>(arg)`` for every sink; a sink that raises is counted and reported, not fatal."""
        for s in self.sinks:
            try:
                getattr(s, method)(arg)
            except Exception as exc:
                self.sink_errors += 1
                if (id(s), method) not in self._sink_failed:  # said once per sink and method, then counted
                    self._sink_failed.add((id(s), method))
                    self.faults.append(f"sink {type(s).__name__}.{method} failed: {exc} "
                                       f"(later failures are counted in sink_errors)")

    def stats(self) -> dict:
        d = self.pipeline.stats()
        d["time"] = round(self.clock.now(), 6)
        d["queue"] = {"depth": self._q.qsize(), "max_depth": self.max_depth, "capacity": self.config.queue_size}
        d["drops"] = {
            "queue": dict(self.queue_drops),
            "late_frames": sum(s.get("late_frames", 0) for s in d["streams"].values()),
            "missing_frames": sum(s.get("missing_frames", 0) for s in d["streams"].values()),
            "audio_gaps": sum(s.get("audio_gaps", 0) for s in d["streams"].values()),
            "shed_snippets": sum(d["shed"].values()),
        }
        rtf = None if self.clock.follows_media else self.real_time_factor()
        d["real_time_factor"] = None if rtf is None else round(rtf, 4)
        d["input_lag"] = {"mean": round(self._lag_sum / self._lag_n, 6) if self._lag_n else None,
                          "max": round(self._lag_max, 6) if self._lag_n else None}
        d["faults"] = list(self.faults[-20:])
        d["sink_errors"] = self.sink_errors
        d["running"] = self._running
        return d


def _quiet_close(source) -> None:
    try:
        source.close()
    except Exception:
        pass
