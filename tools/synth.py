"""`avparse synth`: write generated audio-visual scenes with dense ground truth.

    avparse synth --out DIR --videos N --seed S [--preset llp|independent] [knobs]
    avparse synth --stats [--llp DIR] [--videos N] [--preset ...]   # annotation statistics, writes nothing

writes DIR/media/<name>.mp4 (H.264 + AAC) and the LLP-format annotation files
(see docs/synth.md). The knobs change the preset's values (default preset: llp,
LLP's annotation statistics). ``--stats`` prints the statistics of N planned
scenes (default 2000) beside those of the LLP annotation files in ``--llp``.
``--bench-render`` prints what rendering one frame and one second of audio costs
for the chosen settings, and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import fail


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}") from None
    return lo, hi


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(x) for x in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or one side, got {text!r}")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    from avparse.train.synth import SynthConfig, WriteConfig
    from avparse.train.synth_plan import PRESETS

    d, w = SynthConfig(), WriteConfig()
    p = argparse.ArgumentParser(prog="avparse synth", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (created; existing clips of the same names are replaced)")
    p.add_argument("--videos", type=int, help="number of clips (--stats: scenes planned, default 2000)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0): same seed, same files (default 0)")
    p.add_argument("--jobs", type=int, default=w.jobs, help=f"clips encoded in parallel (default {w.jobs})")
    p.add_argument("--preset", choices=tuple(PRESETS), default="llp",
                   help="scene statistics: llp (default: LLP's annotation statistics) or independent (modality "
                        "drawn independently of the class: the stress test for noisy modality labels)")
    g = p.add_argument_group("scene format")
    g.add_argument("--duration", type=int, help=f"seconds per clip (default {d.duration})")
    g.add_argument("--size", type=_size, metavar="WxH", help=f"frame size (default {d.width}x{d.height})")
    g.add_argument("--fps", type=int, help=f"video frames per second (default {d.fps})")
    g.add_argument("--sample-rate", type=int, help=f"audio sample rate (default {d.sample_rate})")
    g.add_argument("--channels", type=int, help=f"audio channels in the files, 1 or 2 (default {d.channels})")
    g = p.add_argument_group("difficulty (default: the preset's values)")
    g.add_argument("--events", type=_pair, metavar="MIN,MAX",
                   help=f"preset independent: class events per 10 s (default {d.min_events},{d.max_events})")
    g.add_argument("--event-len", type=_pair, metavar="MIN,MAX",
                   help=f"preset independent: event length in whole seconds (default {d.min_len},{d.max_len})")
    g.add_argument("--p-audio-only", type=float,
                   help=f"preset independent: share of audible-only events (default {d.p_audio_only})")
    g.add_argument("--p-visual-only", type=float,
                   help=f"preset independent: share of visible-only events (default {d.p_visual_only})")
    g.add_argument("--p-same-interval", type=float,
                   help="audible and visible events: share whose two intervals coincide "
                        f"(default: llp {d.p_same_interval}, independent {PRESETS['independent']['p_same_interval']})")
    g.add_argument("--snr-db", type=_pair, metavar="LO,HI",
                   help=f"sound level over background noise, dB (default {d.snr_db[0]:g},{d.snr_db[1]:g})")
    g.add_argument("--noise-level", type=float, help=f"background noise RMS (default {d.noise_level})")
    g.add_argument("--distractor-rate", type=float,
                   help=f"sounds of no class per second (default {d.distractor_rate})")
    g.add_argument("--clutter", type=int, help=f"sprites of no class present throughout (default {d.clutter})")
    g.add_argument("--visual-distractor-rate", type=float,
                   help=f"sprites of no class that come and go, per second (default {d.visual_distractor_rate})")
    g.add_argument("--frame-noise", type=int, help=f"pixel noise, +- grey levels (default {d.frame_noise})")
    g = p.add_argument_group("split and encoding")
    g.add_argument("--val-fraction", type=float, default=w.val_fraction,
                   help=f"share of clips in val (default {w.val_fraction})")
    g.add_argument("--test-fraction", type=float, default=w.test_fraction,
                   help=f"share of clips in test (default {w.test_fraction})")
    g.add_argument("--crf", type=int, default=w.crf, help=f"x264 quality, lower is better (default {w.crf})")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--stats", action="store_true",
                   help="print the annotation statistics of --videos planned scenes (beside LLP's with --llp); "
                        "write nothing")
    p.add_argument("--llp", metavar="DIR", help="--stats: folder of the LLP annotation files (AVVP_*.csv)")
    p.add_argument("--json", metavar="PATH", help="--stats: also write the figures as JSON")
    p.add_argument("--bench-render", action="store_true",
                   help="print the cost of rendering a frame and a second of audio, write nothing")
    return p


def _configs(a):
    from avparse.train.synth import SynthError, WriteConfig
    from avparse.train.synth_plan import synth_preset

    for flag in ("events", "event_len"):
        v = getattr(a, flag)
        if v is not None and (v[0] != int(v[0]) or v[1] != int(v[1])):
            raise SynthError("--events and --event-len take whole numbers")
    changes = {}
    for flag, field in (("duration", "duration"), ("sample_rate", "sample_rate"), ("channels", "channels"),
                        ("fps", "fps"), ("p_audio_only", "p_audio_only"), ("p_visual_only", "p_visual_only"),
                        ("p_same_interval", "p_same_interval"), ("snr_db", "snr_db"), ("noise_level", "noise_level"),
                        ("distractor_rate", "distractor_rate"), ("clutter", "clutter"),
                        ("visual_distractor_rate", "visual_distractor_rate"), ("frame_noise", "frame_noise")):
        if getattr(a, flag) is not None:
            changes[field] = getattr(a, flag)
    if a.size is not None:
        changes.update(width=a.size[0], height=a.size[1])
    if a.events is not None:
        changes.update(min_events=int(a.events[0]), max_events=int(a.events[1]))
    if a.event_len is not None:
        changes.update(min_len=int(a.event_len[0]), max_len=int(a.event_len[1]))
    cfg = synth_preset(a.preset, **changes)
    if not (0 <= a.val_fraction and 0 <= a.test_fraction and a.val_fraction + a.test_fraction <= 1):
        raise SynthError("--val-fraction and --test-fraction must be >= 0 and sum to at most 1")
    if a.jobs < 1:
        raise SynthError("--jobs must be >= 1")
    return cfg, WriteConfig(val_fraction=a.val_fraction, test_fraction=a.test_fraction, crf=a.crf, jobs=a.jobs)


def _stats(a, cfg) -> None:
    import json

    from avparse.train.llp import LLPFormatError
    from avparse.train.synth import SynthError
    from avparse.train.synth_stats import annotation_stats, format_stats, llp_annotations, synth_annotations

    n = a.videos if a.videos is not None else 2000
    if n < 1:
        raise SynthError(f"--videos must be >= 1, got {n}")
    gen = annotation_stats(*synth_annotations(n, a.seed, cfg))
    llp = None
    if a.llp is not None:
        try:
            weak, rows, empty = llp_annotations(a.llp)
        except FileNotFoundError as e:
            raise SynthError(f"--llp {a.llp}: {e.strerror or e}: {e.filename} (the LLP annotation files "
                             "AVVP_val_pd.csv, AVVP_test_pd.csv, AVVP_eval_audio.csv, AVVP_eval_visual.csv)") from None
        except LLPFormatError as e:
            raise SynthError(str(e)) from None
        llp = annotation_stats(weak, rows)
        llp["rows_marking_nothing"] = empty
    print(format_stats(gen, f"generated, preset {a.preset}, seed {a.seed}", llp))
    if llp is not None:
        print(f"\n(LLP: {llp['rows_marking_nothing']} dense rows that mark no second left out)")
    if a.json:
        Path(a.json).write_text(json.dumps({"generated": gen, "llp": llp, "preset": a.preset, "seed": a.seed,
                                            "config": __import__("dataclasses").asdict(cfg)}, indent=1) + "\n")


def _bench_render(cfg, seed: int) -> None:
    import numpy as np

    from avparse.train import synth_audio
    from avparse.train.synth import clip_scene

    rec: dict[str, list] = {k: [] for k in ("build", "frame", "audio", "block")}

    def timed(name, fn, per=1.0):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        rec[name].append(((time.perf_counter() - w) / per, (time.process_time() - c) / per))
        return out

    for i in range(10):
        sc = timed("build", lambda: clip_scene(seed, i, cfg))
        for f in range(0, sc.n_frames, 5):
            timed("frame", lambda: sc.render_frame(f))
        synth_audio._SEG_CACHE.clear()  # each figure pays for its own noise segments
        for s in range(int(sc.duration)):
            timed("audio", lambda: sc.render_audio_direct(s * sc.sample_rate, sc.sample_rate))
        step = sc.sample_rate // 100
        synth_audio._SEG_CACHE.clear()
        timed("block", lambda: [sc.render_audio(s, step) for s in range(0, sc.n_samples, step)], sc.duration)

    print(f"scene {cfg.width}x{cfg.height} at {cfg.fps} fps, {cfg.sample_rate} Hz, {cfg.duration} s, 10 scenes "
          f"(medians; wall time grows with the machine's load, CPU time less so)")
    for name, text in (("build", "build a scene"), ("frame", "render one frame"),
                       ("audio", "render 1 s of audio in one call"), ("block", "render 1 s of audio in 10 ms blocks")):
        x = np.asarray(rec[name]) * 1e3
        print(f"{text:<36} wall {np.median(x[:, 0]):7.2f} ms (p90 {np.percentile(x[:, 0], 90):6.2f})"
              f"   cpu {np.median(x[:, 1]):7.2f} ms   n={len(x)}")


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    from avparse.train.synth import SynthError, write_dataset

    try:
        cfg, wcfg = _configs(a)
        if a.seed < 0:
            raise SynthError("--seed must be >= 0")
        if a.bench_render:
            _bench_render(cfg, a.seed)
            return 0
        if a.stats:
            _stats(a, cfg)
            return 0
        if a.out is None or a.videos is None:
            return fail("--out DIR and --videos N are required (see avparse synth --help)")
        if a.videos < 1:
            return fail(f"--videos must be >= 1, got {a.videos}")

        def progress(done, n):
            if not a.quiet and (done == n or done % max(1, n // 20) == 0):
                print(f"\r{done}/{n} clips", end="\n" if done == n else "", file=sys.stderr, flush=True)

        info = write_dataset(a.out, a.videos, a.seed, cfg, write=wcfg, progress=progress)
    except SynthError as e:
        return fail(str(e))
    except BrokenPipeError:
        return 1   # the reader of stdout went away (e.g. `| head`): nothing to report
    except OSError as e:
        return fail(f"cannot write to {a.out or a.json}: {e.strerror or e}")
    s = {k: len(v) for k, v in info.splits.items()}
    print(f"wrote {len(info.names)} clips ({s['train']} train, {s['val']} val, {s['test']} test) to {info.out_dir} "
          f"in {info.seconds:.1f} s ({len(info.names) / info.seconds:.2f} clips/s)")
    return 0
