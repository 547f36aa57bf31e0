"""Training HAN from video-level labels: the paper's recipe, resumable, seeded, DDP-ready.

The defaults of :class:`TrainConfig` are YapengTian/AVVP-ECCV20 main_avvp.py:
Adam(lr 3e-4), StepLR(step 10, gamma 0.1) stepped once per epoch, 40 epochs,
batch 16, seed 1, the loss of :mod:`avparse.train.losses`, validation after
every epoch on the dense val annotations with the paper's decision rule, and
the best checkpoint by segment-level Type@AV (``F >= best_F``: ties go to the
later epoch, as there).

How it is computed (same mathematics, less work; see docs/training.md):

* batches are gathered from the packed store's memory maps in one slice per
  array (no DataLoader, no worker processes, no per-video files), by a helper
  thread one batch ahead of the step (``prefetch``);
* the HAN averages each snippet's 8 frames before fc_v (1/8 of its work); the
  train and val splits' frame means are computed once and held in memory
  (``frame_means``, when they fit), so a step reads 1/8 of the 2D data;
* torch.set_num_threads is set to the cores available per local process,
  here and only while training (restored afterwards);
* Adam uses the fused kernel where the device has one (the same update);
* ``precision="bf16"`` (not the default) runs the forward pass under bf16
  autocast: different rounding, not the paper's fp32 arithmetic; weights,
  gradients, Adam, the snippet classifiers and the loss stay fp32;
* subnormal floats are flushed to zero while training (``flush_denormal``);
* validation runs under inference_mode in batches of 64;
* the loss is read back (``.item()``) only every ``log_every`` steps.

Reproducibility: the model is initialised from ``seed``; epoch e shuffles with
DistributedSampler(seed=seed).set_epoch(e) (also with one process), dropout
draws from the global torch generator seeded with ``seed + rank``. After every
epoch ``resume.pt`` holds model, optimiser, scheduler, RNG states, epoch, best
score and history; ``resume=True`` continues from it and gives the same
weights as an uninterrupted run.

Several processes (torchrun): each takes 1/world of every epoch (batch_size
per process), gradients are averaged by DistributedDataParallel, rank 0
validates, logs and writes every file.

Over 500 lines on purpose: one training loop (``_train``) serves one process and torchrun,
epochs and optimiser steps, resume and every recipe's objective, and its state (model, optimiser,
scheduler, RNG, best score, history) is saved and restored in one place; split, the resume
guarantee would span modules.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from avparse.core.han import HANConfig, build_han
from avparse.core.metrics import DEFAULT_THRESHOLD
from avparse.train import distributed as D
from avparse.train.dataset import FeatureError, FeatureSplit, FrameMeanSplit
from avparse.train.evaluate import score_split
from avparse.train.losses import LossConfig, avvp_loss

RESUME_FORMAT = "avparse.train-state"
PRECISIONS = ("fp32", "bf16")
SELECT_METRICS = ("seg_type", "seg_event", "evt_type", "evt_event", "seg_a", "seg_v", "seg_av", "evt_a", "evt_v",
                  "evt_av")
SCHEDULES = ("epochs", "steps", "auto")
GATES = ("global", "modality")
# The paper's recipe on LLP counted in optimiser steps: 10,000 training clips at batch 16 are 625 steps
# per epoch, so StepLR(10 epochs) is a drop every 6,250 steps and 40 epochs are 25,000 steps.
LLP_TRAIN_VIDEOS = 10_000


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40                # training epochs (main_avvp.py --epochs 40)
    batch_size: int = 16            # videos per step per process (main_avvp.py --batch-size 16)
    lr: float = 3e-4                # Adam learning rate (main_avvp.py --lr 3e-4)
    lr_step: int = 10               # StepLR step_size in epochs (main_avvp.py)
    lr_gamma: float = 0.1           # StepLR gamma (main_avvp.py)
    seed: int = 1                   # torch.manual_seed (main_avvp.py --seed 1)
    loss: LossConfig = field(default_factory=LossConfig)  # loss terms and noisy-label handling (Table 2)
    threshold: float = DEFAULT_THRESHOLD  # snippet and video decision threshold in validation (paper: 0.5)
    select_metric: str = "seg_type"  # validation score that picks the kept checkpoint (paper: segment Type@AV)
    validate: bool = True           # validate every epoch (needs a val split with dense annotations)
    val_batch_size: int = 64        # videos per validation forward pass (inference only)
    num_threads: int | None = None  # torch threads per process; None = available cores / local processes
    device: str = "cpu"             # "cpu" or "cuda"; under torchrun each rank takes cuda:LOCAL_RANK
    fused_adam: bool = True         # Adam's fused kernel where available (same update as the loop)
    log_every: int = 10             # steps between progress callbacks (each reads the loss back)
    prefetch: bool = True           # a helper thread gathers the next batch while the step computes (same batches)
    flush_denormal: bool = True     # CPU: treat values below 1.2e-38 as zero while training (see train())
    frame_means: bool = True        # train on each snippet's frame means held in memory (same result; see _train)
    precision: str = "fp32"         # "fp32" (the paper's) or "bf16": autocast of the forward pass (mixed precision)
    schedule: str = "epochs"        # "epochs": epochs and lr_step count passes over the data (the paper's code);
    #                                 "steps": steps, lr_step_steps and rounds below (the same recipe at any data
    #                                 size); "auto": epochs where they give >= steps optimiser steps, else steps
    steps: int = 25_000             # "steps": optimiser steps in all (the paper on LLP: 40 epochs x 625 steps)
    lr_step_steps: int = 6_250      # "steps": StepLR step size in optimiser steps (the paper on LLP: 10 x 625)
    rounds: int = 40                # "steps": validations, one every steps/rounds steps (the paper: one per epoch)
    gate: str = "global"            # validation decision rule: "global" (paper: snippet AND video-level prob) or
    #                                 "modality" (JoMoLD: each modality's snippets AND its own video-level prob)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr_step < 1 or self.val_batch_size < 1:
            raise ValueError("epochs, batch_size, lr_step and val_batch_size must be >= 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.steps < 1 or self.lr_step_steps < 1 or not 1 <= self.rounds <= self.steps:
            raise ValueError("steps and lr_step_steps must be >= 1 and rounds in 1..steps")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["loss"] = LossConfig(**d.get("loss", {}))
        return cls(**d)

    def steps_per_epoch(self, videos: int, world_size: int = 1) -> int:
        """Optimiser steps of one pass over ``videos`` clips (the last batch may be short)."""
        return math.ceil(math.ceil(videos / world_size) / self.batch_size)

    def describe(self, videos: int, world_size: int = 1) -> str:
        """One line saying which schedule runs and what it amounts to on ``videos`` training clips."""
        spe = self.steps_per_epoch(videos, world_size)
        if self.schedule == "epochs":
            return (f"schedule: epochs ({self.epochs} epochs of {spe} steps = {self.epochs * spe:,} steps at batch "
                    f"{self.batch_size}, lr x{self.lr_gamma:g} every {self.lr_step} epochs)")
        return (f"schedule: steps ({self.steps:,} optimiser steps at batch {self.batch_size} = "
                f"{self.steps / spe:.0f} passes over {videos:,} clips, lr x{self.lr_gamma:g} every "
                f"{self.lr_step_steps:,} steps, validation every {self.round_steps:,} steps)")

    @property
    def round_steps(self) -> int:
        """Schedule "steps": optimiser steps between two validations (the last round takes the rest)."""
        return max(1, self.steps // self.rounds)


def schedule_for(cfg: TrainConfig, videos: int, *, world_size: int = 1) -> TrainConfig:
    """The schedule "auto" of ``avparse train``: the paper's epochs where they give at least ``cfg.steps``
    optimiser steps (LLP-size data: 40 x 625 = 25,000, unchanged), else the same recipe counted in
    steps (StepLR every ``lr_step_steps``, ``steps`` in all): small data gets as many updates as LLP."""
    epoch_steps = cfg.epochs * cfg.steps_per_epoch(videos, world_size)
    return replace(cfg, schedule="epochs" if epoch_steps >= cfg.steps else "steps")


class Callbacks:
    """Progress hooks (tools/train.py draws the bar); all called on rank 0 only."""

    def on_start(self, info: dict) -> None: ...

    def on_epoch_start(self, epoch: int, steps: int) -> None: ...

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None: ...

    def on_epoch_end(self, record: dict) -> None: ...

    def log(self, line: str) -> None: ...


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path | None       # best.pt (None when validation is off and no epoch ran)
    best_epoch: int | None
    best_score: float | None
    history: list[dict]
    plot_path: Path | None
    is_main: bool = True         # this process is rank 0 (the one that wrote the files)


def model_config_for(model_cfg: HANConfig, split: FeatureSplit) -> HANConfig:
    """``model_cfg`` with the input sizes and class count of the data."""
    p = split.profile
    return replace(model_cfg, audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                   frames_per_snippet=p.frames_per_snippet, num_classes=len(split.classes))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _adam(params, cfg: TrainConfig, device: str):
    params = list(params)
    if cfg.fused_adam:
        try:
            return torch.optim.Adam(params, lr=cfg.lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=cfg.lr)


def _batches(n: int, cfg: TrainConfig, info: D.DistInfo, epoch: int) -> list[np.ndarray]:
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=False)
    sampler.set_epoch(epoch)
    idx = np.fromiter(iter(sampler), dtype=np.int64)
    return [idx[s:s + cfg.batch_size] for s in range(0, len(idx), cfg.batch_size)]


def _step_batches(n: int, cfg: TrainConfig, info: D.DistInfo, start: int, stop: int):
    """Index arrays of optimiser steps ``start`` .. ``stop - 1`` of schedule "steps": consecutive
    shuffled passes over the data (pass p shuffled as epoch p + 1 of the epoch schedule)."""
    spe = cfg.steps_per_epoch(n, info.world_size)
    step = start
    while step < stop:
        epoch, k = divmod(step, spe)
        batches = _batches(n, cfg, info, epoch + 1)
        for b in batches[k:k + (stop - step)]:
            yield b
        step += len(batches[k:k + (stop - step)])


def batch_stream(split: FeatureSplit, batches, *, prefetch: bool = True):
    """``(idx, split.batch(idx))`` for each index array of ``batches`` (any iterable, possibly endless).

    With ``prefetch`` one helper thread gathers batch i+1 (memory-map reads and copies, which
    release the GIL) while the caller computes on batch i: the same batches in the same order,
    one batch ahead at most. Errors of the gathering (FeatureError) surface at the batch they
    belong to."""
    it = iter(batches)
    if not prefetch:
        for idx in it:
            yield idx, split.batch(idx)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="avparse-batches") as pool:
        idx = next(it, None)
        fut = pool.submit(split.batch, idx) if idx is not None else None
        while fut is not None:
            arrays = fut.result()
            nxt = next(it, None)
            fut = pool.submit(split.batch, nxt) if nxt is not None else None
            yield idx, arrays
            idx = nxt


class PaperObjective:
    """The paper's loss (:func:`avparse.train.losses.avvp_loss`) on the model's outputs. Other training
    objectives (the denoising recipes, :mod:`avparse.train.recipes`) have the same two methods."""

    def __init__(self, loss_cfg: LossConfig):
        self.loss_cfg = loss_cfg

    def loss(self, net, a, v2, v3, y, idx: np.ndarray, step: int, *, autocast) -> torch.Tensor:
        """The loss of one batch: features a, v2, v3, weak labels y [B, C], the videos' indices in the
        train split ``idx``, the global optimiser step ``step``; ``autocast`` wraps forward passes."""
        with autocast():
            o = net(a, v2, v3)
        return avvp_loss(self.loss_cfg, o.global_prob, o.a_prob, o.v_prob, y)

    def describe(self) -> dict:
        """Plain values that identify the objective (saved with a run; a resume must match)."""
        return {"name": "paper"}


def train_step(net, opt, loss_cfg: LossConfig, split: FeatureSplit, idx: np.ndarray, y_all: torch.Tensor,
               dev: str, *, arrays=None, precision: str = "fp32", objective=None, step: int = 0):
    """One optimisation step on the videos ``idx``: (detached loss, the numpy batch).
    ``arrays``: ``split.batch(idx)`` when the caller already has it (see :func:`batch_stream`).
    ``precision="bf16"``: the forward pass under bf16 autocast (matrix products in bf16 with fp32
    accumulation; weights, gradients, Adam, the snippet classifiers and the loss in fp32).
    ``objective``: what the loss is (default: the paper's with ``loss_cfg``); ``step``: the global
    optimiser step (objectives with a warm-up use it)."""
    if arrays is None:
        arrays = split.batch(idx)
    a, v2, v3 = (torch.from_numpy(x).to(dev, non_blocking=True) for x in arrays)
    y = y_all[torch.from_numpy(idx)].to(dev, non_blocking=True)
    objective = objective or PaperObjective(loss_cfg)
    opt.zero_grad(set_to_none=True)

    def autocast():
        return torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=precision == "bf16")

    try:
        loss = objective.loss(net, a, v2, v3, y, idx, step, autocast=autocast)
    except RuntimeError:  # e.g. BCE refusing NaN probabilities: name the video if the input is the cause
        split.check_finite(idx, arrays)
        raise
    loss.backward()
    opt.step()
    return loss.detach(), arrays


def make_optimizer(model, cfg: TrainConfig):
    """Adam and StepLR of the recipe for ``model`` (schedule "steps": StepLR counts optimiser steps)."""
    opt = _adam(model.parameters(), cfg, "")
    size = cfg.lr_step if cfg.schedule == "epochs" else cfg.lr_step_steps
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=size, gamma=cfg.lr_gamma)


def train(model_cfg: HANConfig, cfg: TrainConfig, train_split: FeatureSplit, val_split: FeatureSplit | None,
          out_dir, *, resume: bool = False, callbacks: Callbacks | None = None,
          meta: dict | None = None, objective=None) -> TrainResult:
    """Train on ``train_split``, validate on ``val_split``; files go to ``out_dir``.

    Writes ``best.pt`` (avparse checkpoint of the best epoch), ``resume.pt``
    (state after the last finished epoch), ``history.json`` and ``training.png``.
    ``meta`` (plain values, e.g. where the data is) goes into best.pt's extra.
    ``objective``: the training loss (default :class:`PaperObjective` of ``cfg.loss``).
    With ``cfg.schedule == "steps"`` an "epoch" of the history, the callbacks and resume.pt is one
    round of ``cfg.round_steps`` optimiser steps (``cfg.rounds`` of them).
    """
    cb = callbacks or Callbacks()
    out = Path(out_dir)
    info = D.setup(cfg.device)
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cfg.num_threads or max(1, _cores() // max(1, info.local_world_size)))
        # Subnormal floats (|x| < 1.2e-38) take a slow path in x86 arithmetic. A few epochs in,
        # Adam's moment estimates of weights that stop receiving gradient (dead FFN units) decay
        # into that range: on LLP-size data an epoch went from 31 s to 69 s by epoch 4. Flushing
        # them to zero (FTZ/DAZ, as GPUs' fast paths do) keeps every epoch at full speed.
        if cfg.flush_denormal:
            torch.set_flush_denormal(True)
        if cfg.schedule == "auto":
            cfg = schedule_for(cfg, len(train_split), world_size=info.world_size)
        return _train(model_cfg, cfg, train_split, val_split, out, resume, cb, info, dict(meta or {}),
                      objective or PaperObjective(cfg.loss))
    finally:
        torch.set_num_threads(old_threads)
        if cfg.flush_denormal:
            torch.set_flush_denormal(False)   # torch's default (it has no getter)
        D.teardown(info)


def _train(model_cfg, cfg, train_split, val_split, out: Path, resume, cb, info: D.DistInfo, meta: dict,
           objective) -> TrainResult:
    import json

    from avparse.core.checkpoint import save_checkpoint

    if cfg.validate:
        if val_split is None or not val_split.has_dense:
            raise FeatureError(getattr(val_split, "source", "val"), None,
                               "validation needs the val split with dense annotations (or turn validation off)")
        if tuple(val_split.classes) != tuple(train_split.classes):
            raise FeatureError(val_split.source, None, "val and train splits have different classes")
        try:
            train_split.profile.check_compatible(val_split.profile)
        except ValueError as e:
            raise FeatureError(val_split.source, None, str(e)) from None
    if len(train_split) == 0:
        raise FeatureError(train_split.source, None, "the train split has no videos")
    model_cfg = model_config_for(model_cfg, train_split)
    if cfg.frame_means and train_split.profile.frames_per_snippet > 1:
        # HAN averages each snippet's frames first: hold the splits' frame means in memory (one pass,
        # 1/F of the 2D data per batch, no mean in the step; the same numbers, bit for bit) when they
        # take at most a quarter of the memory available now.
        splits = [train_split] + ([val_split] if val_split is not None and cfg.validate else [])
        need, avail = sum(FrameMeanSplit.nbytes(sp) for sp in splits), _available_memory()
        if avail is None or need <= avail // 4:
            t_cache = time.perf_counter()
            train_split, *rest = (FrameMeanSplit(sp) for sp in splits)
            val_split = rest[0] if rest else val_split
            if info.is_main:
                which = " + ".join(f"{len(sp)} {name}" for sp, name in zip(splits, ("train", "val")))
                cb.log(f"frame means of {which} videos in memory ({need / 2**20:.0f} MiB, "
                       f"{time.perf_counter() - t_cache:.1f} s)")
        elif info.is_main:
            cb.log(f"frame means not held in memory: they need {need / 2**20:.0f} MiB, "
                   f"{avail / 2**20:.0f} MiB available (reading the frames every step instead)")
    dev = info.device
    torch.manual_seed(cfg.seed)
    model = build_han(model_cfg, device=dev)
    opt, sched = make_optimizer(model, cfg)
    torch.manual_seed(cfg.seed + info.rank)  # dropout stream of this rank
    history: list[dict] = []
    best_score, best_epoch, start = None, None, 1
    state_path, best_path = out / "resume.pt", out / "best.pt"
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if st.get("format") != RESUME_FORMAT:
            raise FeatureError(state_path, None, "not an avparse training state; start without --resume")
        if st["model_config"] != model_cfg.to_dict():
            raise FeatureError(state_path, None, "the saved run used another model config; start a new --out")
        saved = dict(st["train_config"])
        mine, defaults = cfg.to_dict(), TrainConfig().to_dict()   # fields newer than the saved run: their defaults
        diff = [k for k in mine if k not in ("epochs", "num_threads", "device", "log_every", "prefetch", "flush_denormal",
                                             "frame_means") and saved.get(k, defaults[k]) != mine[k]]
        if st.get("objective", {"name": "paper"}) != objective.describe():
            diff.append("objective")
        if diff:
            raise FeatureError(state_path, None, f"the saved run used other training settings ({', '.join(diff)}); "
                               "start a new --out or use the same settings")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        rng = st["rng"][info.rank] if info.rank < len(st["rng"]) else st["rng"][0]
        torch.set_rng_state(rng["torch"])
        if dev.startswith("cuda") and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"])
        history = list(st["history"])
        best_score, best_epoch, start = st["best_score"], st["best_epoch"], int(st["epoch"]) + 1
    net = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        unused = model_cfg.layer_mode == "original" and model_cfg.num_layers > 1
        net = DDP(model, device_ids=[dev] if dev.startswith("cuda") else None, find_unused_parameters=unused)
    n_train = len(train_split)
    by_steps = cfg.schedule == "steps"
    epochs = cfg.rounds if by_steps else cfg.epochs
    spe = cfg.steps_per_epoch(n_train, info.world_size)
    if info.is_main:
        cb.on_start({"videos": n_train, "val_videos": len(val_split) if val_split is not None else 0,
                     "epochs": epochs, "start_epoch": start, "world_size": info.world_size,
                     "threads": torch.get_num_threads(), "device": dev,
                     "params": sum(p.numel() for p in model.parameters()),
                     "schedule": cfg.describe(n_train, info.world_size)})
    y_all = torch.from_numpy(np.asarray(train_split.labels, dtype=np.float32))
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        if by_steps:   # round `epoch`: optimiser steps first .. last - 1 of the whole run
            first = (epoch - 1) * cfg.round_steps
            last = cfg.steps if epoch == epochs else epoch * cfg.round_steps
            batches, n_steps = _step_batches(n_train, cfg, info, first, last), last - first
        else:
            first = (epoch - 1) * spe
            batches = _batches(n_train, cfg, info, epoch)
            n_steps = len(batches)
        if info.is_main:
            cb.on_epoch_start(epoch, n_steps)
        net.train()
        total = torch.zeros((), dtype=torch.float64, device=dev)
        running = torch.zeros((), dtype=torch.float64, device=dev)
        trace, since = [], 0
        lr_used = opt.param_groups[0]["lr"]
        for step, (idx, arrays) in enumerate(batch_stream(train_split, batches, prefetch=cfg.prefetch), 1):
            ld, arrays = train_step(net, opt, cfg.loss, train_split, idx, y_all, dev, arrays=arrays,
                                    precision=cfg.precision, objective=objective, step=first + step - 1)
            if by_steps:
                sched.step()
            total += ld
            running += ld
            since += 1
            if step % cfg.log_every == 0 or step == n_steps:
                mean = float(running.item()) / since
                if not math.isfinite(mean):
                    train_split.check_finite(idx, arrays)  # names the video if the input is the cause
                    raise FloatingPointError(f"the training loss became {mean} at epoch {epoch}, step {step}; "
                                             "lower the learning rate or check the features")
                trace.append(mean)
                running.zero_()
                since = 0
                if info.is_main:
                    cb.on_step(epoch, step, n_steps, mean)
        if not by_steps:
            sched.step()
        train_loss = D.mean_across(info, float(total.item()) / max(1, n_steps))
        train_s = time.perf_counter() - t0
        record = {"epoch": epoch, "lr": lr_used, "train_loss": train_loss, "loss_trace": trace,
                  "train_seconds": train_s, "steps_done": first + n_steps}
        rngs = _gather_rng(info, dev)
        if info.is_main:
            if cfg.validate:
                tv = time.perf_counter()
                scores = score_split(model, val_split, threshold=cfg.threshold, batch_size=cfg.val_batch_size,
                                     device=dev, gate=cfg.gate, leak=True)
                record["val"] = scores
                record["val_seconds"] = time.perf_counter() - tv
                score = scores[cfg.select_metric]
                record["best"] = best_score is None or score >= best_score
                if record["best"]:
                    best_score, best_epoch = score, epoch
            else:
                record["best"] = True
                best_epoch = epoch
            history.append(record)
            if record["best"]:
                save_checkpoint(best_path, model, classes=train_split.classes, profile=train_split.profile,
                                extra={**meta, "train_config": cfg.to_dict(), "epoch": epoch,
                                       "val": record.get("val"), "select_metric": cfg.select_metric,
                                       "gate": cfg.gate, "objective": objective.describe()})
            _save_atomic({
                "format": RESUME_FORMAT, "version": 1, "epoch": epoch,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": rngs, "best_score": best_score, "best_epoch": best_epoch, "history": history,
                "model_config": model_cfg.to_dict(), "train_config": cfg.to_dict(),
                "objective": objective.describe(),
            }, state_path)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            cb.on_epoch_end(record)
        D.barrier(info)
    plot = None
    if info.is_main and history:
        from avparse.train.plots import plot_history

        plot = plot_history(history, out / "training.png")
    return TrainResult(out, best_path if best_path.is_file() else None, best_epoch, best_score, history, plot,
                       info.is_main)


def _gather_rng(info: D.DistInfo, dev: str) -> list[dict]:
    """Every rank's RNG state (rank 0 saves them all, so each rank resumes its own stream)."""
    mine = {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if dev.startswith("cuda") else None}
    if not info.distributed:
        return [mine]
    import torch.distributed as dist

    allr: list = [None] * info.world_size
    dist.all_gather_object(allr, mine)
    return allr
