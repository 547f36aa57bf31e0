"""What the subcommands share: one-line user errors, the model flags and loading a model by name or
path (with its files fetched and verified), the device and media checks, stop signals, the data
flags of pack/train/evaluate, and the sources and publisher of the live commands (run, demo).

Everything here turns a user's mistake into a :class:`UserError` (one line, a nonzero exit),
never a traceback. Heavy imports (torch, zmq, the stream package) happen inside the helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

class UserError(Exception):
    """An error the user can fix: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> int:
    print(f"avparse: error: {message}", file=sys.stderr)
    return code


def run_main(build_parser, body, argv=None) -> int:
    """A subcommand's ``main``: parse ``argv`` with ``build_parser()``, run ``body(args)``, and turn
    a UserError into its one line and exit status."""
    args = build_parser().parse_args(argv)
    try:
        return body(args)
    except UserError as e:
        return fail(str(e), e.code)


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4): positive integers separated by commas, else a UserError naming ``flag``."""
    try:
        v = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        v = ()
    if not v or min(v) < 1:
        raise UserError(f"{flag} must be positive integers separated by commas, got {text!r}")
    return v


# ------------------------------------------------------------------ model, device, media
#
# The model flags that `demo`, `run` and `parse` share:
#     --model NAME|CKPT   a registry name (`avparse models`: demo, llp) or a checkpoint file
#     --profile NAME      feature profile of a checkpoint that stores none (paper-pca: docs/model.md)
#     --device, --precision auto|fp32|bf16|fp16, --offline, --mirror URL, --threads N
# They map onto avparse.tools.api.ModelOptions; loading is avparse.tools.api.load_parts, the same
# code as avparse.load.

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def add_model_flags(g, *, skip: tuple = ()) -> None:
    """Add the shared model flags to an argparse group (``skip``: flags the command defines itself).
    Every default is None, "not given": a TOML file or ModelOptions decides."""
    if "--model" not in skip:
        g.add_argument("--model", metavar="NAME|CKPT",
                       help="a model name (demo, llp; `avparse models` lists them) or a checkpoint file "
                            "(default: demo, the bundled model: generated scenes only)")
    if "--profile" not in skip:
        g.add_argument("--profile", default=None, metavar="NAME",
                       help="feature profile for a checkpoint that stores none (the authors' llp: paper, or "
                            "paper-pca for PCA + 8-bit VGGish features); a checkpoint's own must match")
    if "--device" not in skip:
        g.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:1")
    if "--precision" not in skip:
        g.add_argument("--precision", default=None, choices=PRECISIONS,
                       help="extractor precision: auto (fp16 on CUDA, fp32 on CPU), fp32, bf16 (CPU: faster, "
                            "features within ~0.5%% of fp32), fp16 (CUDA)")
    if "--offline" not in skip:
        g.add_argument("--offline", action="store_true", default=None,
                       help="never download model files (also AVPARSE_OFFLINE=1); missing ones are named with "
                            "where to put them")
    if "--mirror" not in skip:
        g.add_argument("--mirror", default=None, metavar="URL",
                       help="base address serving the model files by name (URL/<file name>; http://, https:// or "
                            "file:///folder/) for networks that cannot reach the original hosts; the files are "
                            "checked as from the original hosts (also AVPARSE_MIRROR)")
    if "--threads" not in skip:
        g.add_argument("--threads", type=int, default=None, metavar="N",
                       help="torch CPU threads (default: the CPUs other processes leave free; 0: torch's own)")


def model_options(o: dict):
    """ModelOptions from a dict of option values (flags and TOML keys; missing or None: its default)."""
    from .api import ModelOptions

    d = ModelOptions()
    get = lambda k: getattr(d, k) if o.get(k) is None else o[k]  # noqa: E731
    threads = o.get("threads")
    if threads is not None and threads < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    return ModelOptions(device=get("device"), precision=get("precision"), backend=get("backend"),
                        profile=o.get("profile"), extractor_weights=o.get("extractor_weights"),
                        offline=True if o.get("offline") else None, mirror=mirror_option(o.get("mirror")),
                        threads=threads)


def mirror_option(mirror):
    """A --mirror value (or TOML ``mirror``) checked now: None stays None (AVPARSE_MIRROR, if set, decides)."""
    if mirror is None:
        return None
    from avparse.core.hub import check_mirror

    try:
        return check_mirror(mirror)
    except ValueError as e:
        raise UserError(f"--mirror {e}") from None


def check_model(spec) -> None:
    """A quick check before any work: ``spec`` is None, a known model name or an existing file."""
    from .api import ModelError, resolve_path

    try:
        resolve_path(spec)
    except ModelError as e:
        raise UserError(str(e)) from None


def load_model_parts(o: dict):
    """(Resolved, LoadedModel, Extractor) for the options ``o`` (``model`` and the flags above): files
    fetched and verified, threads picked; any problem is a UserError (one line)."""
    from .api import ModelError, cpu_sample, default_progress, load_parts, set_threads

    options = model_options(o)
    check_device(options.device)
    since = cpu_sample()  # the CPUs other processes leave free are measured while the model loads
    try:
        parts = load_parts(o.get("model"), options, progress=default_progress())
    except ModelError as e:
        raise UserError(str(e)) from None
    set_threads(options.threads, since)
    return parts


def thread_tuner(o: dict):
    """The runtime sink that follows the free CPUs (None with --threads N or a GPU)."""
    from .api import ThreadTuner

    if o.get("threads") is not None or str(o.get("device") or "cpu") != "cpu":
        return None
    return ThreadTuner()


def real_input_notice(prog: str, entry, kind: str, classes=None) -> None:
    """Print, once, the line a model trained on generated scenes owes a user of real input
    (``classes``: the loaded checkpoint's)."""
    from .api import real_input_notice as text_of

    text = text_of(entry, kind, classes)
    if text:
        print(f"{prog}: note: {text}", file=sys.stderr, flush=True)


def check_device(device: str) -> None:
    """A torch device that exists here, else a UserError (not torch's traceback)."""
    from .api import ModelError, check_device as check

    try:
        check(device)
    except ModelError as e:
        raise UserError(f"--{e}") from None


def check_media(path: str, what: str = "") -> None:
    """A URL (FFmpeg reads it) or a file that exists, else a UserError naming it."""
    from avparse.core.media import is_url

    if is_url(path) or Path(path).is_file():
        return
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what}{path}: is a folder, not a media file")
    if p.exists():
        kind = "a named pipe (FIFO)" if p.is_fifo() else "a device or socket" if (
            p.is_char_device() or p.is_block_device() or p.is_socket()) else "not a regular file"
        raise UserError(f"{what}{path}: is {kind}, not a media file (give a file or a URL)")
    raise UserError(f"{what}{path}: no such media file")


@contextlib.contextmanager
def stop_signals(handler):
    """SIGINT and SIGTERM call ``handler(signum, frame)`` inside the block; the old handlers after."""
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# ------------------------------------------------------------------ data flags (pack, train, evaluate)


def add_data_args(p: argparse.ArgumentParser, *, data_required: bool = True) -> None:
    p.add_argument("--data", required=data_required, metavar="DIR",
                   help="packed store (avparse pack) or LLP feature layout (vggish/ res152/ r2plus1d_18/)")
    p.add_argument("--labels", metavar="DIR", help="folder of the LLP CSV files when not beside the features")
    p.add_argument("--profile", metavar="NAME",
                   help="feature profile of LLP-layout data (default: paper; a packed store knows its own)")
    p.add_argument("--classes", metavar="NAME|FILE",
                   help="class vocabulary of LLP-layout CSVs: llp (default), synth, or a file with one class a line")


def resolve_classes(spec: str | None):
    if spec is None:
        return None
    if spec == "llp":
        from avparse.core.labels import LLP_CLASSES

        return LLP_CLASSES
    if spec == "synth":
        from avparse.train.synth import SYNTH_CLASSES

        return tuple(SYNTH_CLASSES)
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--classes {spec}: not llp, synth or a file of class names")
    names = tuple(x.strip() for x in path.read_text().splitlines() if x.strip())
    if not names or len(set(names)) != len(names):
        raise UserError(f"--classes {spec}: the file must list distinct class names, one a line")
    return names


def data_config(args, data_dir: str | None = None):
    from avparse.core.profiles import get_profile
    from avparse.train.dataset import DataConfig

    profile = None
    if args.profile:
        try:
            profile = get_profile(args.profile)
        except ValueError as e:
            raise UserError(str(e)) from None
    return DataConfig(data_dir=data_dir or args.data, labels_dir=args.labels, profile=profile,
                      classes=resolve_classes(args.classes))


def user_errors():
    """Exception types that end in one line instead of a traceback."""
    from avparse.core.checkpoint import CheckpointError
    from avparse.train.dataset import FeatureError
    from avparse.train.llp import LLPFormatError

    return (UserError, FeatureError, LLPFormatError, CheckpointError, FloatingPointError, OSError)


# ------------------------------------------------------------------ live sources and publishing (run, demo)


def stream_name(text: str) -> str:
    """``text`` as a stream name of the wire (1-64 of A-Z a-z 0-9 _ -): other characters become ``_``."""
    import re

    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "stream"


@dataclass
class StreamSpec:
    name: str
    scene: int | None = None        # seed of a generated scene
    scene_duration: int = 30        # seconds of generated scene
    file: str | None = None         # media file or URL
    camera: str | None = None       # OpenCV capture spec
    mic: str | None = None          # PortAudio device (name or index); "default" for the default
    speed: float = 1.0              # pacing of files and scenes (1: real time)


def build_sources(streams: list[StreamSpec], profile, *, fast: bool, clock=None) -> list:
    """The sources of ``streams`` at the profile's sample rate; a missing file is a UserError."""
    from avparse.stream.sources import CameraSource, FileSource, MicrophoneSource, SceneSource

    sources = []
    for s in streams:
        if s.scene is not None:
            from avparse.train.synth import SynthConfig, SynthError, make_scene

            try:
                scene = make_scene(s.scene, SynthConfig(duration=s.scene_duration), name=s.name)
            except (SynthError, ValueError) as e:
                raise UserError(f"stream {s.name}: {e}") from None
            sources.append(SceneSource(scene, sample_rate=profile.sample_rate, paced=not fast, name=s.name,
                                       speed=s.speed, clock=clock))
        elif s.file is not None:
            check_media(s.file, f"stream {s.name}: ")
            sources.append(FileSource(s.file, sample_rate=profile.sample_rate, paced=not fast, name=s.name,
                                      speed=s.speed, clock=clock))
        else:
            if s.camera is not None:
                sources.append(CameraSource(s.camera, name=s.name))
            if s.mic is not None:
                dev = None if s.mic == "default" else (int(s.mic) if s.mic.isdigit() else s.mic)
                sources.append(MicrophoneSource(dev, sample_rate=profile.sample_rate, name=s.name))
    return sources


def publisher_config(publish: dict):
    """A PublisherConfig from the [publish] keys of a run description (absent keys: its defaults)."""
    from avparse.stream.publisher import PublisherConfig

    d = PublisherConfig()
    snap = publish.get("snapshot", d.snapshot)
    if snap is False or (isinstance(snap, str) and snap.lower() in ("none", "off", "")):
        snap = None
    if snap is True:
        snap = d.snapshot
    return PublisherConfig(pub=publish.get("pub", d.pub), snapshot=snap, name=publish.get("name", d.name),
                           log_path=publish.get("log", d.log_path),
                           curve_secret_key=publish.get("curve_server_key", d.curve_secret_key),
                           curve_allow_dir=publish.get("curve_allow", d.curve_allow_dir),
                           heartbeat_interval=float(publish.get("heartbeat", d.heartbeat_interval)))


def open_publisher(publish: dict, hint: str = "", prog: str = "avparse"):
    """Open the Publisher (a busy port fails here, before the model loads). A failure the live
    stream survives (the event log cannot be written) is one warning line on stderr, once."""
    from avparse.stream.publisher import Publisher, PublisherError

    def warn(message: str) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)

    try:
        return Publisher(publisher_config(publish), on_fault=warn).open()
    except PublisherError as e:
        raise UserError(f"{e}{hint}") from None


# ------------------------------------------------------------------ the tracker (run, demo, parse)


@dataclass(frozen=True)
class TrackerOptions:
    """The tracker flags of run, demo and parse. None: the checkpoint's calibrated value (``avparse
    calibrate``), else TrackerConfig's default (the bare rule)."""

    on: float | None = None        # on threshold for every class and modality
    off: float | None = None       # off threshold for every class and modality (None with ``on``: ``on``)
    min_on: float | None = None    # seconds on before an onset
    min_off: float | None = None   # seconds off before an offset
    gate: bool = False             # the paper's video-level gate for every modality
    calibrated: bool = True        # use the checkpoint's calibrated rules (False: the bare rule)

    @property
    def overrides(self) -> bool:
        return any(v is not None for v in (self.on, self.off, self.min_on, self.min_off)) or self.gate


def add_tracker_args(g) -> None:
    """The tracker flags on argument group ``g`` (read back with ``tracker_options``)."""
    from avparse.stream.tracker import TrackerConfig

    d = TrackerConfig()
    g.add_argument("--on", type=float, default=None,
                   help=f"tracker: probability that turns a class on, for every class and modality (default: the "
                        f"checkpoint's calibrated thresholds, else {d.on_threshold:g})")
    g.add_argument("--off", type=float, default=None,
                   help="tracker: probability below which a class turns off (default: calibrated, else --on)")
    g.add_argument("--min-on", type=float, default=None,
                   help=f"tracker: seconds on before an onset (default: calibrated, else {d.min_on:g})")
    g.add_argument("--min-off", type=float, default=None,
                   help=f"tracker: seconds off before an offset (default: calibrated, else {d.min_off:g})")
    g.add_argument("--gate", action="store_true",
                   help=f"tracker: the paper's video-level gate (the window's probability >= {d.gate_threshold:g}) "
                        "for every modality")
    g.add_argument("--no-calibration", action="store_true",
                   help="ignore the checkpoint's calibrated tracker rules: the bare rule, changed only by the flags")


def tracker_options(args) -> TrackerOptions:
    """The tracker flags of ``add_tracker_args`` as TrackerOptions; nonsense values are a UserError."""
    from avparse.stream.tracker import TrackerConfig

    opts = TrackerOptions(on=args.on, off=args.off, min_on=args.min_on, min_off=args.min_off, gate=bool(args.gate),
                          calibrated=not args.no_calibration)
    try:   # checked before any model loads
        TrackerConfig.from_options(on=opts.on, off=opts.off, min_on=opts.min_on, min_off=opts.min_off)
    except ValueError as e:
        raise UserError(f"tracker options: {e}") from None
    return opts


def tracker_config(loaded, *, hop: float, options: TrackerOptions = TrackerOptions()):
    """(TrackerConfig, one line saying which rules it applies) for checkpoint ``loaded`` at ``hop``: its
    calibrated rules (those of the nearest calibrated hop, moved to ``hop``) unless ``options.calibrated``
    is False or it has none, with the options given overriding them for every class and modality."""
    from avparse.stream.decision import checkpoint_rules
    from avparse.stream.tracker import TrackerConfig

    o = options
    rules = None
    if o.calibrated:
        try:
            rules = checkpoint_rules(getattr(loaded, "calibration", None), hop)
        except ValueError as e:
            raise UserError(f"{loaded.meta.get('path', 'the checkpoint')}: its calibration: {e}; calibrate it "
                            "again (avparse calibrate) or pass --no-calibration") from None
    try:
        cfg = TrackerConfig.from_options(on=o.on, off=o.off, min_on=o.min_on, min_off=o.min_off, video_gate=o.gate,
                                         rules=rules)
    except ValueError as e:
        raise UserError(f"tracker options: {e}") from None
    if rules is not None:
        what = f"the checkpoint's calibrated rules (chosen at hop {rules.hop:g} s"
        what += ")" if abs(rules.hop - hop) < 1e-9 else f", moved to hop {hop:g} s)"
        return cfg, what + (" with the tracker flags overriding them" if o.overrides else "")
    what = "the bare rule" + (" with the tracker flags" if o.overrides else f" (threshold {cfg.on_threshold:g})")
    if not o.calibrated:
        what += " (--no-calibration)"
    elif getattr(loaded, "calibration", None) is None:
        what += "; the checkpoint is not calibrated (avparse calibrate)"
    return cfg, what
