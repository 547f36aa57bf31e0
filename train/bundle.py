"""The bundled demo model's whole recipe, from nothing to ``core/assets/demo.pt``.

Every step is avparse's own code, the same that its commands run:

1. pretrain the ``lite`` extractors with snippet labels on isolated generated
   snippets (:mod:`avparse.train.pretrain`; the part AudioSet/ImageNet play
   for the paper's extractors);
2. generate a set of scenes with a train/val/test split (``avparse synth``:
   :func:`avparse.train.synth.write_dataset`; the default scenes, with LLP's
   annotation statistics);
3. extract features from the clips' mp4 files with the pretrained extractors
   (``avparse extract``: :func:`avparse.train.extract.run_extract`, in
   ``jobs`` processes, each a shard of the files);
4. pack the splits (``avparse pack``: :func:`avparse.train.pack.pack_split`);
5. train the HAN from the WEAK video-level labels only (``avparse train
   --recipe teacher``: :func:`avparse.train.recipes.run_recipe`): first a
   teacher that cannot leak across modalities (no temporal net), then the full
   HAN on the teacher's modality and per-second labels; the dense val
   annotations only pick the kept step, as in the paper's code;
6. score the held-out test split with the paper's protocol
   (``avparse evaluate``: :func:`avparse.train.evaluate.score_split`);
7. write the checkpoint: the HAN, ``classes=SYNTH_CLASSES``, profile ``lite``,
   and ``extractor_state`` = the pretrained extractors (fp16 by default, and
   the features of step 3 are made with exactly those rounded weights).

Each step leaves its outputs in ``work_dir`` and is skipped when a rerun finds
them made with the same settings (keyed by a digest of everything they depend
on), so an interrupted run goes on where it stopped. Scenes of another layout
than LLP's (``synth_preset("independent")``) and their features live in
``work_dir/<layout>/``; the pretrained extractors are shared. The live-runtime score (causal, no lookahead) needs the stream
package and is computed by ``avparse bundle`` (tools/bundle.py), which calls
:func:`build_bundle` and then ``avparse.tools.live_eval``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from avparse.core.han import HANConfig
from avparse.core.profiles import get_profile

from .pretrain import PretrainConfig, pretrain_extractors, save_extractor_state
from .recipes import RecipeConfig, TeacherConfig
from .synth import MANIFEST, MEDIA_DIR, SYNTH_CLASSES, SYNTH_FILES, SynthConfig, WriteConfig, write_dataset
from .trainer import TrainConfig

PROFILE = "lite"


@dataclass(frozen=True)
class BundleConfig:
    """The recipe of the bundled demo model. Defaults: the committed core/assets/demo.pt."""

    seed: int = 1                  # seed of the generated scene set (clips synth1_000000 ...)
    videos: int = 600              # generated 10 s clips: 420 train, 60 val, 120 test (WriteConfig fractions)
    synth: SynthConfig = field(default_factory=SynthConfig)        # the scenes: LLP's statistics (docs/synth.md)
    write: WriteConfig = field(default_factory=lambda: WriteConfig(jobs=2))  # splits and encoding of the clips
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # extractor pretraining on isolated snippets
    # The model: the paper's HAN (hybrid attention with self- and cross-modal attention, attentive MMIL
    # pooling) at width 128 (the lite features are 128/256/128 wide): chosen on validation among 512, 256,
    # 128 and 64, and as cheap live as the earlier bundled parser without a temporal net at width 512
    # (docs/bundled_model.md). Input sizes come from the data.
    model: HANConfig = field(default_factory=lambda: HANConfig(d_model=128, dim_feedforward=128))
    # The paper's optimisation (Adam 3e-4, batch 16, StepLR x0.1, L_wsl + L_g with label smoothing, kept step
    # by val segment Type@AV) counted in optimiser steps (420 clips are 27 steps per epoch: the epoch
    # recipe would stop after 1,080 steps); one torch thread (fastest on a shared 2-core CPU).
    train: TrainConfig = field(default_factory=lambda: TrainConfig(num_threads=1, schedule="steps", steps=4_000,
                                                                   lr_step_steps=3_000, rounds=40))
    # Modality-aware denoising: the HAN learns from the modality and per-second labels of a teacher that
    # cannot leak (no temporal net), trained first with the same optimisation (train/recipes.py).
    recipe: RecipeConfig = field(default_factory=lambda: RecipeConfig(recipe="teacher", teacher=TeacherConfig()))
    jobs: int = 2                  # processes extracting features (one shard of the files each, 1 torch thread each)
    batch_snippets: int = 16       # snippets per extractor call while extracting
    extractor_fp16: bool = True    # store the extractors in fp16 (features are made with the same rounded weights)

    def to_dict(self) -> dict:
        return asdict(self)


def quick_config() -> BundleConfig:
    """A seconds-long smoke run of the same recipe (tests, `avparse bundle --quick`): tiny sizes, same steps."""
    return BundleConfig(
        videos=6,
        synth=SynthConfig(duration=4),
        write=WriteConfig(jobs=1, val_fraction=0.2, test_fraction=0.2),
        pretrain=PretrainConfig(audio_snippets=24, visual_snippets=16, epochs=1, batch_size=8, jobs=1,
                                bn_snippets=16),
        model=HANConfig(d_model=32, dim_feedforward=32),
        train=TrainConfig(batch_size=4, num_threads=1, schedule="steps", steps=4, lr_step_steps=3, rounds=2),
        jobs=1,
    )


@dataclass
class BundleResult:
    checkpoint: Path                 # the written checkpoint
    scores: dict[str, float]         # the paper's ten numbers on the test split (offline, whole clips)
    val_scores: dict | None          # validation scores of the kept epoch
    best_epoch: int | None
    seconds: dict[str, float]        # wall time per step
    pretrain_accuracy: dict          # held-out exact-match accuracy of each pretrained extractor (percent)
    size_bytes: int                  # checkpoint file size
    paths: dict[str, str]            # work folders: synth, feats, store, run
    test_ids: list[str]              # the test clips (in the store's order)
    leak: dict | None = None         # single-modality leak on the test split (evaluate.leak_scores)
    best_step: int | None = None     # optimiser steps done at the kept round
    teacher_stats: dict | None = None  # share of the weak labels the teacher kept per modality


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(marker: Path, key: str) -> bool:
    return marker.is_file() and marker.read_text().strip() == key


def _mark(marker: Path, key: str) -> None:
    marker.write_text(key + "\n")


def labels_dir(synth_dir: Path, out: Path) -> Path:
    """The generated set's CSVs under the LLP names that pack/train read (AVVP_train.csv, ...)."""
    from .llp import LLP_FILES

    out.mkdir(parents=True, exist_ok=True)
    for role, llp_name in LLP_FILES.items():
        shutil.copyfile(synth_dir / SYNTH_FILES[role], out / llp_name)
    return out


def _extract_shard(args) -> list[tuple[str, str]]:
    files, out_dir, weights, batch = args
    torch.set_num_threads(1)
    from .extract import ExtractConfig, run_extract

    cfg = ExtractConfig(out_dir=out_dir, profile=PROFILE, weights=weights, batch_snippets=batch)
    rep = run_extract([Path(f) for f in files], cfg)
    return [(r.path, r.error) for r in rep.failed]


def extract_features(media: list[Path], out_dir: Path, weights: Path, *, jobs: int, batch: int,
                     log: Callable[[str], None]) -> Path:
    """``avparse extract`` of every file into ``out_dir`` (the LLP layout), in ``jobs`` shard processes
    whose outputs are then linked into one folder. Raises RuntimeError naming failed files."""
    from .extract import FOLDERS

    jobs = max(1, min(jobs, len(media)))
    shards = [out_dir.parent / f"{out_dir.name}.shard{k}" for k in range(jobs)]
    args = [([str(f) for f in media[k::jobs]], str(shards[k]), str(weights), batch) for k in range(jobs)]
    if jobs == 1:
        failed = _extract_shard(args[0])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            failed = [f for r in ex.map(_extract_shard, args) for f in r]
    if failed:
        raise RuntimeError(f"feature extraction failed for {len(failed)} files, first {failed[0][0]}: {failed[0][1]}")
    for d in FOLDERS:
        (out_dir / d).mkdir(parents=True, exist_ok=True)
    lines = []
    for sh in shards:
        for d in FOLDERS:
            for f in (sh / d).iterdir():
                dst = out_dir / d / f.name
                if not dst.exists():
                    os.link(f, dst)
        lines += [l for l in (sh / "snippets.tsv").read_text().splitlines() if l.strip()]
    shutil.copyfile(shards[0] / "profile.json", out_dir / "profile.json")
    (out_dir / "snippets.tsv").write_text("".join(l + "\n" for l in sorted(lines)))
    log(f"extract: {len(lines)} files -> {out_dir}")
    return out_dir


@dataclass
class Features:
    """What steps 1-4 leave: the extractors and the packed features of a scene set."""

    extractor: Path                  # pretrained extractor state (fp16-rounded weights as float32)
    pretrain_meta: dict              # their held-out accuracy, history, seconds, config
    synth_dir: Path                  # the generated clips and annotation files
    store: Path                      # the packed train/val/test features
    key: str                         # digest of everything the features depend on
    seconds: dict[str, float]        # wall time per step (reused steps: the time to find them)


def scenes_dir(cfg: BundleConfig, work: Path) -> Path:
    """Where the scene-dependent steps of ``cfg`` keep their files: ``work`` for LLP-layout scenes,
    ``work/<layout>`` for another layout (the pretrained extractors in ``work/pretrain`` serve both)."""
    return work if cfg.synth.layout == "llp" else work / cfg.synth.layout


def prepare_features(cfg: BundleConfig, work_dir, *, log: Callable[[str], None] = print) -> Features:
    """Steps 1-4: pretrained extractors, scenes, features, packed store (each reused when made before
    with the same settings)."""
    from .dataset import DataConfig
    from .pack import pack_split

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    profile = get_profile(PROFILE)
    seconds: dict[str, float] = {}

    # 1. extractors
    t0 = time.perf_counter()
    key_pre = _digest({"pretrain": cfg.pretrain.to_dict(), "fp16": cfg.extractor_fp16})
    ext_path = work / "pretrain" / "extractor.pt"
    if _done(work / "pretrain" / "DONE", key_pre) and ext_path.is_file():
        pre_meta = json.loads(ext_path.with_suffix(".json").read_text())
        log(f"pretrain: reusing {ext_path}")
    else:
        res = pretrain_extractors(cfg.pretrain, log=log)
        state = res.state
        if cfg.extractor_fp16:  # the features are made with the weights the checkpoint will hold
            state = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
        pre_meta = {"val_accuracy": res.val_accuracy, "history": res.history, "seconds": res.seconds,
                    "config": cfg.pretrain.to_dict()}
        save_extractor_state(state, ext_path, meta=pre_meta)
        _mark(work / "pretrain" / "DONE", key_pre)
    seconds["pretrain"] = time.perf_counter() - t0

    # 2. scenes
    t0 = time.perf_counter()
    sdir = scenes_dir(cfg, work)
    sdir.mkdir(parents=True, exist_ok=True)
    synth_dir = sdir / "synth"
    key_syn = _digest({"seed": cfg.seed, "videos": cfg.videos, "synth": asdict(cfg.synth),
                       "split": [cfg.write.val_fraction, cfg.write.test_fraction]})
    if _done(sdir / "synth.DONE", key_syn) and (synth_dir / MANIFEST).is_file():
        log(f"synth: reusing {synth_dir}")
    else:
        last = [0.0]

        def progress(i, n):
            if time.perf_counter() - last[0] > 30 or i == n:
                last[0] = time.perf_counter()
                log(f"synth: {i}/{n} clips")

        write_dataset(synth_dir, cfg.videos, cfg.seed, cfg.synth, write=cfg.write, progress=progress)
        _mark(sdir / "synth.DONE", key_syn)
    lab = labels_dir(synth_dir, sdir / "labels")
    seconds["synth"] = time.perf_counter() - t0

    # 3. features (avparse extract), 4. packed store (avparse pack)
    t0 = time.perf_counter()
    feats, store = sdir / "feats", sdir / "store"
    key_ext = _digest({"synth": key_syn, "pretrain": key_pre})
    if _done(sdir / "feats.DONE", key_ext):
        log(f"extract: reusing {feats}")
    else:
        for p in [feats, *sdir.glob("feats.shard*")]:
            if p.exists() and not _done(sdir / "feats.KEY", key_ext):
                shutil.rmtree(p)
        _mark(sdir / "feats.KEY", key_ext)
        media = sorted((synth_dir / MEDIA_DIR).glob("*.mp4"))
        extract_features(media, feats, ext_path, jobs=cfg.jobs, batch=cfg.batch_snippets, log=log)
        _mark(sdir / "feats.DONE", key_ext)
    seconds["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = DataConfig(data_dir=str(feats), labels_dir=str(lab), profile=profile, classes=tuple(SYNTH_CLASSES),
                      num_snippets=cfg.synth.duration)
    if not _done(sdir / "store.DONE", key_ext):
        for split in ("train", "val", "test"):
            pack_split(data, split, store)
        _mark(sdir / "store.DONE", key_ext)
    seconds["pack"] = time.perf_counter() - t0
    return Features(ext_path, pre_meta, synth_dir, store, key_ext, seconds)


def open_store(cfg: BundleConfig, store):
    """The train, val and test splits of a bundle's packed store."""
    from .dataset import DataConfig, open_split

    data = DataConfig(data_dir=str(store), profile=get_profile(PROFILE), classes=tuple(SYNTH_CLASSES),
                      num_snippets=cfg.synth.duration)
    return tuple(open_split(data, s) for s in ("train", "val", "test"))


def train_parser(cfg: BundleConfig, feats: Features, run: Path, *, log: Callable[[str], None] = print):
    """Step 5: the recipe's training (teacher, then the HAN), reused when ``run`` holds a finished run of
    the same settings on the same features, resumed when it holds an interrupted one."""
    from .recipes import run_recipe

    tr, va, _ = open_store(cfg, feats.store)
    key = _digest({"features": feats.key, "model": cfg.model.to_dict(), "train": cfg.train.to_dict(),
                   "recipe": cfg.recipe.to_dict()})
    if run.exists() and not _done(run / "KEY", key):
        shutil.rmtree(run)   # made with other settings: start afresh
    run.mkdir(parents=True, exist_ok=True)
    _mark(run / "KEY", key)
    return run_recipe(cfg.recipe, cfg.model, cfg.train, tr, va, run, resume=True, callbacks=_LogCallbacks(log),
                      meta={"data_dir": str(feats.store)}, log=lambda line: log(f"train: {line}"))


def build_bundle(cfg: BundleConfig, work_dir, out, *, log: Callable[[str], None] = print) -> BundleResult:
    """Run the whole recipe in ``work_dir``; write the checkpoint to ``out``."""
    from avparse.core.checkpoint import load_model, save_checkpoint
    from avparse.core.metrics import SUMMARY_KEYS

    from .evaluate import checkpoint_gate, score_split

    work = Path(work_dir)
    feats = prepare_features(cfg, work, log=log)
    seconds = dict(feats.seconds)
    profile = get_profile(PROFILE)
    sdir = scenes_dir(cfg, work)
    paths = {"pretrain": str(work / "pretrain"), "synth": str(feats.synth_dir), "labels": str(sdir / "labels"),
             "feats": str(sdir / "feats"), "store": str(feats.store), "run": str(sdir / "run")}

    # 5. HAN from weak labels (the recipe: teacher, then the HAN)
    t0 = time.perf_counter()
    rec = train_parser(cfg, feats, sdir / "run", log=log)
    result = rec.result
    seconds.update({f"train_{k}": v for k, v in rec.seconds.items()})
    seconds["train"] = time.perf_counter() - t0

    # 6. test scores (offline: whole 10 s clips, the paper's protocol)
    t0 = time.perf_counter()
    _, va, te = open_store(cfg, feats.store)
    loaded = load_model(result.best_path)
    gate = checkpoint_gate(loaded)
    full = score_split(loaded.model, te, batch_size=64, gate=gate, leak=True)
    scores = {k: float(full[k]) for k in SUMMARY_KEYS}
    leak = {k: full[k] for k in ("leak", "leak_a2v", "leak_v2a", "audio_only_pairs", "visual_only_pairs")}
    seconds["evaluate"] = time.perf_counter() - t0

    # 7. the bundle
    ext_state = torch.load(feats.extractor, map_location="cpu", weights_only=True)
    if cfg.extractor_fp16:
        ext_state = {k: v.half() if v.is_floating_point() else v for k, v in ext_state.items()}
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    extra = {
        "recipe": "avparse bundle (avparse.train.bundle.build_bundle)",
        "bundle_config": cfg.to_dict(),
        "test_scores": scores,
        "test_leak": leak,
        "test_videos": len(te),
        "val_scores": best.get("val"),
        "best_epoch": result.best_epoch,
        "best_step": best.get("steps_done"),
        "gate": gate,
        "pretrain_val_accuracy": feats.pretrain_meta["val_accuracy"],
        "extractor_dtype": "float16" if cfg.extractor_fp16 else "float32",
        "weak_labels_only": True,
    }
    out = Path(out)
    save_checkpoint(out, loaded.model, classes=SYNTH_CLASSES, profile=profile, extra=extra,
                    extractor_state=ext_state)
    os.chmod(out, 0o644)  # package data: readable by everyone (the atomic write makes it 0600)
    return BundleResult(out, scores, best.get("val"), result.best_epoch, seconds,
                        feats.pretrain_meta["val_accuracy"], out.stat().st_size, paths, list(te.ids), leak,
                        best.get("steps_done"), rec.teacher_stats)


class _LogCallbacks:
    """Trainer callbacks printing one line per epoch."""

    def __init__(self, log):
        self.log = log

    def on_start(self, info):
        self.log(f"train: {info['videos']} videos ({info['val_videos']} val), {info['params']:,} parameters, "
                 f"{info['threads']} threads")

    def on_epoch_start(self, epoch, steps):
        pass

    def on_step(self, epoch, step, steps, loss):
        pass

    def on_epoch_end(self, r):
        v = r.get("val") or {}
        self.log(f"train: epoch {r['epoch']} loss {r['train_loss']:.4f} ({r['train_seconds']:.1f} s)"
                 + (f" val seg a {v['seg_a']:.1f} v {v['seg_v']:.1f} av {v['seg_av']:.1f} Type@AV "
                    f"{v['seg_type']:.1f} event Type@AV {v['evt_type']:.1f}" if v else "")
                 + ("  *best" if r.get("best") else ""))


# ---------------------------------------------------------------- ablations (Table 2 on generated features)

PAPER_ROW = "the paper's recipe: HAN, attentive, L_wsl + L_g, smoothing"
ABLATIONS: tuple[tuple[str, dict, dict, str], ...] = (
    # (row name, LossConfig changes, HANConfig changes, recipe) relative to the paper's recipe (first row):
    # the full HAN (cross-modal attention on), attentive MMIL pooling, L_wsl + L_g, label smoothing, trained
    # with the bundle's optimisation and schedule. One change per row, as in the paper's Table 2.
    (PAPER_ROW, {}, {}, "paper"),
    ("L_wsl only", {"terms": "weak"}, {}, "paper"),
    ("L_g only", {"terms": "guided"}, {}, "paper"),
    ("max pooling", {}, {"pooling": "max"}, "paper"),
    ("mean pooling", {}, {"pooling": "mean"}, "paper"),
    ("no temporal net", {}, {"temporal": "none"}, "paper"),
    ("temporal GRU", {}, {"temporal": "gru"}, "paper"),
    ("temporal Transformer", {}, {"temporal": "transformer"}, "paper"),
    ("HAN without cross-modal attention", {}, {"cross_attention": False}, "paper"),
    ("no label smoothing", {"noisy": "none"}, {}, "paper"),
    ("bootstrap instead of smoothing", {"noisy": "bootstrap"}, {}, "paper"),
    ("HAN + JoMoLD (its optimiser and decision rule)", {}, {}, "jomold"),
    ("HAN + teacher labels (the bundled recipe)", {}, {}, "teacher"),
    ("HAN + JoMoLD + teacher labels", {}, {}, "jomold+teacher"),
)


def run_ablations(cfg: BundleConfig, store_dir, out_dir, *, rows=ABLATIONS, log: Callable[[str], None] = print
                  ) -> list[dict]:
    """Train each row's variant on the same packed features (the same seed and optimisation as the bundle;
    JoMoLD rows with JoMoLD's own, its schedule scaled to the same number of training clips seen) and score
    the test split, with the row's decision rule, and the leak."""
    from avparse.core.checkpoint import load_model
    from avparse.core.metrics import SUMMARY_KEYS

    from .evaluate import checkpoint_gate, score_split
    from .recipes import jomold_train_config, run_recipe

    tr, va, te = open_store(cfg, store_dir)
    out_rows = []
    for i, (name, loss_kw, model_kw, recipe) in enumerate(rows):
        t0 = time.perf_counter()
        tcfg = replace(cfg.train, loss=replace(cfg.train.loss, **loss_kw))
        mcfg = replace(cfg.model, **model_kw)
        rcfg = replace(cfg.recipe, recipe=recipe)
        if recipe.startswith("jomold"):   # its optimiser, as many clips seen as the other rows
            seen = (tcfg.steps if tcfg.schedule == "steps" else tcfg.epochs * tcfg.steps_per_epoch(len(tr))) \
                * tcfg.batch_size
            tcfg = jomold_train_config(tcfg, rcfg.jomold, samples=seen)
            rcfg = replace(rcfg, jomold_hparams=False)
        run = Path(out_dir) / f"row{i}"
        if run.exists():
            shutil.rmtree(run)
        rec = run_recipe(rcfg, mcfg, tcfg, tr, va, run, log=lambda line: None)
        loaded = load_model(rec.result.best_path)
        gate = checkpoint_gate(loaded)
        scores = score_split(loaded.model, te, gate=gate, leak=True)
        val = score_split(loaded.model, va, gate=gate)
        row = {"name": name, "recipe": recipe, "loss": asdict(tcfg.loss),
               "model": {"pooling": mcfg.pooling, "temporal": mcfg.temporal, "cross_attention": mcfg.cross_attention,
                         "d_model": mcfg.d_model},
               "best_epoch": rec.result.best_epoch, "gate": gate,
               "best_step": next((r.get("steps_done") for r in rec.result.history
                                  if r["epoch"] == rec.result.best_epoch), None),
               "val_seg_type": float(val["seg_type"]),
               "scores": {k: float(scores[k]) for k in SUMMARY_KEYS},
               "leak": {k: scores[k] for k in ("leak", "leak_a2v", "leak_v2a")},
               "ratios": rec.ratios, "teacher_stats": rec.teacher_stats,
               "seconds": time.perf_counter() - t0, "phase_seconds": rec.seconds}
        out_rows.append(row)
        s = row["scores"]
        log(f"ablation {name}: seg Type@AV {s['seg_type']:.1f} Event@AV {s['seg_event']:.1f}, "
            f"event Type@AV {s['evt_type']:.1f} Event@AV {s['evt_event']:.1f}, leak {row['leak']['leak']:.1f} % "
            f"({row['seconds']:.0f} s)")
    return out_rows
