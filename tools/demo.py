"""`avparse demo`: watch avparse parse a scene live, in a window.

    avparse demo                                   a generated scene, the bundled model
    avparse demo --camera 0 --mic default --model CKPT
    avparse demo --headless --out demo.mp4 --duration 30

The window shows the video, the events active now (class and modality), a
scrolling timeline of the last seconds (one row per class; audio, visual and
audio-visual spans in their colours; the ground truth of a generated scene
faintly beneath), an audio level meter and the current latency. The same
events are published over ZeroMQ (tcp://127.0.0.1:5556, so `avparse listen
tcp://127.0.0.1:5556` in a second terminal sees them) and printed here.
Without a display, or with --headless, it writes the annotated video with its
sound (--out, default avparse-demo-<time>.mp4) and the events as JSON lines
(--events, default next to the video). `q` in the window or Ctrl-C ends it
cleanly: open events are closed, files finished, exit 0. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from .errors import UserError, model_path, run_main

WINDOW_TITLE = "avparse demo"
SEGMENT_SECONDS = 60      # an endless generated scene is made of scenes this long, one after another


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avparse demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Keys in the window: q or Esc quits. Details: docs/demo.md.")
    g = p.add_argument_group("what to watch (default: an endless generated scene)")
    g.add_argument("--scene", type=int, default=None, metavar="SEED", help="generated scene seed (default 0)")
    g.add_argument("--scene-duration", type=int, default=0, metavar="S",
                   help="seconds of generated scene (0: endless, scenes chained until you quit)")
    g.add_argument("--camera", metavar="SPEC", help="camera index, device, video file or URL (OpenCV)")
    g.add_argument("--mic", metavar="DEVICE", help="microphone (PortAudio name or index; 'default')")
    g.add_argument("--file", metavar="PATH", help="a media file or URL with sound and picture (FFmpeg)")
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="CKPT", help="checkpoint (default: the bundled demo model)")
    g.add_argument("--device", default="cpu", help="torch device (cpu)")
    g.add_argument("--extractor-weights", metavar="DIR", default=None,
                   help="folder with the published extractor weights (when the checkpoint bundles none)")
    g.add_argument("--on", type=float, default=None, help="tracker: probability that turns a class on (0.5)")
    g.add_argument("--min-on", type=float, default=None, help="tracker: seconds on before an onset")
    g.add_argument("--min-off", type=float, default=None, help="tracker: seconds off before an offset")
    g = p.add_argument_group("output")
    g.add_argument("--headless", action="store_true", help="no window: write the annotated video (--out)")
    g.add_argument("--out", metavar="FILE.mp4", help="write the annotated video with its sound here")
    g.add_argument("--events", metavar="PATH", help="write the events as JSON lines (default: FILE.events.jsonl)")
    g.add_argument("--duration", type=float, default=0.0, metavar="S",
                   help="stop after this many seconds of media (0: until q or Ctrl-C)")
    g.add_argument("--size", default="1280x720", metavar="WxH", help="picture size (1280x720)")
    g.add_argument("--fps", type=float, default=25.0, help="pictures per second drawn and written (25)")
    g.add_argument("--seconds", type=float, default=15.0, help="seconds shown by the timeline (15)")
    g.add_argument("--quiet", action="store_true", help="do not print the events in the terminal")
    g = p.add_argument_group("publishing")
    g.add_argument("--pub", default=None, metavar="EP", help="event endpoint to bind (tcp://127.0.0.1:5556)")
    g.add_argument("--snapshot", default=None, metavar="EP",
                   help="snapshot endpoint to bind (tcp://127.0.0.1:5557; 'none' for no snapshot service)")
    g.add_argument("--no-publish", action="store_true", help="do not publish over ZeroMQ")
    return p


# ------------------------------------------------------------------ an endless scene
class ChainedScene:
    """Generated scenes of ``segment`` seconds one after another: a Scene (core.scene) that
    goes on for ``segments`` segments (a day by default, i.e. until the user quits).
    Segment k is ``make_scene((seed, k))``; a few are kept, the rest rebuilt on demand."""

    def __init__(self, seed: int, *, segment: int = SEGMENT_SECONDS, segments: int = 24 * 3600 // SEGMENT_SECONDS,
                 config=None):
        from avparse.train.synth import SYNTH_CLASSES, SynthConfig

        self.seed = seed
        self.config = replace(config or SynthConfig(), duration=segment)
        self.segment_seconds = segment
        self.segments = segments
        self.sample_rate = self.config.sample_rate
        self.fps = self.config.fps
        self.width, self.height = self.config.width, self.config.height
        self.duration = float(segment * segments)
        self.classes = SYNTH_CLASSES
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def segment(self, k: int):
        from avparse.train.synth import make_scene

        with self._lock:
            sc = self._cache.get(k)
            if sc is None:
                sc = make_scene((self.seed, k), self.config, name=f"demo_{self.seed}_{k}")
                self._cache[k] = sc
                while len(self._cache) > 3:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(k)
            return sc

    def render_audio(self, start: int, count: int):
        import numpy as np

        out = np.zeros(count, np.float32)
        n_seg = self.config.n_samples
        pos, end = max(0, start), min(start + count, int(self.duration * self.sample_rate))
        while pos < end:
            k, off = divmod(pos, n_seg)
            n = min(n_seg - off, end - pos)
            out[pos - start:pos - start + n] = self.segment(k).render_audio(off, n)
            pos += n
        return out

    def render_frame(self, index: int):
        k, i = divmod(index, self.config.n_frames)
        return self.segment(k).render_frame(i)

    def truth_between(self, t0: float, t1: float) -> list:
        """The true events of the segments that overlap [t0, t1], on the chained time line."""
        from avparse.core.scene import TrueEvent

        out = []
        seg = self.segment_seconds
        for k in range(max(0, int(t0 // seg)), min(self.segments, int(t1 // seg) + 1)):
            for e in self.segment(k).ground_truth():
                out.append(TrueEvent(e.label, e.modality, e.onset + k * seg, e.offset + k * seg))
        return out

    def ground_truth(self) -> list:
        return self.truth_between(0.0, float(self.segment_seconds))  # the first segment (the rest is made on demand)


# ------------------------------------------------------------------ taps
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


# ------------------------------------------------------------------ set-up helpers
def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m:
        raise UserError(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 1280x720")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 640 or h < 360 or w % 2 or h % 2:
        raise UserError(f"--size {text}: width and height must be even and at least 640x360")
    return w, h


def display_available() -> bool:
    """Whether a window can open: $DISPLAY names an X server that accepts a connection.

    Checked in a child process, so that this process makes no Xlib call before the GUI
    toolkit does (Xlib wants XInitThreads before any other call when threads use it)."""
    if not os.environ.get("DISPLAY"):
        return False
    probe = ("import ctypes, sys\n"
             "try:\n    x = ctypes.CDLL('libX11.so.6')\nexcept OSError:\n    sys.exit(0)\n"
             "x.XOpenDisplay.restype = ctypes.c_void_p\n"
             "sys.exit(0 if x.XOpenDisplay(None) else 1)\n")
    import subprocess

    try:
        return subprocess.run([sys.executable, "-c", probe], timeout=10, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _model_path(arg: str | None) -> Path:
    from .run import DEMO_MODEL

    return model_path(arg, DEMO_MODEL)


def _stream_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "stream"


def _default_out() -> str:
    return time.strftime("avparse-demo-%Y%m%d-%H%M%S.mp4")


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    return run_main(build_parser, _run, argv)


def _run(args) -> int:
    from . import run as run_tool

    live = bool(args.camera or args.mic)
    if args.scene is not None and (live or args.file):
        raise UserError("--scene goes alone (not with --camera/--mic/--file)")
    if args.file and live:
        raise UserError("--file goes alone (not with --camera/--mic)")
    if args.duration < 0 or args.fps <= 0 or args.seconds <= 1:
        raise UserError("--duration must be >= 0, --fps > 0 and --seconds > 1")
    if args.scene_duration < 0:
        raise UserError("--scene-duration must be >= 0 (0: endless)")
    width, height = parse_size(args.size)
    headless = args.headless or not display_available()
    out = args.out
    notice = None
    if headless and not out:
        out = _default_out()
        why = "--headless" if args.headless else "no display ($DISPLAY is unset or unreachable)"
        notice = f"avparse demo: {why}: writing the annotated video to {out}" + ("" if args.duration else " until Ctrl-C")
    events_path = args.events or (str(Path(out).with_suffix("")) + ".events.jsonl" if out else None)
    if out and not out.lower().endswith((".mp4", ".m4v", ".mov")):
        raise UserError(f"--out {out}: give a .mp4 file name")
    model_path = _model_path(args.model)

    from avparse.core.checkpoint import CheckpointError, load_model
    from avparse.core.media import MediaError
    from avparse.stream.overlay import Overlay, OverlayConfig, OverlayState
    from avparse.stream.pipeline import RealClock, Runtime, pipeline_config
    from avparse.stream.publisher import Publisher, PublisherError
    from avparse.stream.recorder import EventFile, Recorder, RecorderConfig, RecorderError
    from avparse.stream.sources import SceneSource, SourceError
    from avparse.stream.tracker import TrackerConfig
    from avparse.stream.types import AudioChunk, VideoFrame

    stopped = threading.Event()

    def on_signal(signum, _frame):
        stopped.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    publisher = recorder = event_file = window = None
    runtime = thread = None
    try:
        if not args.no_publish:
            publish = {}
            if args.pub:
                publish["pub"] = args.pub
            if args.snapshot:
                publish["snapshot"] = args.snapshot
            try:
                publisher = Publisher(run_tool.publisher_config(publish)).open()  # a busy port fails before loading
            except PublisherError as e:
                raise UserError(f"{e} (or pass --pub/--snapshot, or --no-publish)") from None
        try:
            loaded = load_model(model_path, device=args.device)
        except CheckpointError as e:
            raise UserError(f"{e}; pass --model with a checkpoint written by avparse train") from None
        profile = loaded.profile

        # what to watch
        scene = truth = None
        if args.file or live:
            spec = run_tool.RunSpec(streams=[run_tool.StreamSpec(
                name=_stream_name(Path(args.file).stem if args.file else "camera" if args.camera else "mic"),
                file=args.file, camera=args.camera, mic=args.mic)])
            sources = run_tool.build_sources(spec, profile, fast=False)
            where = (f"file {Path(args.file).name}" if args.file else
                     " + ".join(x for x in (f"camera {args.camera}" if args.camera else "",
                                            f"microphone {args.mic}" if args.mic else "") if x))
        else:
            from avparse.train.synth import SynthConfig, SynthError, make_scene

            seed = args.scene if args.scene is not None else 0
            try:
                if args.scene_duration:
                    scene = make_scene(seed, SynthConfig(duration=args.scene_duration), name="scene")
                    truth = lambda t0, t1: scene.ground_truth()  # noqa: E731
                else:
                    scene = ChainedScene(seed)
                    truth = scene.truth_between
            except (SynthError, ValueError) as e:
                raise UserError(f"scene: {e}") from None
            sources = [SceneSource(scene, sample_rate=profile.sample_rate, paced=True, name="scene")]
            where = f"generated scene, seed {seed}"

        # the picture and the recording
        try:
            ocfg = OverlayConfig(width=width, height=height, window_seconds=args.seconds)
        except ValueError as e:
            raise UserError(str(e)) from None
        state = OverlayState(ocfg, classes=loaded.classes, truth=truth)
        state.snippet_seconds = profile.snippet_seconds
        overlay = Overlay(ocfg, classes=loaded.classes, source=where,
                          model=f"{model_path.name} ({profile.name})")
        if out:
            if notice:
                print(notice, file=sys.stderr, flush=True)
            try:
                recorder = Recorder(RecorderConfig(path=out, width=width, height=height, fps=args.fps,
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

        until = args.duration or None
        tapped = [TapSource(s, (lambda c, m=(s is audio_src): on_chunk(c, m)), until=until) for s in sources]

        try:
            tracker = TrackerConfig.from_options(on=args.on, min_on=args.min_on, min_off=args.min_off)
            config = pipeline_config(profile=profile, device=args.device, tracker=tracker, drop_when_full=live)
        except ValueError as e:
            raise UserError(f"pipeline options: {e}") from None
        extractor = run_tool._extractor(loaded, {"device": args.device, "extractor_weights": args.extractor_weights})
        runtime = Runtime(config, loaded, extractor, tapped, clock=RealClock())
        runtime.pipeline.on_probs(state.probs)
        for sink in (publisher, state, recorder, event_file, None if args.quiet else TerminalSink()):
            if sink is not None:
                runtime.add_sink(sink)
        if stopped.is_set():
            return 0
        if not headless:
            window = _Window(state, overlay, args.fps)
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
        print("avparse demo: " + ("Ctrl-C stops" if headless else "q in the window or Ctrl-C stops"),
              file=sys.stderr, flush=True)

        pump = _FramePump(state, overlay, recorder, args.fps, same_clock)
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
        for sig, h in old.items():
            signal.signal(sig, h)


def _kinds(source):
    from avparse.stream.pipeline import source_kinds

    try:
        return source_kinds(source)
    except Exception:
        return frozenset()


class _FramePump:
    """Writes the recording's frames: frame k shows media time k / fps, drawn once the audio
    has passed that time (plus a margin, so the frame of that time has arrived too)."""

    MARGIN = 0.1  # seconds

    def __init__(self, state, overlay, recorder, fps: float, same_clock: bool):
        self.state, self.overlay, self.recorder = state, overlay, recorder
        self.fps, self.same_clock = fps, same_clock
        self.k = 0

    def write_due(self, end: float | None = None) -> None:
        """Frames due now (``end`` None: up to the media received, less the margin), or all
        frames before media time ``end``."""
        if self.recorder is None:
            return
        while True:
            t = self.k / self.fps
            if (t > self.state.clock_end() - self.MARGIN + 1e-9) if end is None else (t >= end - 1e-9):
                return
            self.recorder.write_frame(self.overlay.render(self.state.view(t, as_of=t, frame_at=self.same_clock)))
            self.k += 1

    def finish(self) -> None:
        """After the runtime ended: the frames up to the end of the media, audio padded to match."""
        if self.recorder is None:
            return
        end = self.state.clock_end()
        self.write_due(end=max(end, 1.0 / self.fps))
        self.recorder.pad_audio(self.recorder.video_seconds)


class _Window:
    """The demo window (OpenCV's HighGUI). ``open`` shows it before the pipeline starts;
    ``loop`` draws ``fps`` pictures a second until the runtime ends, `q`/Esc, the window is
    closed, or Ctrl-C. It opens at the picture's size, 1:1, and can be resized (ratio kept)."""

    def __init__(self, state, overlay, fps: float):
        self.state, self.overlay, self.fps = state, overlay, fps

    def open(self) -> None:
        import cv2

        w, h = self.overlay.config.width, self.overlay.config.height
        flags = cv2.WINDOW_NORMAL | getattr(cv2, "WINDOW_KEEPRATIO", 0) | getattr(cv2, "WINDOW_GUI_NORMAL", 0)
        cv2.namedWindow(WINDOW_TITLE, flags)
        cv2.resizeWindow(WINDOW_TITLE, w, h)
        cv2.imshow(WINDOW_TITLE, self.overlay.render(self.state.view(0.0))[..., ::-1])
        cv2.waitKey(100)   # let the toolkit map and paint it while the process is still quiet

    def loop(self, pump, thread, stopped) -> None:
        import cv2

        w, h = self.overlay.config.width, self.overlay.config.height
        period = 1.0 / self.fps
        checked = time.monotonic()
        try:
            while thread.is_alive() and not stopped.is_set():
                t0 = time.monotonic()
                img = self.overlay.render(self.state.view(self.state.media_now(t0)))
                cv2.imshow(WINDOW_TITLE, img[..., ::-1])
                pump.write_due()
                wait = max(1, int((period - (time.monotonic() - t0)) * 1000))
                key = cv2.waitKey(wait) & 0xFF
                if key in (ord("q"), ord("Q"), 27):
                    break
                try:
                    if cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) < 1:
                        break   # closed with the window's close button
                    if t0 - checked > 1.0:   # a window left at a toolkit's minimal size: ask again
                        checked = t0
                        _, _, ww, wh = cv2.getWindowImageRect(WINDOW_TITLE)
                        if 0 < ww < w // 4 and 0 < wh < h // 4:
                            cv2.resizeWindow(WINDOW_TITLE, w, h)
                except cv2.error:
                    break
        finally:
            self.close()

    @staticmethod
    def close() -> None:
        try:
            import cv2

            cv2.destroyWindow(WINDOW_TITLE)
            cv2.waitKey(1)
        except Exception:
            pass
