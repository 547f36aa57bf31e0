"""Modality-aware label denoising: training recipes beyond the paper's, from weak labels only.

The paper's guided loss asks the audio and the visual branch to predict every
video-level label, but a class heard off screen is no visual event: those
targets are wrong, and HAN's cross-modal attention is the channel through which
one modality learns to copy the other's class. Two published-style remedies,
each written from its description (never copied):

``jomold`` - JoMoLD (Cheng et al., ECCV 2022, "Joint-Modal Label Denoising for
Weakly-Supervised Audio-Visual Video Parsing"; read from MCG-NJU/JoMoLD
``main.py`` and ``nets/net_audiovisual.py``):

1. a *noise estimator*: the same HAN with its cross-modal branch off, trained
   with the guided loss (audio target y, visual target 0.9 y + 0.05), the
   video-level loss and a snippet-alignment contrastive loss (audio snippet t
   should match visual snippet t of its video: softmax over the T visual
   snippets at temperature 0.2, target smoothed by 0.1; from MA, Wu & Yang,
   CVPR 2021); kept by the validation event-level audio F1 with the
   modality-gated decision rule;
2. *noise ratios* per class and modality: over the training set, a labelled
   class is counted noisy in audio when p_a * y_a / mean_c(p_a) < 0.6, in
   visual when p_v * y_v / mean_c(p_v) < 1.8 (means over all training videos);
   the ratio is the count over the class's labelled videos;
3. *denoised training* of a fresh HAN (cross-modal branch on): per batch, the
   model itself, run WITHOUT cross-modal attention and without gradient, gives
   each labelled (video, class) its audio and visual BCE; per class, of the k =
   floor(ratio_v * positives) positives with the largest visual loss, those also
   among the k with the smallest audio loss lose their visual label (set to 0),
   and symmetrically for audio (joint-modal ranking); the ratios rise linearly
   over the first 0.9 epochs (their LLP epochs: 3.6 % of the run); loss =
   2 BCE(p_a, y_a') + BCE(p_v, y_v') + BCE(p, y) + NCE;
4. evaluation gates each modality's snippets by that modality's own
   video-level probability (``gate="modality"``).

Hyper-parameters are JoMoLD's (:class:`JoMoLDConfig`, :func:`jomold_train_config`):
Adam 5e-4, batch 128, 25 epochs, StepLR(6, 0.25), seed 6, dropout 0.5 on the
visual features before the classifiers. Counted in optimiser steps on LLP's
10,000 clips: 79 per epoch, 1,975 in all, the lr drop every 474.

``teacher`` - labels from a teacher that cannot leak: a parser whose audio
snippet predictions depend on audio features only and visual ones on visual
features only (no temporal net, ``temporal="none"``, or HAN without its
cross-modal branch) is trained with the paper's recipe; on the training clips
it gives each weak label a per-modality video label (y AND its video-level
modality probability >= 0.5; a label neither modality keeps goes to the more
probable one) and per-second labels (those AND the snippet probability >= 0.5,
or the probability itself: ``labels="soft"``). The full HAN is then trained
from scratch with L_wsl + the guided loss on the teacher's modality labels + a
snippet-level BCE on its per-second labels (weight ``snippet_weight``).

``jomold+teacher`` - JoMoLD's estimator (a HAN without cross-modal attention:
it cannot leak either) is also the teacher: the denoised training gets the
teacher's snippet loss on top.

The recipes' losses are in :mod:`avparse.train.denoising`.
Only the weak labels of the training split are used; the dense validation
annotations choose epochs, as in the paper's code.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avparse.core.han import HANConfig

from .dataset import FeatureSplit
from .denoising import DenoisingObjective, EstimatorObjective, _smoothed
from .losses import LossConfig
from .trainer import LLP_TRAIN_VIDEOS, Callbacks, TrainConfig, TrainResult, train

RECIPES = ("paper", "jomold", "teacher", "jomold+teacher")
TEACHERS = ("none", "han-no-cross")
TEACHER_LABELS = ("hard", "soft")


@dataclass(frozen=True)
class JoMoLDConfig:
    """JoMoLD's label denoising; defaults from MCG-NJU/JoMoLD main.py (argparse defaults)."""

    a_thres: float = 0.6            # audio label noisy when p_a*y_a / class mean of p_a < a_thres (--a_thres)
    v_thres: float = 1.8            # visual label noisy when p_v*y_v / class mean of p_v < v_thres (--v_thres)
    warm_up_epochs: float = 0.9     # noise ratios rise linearly over this many of its epochs (--warm_up_epoch)
    epochs: int = 25                # its epochs (--epochs): the warm-up is warm_up_epochs / epochs of the run
    audio_weight: float = 2.0       # weight of the audio guided loss (--audio_weight)
    visual_weight: float = 1.0      # weight of the visual guided loss (--visual_weight)
    video_weight: float = 1.0       # weight of the video-level loss (--video_weight)
    nce_weight: float = 1.0         # weight of the snippet-alignment contrastive loss (--nce_weight)
    nce_smooth: float = 0.1         # label smoothing of the contrastive target (--nce_smooth; estimator: 0.1)
    temperature: float = 0.2        # temperature of the contrastive similarities (--temperature)
    a_smooth: float = 1.0           # audio guided target a*y + (1-a)/2 (--a_smooth: y)
    v_smooth: float = 0.9           # visual guided target v*y + (1-v)/2 (--v_smooth: 0.9 y + 0.05)
    cls_dropout: float = 0.5        # dropout on the visual snippet features before the classifiers (MMIL_Net)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TeacherConfig:
    """Labels from a teacher that cannot leak across modalities (see the module docstring)."""

    temporal: str = "none"          # the teacher: "none" (no temporal net) or "han-no-cross" (HAN, no cross branch)
    labels: str = "hard"            # per-second labels: "hard" (0/1) or "soft" (the teacher's probabilities)
    threshold: float = 0.5          # video-level and snippet threshold of the teacher's labels (paper: 0.5)
    snippet_weight: float = 1.0     # weight of the snippet-level BCE on the per-second labels
    schedule: str = "same"          # the teacher's schedule: "same" (the student's) or "epochs" (the paper's
    #                                 epoch recipe whatever the student's)
    weights: str = "last"           # the teacher labelling the training clips: "last" (its state at the end of
    #                                 its schedule) or "best" (its best validation round); see docs/training.md

    def __post_init__(self):
        if self.schedule not in ("epochs", "same"):
            raise ValueError(f"teacher schedule must be 'epochs' or 'same', got {self.schedule!r}")
        if self.weights not in ("last", "best"):
            raise ValueError(f"teacher weights must be 'last' or 'best', got {self.weights!r}")
        if self.temporal not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {self.temporal!r}")
        if self.labels not in TEACHER_LABELS:
            raise ValueError(f"teacher labels must be one of {TEACHER_LABELS}, got {self.labels!r}")
        if not 0 < self.threshold < 1 or self.snippet_weight < 0:
            raise ValueError("teacher threshold must be in (0, 1) and snippet_weight >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RecipeConfig:
    """Which recipe ``avparse train --recipe`` runs, and the settings of its parts."""

    recipe: str = "paper"           # "paper", "jomold", "teacher" or "jomold+teacher"
    jomold: JoMoLDConfig = field(default_factory=JoMoLDConfig)      # recipes with jomold
    teacher: TeacherConfig = field(default_factory=TeacherConfig)   # recipes with teacher
    jomold_hparams: bool = True     # jomold recipes: JoMoLD's optimiser/schedule/selection (jomold_train_config)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def jomold_train_config(base: TrainConfig, jcfg: JoMoLDConfig = JoMoLDConfig(), *, samples: int | None = None
                        ) -> TrainConfig:
    """``base`` with JoMoLD's optimisation (main.py defaults): Adam 5e-4, batch 128, 25 epochs,
    StepLR(6 epochs, 0.25), seed 6, the kept epoch by validation event-level audio F1 (``audio_eve``),
    the modality-gated decision rule. Counted in steps as on LLP (79 steps of 128 per epoch):
    1,975 steps, the drop every 474, 25 validations. ``samples``: the same shape scaled to that many
    training clips seen in all (steps = samples / 128, the drop at 6/25 of them), to compare with a
    recipe of another length on equal terms. Devices, threads and the schedule kind stay ``base``'s."""
    per_epoch = math.ceil(LLP_TRAIN_VIDEOS / 128)
    steps, drop = jcfg.epochs * per_epoch, 6 * per_epoch
    if samples is not None:
        steps = max(jcfg.epochs, round(samples / 128))
        drop = max(1, round(steps * 6 / jcfg.epochs))
    return replace(base, batch_size=128, lr=5e-4, epochs=jcfg.epochs, lr_step=6, lr_gamma=0.25, seed=6,
                   steps=steps, lr_step_steps=drop, rounds=jcfg.epochs,
                   select_metric="evt_a", gate="modality",
                   loss=LossConfig(eps_a=1 - jcfg.a_smooth, eps_v=1 - jcfg.v_smooth))


# ------------------------------------------------------------------ the teacher's labels and JoMoLD's ratios


class TeacherLabels:
    """Per-video modality labels [N, 2, C] and per-second labels [N, T, 2, C] of the training split."""

    def __init__(self, video: np.ndarray, snippets: np.ndarray):
        self.video_labels = np.ascontiguousarray(video, dtype=np.float32)
        self.snippet_labels = np.ascontiguousarray(snippets, dtype=np.float32)
        self._v = torch.from_numpy(self.video_labels)
        self._s = torch.from_numpy(self.snippet_labels)

    def video(self, idx, modality: int, device) -> torch.Tensor:
        return self._v[torch.as_tensor(idx), modality].to(device)

    def snippets(self, idx, device) -> torch.Tensor:
        return self._s[torch.as_tensor(idx)].to(device)

    def digest(self) -> str:
        h = hashlib.sha256(self.video_labels.tobytes())
        h.update(self.snippet_labels.tobytes())
        return h.hexdigest()[:16]

    def save(self, path) -> None:
        np.savez_compressed(path, video=self.video_labels, snippets=self.snippet_labels)

    @classmethod
    def load(cls, path) -> "TeacherLabels":
        with np.load(path) as z:
            return cls(z["video"], z["snippets"])


def teacher_labels(outputs: dict, weak: np.ndarray, cfg: TeacherConfig) -> TeacherLabels:
    """The teacher's labels from its outputs on the training clips (``evaluate.predict_outputs``) and the
    weak labels [N, C]: modality labels y AND p_m >= threshold (a weak label that neither keeps goes to
    the modality with the larger p_m); per-second labels = modality label AND snippet prob >= threshold
    (``soft``: the modality label times the snippet probability)."""
    y = np.asarray(weak, np.float32)
    pm = np.stack([outputs["a_prob"], outputs["v_prob"]], axis=1)               # [N, 2, C]
    vid = (pm >= cfg.threshold).astype(np.float32) * y[:, None, :]
    lost = (vid.sum(axis=1) == 0) & (y > 0)                                      # [N, C]
    best = np.argmax(pm, axis=1)                                                 # [N, C]
    for m in (0, 1):
        vid[:, m][lost & (best == m)] = 1.0
    fp = np.asarray(outputs["frame_prob"], np.float32)                           # [N, T, 2, C]
    gate = vid[:, None, :, :]
    snip = gate * (fp if cfg.labels == "soft" else (fp >= cfg.threshold).astype(np.float32))
    return TeacherLabels(vid, snip)


def noise_ratios(outputs: dict, weak: np.ndarray, jcfg: JoMoLDConfig) -> dict:
    """JoMoLD's per-class noise ratios from the estimator's outputs on the training clips."""
    y = np.asarray(weak, np.float64)
    pa, pv = np.asarray(outputs["a_prob"], np.float64), np.asarray(outputs["v_prob"], np.float64)
    mean_a, mean_v = pa.mean(axis=0), pv.mean(axis=0)                 # over every training video
    a = pa * _smoothed(y, jcfg.a_smooth)
    v = pv * _smoothed(y, jcfg.v_smooth)
    lab = y > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        noisy_a = lab & (a / mean_a < jcfg.a_thres)
        noisy_v = lab & (v / mean_v < jcfg.v_thres)
    count = lab.sum(axis=0)
    ratio = lambda k: np.where(count > 0, k.sum(axis=0) / np.maximum(count, 1), 0.0)  # noqa: E731
    return {"audio": ratio(noisy_a).tolist(), "visual": ratio(noisy_v).tolist(), "labelled": count.tolist()}


# ------------------------------------------------------------------ running a recipe


@dataclass
class RecipeResult:
    result: TrainResult                   # the final model's training (best.pt)
    phases: dict[str, TrainResult]        # "teacher" / "estimator" runs
    ratios: dict | None                   # JoMoLD's noise ratios
    teacher_stats: dict | None            # how the teacher's labels compare with the weak labels
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase (a reused one: ~0)


@dataclass(frozen=True)
class RecipePhase:
    """One training run of a recipe, as :func:`run_recipe` runs it (:func:`recipe_phases`)."""

    name: str                   # "model" (the final model, into out_dir) or "teacher" / "estimator" (out_dir/<name>)
    model: HANConfig            # the network it trains
    train: TrainConfig          # its optimisation, the schedule resolved for the data size ("epochs" or "steps")
    objective: str              # its loss: "paper", "jomold-estimator", or the recipe's ("teacher", "jomold", ...)
    labels_training_clips: bool  # afterwards it labels the training clips (one forward pass over them)

    def total_steps(self, videos: int) -> int:
        """Optimiser steps of the whole run on ``videos`` training clips."""
        t = self.train
        return t.steps if t.schedule == "steps" else t.epochs * t.steps_per_epoch(videos)

    def validations(self) -> int:
        """Validation passes of the run (one per epoch or round)."""
        if not self.train.validate:
            return 0
        return self.train.rounds if self.train.schedule == "steps" else self.train.epochs


def _resolved(cfg: TrainConfig, videos: int) -> TrainConfig:
    if cfg.schedule != "auto":
        return cfg
    from .trainer import schedule_for

    return schedule_for(cfg, videos)


def recipe_phases(rcfg: RecipeConfig, model_cfg: HANConfig, cfg: TrainConfig, videos: int
                  ) -> tuple[RecipePhase, ...]:
    """The training runs of ``rcfg.recipe`` on ``videos`` training clips, in order, as :func:`run_recipe`
    runs them (it takes its settings from here): "paper" one run; the others a first phase (the teacher or
    JoMoLD's noise estimator), which then labels the training clips, and the final model."""
    if rcfg.recipe == "paper":
        return (RecipePhase("model", model_cfg, _resolved(cfg, videos), "paper", False),)
    j = rcfg.jomold
    jomold = rcfg.recipe.startswith("jomold")
    tcfg = _resolved(jomold_train_config(cfg, j) if jomold and rcfg.jomold_hparams else cfg, videos)
    if jomold:   # noise estimator: HAN without cross-modal attention
        first = RecipePhase("estimator", replace(model_cfg, temporal="han", cross_attention=False,
                                                 visual_head_dropout=j.cls_dropout), tcfg, "jomold-estimator", True)
    else:        # teacher: no temporal net, or HAN without cross-modal attention; the paper's loss
        t = rcfg.teacher
        ecfg = replace(model_cfg, temporal="none") if t.temporal == "none" else \
            replace(model_cfg, temporal="han", cross_attention=False)
        first = RecipePhase("teacher", ecfg, replace(tcfg, schedule="epochs") if t.schedule == "epochs" else tcfg,
                            "paper", True)
    fcfg = replace(model_cfg, visual_head_dropout=j.cls_dropout) if jomold else model_cfg
    return first, RecipePhase("model", fcfg, tcfg, rcfg.recipe, False)


def recipe_objective(rcfg: RecipeConfig, phase: RecipePhase, cfg: TrainConfig, videos: int, *,
                     ratios: dict | None = None, teacher: "TeacherLabels | None" = None):
    """The training objective of ``phase`` (of :func:`recipe_phases`) as :func:`run_recipe` builds it;
    ``cfg``: the recipe's base config as given to run_recipe; ``ratios`` (JoMoLD's noise ratios) and
    ``teacher`` (the teacher's labels) for the final phase of the recipes that use them."""
    from .trainer import PaperObjective

    if phase.objective == "paper":
        return PaperObjective(phase.train.loss)
    j = rcfg.jomold
    if phase.objective == "jomold-estimator":
        return EstimatorObjective(j)
    jomold = rcfg.recipe.startswith("jomold")
    if (ratios is None) == jomold or (teacher is None) == (rcfg.recipe in ("teacher", "jomold+teacher")):
        raise ValueError(f"recipe {rcfg.recipe}: the final objective takes noise ratios exactly when the recipe "
                         "is JoMoLD's and teacher labels exactly when it has a teacher")
    warm = j.warm_up_epochs / j.epochs * phase.total_steps(videos)
    return DenoisingObjective(jcfg=j if jomold else None, ratios=ratios, warm_steps=warm if jomold else 0.0,
                              teacher=teacher, tcfg=rcfg.teacher, loss_cfg=cfg.loss)


def _done(path: Path, key: dict) -> bool:
    return path.is_file() and json.loads(path.read_text()) == key


def run_recipe(rcfg: RecipeConfig, model_cfg: HANConfig, cfg: TrainConfig, train_split: FeatureSplit,
               val_split: FeatureSplit | None, out_dir, *, resume: bool = False, callbacks: Callbacks | None = None,
               meta: dict | None = None, log: Callable[[str], None] = print) -> RecipeResult:
    """Run ``rcfg.recipe``: the final model goes to ``out_dir`` (best.pt etc.), a teacher or noise
    estimator to ``out_dir/teacher`` or ``out_dir/estimator``. ``cfg`` is the paper's recipe (schedule
    included); jomold recipes use :func:`jomold_train_config` of it unless ``rcfg.jomold_hparams`` is off.
    With ``resume``, a finished first phase is reused and the final run resumed."""
    import time

    from .evaluate import predict_outputs

    out = Path(out_dir)
    t_start = time.perf_counter()
    meta = {**(meta or {}), "recipe": rcfg.to_dict()}
    phases = recipe_phases(rcfg, model_cfg, cfg, len(train_split))
    if rcfg.recipe == "paper":
        cfg = phases[0].train
        log(cfg.describe(len(train_split)))
        res = train(model_cfg, cfg, train_split, val_split, out, resume=resume, callbacks=callbacks, meta=meta)
        return RecipeResult(res, {}, None, None, {"model": time.perf_counter() - t_start})
    weak = np.asarray(train_split.labels)
    phases_run: dict[str, TrainResult] = {}
    ratios, teach, tstats = None, None, None
    j = rcfg.jomold
    jomold = rcfg.recipe.startswith("jomold")
    first, final_phase = phases
    ecfg, first_cfg, name = first.model, first.train, first.name
    phase = out / name
    key = {"model": ecfg.to_dict(), "train": first_cfg.to_dict(), "recipe": rcfg.to_dict(), "videos": len(train_split),
           "data": str(getattr(train_split, "source", "")),
           "ids": hashlib.sha256("\n".join(map(str, getattr(train_split, "ids", []))).encode()).hexdigest()[:16]}
    marker = phase / "DONE.json"
    from avparse.core.checkpoint import load_model

    if resume and _done(marker, key) and (phase / "best.pt").is_file():
        log(f"{name}: reusing {phase / 'best.pt'}")
    else:
        log(f"{name}: training ({'HAN without cross-modal attention' if ecfg.temporal == 'han' else 'no temporal net'})")
        phases_run[name] = train(ecfg, first_cfg, train_split, val_split, phase, callbacks=callbacks, meta=meta,
                                 objective=recipe_objective(rcfg, first, cfg, len(train_split)))
        marker.write_text(json.dumps(key))
    first_model = load_model(phase / "best.pt").model
    if not jomold and rcfg.teacher.weights == "last":
        # the teacher labels the TRAINING clips: its final state (fitted to their weak labels, which gate its
        # labels anyway) labels them better than the round that generalises best to validation
        state = torch.load(phase / "resume.pt", map_location="cpu", weights_only=True)
        first_model.load_state_dict(state["model"])
    outputs = predict_outputs(first_model, train_split, batch_size=cfg.val_batch_size, device="cpu")
    seconds = {name: time.perf_counter() - t_start}
    t_final = time.perf_counter()
    if jomold:
        ratios = noise_ratios(outputs, weak, j)
        (out / "noise_ratios.json").write_text(json.dumps(ratios, indent=1))
        log("noise ratios (share of each class's labels estimated noisy): audio "
            + " ".join(f"{r:.2f}" for r in ratios["audio"]) + " | visual "
            + " ".join(f"{r:.2f}" for r in ratios["visual"]))
    if rcfg.recipe in ("teacher", "jomold+teacher"):
        teach = teacher_labels(outputs, weak, rcfg.teacher)
        teach.save(out / "teacher_labels.npz")
        tstats = {"kept_audio": float(teach.video_labels[:, 0].sum() / max(1, weak.sum())),
                  "kept_visual": float(teach.video_labels[:, 1].sum() / max(1, weak.sum())),
                  "labelled_seconds": float(teach.snippet_labels.mean())}
        log(f"teacher labels: {100 * tstats['kept_audio']:.1f} % of the weak labels kept in audio, "
            f"{100 * tstats['kept_visual']:.1f} % in visual")
    final = recipe_objective(rcfg, final_phase, cfg, len(train_split), ratios=ratios, teacher=teach)
    res = train(final_phase.model, final_phase.train, train_split, val_split, out, resume=resume, callbacks=callbacks,
                meta={**meta, "ratios": ratios, "teacher_stats": tstats}, objective=final)
    seconds["model"] = time.perf_counter() - t_final
    return RecipeResult(res, phases_run, ratios, tstats, seconds)
