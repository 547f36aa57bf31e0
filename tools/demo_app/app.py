"""The demo application: a live Runtime on a scene, a file or a camera and microphone, drawn in a
window (or written headless as an annotated mp4), its events published and printed.

``run(DemoConfig)`` wires the parts: the sources (tapped, so that the picture and the recording
see every chunk), the Runtime (its probability listener and sinks feed the overlay state), the
publisher, the recorder or event file, the terminal printer, and the window or the headless
frame pump. It returns when the media ends, on `q`, or when ``stopped`` (set by Ctrl-C) is set;
open events are closed and files finished either way.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from avparse.tools.common import (
    StreamSpec,
    TrackerOptions,
    UserError,
    build_sources,
    load_model_parts,
    real_input_notice,
    thread_tuner,
    open_publisher,
    stream_name,
    tracker_config,
)

from .recorder import RecorderConfig
from .state import OverlayConfig


@dataclass(frozen=True)
class DemoConfig:
    scene: int = 0                       # seed of the generated scene (when no camera, mic or file)
    scene_duration: int = 0              # seconds of generated scene (0: endless, scenes chained until quit)
    camera: str | None = None            # camera index, device, video file or URL (OpenCV)
    mic: str | None = None               # microphone (PortAudio name or index; "default")
    file: str | None = None              # a media file or URL with sound and picture (FFmpeg)
    model: str | None = None             # model name (demo, llp) or checkpoint file (None: the bundled demo model)
    device: str = "cpu"                  # torch device of the extractors and HAN
    precision: str = "auto"              # extractors: auto (fp32 on CPU, fp16 on CUDA), fp32, bf16 (CPU), fp16
    profile: str | None = None           # feature profile of a checkpoint that stores none (paper-pca)
    offline: bool = False                # never download model files
    mirror: str | None = None            # base address serving the model files by name (None: $AVPARSE_MIRROR)
    threads: int | None = None           # torch CPU threads (None: the free CPUs, followed while running)
    max_lag: float | None = 3.0          # seconds input may wait before snippets are shed (None: never)
    extractor_weights: str | None = None  # folder searched first for the published extractor files
    tracker: TrackerOptions = field(default_factory=TrackerOptions)  # tracker flags (default: the model's calibration)
    headless: bool = False               # no window: write the annotated video (``out``)
    out: str | None = None               # annotated mp4 to write (None: none with a window; headless: dated name)
    events: str | None = None            # JSON-lines event file (None: next to ``out``, if any)
    duration: float = 0.0                # seconds of media, then stop (0: until q or Ctrl-C)
    width: int = OverlayConfig.width     # picture width in pixels
    height: int = OverlayConfig.height   # picture height in pixels
    fps: float = RecorderConfig.fps      # pictures per second drawn and written
    window_seconds: float = OverlayConfig.window_seconds  # seconds shown by the timeline
    quiet: bool = False                  # do not print the events in the terminal
    publish: bool = True                 # publish the events over ZeroMQ
    pub: str | None = None               # event endpoint (None: PublisherConfig's default)
    snapshot: str | None = None          # snapshot endpoint (None: PublisherConfig's default; "none": no service)

    @property
    def live(self) -> bool:
        return bool(self.camera or self.mic)


class TapSource:
    """Wraps a source: every chunk also goes to ``on_chunk`` (the picture, the recording),
    and the source ends (reason "stopped") at media time ``until`` when given."""

    def __init__(self, source, on_chunk, *, until: float | None = None):
        self.source = source
        self.name = source.name
        self.on_chunk = on_chunk
        self.until = until

    @property
    def kinds(self):
        from avparse.stream.pipeline import source_kinds

        return source_kinds(self.source)

    def __getattr__(self, name):   # path, has_audio, counters, ...: the wrapped source's
        return getattr(self.source, name)

    def open(self) -> None:
        self.source.open()

    def close(self) -> None:
        self.source.close()

    def read(self):
        from avparse.stream.types import AudioChunk, EndOfStream

        it = self.source.read()
        try:
            for chunk in it:
                if self.until is not None and not isinstance(chunk, EndOfStream):
                    if chunk.t >= self.until - 1e-9:
                        yield EndOfStream(self.name, self.until, "stopped")
                        return
                    if isinstance(chunk, AudioChunk) and chunk.end > self.until:
                        keep = int(round((self.until - chunk.t) * chunk.sample_rate))
                        chunk = replace(chunk, samples=chunk.samples[:keep])
                self.on_chunk(chunk)
                yield chunk
                if isinstance(chunk, EndOfStream):
                    return
        finally:
            it.close()


class TerminalSink:
    """Prints each event on one line."""

    def __init__(self, out=None):
        self.out = out   # None: sys.stdout at the time of printing

    def emit(self, e) -> None:
        mod = {"audiovisual": "audio-visual"}.get(e.modality, e.modality)
        line = f"[{e.stream}] {e.media_time:8.2f} s  {e.kind:<6}  {e.label:<14} {mod:<12}  score {e.score:.2f}"
        if e.kind == "offset":
            line += f"  ({e.reason})"
        try:
            print(line, file=self.out or sys.stdout, flush=True)
        except (BrokenPipeError, ValueError):
            pass

    def stats(self, d: dict) -> None:
        pass


def _kinds(source):
    from avparse.stream.pipeline import source_kinds

    try:
        return source_kinds(source)
    except Exception:
        return frozenset()


def _watch(cfg: DemoConfig, profile):
    """(sources, description, truth) of what the demo watches; truth(t0, t1) for generated scenes."""
    from avparse.stream.sources import SceneSource

    if cfg.file or cfg.live:
        spec = StreamSpec(name=stream_name(Path(cfg.file).stem if cfg.file else "camera" if cfg.camera else "mic"),
                          file=cfg.file, camera=cfg.camera, mic=cfg.mic)
        where = (f"file {Path(cfg.file).name}" if cfg.file else
                 " + ".join(x for x in (f"camera {cfg.camera}" if cfg.camera else "",
                                        f"microphone {cfg.mic}" if cfg.mic else "") if x))
        return build_sources([spec], profile, fast=False), where, None
    from avparse.train.synth import SynthConfig, SynthError, make_scene

    from .scenes import ChainedScene

    try:
        if cfg.scene_duration:
            scene = make_scene(cfg.scene, SynthConfig(duration=cfg.scene_duration), name="scene")
            truth = lambda t0, t1: scene.ground_truth()  # noqa: E731
        else:
            scene = ChainedScene(cfg.scene)
            truth = scene.truth_between
    except (SynthError, ValueError) as e:
        raise UserError(f"scene: {e}") from None
    sources = [SceneSource(scene, sample_rate=profile.sample_rate, paced=True, name="scene")]
    return sources, f"generated scene, seed {cfg.scene}", truth


def run(cfg: DemoConfig, *, stopped: threading.Event, notice: str | None = None) -> int:
    """The demo until the media ends, `q`, or ``stopped`` (set by the caller's signal handler);
    ``notice``: a line printed before the recording starts."""
    from avparse.core.media import MediaError
    from avparse.stream.clock import RealClock
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.pipeline import Runtime, pipeline_config
    from avparse.stream.sources import SourceError
    from avparse.stream.types import AudioChunk, VideoFrame

    from .drawing import Overlay
    from .recorder import EventFile, Recorder, RecorderError
    from .state import OverlayState
    from .window import FramePump, Window

    headless, out, events_path = cfg.headless, cfg.out, cfg.events
    publisher = recorder = event_file = window = None
    runtime = thread = None
    try:
        if cfg.publish:
            publish = {k: v for k, v in (("pub", cfg.pub), ("snapshot", cfg.snapshot)) if v}
            publisher = open_publisher(publish, " (or pass --pub/--snapshot, or --no-publish)")
        model_opts = {"model": cfg.model, "device": cfg.device, "precision": cfg.precision, "profile": cfg.profile,
                      "offline": cfg.offline, "mirror": cfg.mirror, "threads": cfg.threads,
                      "extractor_weights": cfg.extractor_weights}
        res, loaded, extractor = load_model_parts(model_opts)
        profile = loaded.profile
        sources, where, truth = _watch(cfg, profile)

        # the picture and the recording
        try:
            ocfg = OverlayConfig(width=cfg.width, height=cfg.height, window_seconds=cfg.window_seconds)
        except ValueError as e:
            raise UserError(str(e)) from None
        state = OverlayState(ocfg, classes=loaded.classes, truth=truth)
        state.snippet_seconds = profile.snippet_seconds
        overlay = Overlay(ocfg, classes=loaded.classes, source=where, model=f"{res.name} ({profile.name})")
        if out:
            if notice:
                print(notice, file=sys.stderr, flush=True)
            try:
                recorder = Recorder(RecorderConfig(path=out, width=cfg.width, height=cfg.height, fps=cfg.fps,
                                                   sample_rate=profile.sample_rate, events_path=events_path)).open()
            except RecorderError as e:
                raise UserError(str(e)) from None
        elif events_path:   # a window and an event file, no video file
            try:
                event_file = EventFile(events_path).open()
            except RecorderError as e:
                raise UserError(str(e)) from None
        audio_src = next((s for s in sources if "audio" in _kinds(s)), None)
        same_clock = audio_src is not None and "video" in _kinds(audio_src)

        def on_chunk(chunk, is_audio_master):
            if isinstance(chunk, AudioChunk):
                state.audio(chunk)
                if recorder is not None and is_audio_master:
                    recorder.write_audio(chunk.t, chunk.samples)
            elif isinstance(chunk, VideoFrame):
                state.frame(chunk)

        until = cfg.duration or None
        tapped = [TapSource(s, (lambda c, m=(s is audio_src): on_chunk(c, m)), until=until) for s in sources]

        tracker, rules = tracker_config(loaded, hop=SnippetGrid.hop, options=cfg.tracker)
        try:
            config = pipeline_config(profile=profile, device=cfg.device, tracker=tracker, drop_when_full=cfg.live,
                                     max_lag=cfg.max_lag)
        except ValueError as e:
            raise UserError(f"pipeline options: {e}") from None
        real_input_notice("avparse demo", res.entry, "file" if cfg.file else "camera" if cfg.camera else
                          "microphone" if cfg.mic else "scene", loaded.classes)
        runtime = Runtime(config, loaded, extractor, tapped, clock=RealClock())
        runtime.on_notice = lambda text: print(f"avparse demo: {text}", file=sys.stderr, flush=True)
        tuner = thread_tuner(model_opts)
        if tuner is not None:
            runtime.add_sink(tuner)
        runtime.pipeline.observe(state)
        for sink in (publisher, state, recorder, event_file, None if cfg.quiet else TerminalSink()):
            if sink is not None:
                runtime.add_sink(sink)
        if stopped.is_set():
            return 0
        if not headless:
            window = Window(state, overlay, cfg.fps)
            window.open()
        try:
            runtime.start()
        except (MediaError, SourceError) as e:
            raise UserError(str(e)) from None

        failure: list = []

        def drive():
            try:
                runtime.run()
            except BaseException as e:  # reported after the clean-up
                failure.append(e)

        thread = threading.Thread(target=drive, name="avparse-demo-runtime", daemon=True)
        thread.start()
        if publisher is not None:
            print(f"avparse demo: {where}; events on {publisher.pub_endpoint} "
                  f"(watch them with `avparse listen {publisher.pub_endpoint}`)", file=sys.stderr, flush=True)
        print(f"avparse demo: tracker: {rules}", file=sys.stderr, flush=True)
        print("avparse demo: " + ("Ctrl-C stops" if headless else "q in the window or Ctrl-C stops"),
              file=sys.stderr, flush=True)

        pump = FramePump(state, overlay, recorder, cfg.fps, same_clock)
        try:
            if headless:
                while thread.is_alive() and not stopped.is_set():
                    pump.write_due()
                    time.sleep(0.02)
            else:
                window.loop(pump, thread, stopped)
        except RecorderError as e:
            failure.append(UserError(f"{out}: {e}"))
        runtime.stop("stopped")
        thread.join(timeout=30)
        if thread.is_alive():
            failure.append(UserError("the live pipeline did not stop within 30 s"))
        state.end()
        for f in runtime.faults:
            print(f"avparse demo: {f}", file=sys.stderr)
        if recorder is not None:
            try:
                if not failure:
                    pump.finish()
                recorder.close()
            except RecorderError as e:
                failure.append(UserError(f"{out}: {e}"))
        if failure:
            e = failure[0]
            raise e if isinstance(e, UserError) else UserError(f"the live pipeline failed: {type(e).__name__}: {e}")
        if recorder is not None:
            print(f"avparse demo: wrote {out} ({recorder.frames} frames, {recorder.video_seconds:.1f} s)"
                  + (f" and {events_path} ({recorder.events} events)" if events_path else ""), file=sys.stderr)
        elif event_file is not None:
            print(f"avparse demo: wrote {events_path} ({event_file.events} events)", file=sys.stderr)
        print(f"avparse demo: {state.events} events", file=sys.stderr)
        return 0
    finally:
        if runtime is not None and thread is not None and thread.is_alive():
            runtime.stop("stopped")
            thread.join(timeout=10)
        if recorder is not None:
            if thread is None:   # never started: leave no half-made files behind
                recorder.discard()
            try:
                recorder.close()
            except RecorderError:
                pass
        if event_file is not None:
            event_file.close()
        if window is not None:
            window.close()
        if publisher is not None:
            publisher.close(reason="stopped")
