"""`avparse bench core`: the LLP test-set metrics (vectorised vs a per-video loop)
and HAN inference per batch of windows.

Prints figures, asserts nothing about speed. Metrics: the real test annotations
(``AVVP_test_pd.csv`` + dense audio/visual files) are scored against
predictions made from them (each snippet of the video's weakly labelled classes
flipped with probability ``--flip``, or independent random snippets with ``--predictions random``); the
per-video loop is ``summarize([video_scores(...) for each video])``, the way
``main_avvp.py`` scores one video at a time, the vectorised path is
``dataset_scores`` on the [N, C, T] arrays. HAN: ``build_han(HANConfig())`` (paper
size unless ``--quick``), eval mode, eager, random features of windows of
``--snippets`` snippets.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from avparse.tools.common import UserError, fail, int_list

from .machine import load_text
from .timing import median_ms, sync_of

_REPO_SHARED_LLP = Path(__file__).resolve().parents[2].parent / "shared" / "llp"


@dataclass(frozen=True)
class BenchCoreConfig:
    llp_dir: Path | None = None          # LLP annotation folder (None: ../shared/llp)
    predictions: str = "perturbed"       # "perturbed" (truth with flipped snippets) or "random"
    flip: float = 0.1                    # per-snippet flip probability of "perturbed"; density of "random"
    seed: int = 0                        # seed of the predictions and the HAN inputs
    metric_repeats: int = 7              # timed runs of the vectorised metrics (median)
    loop_repeats: int = 3                # timed runs of the per-video loop (median)
    videos: int | None = None            # score only the first N test videos (None: all 1,200)
    batches: tuple[int, ...] = (1, 16, 64)  # HAN batch sizes (windows per forward)
    snippets: int = 10                   # snippets per window (T; LLP: 10)
    han_repeats: int = 20                # timed HAN forwards per batch size (median)
    han_warmup: int = 3                  # untimed HAN forwards first
    quick: bool = False                  # smoke mode: few videos and repeats, debug-size HAN
    device: str = "cpu"                  # torch device of the HAN
    threads: int | None = None           # torch CPU threads (None: torch's default)
    skip_han: bool = False               # metrics only


def _find_llp(cfg: BenchCoreConfig) -> Path:
    cands = [cfg.llp_dir] if cfg.llp_dir is not None else [Path("../shared/llp"), _REPO_SHARED_LLP]
    for d in cands:
        if (d / "AVVP_test_pd.csv").is_file():
            return d
    raise FileNotFoundError(f"LLP annotations not found in {', '.join(str(c) for c in cands)}; "
                            "pass --llp-dir DIR (the folder with AVVP_test_pd.csv)")


def bench_metrics(cfg: BenchCoreConfig) -> None:
    import numpy as np

    from avparse.core import metrics as M
    from avparse.train import llp

    d = _find_llp(cfg)
    ids, weak, gt_a, gt_v = llp.load_split(d, "test")
    if cfg.videos is not None:
        ids, weak, gt_a, gt_v = ids[:cfg.videos], weak[:cfg.videos], gt_a[:cfg.videos], gt_v[:cfg.videos]
    rng = np.random.default_rng(cfg.seed)
    if cfg.predictions == "perturbed":
        # flips only in the classes of the video's weak labels, as the paper's
        # video-level gate confines predictions to the predicted classes
        labelled = weak.astype(bool)[:, :, None]
        pa = gt_a.astype(bool) ^ ((rng.random(gt_a.shape) < cfg.flip) & labelled)
        pv = gt_v.astype(bool) ^ ((rng.random(gt_v.shape) < cfg.flip) & labelled)
        how = f"truth with each snippet of the weakly labelled classes flipped with p={cfg.flip}"
    else:
        pa = rng.random(gt_a.shape) < cfg.flip
        pv = rng.random(gt_v.shape) < cfg.flip
        how = f"random snippets, density {cfg.flip}"
    n, c, t = gt_a.shape
    print(f"metrics  LLP test annotations from {d}: {n} videos x {c} classes x {t} snippets; "
          f"predictions: {how} (seed {cfg.seed}); {load_text()}")

    def loop():
        return M.summarize([M.video_scores(pa[i], pv[i], gt_a[i], gt_v[i]) for i in range(n)])

    def vec():
        return M.dataset_scores(pa, pv, gt_a, gt_v)

    ms_loop = median_ms(loop, cfg.loop_repeats)
    ms_vec = median_ms(vec, cfg.metric_repeats, warmup=1)
    a, b = loop(), vec()
    diff = max(abs(a[k] - b[k]) for k in a)
    print(f"metrics  per-video loop  median {ms_loop:9.2f} ms  ({cfg.loop_repeats} runs)")
    print(f"metrics  vectorised      median {ms_vec:9.2f} ms  ({cfg.metric_repeats} runs)")
    print(f"metrics  ratio           {ms_loop / ms_vec:9.1f}x   (loop / vectorised); "
          f"same scores: {'yes' if diff < 1e-9 else 'NO'} (max |diff| {diff:.2g} points)")
    print("metrics  scores (%)      " + "  ".join(f"{k} {v:.1f}" for k, v in b.items()))


def bench_han(cfg: BenchCoreConfig) -> None:
    try:
        import torch

        from avparse.core.han import HANConfig, build_han
    except ImportError as e:
        print(f"HAN      not available ({e})")
        return
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    hc = HANConfig()
    if cfg.quick:  # debug size: the same code paths, a fraction of the work
        hc = HANConfig(audio_dim=16, v2d_dim=32, v3d_dim=16, d_model=32, dim_feedforward=32)
    size = "paper size" if hc == HANConfig() else "debug size (--quick)"
    model = build_han(hc, device=cfg.device).eval()
    dev = torch.device(cfg.device)
    print(f"HAN      {size}, eager, {cfg.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, T={cfg.snippets} snippets per window; {load_text()}")
    g = torch.Generator().manual_seed(cfg.seed)
    t, f = cfg.snippets, hc.frames_per_snippet
    for b in cfg.batches:
        x = (torch.rand(b, t, hc.audio_dim, generator=g).to(dev),
             torch.rand(b, t * f, hc.v2d_dim, generator=g).to(dev),
             torch.rand(b, t, hc.v3d_dim, generator=g).to(dev))

        def fwd():
            with torch.inference_mode():
                return model(*x)

        ms = median_ms(fwd, cfg.han_repeats, warmup=cfg.han_warmup, sync=sync_of(dev))
        print(f"HAN      batch {b:4d}  median {ms:9.2f} ms  ({ms / b:7.3f} ms/window, {cfg.han_repeats} runs)")


def build_parser() -> argparse.ArgumentParser:
    d = BenchCoreConfig()
    p = argparse.ArgumentParser(prog="avparse bench core", description=__doc__.split("\n\n")[0])
    p.add_argument("--llp-dir", type=Path, help="folder with the LLP annotation files (default ../shared/llp)")
    p.add_argument("--predictions", choices=("perturbed", "random"), default=d.predictions)
    p.add_argument("--flip", type=float, default=d.flip,
                   help="flip probability (perturbed) or density (random) of predicted snippets")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--repeats", type=int, default=d.metric_repeats, help="timed runs of the vectorised metrics")
    p.add_argument("--loop-repeats", type=int, default=d.loop_repeats)
    p.add_argument("--han-repeats", type=int, default=d.han_repeats, help="timed HAN forwards per batch size")
    p.add_argument("--batches", type=str, default=",".join(map(str, d.batches)),
                   help="HAN batch sizes, comma-separated")
    p.add_argument("--snippets", type=int, default=d.snippets)
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-han", action="store_true", help="metrics only")
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 100 videos, one run each, debug-size HAN at batch 1 and 4")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        batches = int_list(a.batches, "--batches")
    except UserError as e:
        return fail(str(e))
    if not 0.0 <= a.flip <= 1.0:
        return fail(f"--flip must be in [0, 1], got {a.flip}")
    if min(a.repeats, a.loop_repeats, a.han_repeats, a.snippets) < 1:
        return fail("--repeats, --loop-repeats, --han-repeats and --snippets must be >= 1")
    cfg = BenchCoreConfig(llp_dir=a.llp_dir, predictions=a.predictions, flip=a.flip, seed=a.seed,
                          metric_repeats=a.repeats, loop_repeats=a.loop_repeats, batches=batches,
                          snippets=a.snippets, han_repeats=a.han_repeats,
                          device=a.device, threads=a.threads, skip_han=a.no_han, quick=a.quick)
    if a.quick:
        cfg = replace(cfg, videos=100, metric_repeats=1, loop_repeats=1, batches=(1, 4),
                      han_repeats=2, han_warmup=1)
    try:
        bench_metrics(cfg)
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    if cfg.skip_han:
        return 0
    try:
        bench_han(cfg)
    except RuntimeError as e:  # e.g. CUDA unavailable or out of memory
        return fail(f"HAN benchmark failed on {cfg.device}: {e}")
    return 0
