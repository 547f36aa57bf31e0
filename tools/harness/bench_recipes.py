"""`avparse bench train --recipes paper,teacher,jomold`: what each training recipe costs against the paper's.

The denoising recipes (train/recipes.py) train more than one network: the teacher
recipe a teacher (no temporal net), a labelling pass over the training clips and
the HAN with the teacher's snippet loss; JoMoLD a noise estimator (HAN without
cross-modal attention), a labelling pass, and a HAN whose every batch is first
ranked by the model itself without gradient, at its own batch 128 and schedule.
Which runs a recipe makes, with which settings, comes from
:func:`avparse.train.recipes.recipe_phases`, the function ``run_recipe`` itself
takes them from; the objectives from :func:`~avparse.train.recipes.recipe_objective`.

Measured here, on the split given (by default LLP-size random features):

* each phase's optimiser step, interleaved with the others in rounds (each
  round gives every phase about the same number of clips: ``steps`` steps at
  batch 16, ``steps * 16 / batch`` at a larger batch), through the trainer's
  own path (``batch_stream`` with its prefetching thread, ``train_step`` with the
  phase's objective, Adam and StepLR of ``make_optimizer``, frame means in
  memory); medians over rounds; the wall time and the CPU time of this process;
* each phase's validation pass (``score_split`` on the val split's frame means,
  its decision rule, with the leak figures, as the trainer validates);
* one labelling pass (``predict_outputs`` of the first phase's network over
  ``label_videos`` training clips read from the store, as ``run_recipe`` does);
* building the frame means of train and val (the trainer does it once per run);
* writing ``resume.pt`` and ``best.pt`` once (the trainer writes resume.pt after
  every epoch and best.pt after each better one: counted at every epoch).

Counted, not measured: how many of each there are in a full run at LLP size
(10,000 training clips, 649 validation clips), from the phases' schedules:
steps x batch clips through the step (an epoch schedule: epochs x 10,000),
one validation per epoch or round, one labelling pass over 10,000 clips after
a first phase, frame means and checkpoints per run. Left out: loading the first
phase's checkpoint (one file), the noise ratios and teacher labels (numpy over
[10,000, 25] arrays), the training plot. The JoMoLD ranking runs on stand-in
noise ratios (0.3 for every class and modality, past the warm-up: both of its
branches run for every class; its cost does not depend on the values) and the
teacher's loss on stand-in labels (random within the weak labels; the BCE costs
the same whatever they are).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LLP_TRAIN, LLP_VAL = 10_000, 649   # the sizes the projection is for (LLP's train and val splits)
STAND_IN_RATIO = 0.3               # the stand-in JoMoLD noise ratio of every class and modality


class _Head:
    """The first ``n`` videos of a split (for a labelling pass on part of the training clips)."""

    def __init__(self, split, n: int):
        self.base, self.n = split, n

    def __len__(self):
        return self.n

    def __getattr__(self, name):
        return getattr(self.base, name)

    def batch(self, idx):
        return self.base.batch(idx)

    def check_finite(self, idx, arrays):
        return self.base.check_finite(idx, arrays)


class PhaseContender:
    """One phase of a recipe, stepped as the trainer steps it (its model, optimiser, scheduler, objective)."""

    def __init__(self, phase, objective, split, device: str, precision: str):
        import torch

        from avparse.core.han import build_han
        from avparse.train.trainer import make_optimizer, model_config_for

        cfg = phase.train
        torch.manual_seed(cfg.seed)
        self.phase, self.objective, self.split, self.cfg = phase, objective, split, cfg
        self.device, self.precision = device, precision
        self.model = build_han(model_config_for(phase.model, split), device=device)
        self.opt, self.sched = make_optimizer(self.model, cfg)
        self.y = torch.from_numpy(np.asarray(split.labels, np.float32))
        self.rng = np.random.default_rng(cfg.seed)
        self.step_no = phase.total_steps(LLP_TRAIN) // 2   # mid-run: past JoMoLD's warm-up
        self.stream = None

    def _indices(self):
        while True:   # endless shuffled passes, batch_size videos per step
            perm = self.rng.permutation(len(self.split))
            for s in range(0, len(perm), self.cfg.batch_size):
                yield perm[s:s + self.cfg.batch_size]

    def steps(self, k: int) -> int:
        import torch

        from avparse.train.trainer import batch_stream, train_step

        if self.stream is None:
            self.stream = batch_stream(self.split, self._indices(), prefetch=self.cfg.prefetch)
        self.model.train()
        n = 0
        running = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(k):
            idx, arrays = next(self.stream)
            ld, _ = train_step(self.model, self.opt, self.cfg.loss, self.split, idx, self.y, self.device,
                               arrays=arrays, precision=self.precision, objective=self.objective,
                               step=self.step_no)
            if self.cfg.schedule == "steps":
                self.sched.step()
            running += ld
            self.step_no += 1
            if (i + 1) % self.cfg.log_every == 0:
                float(running.item())   # the trainer reads the loss back every log_every steps
            n += len(idx)
        float(running.item())   # waits for the device
        return n

    def close(self):
        if self.stream is not None:
            self.stream.close()


def _stand_ins(split, seed: int = 0):
    """Stand-in noise ratios and teacher labels of the right shapes (see the module docstring)."""
    from avparse.train.recipes import TeacherLabels

    rng = np.random.default_rng(seed)
    y = np.asarray(split.labels, np.float32)
    n, c, t = len(y), y.shape[1], split.num_snippets
    video = y[:, None, :] * (rng.random((n, 2, c)) < 0.7)
    snippets = video[:, None] * (rng.random((n, t, 2, c)) < 0.5)
    ratios = {"audio": [STAND_IN_RATIO] * c, "visual": [STAND_IN_RATIO] * c}
    return ratios, TeacherLabels(video, snippets)


def _describe(phase) -> str:
    m = phase.model
    net = "no temporal net" if m.temporal == "none" else m.temporal.upper() if m.temporal != "han" else \
        "HAN" if m.cross_attention else "HAN without cross-modal attention"
    loss = {"paper": "the paper's loss", "jomold-estimator": "estimator loss + alignment NCE",
            "teacher": "teacher labels + snippet loss", "jomold": "joint-modal ranking + NCE",
            "jomold+teacher": "ranking + NCE + teacher snippet loss"}[phase.objective]
    return f"{net}, {loss}"


@dataclass
class _Measured:
    vps: list          # videos/s per round
    cpu: list          # CPU ms of this process per video, per round
    val_s: list        # seconds per validation pass (the val split given)
    save_s: float      # seconds to write resume.pt + best.pt once
    label_s: float | None  # seconds per training clip of the labelling pass


def _save_seconds(c, classes, profile) -> float:
    import torch

    from avparse.core.checkpoint import save_checkpoint
    from avparse.train.trainer import _save_atomic

    with tempfile.TemporaryDirectory(prefix="avparse-bench-ckpt-") as d:
        t0 = time.perf_counter()
        _save_atomic({"model": c.model.state_dict(), "optimizer": c.opt.state_dict(),
                      "scheduler": c.sched.state_dict(), "rng": [{"torch": torch.get_rng_state()}],
                      "model_config": c.model.config.to_dict(), "train_config": c.cfg.to_dict()},
                     Path(d) / "resume.pt")
        save_checkpoint(Path(d) / "best.pt", c.model, classes=classes, profile=profile,
                        extra={"train_config": c.cfg.to_dict()})
        return time.perf_counter() - t0


def run(args, tr, va, *, d_model: int, threads: int, log=print) -> int:
    """Time the phases of ``args.recipes`` on ``tr``/``va`` and print the projected full runs."""
    import torch

    from avparse.core.han import HANConfig
    from avparse.tools.common import fail
    from avparse.train.dataset import FrameMeanSplit
    from avparse.train.evaluate import predict_outputs, score_split
    from avparse.train.recipes import RECIPES, RecipeConfig, recipe_objective, recipe_phases
    from avparse.train.trainer import TrainConfig

    from .bench_train import timed_rounds
    from .machine import cores, cpu_model, load_text

    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    bad = [r for r in names if r not in RECIPES]
    if bad or not names:
        return fail(f"--recipes: unknown recipe {bad[0]!r} (choose from {', '.join(RECIPES)})" if bad
                    else "--recipes: name at least one recipe")
    names = ["paper"] + [r for r in dict.fromkeys(names) if r != "paper"]   # the paper's is the reference
    model_cfg = HANConfig(d_model=d_model, dim_feedforward=d_model)
    base = TrainConfig(num_threads=threads, device=args.device, precision=args.precision, schedule="auto")
    plans = {r: recipe_phases(RecipeConfig(recipe=r), model_cfg, base, LLP_TRAIN) for r in names}

    t0 = time.perf_counter()
    tr_fm, va_fm = FrameMeanSplit(tr), FrameMeanSplit(va)
    prep_s = (time.perf_counter() - t0) * (LLP_TRAIN + LLP_VAL) / (len(tr) + len(va))
    ratios, teach = _stand_ins(tr)
    p = tr.profile
    log(f"data: {len(tr)} train / {len(va)} val videos ({p.name} sizes: audio {p.audio_dim}, 2D "
        f"{p.frames_per_snippet}x{p.v2d_dim}, 3D {p.v3d_dim}), HAN width {d_model}, {args.precision}, device "
        f"{args.device}, {threads} torch threads on {cores()} cores; {cpu_model()}, {load_text()}")

    contenders: dict = {}   # one per distinct phase (jomold and jomold+teacher share their estimator)
    key_of: dict = {}
    for r, phases in plans.items():
        for ph in phases:
            key = (ph.name, repr(ph.model), repr(ph.train), ph.objective)
            if key not in key_of:
                name = f"{r}: {ph.name}"
                obj = recipe_objective(RecipeConfig(recipe=r), ph, base, LLP_TRAIN,
                                       ratios=ratios if r.startswith("jomold") and ph.name == "model" else None,
                                       teacher=teach if "teacher" in r and ph.name == "model" else None)
                contenders[name] = PhaseContender(ph, obj, tr_fm, args.device, args.precision)
                key_of[key] = name
    steps = {n: max(1, round(args.steps * 16 / c.cfg.batch_size)) for n, c in contenders.items()}
    warm = {n: max(1, round(args.warmup * 16 / c.cfg.batch_size)) for n, c in contenders.items()}
    torch.set_flush_denormal(True)   # as train() does while training
    try:
        for n, c in contenders.items():
            c.steps(warm[n])
        log(f"timing {len(contenders)} phases in {args.rounds} interleaved rounds of about {args.steps * 16} clips "
            f"each: " + ", ".join(f"{n} ({steps[n]} x {contenders[n].cfg.batch_size})" for n in contenders))

        def on_round(r, v):
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[n][-1]:.0f}" for n in v) + " videos/s")
            sys.stdout.flush()

        vps, cpu = timed_rounds(contenders, args.rounds, steps, on_round=on_round)
        for c in contenders.values():
            c.close()
        val_s: dict = {n: [] for n in contenders}
        for _ in range(max(1, min(3, args.rounds))):   # interleaved too
            for n, c in contenders.items():
                t0 = time.perf_counter()
                score_split(c.model, va_fm, threshold=c.cfg.threshold, batch_size=c.cfg.val_batch_size,
                            device=args.device, gate=c.cfg.gate, leak=True)
                val_s[n].append(time.perf_counter() - t0)
        n_label = max(1, min(args.label_videos, len(tr)))
        measured = {}
        for n, c in contenders.items():
            label_s = None
            if c.phase.labels_training_clips:   # run_recipe: predict_outputs over the store's training clips
                t0 = time.perf_counter()
                predict_outputs(c.model, _Head(tr, n_label), batch_size=base.val_batch_size, device=args.device)
                label_s = (time.perf_counter() - t0) / n_label
            measured[n] = _Measured(vps[n], cpu[n], val_s[n], _save_seconds(c, tr.classes, tr.profile), label_s)
    finally:
        torch.set_flush_denormal(False)   # torch's default (it has no getter), as train() leaves it

    log("")
    log(f"per phase (medians of {args.rounds} rounds; ms per optimiser step, wall and CPU of this process):")
    for n, m in measured.items():
        c = contenders[n]
        b = c.cfg.batch_size
        med, cm = statistics.median(m.vps), statistics.median(m.cpu)
        lab = f", labelling {1000 * m.label_s:.2f} ms/clip" if m.label_s is not None else ""
        log(f"  {n:<22} {_describe(c.phase)}: batch {b}, {1000 * b / med:.1f} ms/step wall "
            f"({1000 * b / max(m.vps):.1f}-{1000 * b / min(m.vps):.1f}), {cm * b:.1f} ms/step CPU; "
            f"validation {statistics.median(m.val_s):.2f} s on {len(va)} clips; checkpoints {m.save_s:.2f} s{lab}")
    log(f"  frame means of train + val, per training run: {prep_s:.1f} s at LLP size "
        f"(measured on {len(tr) + len(va)} clips)")

    log("")
    log(f"projected full runs at LLP size ({LLP_TRAIN:,} training clips, {LLP_VAL} validation clips; "
        f"steps measured above, counts from the recipes' schedules):")
    totals, totals_cpu = {}, {}
    for r, phases in plans.items():
        parts, total, total_cpu = [], 0.0, 0.0
        for ph in phases:
            n = key_of[(ph.name, repr(ph.model), repr(ph.train), ph.objective)]
            m = measured[n]
            t = ph.train
            steps_n = ph.total_steps(LLP_TRAIN)
            clips = t.epochs * LLP_TRAIN if t.schedule == "epochs" else steps_n * t.batch_size
            step_s = clips / statistics.median(m.vps)
            step_cpu = clips * statistics.median(m.cpu) / 1000
            vals = ph.validations()
            other = vals * (statistics.median(m.val_s) * LLP_VAL / len(va) + m.save_s) + prep_s
            if m.label_s is not None:
                other += m.label_s * LLP_TRAIN
            total += step_s + other
            total_cpu += step_cpu + other
            sched = (f"{t.epochs} epochs x {t.steps_per_epoch(LLP_TRAIN)}" if t.schedule == "epochs"
                     else f"{steps_n:,}") + f" steps at batch {t.batch_size}"
            parts.append(f"{ph.name} ({sched}: {step_s / 60:.1f} min; {vals} validations, checkpoints, frame "
                         f"means{', labelling pass' if m.label_s is not None else ''}: {other / 60:.1f} min)")
        totals[r], totals_cpu[r] = total, total_cpu
        log(f"  {r:<15} {total / 60:6.1f} min = " + " + ".join(parts))
    log("")
    for r in names[1:]:
        log(f"ratio {r} / paper: {totals[r] / totals['paper']:.2f}x (steps by CPU time: "
            f"{totals_cpu[r] / totals_cpu['paper']:.2f}x)")
    return 0
