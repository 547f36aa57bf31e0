"""`avparse train`: train HAN from video-level labels (the paper's recipe by default).

    avparse train --data DIR [--labels DIR] [--out runs/han] [--resume]
                  [--recipe paper|jomold|teacher|jomold+teacher] [--schedule auto|epochs|steps]
                  [--loss both|weak|guided] [--pooling attentive|max|mean]
                  [--temporal han|none|gru|transformer] [--noisy smooth|none|bootstrap] ...

DIR is a packed store (`avparse pack`) or the LLP feature layout. Several
GPUs or machines: `torchrun --nproc_per_node=N -m avparse.tools.cli train ...`
(see docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from avparse.tools.common import UserError, add_data_args, data_config, fail, user_errors


# ------------------------------------------------------------------ progress


def _clock(s: float) -> str:
    s = max(0, int(round(s)))
    h, r = divmod(s, 3600)
    m, s = divmod(r, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """A one-line bar with loss and ETA on stderr; plain lines every 30 s when not a terminal."""

    def __init__(self, stream=None, width: int = 24, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width, self.quiet = width, quiet
        self.epochs, self.epoch_times, self.last_print = 0, [], 0.0

    # Callbacks API of avparse.train.trainer
    def on_start(self, info):
        self.epochs, self.start_epoch = info["epochs"], info["start_epoch"]
        self.epoch_times = []
        if not self.quiet and info.get("schedule"):
            print(info["schedule"], flush=True)
        if not self.quiet:
            print(f"training on {info['videos']} videos ({info['val_videos']} for validation), "
                  f"{info['params']:,} parameters, device {info['device']}, {info['threads']} threads"
                  + (f", {info['world_size']} processes" if info["world_size"] > 1 else "")
                  + (f"; resuming at epoch {info['start_epoch']}" if info["start_epoch"] > 1 else ""), flush=True)

    def on_epoch_start(self, epoch, steps):
        self.epoch, self.steps, self.t0 = epoch, steps, time.perf_counter()

    def on_step(self, epoch, step, steps, loss):
        if self.quiet:
            return
        now = time.perf_counter()
        el = now - self.t0
        eta_epoch = el / step * (steps - step)
        per_epoch = (sum(self.epoch_times) / len(self.epoch_times)) if self.epoch_times else el / step * steps
        eta_run = eta_epoch + per_epoch * (self.epochs - epoch)
        fill = int(self.width * step / steps)
        line = (f"epoch {epoch}/{self.epochs} [{'#' * fill}{'.' * (self.width - fill)}] {step}/{steps} "
                f"loss {loss:.4f}  ETA epoch {_clock(eta_epoch)}, run {_clock(eta_run)}")
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self.stream.flush()
        elif now - self.last_print >= 30 or step == steps:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_print = now

    def on_epoch_end(self, r):
        self.epoch_times.append(time.perf_counter() - self.t0)
        if self.tty and not self.quiet:
            self.stream.write("\r\033[K")
        v = r.get("val")
        text = f"epoch {r['epoch']}/{self.epochs} loss {r['train_loss']:.4f} lr {r['lr']:.2g} " \
               f"({r['train_seconds']:.1f} s"
        if v:
            text += (f" + val {r['val_seconds']:.1f} s) val seg a {v['seg_a']:.1f} v {v['seg_v']:.1f} "
                     f"av {v['seg_av']:.1f} Type@AV {v['seg_type']:.1f} Event@AV {v['seg_event']:.1f} | "
                     f"event-level Type@AV {v['evt_type']:.1f}" + ("  *best" if r.get("best") else ""))
        else:
            text += ")"
        print(text, flush=True)

    def log(self, line):
        print(line, flush=True)


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    from avparse.core.han import HANConfig
    from avparse.train.losses import LossConfig
    from avparse.train.trainer import TrainConfig

    tc, lc, mc = TrainConfig(), LossConfig(), HANConfig()
    p = argparse.ArgumentParser(prog="avparse train", description="Train HAN from video-level labels. Defaults are "
                                "the paper's recipe (YapengTian/AVVP-ECCV20 main_avvp.py).")
    add_data_args(p)
    p.add_argument("--out", default="runs/han", metavar="DIR",
                   help="run folder: best.pt, resume.pt, history.json, training.png (default runs/han)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    from avparse.train.recipes import RECIPES, TEACHER_LABELS, TEACHERS
    from avparse.train.trainer import GATES, SELECT_METRICS

    g = p.add_argument_group("recipe (paper defaults)")
    g.add_argument("--recipe", choices=RECIPES, default="paper",
                   help="paper (default); jomold: JoMoLD's joint-modal label denoising (noise estimator, noise "
                        "ratios, denoised training; its own optimiser and schedule); teacher: HAN trained on the "
                        "modality and per-second labels of a parser that cannot leak; jomold+teacher: both "
                        "(docs/training.md)")
    g.add_argument("--schedule", choices=("auto", "epochs", "steps"), default="auto",
                   help="auto (default): the kind of count given (--epochs/--lr-step or --steps/--lr-step-steps); "
                        "with neither, the paper's epochs where they give at least --steps optimiser steps "
                        "(LLP-size data), else counted in steps; epochs; steps")
    g.add_argument("--epochs", type=int, default=None, help=f"epochs of schedule epochs (default {tc.epochs}; "
                                                            "giving it selects schedule epochs under auto)")
    g.add_argument("--lr-step", type=int, default=None, help=f"StepLR step size in epochs (default {tc.lr_step}; "
                                                             "giving it selects schedule epochs under auto)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"schedule steps: optimiser steps in all (default {tc.steps}: the paper's 40 epochs on LLP; "
                        "giving it selects schedule steps under auto)")
    g.add_argument("--lr-step-steps", type=int, default=None,
                   help=f"schedule steps: StepLR step size in optimiser steps (default {tc.lr_step_steps}: "
                        "10 epochs on LLP; giving it selects schedule steps under auto)")
    g.add_argument("--rounds", type=int, default=None,
                   help=f"schedule steps: validations, one every steps/rounds steps (default {tc.rounds})")
    # None = the recipe's own (the paper's below; recipe jomold: JoMoLD's); a value given wins in every recipe
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"videos per step and process (default {tc.batch_size}; recipe jomold: 128)")
    g.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (default {tc.lr:g}; recipe jomold: 5e-4)")
    g.add_argument("--lr-gamma", type=float, default=None,
                   help=f"StepLR factor (default {tc.lr_gamma:g}; recipe jomold: 0.25)")
    g.add_argument("--seed", type=int, default=None, help=f"seed (default {tc.seed}; recipe jomold: 6)")
    g.add_argument("--select", choices=SELECT_METRICS, default=None,
                   help=f"validation score that picks best.pt (default {tc.select_metric}; recipe jomold: evt_a, "
                        "as its code)")
    g.add_argument("--gate", choices=GATES, default=None,
                   help="decision rule of validation: global (paper: snippet AND video-level probability) or "
                        "modality (JoMoLD: each modality's own video-level probability); default: the recipe's")
    g.add_argument("--no-val", action="store_true", help="no validation (best.pt = last epoch)")
    d = p.add_argument_group("denoising recipes")
    d.add_argument("--teacher", choices=TEACHERS, default="none",
                   help="recipe teacher: the teacher parser, none (no temporal net) or han-no-cross (HAN without "
                        "cross-modal attention)")
    d.add_argument("--teacher-labels", choices=TEACHER_LABELS, default="hard",
                   help="recipe teacher: per-second labels hard (0/1) or soft (probabilities)")
    d.add_argument("--snippet-weight", type=float, default=1.0,
                   help="recipes with teacher: weight of the snippet-level loss on the teacher's labels")
    d.add_argument("--no-jomold-hparams", action="store_true",
                   help="recipes with jomold: keep this command's optimiser and schedule instead of JoMoLD's "
                        "(Adam 5e-4, batch 128, 25 epochs, StepLR 6 x 0.25, seed 6, kept by val audio event F1)")
    t = p.add_argument_group("Table 2 switches")
    t.add_argument("--loss", choices=("both", "weak", "guided"), default=lc.terms,
                   help="both = L_wsl + L_g (paper), weak = L_wsl only, guided = L_g only")
    t.add_argument("--pooling", choices=("attentive", "max", "mean"), default=mc.pooling, help="MMIL pooling")
    t.add_argument("--temporal", choices=("han", "none", "gru", "transformer"), default=mc.temporal,
                   help="temporal network")
    t.add_argument("--noisy", choices=("smooth", "none", "bootstrap"), default=lc.noisy,
                   help="noisy guided labels: smooth (paper: label smoothing), none, bootstrap (Reed et al.)")
    t.add_argument("--eps-a", type=float, default=lc.eps_a, help="audio smoothing epsilon (paper code: 0)")
    t.add_argument("--eps-v", type=float, default=lc.eps_v, help="visual smoothing epsilon (paper code: 0.1)")
    t.add_argument("--smooth-k", type=int, default=lc.smooth_k, help="K of y = (1-eps) y + eps/K (paper code: 2)")
    t.add_argument("--bootstrap-mode", choices=("soft", "hard"), default=lc.bootstrap_mode)
    t.add_argument("--bootstrap-beta", type=float, default=lc.bootstrap_beta,
                   help="default 0.95 soft, 0.8 hard (Reed et al.)")
    m = p.add_argument_group("model size (paper defaults)")
    m.add_argument("--d-model", type=int, default=mc.d_model)
    m.add_argument("--dim-feedforward", type=int, default=mc.dim_feedforward)
    m.add_argument("--num-layers", type=int, default=mc.num_layers)
    m.add_argument("--nhead", type=int, default=mc.nhead)
    m.add_argument("--dropout", type=float, default=mc.dropout)
    m.add_argument("--layer-mode", choices=("original", "stacked"), default=mc.layer_mode)
    m.add_argument("--no-cross-attention", action="store_true",
                   help="HAN without its cross-modal branch (self-attention within each modality only)")
    r = p.add_argument_group("running")
    r.add_argument("--device", default=tc.device, help="cpu or cuda (torchrun: one GPU per process)")
    r.add_argument("--precision", choices=("fp32", "bf16"), default=tc.precision,
                   help="fp32 (the paper's arithmetic) or bf16 mixed precision: the forward pass's matrix products "
                        "in bf16 (GPUs; CPUs with AMX or AVX512-BF16), weights, Adam and the loss in fp32")
    r.add_argument("--threads", type=int, default=tc.num_threads,
                   help="torch threads per process (default: cores/processes)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def configs(args):
    """(model config, train config, recipe config) of the command line."""
    from avparse.core.han import HANConfig
    from avparse.train.losses import LossConfig
    from avparse.train.recipes import RecipeConfig, TeacherConfig, jomold_train_config
    from avparse.train.trainer import TrainConfig

    schedule = args.schedule
    by_epochs = args.epochs is not None or args.lr_step is not None
    by_steps = args.steps is not None or args.lr_step_steps is not None
    if schedule == "auto" and by_epochs and by_steps:
        raise UserError("--epochs/--lr-step and --steps/--lr-step-steps belong to different schedules; "
                        "give one kind, or --schedule to say which counts")
    if schedule == "auto" and (by_epochs or by_steps):
        schedule = "epochs" if by_epochs else "steps"   # the kind of count asked for
    try:
        loss = LossConfig(terms=args.loss, noisy=args.noisy, eps_a=args.eps_a, eps_v=args.eps_v,
                          smooth_k=args.smooth_k, bootstrap_mode=args.bootstrap_mode,
                          bootstrap_beta=args.bootstrap_beta)
        # the settings given on the command line (the rest: the recipe's defaults)
        given = {k: v for k, v in (("epochs", args.epochs), ("lr_step", args.lr_step), ("steps", args.steps),
                                   ("lr_step_steps", args.lr_step_steps), ("rounds", args.rounds),
                                   ("batch_size", args.batch_size), ("lr", args.lr), ("lr_gamma", args.lr_gamma),
                                   ("seed", args.seed), ("select_metric", args.select), ("gate", args.gate))
                 if v is not None}
        train_cfg = TrainConfig(loss=loss, validate=not args.no_val, num_threads=args.threads, device=args.device,
                                precision=args.precision, schedule=schedule, **given)
        model_cfg = HANConfig(d_model=args.d_model, dim_feedforward=args.dim_feedforward, num_layers=args.num_layers,
                              nhead=args.nhead, dropout=args.dropout, pooling=args.pooling, temporal=args.temporal,
                              layer_mode=args.layer_mode, cross_attention=not args.no_cross_attention)
        recipe = RecipeConfig(recipe=args.recipe, jomold_hparams=False,
                              teacher=TeacherConfig(temporal=args.teacher, labels=args.teacher_labels,
                                                    snippet_weight=args.snippet_weight))
        if recipe.recipe.startswith("jomold") and not args.no_jomold_hparams:
            # JoMoLD's optimisation, with this command's choices where they were made explicitly
            j = jomold_train_config(train_cfg, recipe.jomold)
            train_cfg = TrainConfig.from_dict({**j.to_dict(), **given})
    except ValueError as e:
        raise UserError(str(e)) from None
    return model_cfg, train_cfg, recipe


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from avparse.train.dataset import open_split
        from avparse.train.trainer import train

        model_cfg, train_cfg, recipe = configs(args)
        data = data_config(args)
        out = Path(args.out)
        if (out / "resume.pt").is_file() and not args.resume:
            raise UserError(f"{out} already holds a run; add --resume to continue it or choose another --out")
        if recipe.recipe != "paper" and not train_cfg.validate:
            raise UserError(f"--recipe {recipe.recipe} needs validation (its first phase's epoch is kept by it); "
                            "drop --no-val")
        tr = open_split(data, "train")
        va = open_split(data, "val") if train_cfg.validate else None
        bar = ProgressBar(quiet=args.quiet)
        meta = {"data_dir": str(Path(args.data).resolve()),
                "labels_dir": str(Path(args.labels).resolve()) if args.labels else None}
        if recipe.recipe == "paper":
            res = train(model_cfg, train_cfg, tr, va, out, resume=args.resume, callbacks=bar, meta=meta)
        else:
            from avparse.train.recipes import run_recipe

            res = run_recipe(recipe, model_cfg, train_cfg, tr, va, out, resume=args.resume, callbacks=bar,
                             meta=meta, log=bar.log).result
    except user_errors() as e:
        return fail(str(e))
    if res.is_main and res.best_path is not None and res.history:
        print(f"best epoch {res.best_epoch} ({train_cfg.select_metric} {res.best_score:.2f}): {res.best_path}"
              if res.best_score is not None else f"checkpoint: {res.best_path}")
        if res.plot_path:
            print(f"plot: {res.plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
