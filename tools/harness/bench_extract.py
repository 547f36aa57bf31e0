"""`avparse bench extract`: compute per 1 s snippet for each profile and backend.

Prints, side by side, the median milliseconds of compute per snippet (audio,
2D, 3D and total) at batch 1 and a larger batch, for every profile and
backend that runs here, and compares with the targets: ``paper`` on the CPU
<= 1000 ms per snippet (one real-time stream on 2 cores), ``lite`` <= 150 ms.
``--sweep`` (for a GPU) prints snippets per second and per-batch latency for
batch sizes 1..256: each real-time stream needs one snippet per second.

Wall time is what a stream waits; the process CPU time is shown next to it
because on a shared machine the wall time includes waiting for the cores
(``uptime`` load average is printed). Published weights are used when they are on disk; otherwise random weights
(the output says so: timings are the same, the features are not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

from .timing import sync_of

TARGET_MS = {("paper", "cpu"): 1000.0, ("paper-pca", "cpu"): 1000.0, ("lite", "cpu"): 150.0}


def _parser():
    ap = argparse.ArgumentParser(prog="avparse bench extract", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="paper,lite", help="comma-separated profiles (default: paper,lite)")
    ap.add_argument("--backends", default="eager,compile,tensorrt",
                    help="comma-separated backends; tensorrt is skipped where it cannot run (default: all)")
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ap.add_argument("--batch", type=int, default=0, help="the larger batch (default: 4 for paper on CPU, else 16)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (default: 5)")
    ap.add_argument("--weights", default=None, help="folder with the published weight files (else the torch hub cache)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--sweep", default="", help="batch sizes for a throughput sweep, e.g. 1,2,4,8,16,32,64,128,256")
    ap.add_argument("--precisions", default="auto,bf16",
                    help="comma-separated: auto (fp32 on CPU, fp16 on GPU), fp32, fp16, bf16 (CPU, approximate); "
                         "bf16 is skipped on a GPU (default: auto,bf16)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: eager only, batch 1 and 2, one repetition")
    return ap


def _snippets(n, profile, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((n, profile.samples_per_snippet))).astype("float32")
    # 320x240 like the LLP clips: the resize/crop is part of the cost
    frames = rng.integers(0, 256, (n, profile.frames_per_snippet, 240, 320, 3), dtype=np.uint8)
    return audio, frames


def _time_parts(ext, n, reps):
    """Median wall ms and process CPU ms per call for audio, 2D, 3D on a batch
    of n snippets (after one warm-up)."""
    import torch

    audio, frames = _snippets(n, ext.profile)
    a = torch.from_numpy(audio).to(ext.device)
    f = torch.from_numpy(frames).to(ext.device)
    parts = {"audio": lambda: ext.encode_audio(a), "2d": lambda: ext.encode_v2d(f), "3d": lambda: ext.encode_v3d(f)}
    sync = sync_of(ext.device) or (lambda: None)
    out, cpu = {}, {}
    with torch.inference_mode():
        for name, fn in parts.items():
            fn()
            sync()
            ts, cs = [], []
            for _ in range(reps):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                sync()
                ts.append((time.perf_counter() - t0) * 1000.0)
                cs.append((time.process_time() - c0) * 1000.0)
            out[name] = statistics.median(ts)
            cpu[name] = statistics.median(cs)
    return out, cpu


def build(profile, backend, device, weights, precision="auto"):
    """(extractor, weights note, fallback warnings): published weights when on disk, else random."""
    from avparse.core.extractors import build_extractor
    from avparse.core.extractors.extractor import ExtractorOptions
    from avparse.core.weights import WeightsNotFoundError

    note = ""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            ext = build_extractor(profile, weights=weights, device=device,
                                  options=ExtractorOptions(backend=backend, precision=precision))
            if profile == "lite" and weights is None:
                note = "random init (lite is trained, not published)"
            else:
                note = "published weights"
        except WeightsNotFoundError:
            ext = build_extractor(profile, weights="random", device=device,
                                  options=ExtractorOptions(backend=backend, precision=precision))
            note = "RANDOM weights (published files absent; same timings, different features)"
    fallback = [str(x.message) for x in w if "falling back" in str(x.message)]
    return ext, note, fallback


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from avparse.core.extractors.backends import tensorrt_unavailable_reason
    from avparse.tools.common import fail

    from .machine import load_text

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    profiles = [p for p in args.profiles.split(",") if p]
    backends = ["eager"] if args.quick else [b for b in args.backends.split(",") if b]
    reps = 1 if args.quick else max(1, args.reps)
    if "tensorrt" in backends:
        why = tensorrt_unavailable_reason(device)
        if why is not None:
            print(f"tensorrt: skipped ({why})")
            backends.remove("tensorrt")
    print(load_text())
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"{'profile':<10} {'backend':<12} {'batch':>5} {'audio':>8} {'2D':>8} {'3D':>8} {'total':>8}  {'(cpu)':>12}  ms per snippet (wall; process CPU time), target")
    rows = []
    precisions = ["auto"] if args.quick else [p for p in args.precisions.split(",") if p]
    if device.type != "cpu" and "bf16" in precisions:
        precisions.remove("bf16")
    combos = [(b, p) for b in backends for p in precisions]
    for prof in profiles:
        for backend, precision in combos:
            try:
                ext, note, fallback = build(prof, backend, device, args.weights, precision)
            except Exception as e:  # a backend that cannot be set up here
                return fail(f"{prof}/{backend}/{precision}: {str(e).splitlines()[0]}")
            label = ext.backend + ("" if precision == "auto" else f"/{precision}")
            big = args.batch or (4 if prof.startswith("paper") and device.type == "cpu" else 16)
            batches = [1, 2] if args.quick else [1, big]
            for n in batches:
                t0 = time.perf_counter()
                ms, cpu = _time_parts(ext, n, reps)
                per = {k: v / n for k, v in ms.items()}
                total = sum(per.values())
                cpu_total = sum(cpu.values()) / n
                target = TARGET_MS.get((prof, device.type))
                verdict = "" if target is None else f"{'<=' if total <= target else '> '} {target:.0f} {'ok' if total <= target else 'MISSED'}"
                print(f"{prof:<10} {label:<12} {n:>5} {per['audio']:>8.1f} {per['2d']:>8.1f} {per['3d']:>8.1f} {total:>8.1f}  "
                      f"{cpu_total:>8.1f} cpu  {verdict}", flush=True)
                rows.append((prof, label, n, total, time.perf_counter() - t0))
            print(f"{'':<10} ({note}{'; ' + fallback[0] if fallback else ''})")
    if args.sweep:
        _sweep(args, device, profiles)
    return 0


def _sweep(args, device, profiles):
    """Throughput and per-batch latency for each batch size (GPU figures)."""
    import torch

    sizes = [int(x) for x in args.sweep.split(",") if x]
    backend = [b for b in args.backends.split(",") if b][-1]
    for prof in profiles:
        ext, note, fallback = build(prof, backend, device, args.weights)
        print(f"\nsweep {prof} / {ext.backend} ({note}): batch, ms per batch (median), snippets/s = real-time streams")
        for n in sizes:
            ms, _ = _time_parts(ext, n, max(3, args.reps))
            lat = sum(ms.values())
            print(f"  {n:>4} {lat:>9.1f} ms {n / lat * 1000.0:>9.0f} snippets/s", flush=True)
            del ms
        del ext
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
