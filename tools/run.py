"""`avparse run`: run the live pipeline and publish its events over ZeroMQ.

    avparse run --scene [SEED] | --file PATH | --camera SPEC [--mic DEVICE] [options]
    avparse run --config streams.toml [options]

One stream from the flags, or several from a TOML file (see docs/eventstream.md
for its keys). Events go to a ZeroMQ XPUB socket (default
tcp://127.0.0.1:5556), with a snapshot service for late joiners (default
tcp://127.0.0.1:5557), heartbeats, stats, and optionally a JSON-lines log.
Ctrl-C or SIGTERM stop it cleanly: open events are closed with an offset whose
reason is "stopped", the log is complete, the sockets are closed, exit 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .common import (
    PRECISIONS,
    StreamSpec,
    UserError,
    add_model_flags,
    add_tracker_args,
    build_sources,
    check_device,
    check_model,
    load_model_parts,
    mirror_option,
    open_publisher,
    real_input_notice,
    run_main,
    TrackerOptions,
    stop_signals,
    thread_tuner,
    tracker_config,
)

STOP_GRACE = 1.0  # seconds a signal waits for the pipeline to end by itself before the run leaves anyway

# TOML keys: top level, [publish], and each [[stream]] (anything else is an error).
TOP_KEYS = {"model", "profile", "hop", "lookahead", "window", "max_batch", "device", "backend", "precision",
            "offline", "mirror", "threads", "max_lag", "extractor_weights", "duration", "fast", "on", "off", "min_on",
            "min_off", "gate", "calibration",
            "publish", "stream"}
PUBLISH_KEYS = {"pub", "snapshot", "log", "name", "curve_server_key", "curve_allow", "heartbeat"}
STREAM_KEYS = {"name", "scene", "scene_duration", "file", "camera", "mic", "speed"}
PIPELINE_KEYS = ("hop", "window", "lookahead", "max_batch", "device", "backend")  # onto pipeline_config


@dataclass
class RunSpec:
    streams: list[StreamSpec] = field(default_factory=list)
    options: dict = field(default_factory=dict)     # top-level keys (absent: the configs' defaults)
    publish: dict = field(default_factory=dict)     # [publish] keys (absent: PublisherConfig's defaults)


def build_parser() -> argparse.ArgumentParser:
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.inference import InferenceConfig
    from avparse.stream.publisher import PublisherConfig

    inf, pub = InferenceConfig(), PublisherConfig()
    p = argparse.ArgumentParser(prog="avparse run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"Defaults: hop {SnippetGrid.hop:g} s, window {inf.window}, lookahead {inf.lookahead}, "
                                       f"PUB {pub.pub}, snapshot {pub.snapshot}.")
    g = p.add_argument_group("what to watch (one stream; several: --config)")
    g.add_argument("--config", metavar="TOML", help="TOML file describing one or more streams")
    g.add_argument("--scene", nargs="?", type=int, const=0, default=None, metavar="SEED",
                   help="a generated scene (seed, default 0)")
    g.add_argument("--scene-duration", type=int, default=None, metavar="S", help=f"seconds of generated scene ({StreamSpec.scene_duration})")
    g.add_argument("--file", metavar="PATH", help="a media file or URL (FFmpeg)")
    g.add_argument("--camera", metavar="SPEC", help="camera index, device, video file or URL (OpenCV)")
    g.add_argument("--mic", metavar="DEVICE", help="microphone (PortAudio name or index; 'default')")
    g.add_argument("--name", default=None, help="stream name (default: scene, the file's stem, or camera)")
    g.add_argument("--fast", action="store_true", default=None,
                   help="files and scenes as fast as possible (default: paced in real time)")
    g.add_argument("--duration", type=float, default=None, help="stop after this many seconds (0: no limit)")
    g = p.add_argument_group("model and pipeline")
    add_model_flags(g)
    g.add_argument("--hop", type=float, default=None, help="seconds between snippets (< 1: overlapping)")
    g.add_argument("--window", type=int, default=None, help="snippets per HAN window")
    g.add_argument("--lookahead", type=int, default=None, help="1 s steps of future context")
    g.add_argument("--max-batch", type=int, default=None, help="snippets per extractor batch")
    g.add_argument("--max-lag", type=float, default=None, metavar="S",
                   help="live: seconds input may wait before snippets are shed to stay live (3; 0: never shed)")
    g.add_argument("--backend", default=None, help="extractor backend: eager, compile, tensorrt")
    g.add_argument("--extractor-weights", metavar="DIR", default=None,
                   help="folder searched first for the published extractor files (paper profiles)")
    add_tracker_args(g)
    g = p.add_argument_group("publishing")
    g.add_argument("--pub", default=None, metavar="EP", help="event endpoint to bind (tcp://127.0.0.1:5556)")
    g.add_argument("--snapshot", default=None, metavar="EP",
                   help="snapshot endpoint to bind (tcp://127.0.0.1:5557; 'none' for no snapshot service)")
    g.add_argument("--log", default=None, metavar="PATH", help="append every event to this JSON-lines file")
    g.add_argument("--publisher-name", default=None, help="stable publisher name on the wire (default host/endpoint)")
    g.add_argument("--curve-server-key", metavar="FILE", help="server secret key file (enables CURVE)")
    g.add_argument("--curve-allow", metavar="DIR", help="folder of allowed client public keys (*.key)")
    return p


# ----------------------------------------------------------------- the TOML file
def _toml_error(path, key, msg) -> UserError:
    return UserError(f"{path}: {key}: {msg}")


def _check_type(path, key, value, types, what):
    if isinstance(value, bool) and bool not in types:
        raise _toml_error(path, key, f"must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise _toml_error(path, key, f"must be {what}, got {value!r}")
    check_range(key.rsplit(".", 1)[-1], value, f"{path}: {key}:")
    return value


_TYPES = {
    "model": ((str,), "a model name or a path"), "profile": ((str,), "a profile name"),
    "hop": ((int, float), "a number"), "precision": ((str,), "auto, fp32, bf16 or fp16"),
    "offline": ((bool,), "true or false"), "threads": ((int,), "an integer"), "max_lag": ((int, float), "a number"),
    "mirror": ((str,), "a base address (http://host/path/)"),
    "lookahead": ((int,), "an integer"), "window": ((int,), "an integer"), "max_batch": ((int,), "an integer"),
    "device": ((str,), "a string"), "backend": ((str,), "a string"), "extractor_weights": ((str,), "a path"),
    "duration": ((int, float), "a number"), "fast": ((bool,), "true or false"), "on": ((int, float), "a number"),
    "min_on": ((int, float), "a number"), "min_off": ((int, float), "a number"), "off": ((int, float), "a number"),
    "gate": ((bool,), "true or false"), "calibration": ((bool,), "true or false (false: the bare rule)"),
    "pub": ((str,), "an endpoint"), "snapshot": ((str, bool), "an endpoint or false"), "log": ((str,), "a path"),
    "curve_server_key": ((str,), "a path"), "curve_allow": ((str,), "a path"), "heartbeat": ((int, float), "a number"),
    "scene": ((int,), "an integer seed"), "scene_duration": ((int,), "whole seconds"), "file": ((str,), "a path"),
    "camera": ((str, int), "a camera spec"), "mic": ((str, int), "a device"), "speed": ((int, float), "a number"),
}
_TYPES["name"] = ((str,), "a name")

MAX_SCENE = 7 * 86400  # seconds: longer generated scenes take minutes and gigabytes just to plan
MAX_DURATION = 366 * 86400  # seconds: a year (a timer longer than this overflows the OS's timeout)
MIN_HOP = 0.05         # seconds: 20 snippets a second per stream; smaller hops only multiply the work
MAX_WINDOW = 64        # snippets: HAN's attention grows with its square and the kept features with it
MAX_BATCH = 256        # snippets per extractor call (each holds a second of audio and its frames)
MIN_HEARTBEAT = 0.01   # seconds: 100 heartbeats a second at most
MAX_HEARTBEAT = 3600.0  # seconds: subscribers take a silent publisher for gone long before an hour
MAX_THREADS = 256      # torch threads: more only adds contention (and each one a stack)
MAX_LAG = 3600.0       # seconds of input lag tolerated before shedding (0: never shed)
MAX_MIN_ON_OFF = 3600.0  # seconds: tracker durations longer than an hour would hold events indefinitely

# Every numeric setting has a range, checked (for the TOML keys and the flags alike) before
# anything starts: a value of the right type outside it is refused naming the key and the range.
_RANGES = {
    "duration": (lambda v: 0 <= v <= MAX_DURATION, f"a number of seconds from 0 (until stopped) to {MAX_DURATION} (a year)"),
    "speed": (lambda v: 0.01 <= v <= 1000, "a number from 0.01 to 1000 (1: real time)"),
    "heartbeat": (lambda v: MIN_HEARTBEAT <= v <= MAX_HEARTBEAT, f"a number of seconds from {MIN_HEARTBEAT} to {MAX_HEARTBEAT:g}"),
    "scene_duration": (lambda v: 1 <= v <= MAX_SCENE, f"whole seconds from 1 to {MAX_SCENE} (a week)"),
    "precision": (lambda v: v in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
    "threads": (lambda v: 0 <= v <= MAX_THREADS, f"an integer from 0 (torch's own) to {MAX_THREADS}"),
    "max_lag": (lambda v: 0 <= v <= MAX_LAG, f"seconds from 0 (never shed) to {MAX_LAG:g}"),
    "hop": (lambda v: MIN_HOP <= v <= 1, f"a number of seconds from {MIN_HOP} to 1 (the snippet length) that divides it"),
    "window": (lambda v: 1 <= v <= MAX_WINDOW, f"whole snippets from 1 to {MAX_WINDOW} (LLP: 10)"),
    "lookahead": (lambda v: 0 <= v < MAX_WINDOW, f"whole 1 s steps from 0 to {MAX_WINDOW - 1} (and below window)"),
    "max_batch": (lambda v: 1 <= v <= MAX_BATCH, f"whole snippets from 1 to {MAX_BATCH}"),
    "on": (lambda v: 0 <= v <= 1, "a probability from 0 to 1"),
    "min_on": (lambda v: 0 <= v <= MAX_MIN_ON_OFF, f"a number of seconds from 0 to {MAX_MIN_ON_OFF:g}"),
    "min_off": (lambda v: 0 <= v <= MAX_MIN_ON_OFF, f"a number of seconds from 0 to {MAX_MIN_ON_OFF:g}"),
    "off": (lambda v: 0 <= v <= 1, "a probability from 0 to 1"),
    "mirror": (lambda v: _is_mirror(v), "a base address: http://host/path/, https://... or file:///folder/"),
}
_FLAGS = {"duration": "--duration", "hop": "--hop", "window": "--window", "lookahead": "--lookahead",
          "max_batch": "--max-batch", "on": "--on", "min_on": "--min-on", "min_off": "--min-off",
          "scene_duration": "--scene-duration", "max_lag": "--max-lag", "threads": "--threads", "off": "--off"}


def check_range(key: str, value, where: str) -> None:
    """A UserError ``"<where>: must be <range>, got <value>"`` when ``value`` lies outside the
    range of setting ``key`` (NaN lies outside every range)."""
    ok, want = _RANGES.get(key, (None, None))
    if ok is not None and not ok(value):
        raise UserError(f"{where} must be {want}, got {value!r}")


def check_publish(publish: dict, where) -> None:
    """The [publish] values that are not numbers: endpoints, the log path, key files and folders
    (checked before anything starts: a port out of range, a log that is a folder)."""
    from avparse.stream.publisher import PublisherError, check_endpoint

    for k in ("pub", "snapshot"):
        v = publish.get(k)
        if isinstance(v, str) and not (k == "snapshot" and v.lower() in ("none", "off", "")):
            try:
                check_endpoint(v)
            except PublisherError as e:
                raise UserError(f"{where(k)} {e}") from None
    log = publish.get("log")
    if log is not None:
        p = Path(log)
        if not log or p.is_dir():
            raise UserError(f"{where('log')} {log!r} is a folder; give a file path for the event log")
        if not p.parent.is_dir():
            raise UserError(f"{where('log')} {log!r}: folder {p.parent} does not exist")


def _is_mirror(text: str) -> bool:
    from avparse.core.hub import check_mirror

    try:
        check_mirror(text)
    except ValueError:
        return False
    return True


def load_toml(path: str) -> RunSpec:
    """Read a run description; any problem is a UserError naming the file and the key."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such configuration file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid TOML: not UTF-8 text") from None
    spec = RunSpec()
    for k, v in data.items():
        if k not in TOP_KEYS:
            raise _toml_error(path, k, f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
        if k in ("publish", "stream"):
            continue
        spec.options[k] = _check_type(path, k, v, *_TYPES[k])
    pub = data.get("publish", {})
    if not isinstance(pub, dict):
        raise _toml_error(path, "publish", "must be a table [publish]")
    for k, v in pub.items():
        if k not in PUBLISH_KEYS:
            raise _toml_error(path, f"publish.{k}", f"unknown key (known: {', '.join(sorted(PUBLISH_KEYS))})")
        spec.publish[k] = _check_type(path, f"publish.{k}", v, *_TYPES[k])
    streams = data.get("stream", [])
    if not isinstance(streams, list) or not streams or not all(isinstance(s, dict) for s in streams):
        raise _toml_error(path, "stream", "describe at least one stream as [[stream]] tables")
    for i, s in enumerate(streams):
        where = f"stream[{i}]"
        for k, v in s.items():
            if k not in STREAM_KEYS:
                raise _toml_error(path, f"{where}.{k}", f"unknown key (known: {', '.join(sorted(STREAM_KEYS))})")
            _check_type(path, f"{where}.{k}", v, *_TYPES[k])
        if "name" not in s:
            raise _toml_error(path, f"{where}.name", "missing: every stream needs a name")
        kinds = [k for k in ("scene", "file", "camera") if k in s]
        if len(kinds) > 1 or (not kinds and "mic" not in s):
            raise _toml_error(path, where, "give exactly one of scene, file, camera (camera may add mic), or mic alone")
        if "mic" in s and ("scene" in s or "file" in s):
            raise _toml_error(path, f"{where}.mic", "a microphone goes with a camera or alone")
        spec.streams.append(StreamSpec(
            name=s["name"], scene=s.get("scene"), scene_duration=s.get("scene_duration", StreamSpec.scene_duration),
            file=s.get("file"), camera=None if s.get("camera") is None else str(s["camera"]),
            mic=None if s.get("mic") is None else str(s["mic"]), speed=float(s.get("speed", StreamSpec.speed))))
    names = [s.name for s in spec.streams]
    if len(set(names)) != len(names):
        raise _toml_error(path, "stream", f"stream names must differ, got {names}")
    return spec


def spec_from_args(args) -> RunSpec:
    if args.config:
        if any(x is not None for x in (args.scene, args.file, args.camera, args.mic)):
            raise UserError("give the streams either in --config or with --scene/--file/--camera/--mic, not both")
        spec = load_toml(args.config)
    else:
        spec = RunSpec()
        if args.scene is not None and (args.file or args.camera or args.mic):
            raise UserError("--scene goes alone (not with --file/--camera/--mic)")
        if args.file and (args.camera or args.mic):
            raise UserError("--file goes alone (not with --camera/--mic)")
        if args.scene is None and not (args.file or args.camera or args.mic):
            raise UserError("nothing to watch: give --scene, --file, --camera and/or --mic, or --config TOML")
        name = args.name or ("scene" if args.scene is not None else
                             Path(args.file).stem if args.file else "camera" if args.camera else "mic")
        spec.streams.append(StreamSpec(name=name, scene=args.scene,
                                       scene_duration=args.scene_duration or StreamSpec.scene_duration,
                                       file=args.file, camera=args.camera, mic=args.mic))
    for k, flag in _FLAGS.items():
        v = getattr(args, k)
        if v is not None:
            check_range(k, v, flag)
    mirror_option(args.mirror)  # a bad address is one line now, before the sockets open
    # flags override the file's top-level and [publish] values
    for k in ("model", "profile", "hop", "lookahead", "window", "max_batch", "device", "backend", "precision",
              "offline", "mirror", "threads", "max_lag", "extractor_weights", "duration", "fast", "on", "off",
              "min_on", "min_off"):
        v = getattr(args, k)
        if v is not None:
            spec.options[k] = v
    if args.gate:
        spec.options["gate"] = True
    if args.no_calibration:
        spec.options["calibration"] = False
    for k, a in (("pub", "pub"), ("snapshot", "snapshot"), ("log", "log"), ("name", "publisher_name"),
                 ("curve_server_key", "curve_server_key"), ("curve_allow", "curve_allow")):
        v = getattr(args, a)
        if v is not None:
            spec.publish[k] = v
    flags = {"pub": "--pub", "snapshot": "--snapshot", "log": "--log"}
    check_publish(spec.publish, lambda k: flags[k] if getattr(args, k) is not None else
                  (f"{args.config}: publish.{k}:" if args.config else flags[k]))
    from avparse.stream import wire

    for s in spec.streams:
        try:
            wire.check_stream_name(s.name)
        except wire.WireError as e:
            raise UserError(str(e)) from None
    return spec


# ----------------------------------------------------------------- running
def main(argv=None) -> int:
    return run_main(build_parser, lambda args: _run(spec_from_args(args)), argv)


def _run(spec: RunSpec) -> int:
    from avparse.stream.grid import SnippetGrid
    from avparse.stream.inference import InferenceConfig

    o = spec.options
    check_model(o.get("model"))
    device = o.get("device", InferenceConfig.device)
    check_device(device)
    key = spec.publish.get("curve_server_key")
    if key and not Path(key).is_file():
        raise UserError(f"{key}: no such key file (make one with `avparse keys DIR --name server`)")

    from avparse.core.media import MediaError
    from avparse.stream.clock import RealClock, VirtualClock
    from avparse.stream.pipeline import Runtime, pipeline_config
    from avparse.stream.sources import SourceError

    fast = bool(o.get("fast", False))
    if fast and any(s.camera is not None or s.mic is not None for s in spec.streams):
        raise UserError("--fast is for files and scenes; cameras and microphones run in real time")
    from avparse.stream.guard import raise_fd_limit

    raise_fd_limit()  # toward the hard limit: room for subscribers (a half-open crowd is cut near it)
    publisher = open_publisher(spec.publish, prog="avparse run")  # a busy port fails fast, before the model loads
    if not key:
        for ep in (publisher.pub_endpoint, publisher.snapshot_endpoint):
            if ep and not _loopback(ep):
                print(f"avparse run: warning: {ep} is reachable from other machines and CURVE is off: anyone who "
                      f"can connect receives the events (add --curve-server-key and --curve-allow; "
                      f"docs/reliability.md)", file=sys.stderr, flush=True)
    stopped = threading.Event()
    runtime = None

    closing = threading.Event()  # the main thread is closing the publisher itself

    def force_stop():
        # The pipeline did not come back within STOP_GRACE (a long extractor batch, the model still
        # loading): close the open events with "stopped" from here, flush, and leave now.
        if closing.is_set():  # the main thread is closing already: one more grace, then leave anyway
            threading.Event().wait(STOP_GRACE)
        publisher.close(reason="stopped")
        print(f"avparse run: stopped while busy (after {STOP_GRACE:g} s); "
              f"{publisher.counters['events']} events published", file=sys.stderr, flush=True)
        os._exit(_exit_status(publisher))

    def on_signal(signum, _frame):
        if stopped.is_set():  # a second signal: leave now
            force_stop()
        stopped.set()
        if runtime is not None:
            runtime.stop("stopped")
        watchdog = threading.Timer(STOP_GRACE, force_stop)
        watchdog.daemon = True
        watchdog.start()

    timer = None
    try:
        with stop_signals(on_signal):
            res, loaded, extractor = load_model_parts(o)
            hop = float(o.get("hop", SnippetGrid.hop))
            options = TrackerOptions(on=o.get("on"), off=o.get("off"), min_on=o.get("min_on"),
                                     min_off=o.get("min_off"), gate=bool(o.get("gate", False)),
                                     calibrated=o.get("calibration", True))
            tracker, rules = tracker_config(loaded, hop=hop, options=options)
            try:
                config = pipeline_config(profile=loaded.profile, tracker=tracker,
                                         drop_when_full=any(s.camera or s.mic for s in spec.streams),
                                         max_lag=max_lag(o), **{k: o[k] for k in PIPELINE_KEYS if k in o})
            except (TypeError, ValueError) as e:
                raise UserError(f"pipeline options: {e}") from None
            clock = VirtualClock() if fast else RealClock()
            sources = build_sources(spec.streams, loaded.profile, fast=fast)
            for s in spec.streams:
                real_input_notice("avparse run", res.entry, input_kind(s), loaded.classes)
            runtime = Runtime(config, loaded, extractor, sources, clock=clock)
            runtime.on_notice = lambda text: print(f"avparse run: {text}", file=sys.stderr, flush=True)
            tuner = thread_tuner(o)
            if tuner is not None:
                runtime.add_sink(tuner)
            runtime.add_sink(publisher)
            if stopped.is_set():
                return 0
            try:
                runtime.start()
            except (MediaError, SourceError) as e:
                raise UserError(str(e)) from None
            duration = float(o.get("duration", 0) or 0)
            if duration > 0:
                timer = threading.Timer(duration, runtime.stop, args=("stopped",))
                timer.daemon = True
                timer.start()
            print(f"avparse run: publishing {', '.join(s.name for s in spec.streams)} on {publisher.pub_endpoint}"
                  + (f", snapshot {publisher.snapshot_endpoint}" if publisher.snapshot_endpoint else "")
                  + (f", log {spec.publish['log']}" if spec.publish.get("log") else "") + f"; tracker: {rules}",
                  file=sys.stderr, flush=True)
            runtime.run()
            for f in runtime.faults:
                print(f"avparse run: {f}", file=sys.stderr)
    finally:
        if timer is not None:
            timer.cancel()
        closing.set()
        publisher.close(reason="stopped")
    print(f"avparse run: {publisher.counters['events']} events published"
          + (" (exit 1: the event log failed while running, see the warning above)" if publisher.failures else ""),
          file=sys.stderr)
    if stopped.is_set():
        # Stopped by a signal, and everything is closed, flushed and said: leave now. The
        # interpreter's own teardown (freeing a large scene, torch's pools) took 2-3 s more
        # here after a SIGTERM, and a signal must be honoured within a second or two.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status(publisher))
    return _exit_status(publisher)


def _exit_status(publisher) -> int:
    """0, or 1 when a sink failed while running (the event log could not be written: its events
    were published but are not all in the log)."""
    return 1 if publisher.failures else 0


def _loopback(endpoint: str) -> bool:
    """True for endpoints other machines cannot reach (loopback TCP, ipc, inproc)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("localhost", "::1", "lo")


def max_lag(o: dict):
    """PipelineConfig.max_lag from the options: not given, the default; 0: never shed."""
    from avparse.stream.pipeline import PipelineConfig

    v = o.get("max_lag")
    return PipelineConfig.max_lag if v is None else (None if v == 0 else float(v))


def input_kind(s: StreamSpec) -> str:
    """What a stream watches, in the words of the bundled model's notice."""
    return ("scene" if s.scene is not None else "file" if s.file is not None else
            "camera" if s.camera is not None else "microphone")
