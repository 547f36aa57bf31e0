"""Every GPU figure of avparse in one run (scripts/gpu_bench.sh calls this), within a few minutes.

    python -m avparse.tools.harness.bench_gpu [--out gpu-bench.json] [--budget 420] [--dry-run]

1. checks: the device, torch and torch-tensorrt (or why it is absent); fp16
   features against fp32 from the same weights (cosine similarity); HAN on
   the device against the CPU; a compiled extractor against eager; the live
   pipeline parsing a generated scene on the device;
2. extractors: the paper profile (and lite) per backend (eager, compile,
   tensorrt when it imports) in fp16, full extractor calls on uint8 frames at
   the LLP clips' 320x240 coming from host memory, batch sizes 1..256: the
   latency of a batch (median, p90) and snippets per second;
3. HAN (the model's size for the profile) per batch of 10-snippet windows;
4. the estimate: real-time streams per device = snippets per second
   (extraction + one HAN window per snippet) x hop, at the best batch whose
   latency stays within one hop; the target is >= 500 paper-profile streams on
   one H100 at hop 1 s;
5. the live runtime end to end on the device (``avparse bench live``'s
   harness: K generated scenes in real time, a subscriber in another process).

Published weights are used when on disk, otherwise random weights (same
timings; the output says which). Without CUDA it runs the CPU fallback: the
same code at dry-run sizes (``--dry-run`` forces it), so the script is checked
on any machine; ``--require-cuda`` makes a missing GPU an error instead.
Sections are skipped, with the reason, once ``--budget`` seconds are spent.

Over 500 lines on purpose: it is the one self-contained script that a GPU session runs in one
call of a few minutes (scripts/gpu_bench.sh), every section beside the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .report import plain, write_json
from .timing import nearest_rank, sync_of, times


@dataclass(frozen=True)
class GPUBenchConfig:
    out: Path = Path("gpu-bench.json")     # JSON results
    device: str = "cuda"                   # torch device ("cpu" in the fallback)
    profiles: tuple[str, ...] = ("paper", "lite")  # extractor profiles timed
    backends: tuple[str, ...] = ("eager", "compile", "tensorrt")  # tensorrt only where torch_tensorrt imports
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # snippets per extractor call / windows per HAN call
    reps: int = 5                          # timed calls per figure (after one warm-up call)
    precision: str = "fp16"                # extractor precision on CUDA ("fp16" or "fp32")
    frame_hw: tuple[int, int] = (240, 320)  # frames as the LLP clips (H, W)
    hops: tuple[float, ...] = (1.0, 0.5, 0.25)  # hops for the streams estimate
    budget: float = 420.0                  # seconds; later sections are skipped once spent
    live_streams: int = 4                  # K scenes of the end-to-end live run (0: skip)
    live_seconds: int = 12                 # media seconds per scene of that run
    train_videos: int = 2048               # generated train videos of the training section (0: skip it)
    train_steps: int = 40                  # timed steps per contender per round there
    dry_run: bool = False                  # CPU-fallback sizes
    seed: int = 0


def _dry(cfg: GPUBenchConfig) -> GPUBenchConfig:
    return replace(cfg, device="cpu", profiles=("lite",),
                   backends=tuple(b for b in cfg.backends if b != "compile") or ("eager",),
                   batches=(1, 2), reps=1, precision="fp32", frame_hw=(120, 160), live_streams=min(cfg.live_streams, 1), live_seconds=2,
                   train_videos=min(cfg.train_videos, 48), train_steps=2, dry_run=True)


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.monotonic(), seconds

    @property
    def used(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.seconds - self.used


def _cos(a, b) -> float:
    import torch

    a, b = a.float().flatten(1), b.float().flatten(1)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


# ----------------------------------------------------------------- building


def build(profile: str, backend: str, cfg: GPUBenchConfig, *, seed: int | None = None, precision: str | None = None):
    """(extractor, weights note). Random weights where the published files are absent."""
    import torch

    from avparse.core.extractors import build_extractor
    from avparse.core.extractors.extractor import ExtractorOptions
    from avparse.core.weights import WeightsNotFoundError

    big = max(cfg.batches)
    prec = precision or (cfg.precision if str(cfg.device).startswith("cuda") else "fp32")
    opts = ExtractorOptions(backend=backend, precision=prec, max_images=8 * big, max_clips=big)
    if seed is not None:
        torch.manual_seed(seed)
    if profile == "lite":
        return build_extractor(profile, weights="random", device=cfg.device, options=opts), "random init (lite is trained)"
    try:
        return build_extractor(profile, device=cfg.device, options=opts), "published weights"
    except WeightsNotFoundError:
        if seed is not None:
            torch.manual_seed(seed)
        return (build_extractor(profile, weights="random", device=cfg.device, options=opts),
                "RANDOM weights (published files absent; same timings)")


def _inputs(p, n: int, cfg: GPUBenchConfig, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = cfg.frame_hw
    audio = (0.1 * rng.standard_normal((n, p.samples_per_snippet))).astype(np.float32)
    frames = rng.integers(0, 256, (n, p.frames_per_snippet, h, w, 3), dtype=np.uint8)
    return audio, frames


# ----------------------------------------------------------------- sections


def environment(cfg: GPUBenchConfig) -> dict:
    import torch

    from avparse.core.extractors.backends import tensorrt_unavailable_reason

    d = {"torch": torch.__version__, "python": platform.python_version(), "device": cfg.device,
         "cuda_available": torch.cuda.is_available(), "date": time.strftime("%Y-%m-%d %H:%M"),
         "cpu_cores": os.cpu_count(), "dry_run": cfg.dry_run}
    try:
        import torchvision

        d["torchvision"] = torchvision.__version__
    except ImportError as e:
        d["torchvision"] = f"absent ({e})"
    if str(cfg.device).startswith("cuda"):
        i = torch.cuda.current_device()
        prop = torch.cuda.get_device_properties(i)
        d.update(gpu=torch.cuda.get_device_name(i), capability=".".join(map(str, torch.cuda.get_device_capability(i))),
                 memory_gib=round(prop.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version())
    why = tensorrt_unavailable_reason(torch.device(cfg.device))
    d["tensorrt"] = "available" if why is None else f"unavailable: {why}"
    return d


def checks(cfg: GPUBenchConfig, budget: Budget) -> dict:
    """Numerics on the device: fp16 vs fp32 features, HAN device vs CPU, the pipeline on the device."""
    import torch

    out = {}
    prof = cfg.profiles[0]
    n = 2
    e32, _ = build(prof, "eager", cfg, seed=cfg.seed, precision="fp32")
    audio, frames = _inputs(e32.profile, n, cfg)
    with torch.inference_mode():
        f32 = e32(audio, frames)
    if str(cfg.device).startswith("cuda") and cfg.precision == "fp16":
        e16, _ = build(prof, "eager", cfg, seed=cfg.seed, precision="fp16")
        with torch.inference_mode():
            f16 = e16(audio, frames)
        out["fp16_vs_fp32_cosine"] = {k: _cos(getattr(f16, k), getattr(f32, k)) for k in ("audio", "v2d", "v3d")}
        nonfinite = [k for k in ("audio", "v2d", "v3d") if not bool(torch.isfinite(getattr(f16, k)).all())]
        if nonfinite:   # e.g. fp16 overflow (> 65504) of untrained networks' activations
            out["fp16_nonfinite"] = nonfinite
            out["fp32_max_abs"] = {k: float(getattr(f32, k).abs().max()) for k in nonfinite}
        # NaN compares False: a non-finite cosine fails the check
        out["fp16_ok"] = not nonfinite and all(c > 0.99 for c in out["fp16_vs_fp32_cosine"].values())
        del e16
    del e32
    out["features_shape"] = {k: list(getattr(f32, k).shape) for k in ("audio", "v2d", "v3d")}
    # HAN on the device against the CPU (same weights, same inputs)
    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile

    p = get_profile(prof)
    hc = HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim, frames_per_snippet=p.frames_per_snippet)
    torch.manual_seed(cfg.seed)
    cpu = build_han(hc).eval()
    dev = build_han(hc, weights=cpu.state_dict(), device=cfg.device).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    x = (torch.rand(4, 10, hc.audio_dim, generator=g), torch.rand(4, 10 * hc.frames_per_snippet, hc.v2d_dim, generator=g),
         torch.rand(4, 10, hc.v3d_dim, generator=g))
    with torch.inference_mode():
        a = cpu(*x).frame_prob
        b = dev(*(t.to(cfg.device) for t in x)).frame_prob.cpu()
    out["han_device_vs_cpu_max_abs"] = float((a - b).abs().max())
    out["han_ok"] = out["han_device_vs_cpu_max_abs"] < 1e-3
    return out


def pipeline_check(cfg: GPUBenchConfig, profile: str) -> dict:
    """The live pipeline (offline parse: the same stages) on a generated scene, on the device."""
    import torch

    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile
    from avparse.stream.offline import parse_source
    from avparse.stream.pipeline import pipeline_config
    from avparse.stream.sources import SceneSource
    from avparse.train.synth import SYNTH_CLASSES, SynthConfig, make_scene

    p = get_profile(profile)
    torch.manual_seed(cfg.seed)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                              frames_per_snippet=p.frames_per_snippet, num_classes=len(SYNTH_CLASSES)),
                    device=cfg.device).eval()
    ext, note = build(profile, "eager", cfg)
    scene = make_scene((cfg.seed, 7), SynthConfig(duration=4))
    stats: dict = {}
    t = time.perf_counter()
    events = parse_source(pipeline_config(profile=p, device=cfg.device), han, ext,
                          SceneSource(scene, sample_rate=p.sample_rate, name="gpu"), classes=SYNTH_CLASSES, stats=stats)
    return {"profile": profile, "events": len(events), "snippets": stats.get("snippets"), "seconds": time.perf_counter() - t,
            "weights": note + " (HAN random)"}


def training(cfg: GPUBenchConfig, budget: Budget) -> dict:
    """Training on the device (issue: offline training across GPUs), on generated LLP-layout features:

    * side by side in interleaved rounds at the paper's batch 16: the paper's step (its structure,
      fed by a DataLoader over per-video .npy files, as ``avparse bench train``'s baseline) and
      avparse's trainer step in fp32 and in bf16 mixed precision: videos/s and ratios;
    * the real trainer (``train()``), two epochs with validation, per precision: seconds per epoch
      and the full recipe projected to LLP size (40 epochs x 10,000 videos, 649 validated).
    """
    import tempfile

    import numpy as np

    from avparse.core.han import HANConfig
    from avparse.core.labels import LLP_CLASSES
    from avparse.core.profiles import LITE, PAPER
    from . import bench_train as BT
    from avparse.train.dataset import PackedSplit
    from avparse.train.trainer import TrainConfig, train

    profile, d_model = (LITE, 64) if cfg.dry_run else (PAPER, 512)
    n_train, n_val = cfg.train_videos, (16 if cfg.dry_run else 649)
    n_files = min(n_train, 1024)
    out: dict = {"profile": profile.name, "train_videos": n_train, "val_videos": n_val, "batch": 16}
    with tempfile.TemporaryDirectory(prefix="avparse-gpu-train-") as tmp:
        t0 = time.perf_counter()
        store, layout = BT.generate(Path(tmp), profile, LLP_CLASSES, n_train, n_val, n_files, log=lambda m: None)
        out["generate_seconds"] = round(time.perf_counter() - t0, 1)
        tr, va = PackedSplit(store / "train.json"), PackedSplit(store / "val.json")
        model_cfg = HANConfig(d_model=d_model, dim_feedforward=d_model)
        workers = 0 if cfg.dry_run else min(12, max(1, (os.cpu_count() or 2) - 2))
        cont = {"paper": BT.PaperContender(layout, tr.ids[:n_files], np.asarray(tr.labels[:n_files]), profile,
                                           len(tr.classes), workers=workers, d_model=d_model, ff=d_model,
                                           device=cfg.device)}
        for prec in ("fp32", "bf16"):
            cont[f"avparse_{prec}"] = BT.AvparseContender(tr, model_cfg, TrainConfig(device=cfg.device, precision=prec),
                                                          device=cfg.device)
        for c in cont.values():
            c.steps(3)
        vps, _ = BT.timed_rounds(cont, 1 if cfg.dry_run else 3, cfg.train_steps)   # each steps() waits for the GPU
        for c in cont.values():
            if hasattr(c, "close"):
                c.close()
        med = {k: statistics.median(v) for k, v in vps.items()}
        out["videos_per_s"] = {k: round(v, 1) for k, v in med.items()}
        out["videos_per_s_rounds"] = {k: [round(x, 1) for x in v] for k, v in vps.items()}
        out["ratio_avparse_fp32_vs_paper"] = round(med["avparse_fp32"] / med["paper"], 2)
        out["ratio_avparse_bf16_vs_paper"] = round(med["avparse_bf16"] / med["paper"], 2)
        print("  step at batch 16 (videos/s, median of rounds): " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()),
              flush=True)
        del cont
        runs = {}
        for prec in ("fp32", "bf16"):
            if budget.left() < 20:
                runs[prec] = {"skipped": "budget spent"}
                continue
            t = time.perf_counter()
            res = train(model_cfg, TrainConfig(epochs=2, device=cfg.device, precision=prec), tr, va, Path(tmp) / prec)
            wall = time.perf_counter() - t
            h = res.history[-1]
            full = 40 * (h["train_seconds"] * 10000 / n_train + h["val_seconds"] * 649 / n_val)
            runs[prec] = {"wall_seconds_2_epochs": round(wall, 1), "epoch2_train_seconds": round(h["train_seconds"], 2),
                          "epoch2_val_seconds": round(h["val_seconds"], 2),
                          "videos_per_s": round(n_train / h["train_seconds"], 1),
                          "projected_full_recipe_minutes": round(full / 60, 2), "train_loss": h["train_loss"]}
            print(f"  trainer {prec}: epoch {h['train_seconds']:.1f} s for {n_train} videos "
                  f"({n_train / h['train_seconds']:.0f} videos/s), val {h['val_seconds']:.2f} s; "
                  f"full recipe projected {full / 60:.1f} min", flush=True)
        out["trainer"] = runs
    out["ddp"] = ("not run: one GPU here (DDP over NCCL needs a GPU per process; the two-process gloo path "
                  "is tested on the CPU in tests/tools/test_train_cli.py)")
    return out


def extractors(cfg: GPUBenchConfig, budget: Budget) -> list[dict]:
    import torch

    from avparse.core.extractors.backends import tensorrt_unavailable_reason

    rows = []
    order = [(p, b) for b in cfg.backends for p in cfg.profiles]  # eager for every profile first: compile is slow
    for prof, backend in order:
        if backend == "tensorrt":
            why = tensorrt_unavailable_reason(torch.device(cfg.device))
            if why is not None:
                rows.append({"profile": prof, "backend": backend, "skipped": why})
                print(f"  {prof:<6} {backend:<9} skipped: {why}", flush=True)
                continue
        if budget.left() < 30:
            rows.append({"profile": prof, "backend": backend, "skipped": f"budget spent ({budget.used:.0f} s)"})
            print(f"  {prof:<6} {backend:<9} skipped: budget spent", flush=True)
            continue
        t_build = time.perf_counter()
        try:
            ext, note = build(prof, backend, cfg, seed=cfg.seed)
        except Exception as e:  # a backend that cannot be set up: reported, the rest goes on
            rows.append({"profile": prof, "backend": backend, "error": str(e).splitlines()[0][:300]})
            print(f"  {prof:<6} {backend:<9} error: {str(e).splitlines()[0][:200]}", flush=True)
            continue
        ref = None
        if ext.backend != "eager":  # agreement with eager, same weights, same input
            eg, _ = build(prof, "eager", cfg, seed=cfg.seed)
            a, f = _inputs(ext.profile, 2, cfg)
            with torch.inference_mode():
                ref = (eg(a, f), ext(a, f))
            del eg
        for n in cfg.batches:
            if budget.left() < 10:
                rows.append({"profile": prof, "backend": ext.backend, "batch": n, "skipped": "budget spent"})
                break
            audio, frames = _inputs(ext.profile, n, cfg, seed=n)

            def call():
                with torch.inference_mode():
                    ext(audio, frames)

            t0 = time.perf_counter()
            try:
                ts = times(call, cfg.reps, 1, sync_of(cfg.device))
            except torch.cuda.OutOfMemoryError as e:
                rows.append({"profile": prof, "backend": ext.backend, "batch": n, "error": f"out of memory: {e}"[:200]})
                torch.cuda.empty_cache()
                break
            med = statistics.median(ts)
            row = {"profile": prof, "backend": ext.backend, "requested": backend, "batch": n, "weights": note,
                   "ms_per_batch_p50": 1000 * med, "ms_per_batch_p90": 1000 * nearest_rank(ts, 0.9),
                   "ms_per_snippet": 1000 * med / n, "snippets_per_s": n / med,
                   "first_call_s": round(time.perf_counter() - t0 - sum(ts), 2)}
            if n == cfg.batches[0]:
                row["setup_s"] = round(time.perf_counter() - t_build, 1)
                if ref is not None:
                    row["vs_eager_cosine"] = {k: _cos(getattr(ref[0], k), getattr(ref[1], k)) for k in ("audio", "v2d", "v3d")}
            rows.append(row)
            print(f"  {prof:<6} {ext.backend:<9} batch {n:>4}  {1000 * med:9.1f} ms/batch (p90 {1000 * nearest_rank(ts, 0.9):8.1f})"
                  f"  {n / med:9.1f} snippets/s", flush=True)
        del ext
        if str(cfg.device).startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def han(cfg: GPUBenchConfig, profile: str, budget: Budget) -> list[dict]:
    import torch

    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile

    p = get_profile(profile)
    hc = HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim, frames_per_snippet=p.frames_per_snippet)
    model = build_han(hc, device=cfg.device).eval()
    rows = []
    g = torch.Generator().manual_seed(cfg.seed)
    for b in cfg.batches:
        if budget.left() < 5:
            break
        x = tuple(t.to(cfg.device) for t in (torch.rand(b, 10, hc.audio_dim, generator=g),
                                             torch.rand(b, 10 * hc.frames_per_snippet, hc.v2d_dim, generator=g),
                                             torch.rand(b, 10, hc.v3d_dim, generator=g)))

        def call():
            with torch.inference_mode():
                model(*x)

        ts = times(call, max(cfg.reps, 5), 1, sync_of(cfg.device))
        med = statistics.median(ts)
        rows.append({"profile": profile, "batch": b, "T": 10, "ms_per_batch_p50": 1000 * med,
                     "ms_per_batch_p90": 1000 * nearest_rank(ts, 0.9), "windows_per_s": b / med})
        print(f"  HAN ({profile} size) batch {b:>4}  {1000 * med:8.2f} ms/batch  {b / med:9.1f} windows/s", flush=True)
    return rows


def estimate(ext_rows: list[dict], han_rows: list[dict], cfg: GPUBenchConfig) -> list[dict]:
    """Real-time streams per device per profile/backend and hop."""
    out = []
    keys = sorted({(r["profile"], r["backend"]) for r in ext_rows if "ms_per_batch_p50" in r})
    for prof, backend in keys:
        hrows = {r["batch"]: r["ms_per_batch_p50"] for r in han_rows if r["profile"] == prof}
        pts = []
        for r in ext_rows:
            if (r.get("profile"), r.get("backend")) == (prof, backend) and "ms_per_batch_p50" in r:
                h = hrows.get(r["batch"])
                if h is None:  # HAN not timed at this size: scale the nearest smaller one
                    smaller = [b for b in hrows if b <= r["batch"]]
                    h = hrows[max(smaller)] * r["batch"] / max(smaller) if smaller else 0.0
                lat = (r["ms_per_batch_p50"] + h) / 1000
                pts.append((r["batch"], lat, r["batch"] / lat))
        for hop in cfg.hops:
            ok = [q for q in pts if q[1] <= hop]
            if not ok:
                out.append({"profile": prof, "backend": backend, "hop": hop, "streams": 0,
                            "note": "no batch finishes within one hop"})
                continue
            b, lat, sps = max(ok, key=lambda q: q[2])
            out.append({"profile": prof, "backend": backend, "hop": hop, "batch": b, "batch_latency_s": lat,
                        "snippets_per_s": sps, "streams": int(sps * hop),
                        "note": "extraction + one HAN window per snippet, frames from host memory; decoding, "
                                "capture and the CPU side of the runtime not included"})
    return out


def live(cfg: GPUBenchConfig, profile: str, budget: Budget) -> dict:
    """The live runtime on the device: bench live's end-to-end harness, baseline configuration."""
    try:
        import zmq  # noqa: F401
    except ImportError as e:
        return {"skipped": f"pyzmq absent ({e})"}
    from . import bench_live as BL
    from . import live_stages as LS

    out = Path(cfg.out).with_suffix("")
    bcfg = BL.BenchLiveConfig(out=Path(str(out) + "-live"), device=cfg.device, seconds=cfg.live_seconds,
                              streams=cfg.live_streams, max_batch=max(16, cfg.live_streams), plots=False)
    if profile == "lite":  # the bundled demo model when installed, else random weights
        loaded, what = LS.load_or_build_model(bcfg, profile="lite")
    else:
        loaded, what = LS.random_model(bcfg, profile), f"RANDOM weights ({profile} profile): timings only"
    exts = LS.Extractors(loaded, cfg.device)
    s = BL.e2e_run(loaded, exts, BL.BASELINE, bcfg, streams=cfg.live_streams, seconds=cfg.live_seconds, speed=1.0)
    keep = ("option", "describe", "streams", "seconds", "wall_seconds", "stream", "compute", "rtf", "event_latency",
            "latency", "truth", "latency_parts", "lag", "realtime", "realtime_why", "snippets")
    return {"model": what, "profile": loaded.profile.name, **{k: s.get(k) for k in keep}}


# ----------------------------------------------------------------- main


def run(cfg: GPUBenchConfig) -> dict:
    import torch

    budget = Budget(cfg.budget)
    if str(cfg.device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: let cuDNN pick its kernels
    res: dict = {"config": plain(asdict(cfg))}
    res["environment"] = env = environment(cfg)
    print("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    sections = [
        ("checks", lambda: checks(cfg, budget)),
        ("pipeline", lambda: pipeline_check(cfg, cfg.profiles[0])),
        ("training", lambda: training(cfg, budget) if cfg.train_videos > 0 else {"skipped": "--train-videos 0"}),
        ("extractors", lambda: extractors(cfg, budget)),
        ("han", lambda: [r for p in cfg.profiles for r in han(cfg, p, budget)]),
    ]
    for name, fn in sections:
        if budget.left() <= 0:
            res[name] = {"skipped": f"budget of {cfg.budget:g} s spent"}
            continue
        print(f"{name}:", flush=True)
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:  # one section failing does not hide the others' figures
            res[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            print(f"  {name} failed: {res[name]['error']}", flush=True)
        res.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t, 1)
        if name in ("checks", "pipeline"):
            print("  " + json.dumps(res[name]), flush=True)
    if isinstance(res.get("extractors"), list) and isinstance(res.get("han"), list):
        res["estimate"] = estimate(res["extractors"], res["han"], cfg)
        print("real-time streams estimate:", flush=True)
        for r in res["estimate"]:
            extra = (f" at batch {r['batch']} ({r['batch_latency_s'] * 1000:.0f} ms per batch, "
                     f"{r['snippets_per_s']:.0f} snippets/s)") if r.get("batch") else f" ({r['note']})"
            print(f"  {r['profile']:<6} {r['backend']:<9} hop {r['hop']:<5g} {r['streams']:>6} streams{extra}", flush=True)
    if cfg.live_streams > 0:
        if budget.left() < 30 + cfg.live_seconds:
            res["live"] = {"skipped": f"budget spent ({budget.used:.0f} s)"}
        else:
            print("live runtime end to end:", flush=True)
            t = time.perf_counter()
            try:
                res["live"] = live(cfg, cfg.profiles[0], budget)
            except Exception as e:
                res["live"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                print(f"  live failed: {res['live']['error']}", flush=True)
            res.setdefault("section_seconds", {})["live"] = round(time.perf_counter() - t, 1)
    paper = [r for r in res.get("estimate", []) if r["profile"] == "paper" and r["hop"] == 1.0]
    if paper:
        best = max(paper, key=lambda r: r["streams"])
        res["target"] = {"paper_streams_hop1": best["streams"], "backend": best["backend"], "limit": 500,
                         "verdict": "met" if best["streams"] >= 500 else "MISSED"}
        print(f"target: paper profile >= 500 real-time streams at hop 1 s: {best['streams']} ({best['backend']}) "
              f"{res['target']['verdict']}", flush=True)
    res["seconds"] = round(budget.used, 1)
    write_json(cfg.out, res)
    print(f"wrote {cfg.out} ({res['seconds']:.0f} s)", flush=True)
    return res


def main(argv=None) -> int:
    d = GPUBenchConfig()
    ap = argparse.ArgumentParser(prog="python -m avparse.tools.harness.bench_gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=d.out, help="JSON results (default gpu-bench.json)")
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--profiles", default=",".join(d.profiles))
    ap.add_argument("--backends", default=",".join(d.backends))
    ap.add_argument("--batches", default=",".join(map(str, d.batches)))
    ap.add_argument("--reps", type=int, default=d.reps)
    ap.add_argument("--precision", choices=("fp16", "fp32"), default=d.precision)
    ap.add_argument("--budget", type=float, default=d.budget, help="seconds before later sections are skipped")
    ap.add_argument("--live-streams", type=int, default=d.live_streams, help="K scenes of the live run (0: skip)")
    ap.add_argument("--live-seconds", type=int, default=d.live_seconds)
    ap.add_argument("--train-videos", type=int, default=d.train_videos, help="generated train videos of the "
                    "training section (0: skip it)")
    ap.add_argument("--train-steps", type=int, default=d.train_steps, help="timed steps per contender and round")
    ap.add_argument("--dry-run", action="store_true", help="CPU, lite, batch 1-2: checks the script anywhere")
    ap.add_argument("--require-cuda", action="store_true", help="fail (exit 3) without a CUDA device")
    a = ap.parse_args(argv)
    from avparse.tools.common import UserError, fail, int_list

    try:
        batches = int_list(a.batches, "--batches")
    except UserError as e:
        return fail(str(e))
    cfg = GPUBenchConfig(out=a.out, device=a.device, profiles=tuple(x for x in a.profiles.split(",") if x),
                         backends=tuple(x for x in a.backends.split(",") if x), batches=batches, reps=max(1, a.reps),
                         precision=a.precision, budget=a.budget, live_streams=a.live_streams,
                         live_seconds=a.live_seconds, train_videos=max(0, a.train_videos),
                         train_steps=max(1, a.train_steps))
    import torch

    if a.dry_run:
        cfg = _dry(cfg)
    elif cfg.device.startswith("cuda") and not torch.cuda.is_available():
        if a.require_cuda:
            return fail("no CUDA device is visible to torch (torch.cuda.is_available() is False); "
                        "run this on the GPU machine, or pass --dry-run", 3)
        print("no CUDA device: running the CPU fallback at --dry-run sizes (these are not GPU figures)",
              file=sys.stderr)
        cfg = _dry(cfg)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
