"""The Python API behind ``avparse.load``: a model by name or path, parsing a file, streaming events.

    import avparse
    parser = avparse.load("demo")             # or "llp", or a checkpoint path
    segments = parser.parse("clip.mp4")       # [Segment(label, modality, onset, offset, score)]
    for event in parser.stream(camera=0, mic="default"):   # typed Events as they are decided
        print(event.label, event.modality, event.kind, event.media_time)

A name is looked up in the registry (``avparse.core.registry``): its files are
fetched on first use, verified and cached (``avparse.core.hub``); a path is a
checkpoint written by ``avparse train`` or the authors' ``MMIL_Net.pt``. The
commands (``avparse parse/run/demo --model NAME|PATH``) use the same
functions, so the two give the same model, extractors and events.

It lives in ``tools`` because it wires core (models, extractors) and stream
(sources, runtime) together, which only ``tools`` may do.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, TextIO


class ModelError(Exception):
    """A model that cannot be had: unknown name, missing file, failed download or check (one line)."""


@dataclass(frozen=True)
class ModelOptions:
    device: str = "cpu"                  # torch device of the extractors and HAN ("cpu", "cuda", "cuda:1")
    precision: str = "auto"              # extractors: "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "bf16" (CPU), "fp16"
    backend: str = "eager"               # extractors: "eager", "compile", "tensorrt"
    profile: Optional[str] = None        # feature profile for a checkpoint that stores none (the authors': paper-pca)
    extractor_weights: Optional[str] = None  # folder searched first for published extractor files
    offline: Optional[bool] = None       # never download (None: $AVPARSE_OFFLINE)
    mirror: Optional[str] = None         # base address serving the files by name (None: $AVPARSE_MIRROR)
    threads: Optional[int] = None        # torch CPU threads (None: avparse.tools.api.pick_threads(); 0: leave torch's)


@dataclass(frozen=True)
class Resolved:
    path: Path                  # the checkpoint file
    entry: object               # the registry's ModelEntry, or None for a path
    name: str                   # the registry name, or the file name


def default_progress() -> TextIO | None:
    """Where download progress goes: stderr (a bar when it is a terminal, one line per file otherwise)."""
    return sys.stderr


def resolve(spec: str | os.PathLike | None, options: ModelOptions = ModelOptions(), *,
            progress: TextIO | None = None) -> Resolved:
    """The checkpoint of ``spec`` (a registry name, default "demo", or a path), fetched and verified,
    with every extractor file of the entry's profile (so a first run downloads everything at once)."""
    from avparse.core import hub, registry

    spec = registry.DEFAULT_MODEL if spec is None else spec
    text = os.fspath(spec)
    if text in registry.MODELS:
        entry = registry.MODELS[text]
        if options.profile and options.profile != entry.profile and options.profile not in entry.profiles:
            choices = ", ".join((entry.profile,) + tuple(entry.profiles))
            raise ModelError(f"model {entry.name} runs on feature profile {choices}, not {options.profile}")
        if entry.bundled:
            from importlib.resources import files

            path = Path(str(files("avparse.core") / "assets" / entry.bundled))
            if not path.is_file():
                raise ModelError(f"the bundled {entry.name} model is missing ({path}); rebuild it with "
                                 "`avparse bundle` or pass --model with another name or a checkpoint")
            fetch_files(entry.extractor_files(options.profile), options, progress=progress)
            return Resolved(path, entry, entry.name)
        dirs = [options.extractor_weights] if options.extractor_weights else []
        paths = _fetch(entry.files(options.profile), options, dirs=dirs, progress=progress)
        return Resolved(paths[0], entry, entry.name)
    path = resolve_path(text)
    return Resolved(path, None, path.name)


def resolve_path(spec) -> Path | None:
    """None for a registry name (or None: the default), the Path of an existing checkpoint file,
    else ModelError naming the known names."""
    from avparse.core import registry

    if spec is None or os.fspath(spec) in registry.MODELS:
        return None
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        raise ModelError(f"{text}: is a directory, not a checkpoint file")
    if not path.is_file():
        hint = "" if os.sep in text or text.endswith((".pt", ".pth")) else \
            f" (known model names: {', '.join(registry.MODELS)}; `avparse models` lists them)"
        raise ModelError(f"{text}: no such checkpoint file or model name{hint}")
    return path


def _fetch(files, options: ModelOptions, *, dirs=(), progress=None) -> list:
    from avparse.core import hub

    try:
        return hub.fetch(files, dirs=dirs, offline=options.offline, mirror=options.mirror, progress=progress)
    except (hub.WeightsNotFoundError, hub.WeightsError, hub.DownloadError) as e:
        raise ModelError(str(e)) from None


def fetch_files(files, options: ModelOptions, *, progress=None) -> list:
    """Fetch and verify published extractor files (looked for in ``options.extractor_weights`` first)."""
    dirs = [options.extractor_weights] if options.extractor_weights else []
    return _fetch(files, options, dirs=dirs, progress=progress) if files else []


def check_device(device: str) -> None:
    """A torch device that exists here, else a ModelError (not torch's traceback)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelError(f"device {device}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device}: no CUDA GPU is usable here; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


@dataclass(frozen=True)
class CpuSample:
    busy: float       # jiffies all CPUs spent busy (/proc/stat "cpu" line: total minus idle and iowait)
    total: float      # jiffies in all
    own: float        # CPU seconds this process used (all threads)
    wall: float       # time.monotonic()


def cpu_sample() -> Optional[CpuSample]:
    """A reading of the machine's and this process's CPU use; None where /proc/stat is absent."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    t = os.times()
    idle = fields[3] + fields[4]
    return CpuSample(busy=sum(fields) - idle, total=sum(fields), own=t.user + t.system, wall=time.monotonic())


def _allowed_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cpus(since: Optional[CpuSample], now: Optional[CpuSample] = None, *,
              ncpu: Optional[int] = None) -> Optional[float]:
    """CPUs that other processes left free between two samples: the machine's busy CPUs minus this
    process's own use (so our own threads, spinning or not, do not count against us); at most the
    CPUs this process may run on. ``ncpu``: the CPUs /proc/stat counts (default: os.cpu_count())."""
    now = now or cpu_sample()
    if since is None or now is None or now.total <= since.total or now.wall <= since.wall:
        return None
    ncpu = ncpu or os.cpu_count() or 1
    busy = (now.busy - since.busy) / (now.total - since.total) * ncpu
    own = (now.own - since.own) / (now.wall - since.wall)
    others = max(0.0, busy - own)
    return max(0.0, min(float(_allowed_cpus()), ncpu - others))


def pick_threads(since: Optional[CpuSample] = None, *, sample_seconds: float = 0.2) -> int:
    """torch CPU threads for inference: the CPUs other processes leave free, at least 1.

    Why: torch's default is one intra-op thread per CPU. When another process keeps a CPU busy, a
    thread that waits for its turn holds up every parallel region of the others: on the 2-CPU
    development machine the lite extractor went from 19 ms to 0.87 s per snippet with one other
    torch process running, while one thread on the free CPU keeps its single-thread speed
    (docs/benchmarks.md, "Threads"). ``since``: a CpuSample taken earlier (the measurement covers
    the time since; else it samples for ``sample_seconds``). ``AVPARSE_THREADS=N`` overrides."""
    env = os.environ.get("AVPARSE_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if since is None:
        since = cpu_sample()
        time.sleep(sample_seconds)
    free = free_cpus(since)
    cpus = _allowed_cpus()
    if free is None:
        return cpus
    return max(1, min(cpus, int(free + 0.3)))


def set_threads(threads: Optional[int], since: Optional[CpuSample] = None) -> int:
    """Apply ``threads`` (None: pick_threads(since); 0: leave torch's setting) and return torch's count."""
    import torch

    if threads is None:
        threads = pick_threads(since)
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class ThreadTuner:
    """A runtime sink that re-picks torch's CPU threads every ``interval`` seconds from the CPUs other
    processes left free meanwhile (a competitor that starts or stops later is followed). Its
    ``stats`` runs on the runtime's thread, between batches. ``changes`` lists (threads, free)."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self._since = cpu_sample()
        self.changes: list = []

    def emit(self, event) -> None:
        pass

    def stats(self, d: dict) -> None:
        now = cpu_sample()
        if now is None or self._since is None or now.wall - self._since.wall < self.interval:
            return
        free = free_cpus(self._since, now)
        self._since = now
        if free is None:
            return
        import torch

        want = max(1, min(_allowed_cpus(), int(free + 0.3)))
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
            self.changes.append((want, round(free, 2)))


def load_parts(spec, options: ModelOptions = ModelOptions(), *, progress: TextIO | None = None):
    """(Resolved, LoadedModel, Extractor): what the commands and ``load`` build a pipeline from."""
    from avparse.core import registry
    from avparse.core.checkpoint import CheckpointError, load_model
    from avparse.core.extractors import build_extractor
    from avparse.core.extractors.backends import BackendError
    from avparse.core.extractors.extractor import ExtractorOptions
    from avparse.core.hub import WeightsError, WeightsNotFoundError

    check_device(options.device)
    res = resolve(spec, options, progress=progress)
    try:
        loaded = load_model(res.path, device=options.device, profile=options.profile)
    except CheckpointError as e:
        raise ModelError(f"{e}; pass --model with a model name or a checkpoint written by avparse train") from None
    weights = loaded.extractor_state
    if weights is None:
        # a checkpoint without bundled extractors runs on the published files of its profile
        fetch_files(registry.PROFILE_FILES.get(loaded.profile.name, ()), options, progress=progress)
        weights = options.extractor_weights
    try:
        extractor = build_extractor(loaded.profile, weights=weights, device=options.device,
                                    options=ExtractorOptions(backend=options.backend, precision=options.precision))
    except (WeightsError, WeightsNotFoundError, BackendError, FileNotFoundError, ValueError) as e:
        raise ModelError(f"extractors of profile {loaded.profile.name!r}: {e}") from None
    return res, loaded, extractor


def real_input_notice(entry, kind: str, classes=None) -> Optional[str]:
    """The one line a model trained on generated scenes owes a user who feeds it real input.
    ``classes``: the loaded checkpoint's (what the model really knows; default: the registry entry's)."""
    if entry is None or getattr(entry, "real_world", True) or kind == "scene":
        return None
    classes = tuple(entry.classes if classes is None else classes)
    shown = ", ".join(classes[:4])
    return (f"the bundled {entry.name} model knows only the {len(classes)} classes of generated scenes "
            f"({shown}, ...) and labels real {kind} input with them anyway; for real video use --model llp "
            "(25 everyday classes: Speech, Dog, Car, ...)")


# ----------------------------------------------------------------------------- the parser


class Parser:
    """A loaded model with its extractors: ``parse(file)`` -> segments, ``events(file)`` and
    ``stream(...)`` -> events as they are decided. Made by :func:`load`."""

    def __init__(self, resolved: Resolved, loaded, extractor, *, tracker=None, hop: float = 1.0,
                 window: int = 10, lookahead: int = 0, max_batch: int = 16, max_wait: float = 0.05,
                 options: ModelOptions = ModelOptions(), calibrated: bool = True):
        self.name = resolved.name            # registry name or checkpoint file name
        self.path = resolved.path            # the checkpoint file
        self.entry = resolved.entry          # registry entry (None for a path)
        self.loaded = loaded                 # LoadedModel (model, config, classes, profile, meta)
        self.extractor = extractor
        self.classes = tuple(loaded.classes)
        self.profile = loaded.profile
        self.options = options
        self.tracker = tracker               # a TrackerConfig, or None: the checkpoint's calibrated rules
        self.calibrated = calibrated         # False: the bare rule when ``tracker`` is None
        self._pipe = dict(hop=hop, window=window, lookahead=lookahead, max_batch=max_batch, max_wait=max_wait)
        self._warned = False

    def __repr__(self) -> str:
        return (f"Parser({self.name!r}, profile={self.profile.name!r}, {len(self.classes)} classes, "
                f"device={self.options.device!r})")

    def config(self, **runtime):
        """The PipelineConfig of this parser (``runtime``: pipeline_config arguments that override the
        parser's, e.g. max_batch, or PipelineConfig fields such as drop_when_full, max_lag)."""
        from avparse.stream.pipeline import pipeline_config

        kw = {**self._pipe, **runtime}  # a caller's hop, window, max_batch, ... win over the parser's
        return pipeline_config(profile=self.profile, device=self.options.device, backend=self.options.backend,
                               tracker=self.tracker_config(kw["hop"]), **kw)

    def tracker_config(self, hop: float):
        """The TrackerConfig used at ``hop``: the one given to :func:`load`, else the checkpoint's
        calibrated rules (``avparse calibrate``; those of the nearest calibrated hop), else None (the
        bare rule), as ``avparse parse`` and ``run`` decide."""
        if self.tracker is not None or not self.calibrated:
            return self.tracker
        from avparse.stream.decision import checkpoint_rules
        from avparse.stream.tracker import TrackerConfig

        rules = checkpoint_rules(getattr(self.loaded, "calibration", None), hop)
        return None if rules is None else TrackerConfig.from_options(rules=rules)

    def _notice(self, kind: str) -> None:
        text = real_input_notice(self.entry, kind, self.classes)
        if text and not self._warned:
            self._warned = True
            warnings.warn(text, UserWarning, stacklevel=3)

    def events(self, file, *, name: str | None = None, stats: dict | None = None, progress=None) -> Iterator:
        """The events of a media file (any format FFmpeg reads, or a URL), as fast as the machine goes,
        each as soon as it is decided (a generator; ``stats`` is filled at the end)."""
        from avparse.stream.offline import iter_source
        from avparse.stream.sources import FileSource

        self._notice("file")
        source = FileSource(os.fspath(file), sample_rate=self.profile.sample_rate, name=name)
        return iter_source(self.config(), self.loaded, self.extractor, source, stats=stats, progress=progress)

    def parse(self, file, *, name: str | None = None) -> list:
        """The closed segments of a media file: ``Segment(stream, label, modality, onset, offset, score)``
        sorted by onset (``start``/``end`` are the same times as ``onset``/``offset``)."""
        from avparse.stream.tracker import events_to_segments

        self._notice("file")
        self._warned = True
        segs = events_to_segments(self.events(file, name=name))
        return sorted(segs, key=lambda s: (s.onset, s.label, s.modality))

    def stream(self, *, camera=None, mic=None, file=None, scene: int | None = None, scene_duration: int = 30,
               realtime: bool | None = None, name: str | None = None, max_pending: int = 256) -> "EventStream":
        """Typed events of a live source, as they are decided: ``camera`` (index, device, file or URL,
        OpenCV) with ``mic`` (PortAudio name or index, "default"), or ``mic`` alone, or ``file``, or
        ``scene`` (the seed of a generated scene). Files and scenes run as fast as possible unless
        ``realtime``; cameras and microphones in real time. Sources open now (a missing device raises
        here); the runtime runs in a thread; at most ``max_pending`` events wait for the loop (then
        the runtime waits, and live capture drops what it cannot queue, counted in ``stats``).
        ``close()`` (or leaving a ``with`` block, or dropping the stream after ``break``) stops it and
        closes the sources; reading on after ``close()`` gives the "stopped" offsets of the classes
        still on (see EventStream)."""
        from avparse.stream.clock import RealClock, VirtualClock
        from avparse.stream.pipeline import Runtime

        from .common import StreamSpec, build_sources

        kinds = [k for k, v in (("camera", camera), ("file", file), ("scene", scene)) if v is not None]
        if len(kinds) > 1 or (not kinds and mic is None) or (mic is not None and kinds and kinds != ["camera"]):
            raise ValueError("give one of camera (with or without mic), mic, file or scene")
        live = camera is not None or mic is not None
        paced = live or bool(realtime)
        clock = RealClock() if paced else VirtualClock()
        default = ("scene" if scene is not None else Path(os.fspath(file)).stem if file is not None else
                   "camera" if camera is not None else "mic")
        spec = StreamSpec(name=name or default, scene=None if scene is None else int(scene),
                          scene_duration=int(scene_duration), file=None if file is None else os.fspath(file),
                          camera=None if camera is None else str(camera), mic=None if mic is None else str(mic))
        sources = build_sources([spec], self.profile, fast=not paced, clock=clock)
        kind = ("file" if file is not None else "scene" if scene is not None else
                "camera" if camera is not None else "microphone")
        self._notice(kind)
        runtime = Runtime(self.config(drop_when_full=live), self.loaded, self.extractor, sources, clock=clock)
        runtime.on_notice = lambda text: warnings.warn(text, RuntimeWarning, stacklevel=2)
        if self.options.threads is None and self.options.device == "cpu":
            runtime.add_sink(ThreadTuner())
        return EventStream(runtime, max_pending=max_pending)


class _Buffer:
    """The events between the runtime's thread and the consumer: bounded (a full buffer makes
    ``put`` wait, so a slow consumer holds the runtime up instead of letting memory grow) until
    :meth:`unbound`, after which ``put`` never waits. Unbound when the stream is closed: what the
    runtime still emits then (the "stopped" offsets of open classes, a few events of its last
    snippets) must not wait for a consumer that may never read again."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._bounded = True

    def put(self, item) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._bounded or len(self._items) < self.size)
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float):
        """The oldest item; raises queue.Empty after ``timeout`` seconds without one."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout=timeout):
                raise queue.Empty
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def unbound(self) -> None:
        with self._cond:
            self._bounded = False
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class _BufferSink:
    """The runtime's sink (its thread): events into the buffer, the latest stats kept."""

    def __init__(self, buf: _Buffer):
        self.buf = buf
        self.last_stats: dict = {}

    def emit(self, event) -> None:
        self.buf.put(event)

    def stats(self, d: dict) -> None:
        self.last_stats = d


def _drive(runtime, buf: _Buffer, errors: list, end) -> None:
    """The stream's thread: run the runtime, then put the end marker after its last events."""
    try:
        runtime.run()
    except BaseException as e:  # handed to the consumer
        errors.append(e)
    finally:
        buf.put(end)


class EventStream:
    """An iterator of Events from a Runtime running in a thread (see Parser.stream).

    ``close()`` (also leaving a ``with`` block, or garbage collection of a stream nobody holds, as
    after ``break`` out of ``for event in parser.stream(...)``) stops the runtime as ``avparse run``
    stops on Ctrl-C: the sources close, every class still on is closed with an offset whose
    ``reason`` is ``"stopped"`` (docs/eventstream.md), and the runtime's thread ends before
    ``close()`` returns. Those offsets are kept for the iterator: after ``close()``, iterating the
    stream yields the events decided before the stop that were not read yet, then the "stopped"
    offsets, then ends; so a caller who reads on after ``close()`` has an offset for every onset it
    received. ``close()`` may be called from another thread while the loop waits for the next event.
    ``stats`` is the runtime's latest stats dict (its final one once the stream ended)."""

    _END = object()

    def __init__(self, runtime, *, max_pending: int = 256, join_timeout: float = 60.0):
        self.runtime = runtime
        self.join_timeout = join_timeout  # seconds close() waits for the runtime's last snippets and offsets
        self._errors: list = []
        self._buf = _Buffer(max_pending)
        self._sink = _BufferSink(self._buf)
        self._done = False      # the end marker was read: iteration is over
        self._closed = False    # close() was called (or the stream ended by itself)
        runtime.add_sink(self._sink)
        runtime.start()  # opens the sources here: a missing camera or file raises now
        # the thread holds no reference to self, so dropping the iterator (break) frees it and closes
        self._thread = threading.Thread(target=_drive, args=(runtime, self._buf, self._errors, self._END),
                                        name="avparse-stream", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> dict:
        return self._sink.last_stats

    @property
    def error(self) -> BaseException | None:
        """The exception the runtime raised, if any (also raised by the loop when it ends)."""
        return self._errors[0] if self._errors else None

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        while True:
            try:
                item = self._buf.get(timeout=0.25)
            except queue.Empty:
                if self._thread.is_alive() or len(self._buf):
                    continue
                item = self._END  # the thread is gone without its end marker (cannot happen; no hang)
            if item is self._END:
                self._done = self._closed = True
                self._thread.join(timeout=self.join_timeout)
                if self.error is not None:
                    raise self.error
                raise StopIteration
            return item

    def close(self) -> None:
        """Stop the runtime (offsets with reason "stopped" for the classes still on, kept for the
        iterator), and wait for its thread to end. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buf.unbound()  # the runtime's last events never wait for the consumer
        self.runtime.stop("stopped")
        self._thread.join(timeout=self.join_timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def load(model: str | os.PathLike | None = None, *, device: str = "cpu", precision: str = "auto",
         backend: str = "eager", profile: str | None = None, extractor_weights: str | None = None,
         offline: bool | None = None, mirror: str | None = None, threads: int | None = None, tracker=None,
         calibrated: bool = True, hop: float = 1.0, window: int = 10, lookahead: int = 0, progress: TextIO | None = None) -> Parser:
    """A :class:`Parser` for ``model``: a registry name ("demo", the default; "llp") or a checkpoint path.

    Files of a named model are fetched on first use into the torch hub cache and verified
    (``offline``/``mirror`` or $AVPARSE_OFFLINE/$AVPARSE_MIRROR; download progress on ``progress``,
    default stderr). ``precision`` "bf16" runs the extractors' convolutions in bfloat16 on the CPU
    (faster, approximate); ``profile`` "paper-pca" reads the authors' checkpoint with VGGish's
    PCA + 8-bit audio features; ``threads``: torch CPU threads (None: picked from the free CPUs).
    ``tracker``: a TrackerConfig (thresholds, minimum durations; default: the checkpoint's calibrated
    rules, ``calibrated=False``: the bare rule); ``hop``, ``window``, ``lookahead``:
    the pipeline's snippet grid and HAN window (docs/pipeline.md).
    """
    options = ModelOptions(device=device, precision=precision, backend=backend, profile=profile,
                           extractor_weights=extractor_weights, offline=offline, mirror=mirror, threads=threads)
    since = cpu_sample()  # the free CPUs are measured while the model loads
    res, loaded, extractor = load_parts(model, options, progress=default_progress() if progress is None else progress)
    set_threads(threads, since)
    return Parser(res, loaded, extractor, tracker=tracker, hop=hop, window=window, lookahead=lookahead,
                  options=options, calibrated=calibrated)
