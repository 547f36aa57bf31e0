"""`avparse synth`: write generated audio-visual scenes with dense ground truth.

    avparse synth --out DIR --videos N --seed S [difficulty and format knobs]

writes DIR/media/<name>.mp4 (H.264 + AAC) and the LLP-format annotation files
(see docs/synth.md). ``--bench-render`` prints what rendering one frame and one
second of audio costs for the chosen settings, and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

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

    d, w = SynthConfig(), WriteConfig()
    p = argparse.ArgumentParser(prog="avparse synth", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", help="output folder (created; existing clips of the same names are replaced)")
    p.add_argument("--videos", type=int, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (>= 0): same seed, same files")
    p.add_argument("--jobs", type=int, default=w.jobs, help="clips encoded in parallel")
    g = p.add_argument_group("scene format")
    g.add_argument("--duration", type=int, default=d.duration, help="seconds per clip")
    g.add_argument("--size", type=_size, default=(d.width, d.height), metavar="WxH", help="frame size")
    g.add_argument("--fps", type=int, default=d.fps, help="video frames per second")
    g.add_argument("--sample-rate", type=int, default=d.sample_rate, help="audio sample rate")
    g.add_argument("--channels", type=int, default=d.channels, help="audio channels in the files (1 or 2)")
    g = p.add_argument_group("difficulty")
    g.add_argument("--events", type=_pair, default=(d.min_events, d.max_events), metavar="MIN,MAX",
                   help="class events per 10 s")
    g.add_argument("--event-len", type=_pair, default=(d.min_len, d.max_len), metavar="MIN,MAX",
                   help="event length in whole seconds")
    g.add_argument("--p-audio-only", type=float, default=d.p_audio_only, help="share of audible-only events")
    g.add_argument("--p-visual-only", type=float, default=d.p_visual_only, help="share of visible-only events")
    g.add_argument("--p-same-interval", type=float, default=d.p_same_interval,
                   help="audible and visible events: share whose two intervals coincide")
    g.add_argument("--snr-db", type=_pair, default=d.snr_db, metavar="LO,HI", help="sound level over background noise, dB")
    g.add_argument("--noise-level", type=float, default=d.noise_level, help="background noise RMS")
    g.add_argument("--distractor-rate", type=float, default=d.distractor_rate, help="sounds of no class per second")
    g.add_argument("--clutter", type=int, default=d.clutter, help="sprites of no class present throughout")
    g.add_argument("--visual-distractor-rate", type=float, default=d.visual_distractor_rate,
                   help="sprites of no class that come and go, per second")
    g.add_argument("--frame-noise", type=int, default=d.frame_noise, help="pixel noise, +- grey levels")
    g = p.add_argument_group("split and encoding")
    g.add_argument("--val-fraction", type=float, default=w.val_fraction, help="share of clips in val")
    g.add_argument("--test-fraction", type=float, default=w.test_fraction, help="share of clips in test")
    g.add_argument("--crf", type=int, default=w.crf, help="x264 quality (lower is better)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--bench-render", action="store_true",
                   help="print the cost of rendering a frame and a second of audio, write nothing")
    return p


def _configs(a):
    from avparse.train.synth import SynthConfig, SynthError, WriteConfig

    if a.events[0] != int(a.events[0]) or a.events[1] != int(a.events[1]) \
            or a.event_len[0] != int(a.event_len[0]) or a.event_len[1] != int(a.event_len[1]):
        raise SynthError("--events and --event-len take whole numbers")
    cfg = SynthConfig(
        duration=a.duration, sample_rate=a.sample_rate, channels=a.channels, fps=a.fps,
        width=a.size[0], height=a.size[1],
        min_events=int(a.events[0]), max_events=int(a.events[1]),
        min_len=int(a.event_len[0]), max_len=int(a.event_len[1]),
        p_audio_only=a.p_audio_only, p_visual_only=a.p_visual_only, p_same_interval=a.p_same_interval,
        snr_db=a.snr_db, noise_level=a.noise_level, distractor_rate=a.distractor_rate,
        clutter=a.clutter, visual_distractor_rate=a.visual_distractor_rate, frame_noise=a.frame_noise,
    )
    if not (0 <= a.val_fraction and 0 <= a.test_fraction and a.val_fraction + a.test_fraction <= 1):
        raise SynthError("--val-fraction and --test-fraction must be >= 0 and sum to at most 1")
    if a.jobs < 1:
        raise SynthError("--jobs must be >= 1")
    return cfg, WriteConfig(val_fraction=a.val_fraction, test_fraction=a.test_fraction, crf=a.crf, jobs=a.jobs)


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
    except OSError as e:
        return fail(f"cannot write to {a.out}: {e.strerror or e}")
    s = {k: len(v) for k, v in info.splits.items()}
    print(f"wrote {len(info.names)} clips ({s['train']} train, {s['val']} val, {s['test']} test) to {info.out_dir} "
          f"in {info.seconds:.1f} s ({len(info.names) / info.seconds:.2f} clips/s)")
    return 0
