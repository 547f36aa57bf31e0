"""Pretraining the ``lite`` extractors with snippet labels on isolated generated snippets.

The paper's features come from networks pretrained with clip labels on other
data (VGGish on AudioSet, ResNet-152 on ImageNet, R(2+1)D-18 on Kinetics) and
are then frozen. The ``lite`` extractors play that part for the generated
scenes: each is trained here with a linear head over ``SYNTH_CLASSES`` plus
``nothing`` on one-second snippets rendered apart from any scene set
(``avparse.train.synth.isolated_audio`` / ``isolated_frames``, and pairs of
classes rendered the same way), never on the clips the HAN is trained or tested
on. The heads are thrown away; the trunks' embeddings are the features.

A snippet holds no class (label ``nothing``, share ``p_none``), one class, or
two classes at once (share ``p_pair``: scene events overlap), over the
background, clutter and distractors of the scenes' ``SynthConfig``. The loss is
a multi-label binary cross-entropy over the C + 1 outputs (``nothing`` is on
exactly when no class is).

- audio: ``LiteAudioNet`` on the extractor's own log-mel front end;
- 2D: ``LiteFrameNet`` on single frames (one of the snippet's 8, at random),
  through the extractor's own resize/crop/normalisation;
- 3D: ``LiteMotionNet`` on the snippet's 8 frames through the extractor's own
  clip preprocessing.

Snippets are rendered once (in ``jobs`` processes, deterministic in ``seed``)
and kept compactly in memory; the 2D and 3D nets train together on the same
visual snippets, the audio net on its own. Validation: a held-out share of the
snippets, scored as exact-match accuracy of the thresholded multi-label output.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from avparse.core.profiles import FeatureProfile, get_profile

from .synth import SYNTH_CLASSES, PlannedEvent, SynthConfig, isolated_audio, isolated_frames, make_scene

NOTHING = "nothing"
HEAD_CLASSES: tuple[str, ...] = tuple(SYNTH_CLASSES) + (NOTHING,)  # outputs of every pretraining head


@dataclass(frozen=True)
class PretrainConfig:
    """How the lite extractors are pretrained. Defaults: the bundled demo model's recipe."""

    seed: int = 7                  # key of the isolated snippets: (seed, modality, i), 3-tuples, never a scene set's (seed, i)
    audio_snippets: int = 3000     # rendered audio snippets (train + validation)
    visual_snippets: int = 2400    # rendered visual snippets (train + validation)
    p_none: float = 0.15           # share of snippets holding no class (label "nothing")
    p_pair: float = 0.2            # share of snippets holding two classes at once
    val_fraction: float = 0.1      # share of the snippets held out for validation
    epochs: int = 6                # passes over the training snippets
    batch_size: int = 16           # snippets per optimisation step
    lr: float = 2e-3               # Adam learning rate, cosine-decayed to 5% over the run
    weight_decay: float = 1e-4     # Adam weight decay (L2)
    bn_snippets: int = 512         # training snippets whose batch statistics become the batch norms' running ones
    jobs: int = 2                  # processes rendering snippets
    threads: int = 1               # torch threads while training (1 is fastest on a shared 2-core CPU)
    profile: str = "lite"          # feature profile whose extractors are trained
    synth: SynthConfig = field(default_factory=SynthConfig)  # what the snippets look and sound like (the scenes' defaults)

    def __post_init__(self):
        if self.audio_snippets < 2 or self.visual_snippets < 2:
            raise ValueError("audio_snippets and visual_snippets must be >= 2")
        if not (0 <= self.p_none and 0 <= self.p_pair and self.p_none + self.p_pair <= 1):
            raise ValueError("p_none and p_pair must be >= 0 and sum to at most 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or self.jobs < 1 or self.threads < 1:
            raise ValueError("epochs, batch_size, jobs and threads must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PretrainResult:
    state: dict                     # the extractor's state dict (audio_net.*, v2d_net.*, v3d_net.*), fp32, CPU
    history: list[dict]             # per epoch and modality: loss, validation accuracy
    val_accuracy: dict[str, float]  # final exact-match validation accuracy per net (percent)
    seconds: dict[str, float]       # wall time of rendering and training


# ---------------------------------------------------------------- snippets

def snippet_labels(seed: int, modality: str, i: int, cfg: PretrainConfig) -> tuple[str, ...]:
    """The classes of isolated snippet ``i`` of ``modality`` (empty: nothing), drawn from (seed, modality, i)."""
    rng = np.random.default_rng([seed, 11 if modality == "audio" else 12, i])
    r = rng.uniform()
    if r < cfg.p_none:
        return ()
    k = 2 if r < cfg.p_none + cfg.p_pair else 1
    return tuple(SYNTH_CLASSES[j] for j in sorted(rng.choice(len(SYNTH_CLASSES), k, replace=False)))


def _key(seed: int, modality: str, i: int) -> tuple[int, int, int]:
    return (seed, 1 if modality == "audio" else 2, i)


def _pair_scene(labels, key, cfg: SynthConfig, modality: str):
    """A 1 s scene holding every class of ``labels`` throughout, in one modality."""
    span = (-1.0, 2.0)  # on through the whole second (as isolated_audio/isolated_frames)
    ev = [PlannedEvent(l, span if modality == "audio" else None, span if modality == "visual" else None)
          for l in labels]
    return make_scene((*key, 78), replace(cfg, duration=1), events=ev, name="pretrain")


def render_audio(seed: int, i: int, cfg: PretrainConfig) -> np.ndarray:
    """float32 [sample_rate]: isolated audio snippet ``i``."""
    labels = snippet_labels(seed, "audio", i, cfg)
    key = _key(seed, "audio", i)
    if len(labels) <= 1:
        return isolated_audio(labels[0] if labels else None, key, cfg.synth)
    return _pair_scene(labels, key, cfg.synth, "audio").render_audio(0, cfg.synth.sample_rate)


def render_frames(seed: int, i: int, cfg: PretrainConfig, frames: int) -> np.ndarray:
    """uint8 [frames, H, W, 3]: isolated visual snippet ``i`` (evenly spaced frames of its second)."""
    labels = snippet_labels(seed, "visual", i, cfg)
    key = _key(seed, "visual", i)
    if len(labels) <= 1:
        return isolated_frames(labels[0] if labels else None, key, cfg.synth, frames=frames)
    sc = _pair_scene(labels, key, cfg.synth, "visual")
    return np.stack([sc.render_frame(int(j * cfg.synth.fps / frames)) for j in range(frames)])


def _render_chunk(args):
    kind, seed, idx, cfg, frames = args
    if kind == "audio":
        return np.stack([render_audio(seed, i, cfg) for i in idx])
    return np.stack([render_frames(seed, i, cfg, frames) for i in idx])


def _targets(seed: int, modality: str, n: int, cfg: PretrainConfig) -> np.ndarray:
    y = np.zeros((n, len(HEAD_CLASSES)), np.float32)
    for i in range(n):
        labels = snippet_labels(seed, modality, i, cfg)
        for l in labels:
            y[i, SYNTH_CLASSES.index(l)] = 1
        if not labels:
            y[i, -1] = 1
    return y


def _render(kind: str, n: int, cfg: PretrainConfig, frames: int, consume: Callable[[int, np.ndarray], None],
            chunk: int = 32) -> None:
    """Render snippets 0..n-1 of ``kind`` in ``cfg.jobs`` processes; ``consume(start, batch)`` keeps them."""
    jobs = [(kind, cfg.seed, list(range(s, min(n, s + chunk))), cfg, frames) for s in range(0, n, chunk)]
    if cfg.jobs <= 1:
        for j in jobs:
            consume(j[2][0], _render_chunk(j))
        return
    with ProcessPoolExecutor(max_workers=cfg.jobs) as ex:
        for j, out in zip(jobs, ex.map(_render_chunk, jobs)):
            consume(j[2][0], out)


# ---------------------------------------------------------------- training

def _split(n: int, cfg: PretrainConfig) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng([cfg.seed, 99]).permutation(n)
    n_val = max(1, int(round(n * cfg.val_fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _schedule(opt, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(1, total_steps))))


def _exact(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int(((logits > 0).float() == y).all(dim=1).sum())


def _fit(name: str, nets: dict, forward: Callable, y: np.ndarray, cfg: PretrainConfig,
         log: Callable[[str], None]) -> tuple[list[dict], dict]:
    """Train ``nets`` (name -> (module, head)) with ``forward(idx, train) -> {name: logits}`` on targets ``y``."""
    params = [p for net, head in nets.values() for p in list(net.parameters()) + list(head.parameters())]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr, va = _split(len(y), cfg)
    steps = cfg.epochs * math.ceil(len(tr) / cfg.batch_size)
    sched = _schedule(opt, steps)
    yt = torch.from_numpy(y)
    rng = np.random.default_rng([cfg.seed, 98, len(name)])
    lossf = nn.BCEWithLogitsLoss()
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        for net, head in nets.values():
            net.train()
            head.train()
        order = rng.permutation(tr)
        total, count = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            idx = np.sort(order[s:s + cfg.batch_size])
            if len(idx) < 2:  # batch norm needs two samples
                continue
            out = forward(idx, True)
            loss = sum(lossf(o, yt[idx]) for o in out.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        _recalibrate_bn([net for net, _ in nets.values()], forward, order, cfg)
        acc = _evaluate(nets, forward, va, yt, cfg)
        rec = {"net": name, "epoch": epoch, "loss": total / max(1, count), "val_accuracy": acc,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        log(f"pretrain {name} epoch {epoch}/{cfg.epochs}: loss {rec['loss']:.4f}, validation exact-match "
            + ", ".join(f"{k} {v:.1f}%" for k, v in acc.items()) + f" ({rec['seconds']:.0f} s)")
    return history, history[-1]["val_accuracy"]


def _recalibrate_bn(nets, forward, order, cfg: PretrainConfig) -> None:
    """Re-estimate every batch norm's running statistics on ``bn_snippets`` training snippets.

    torchvision's MobileNetV3 keeps them with momentum 0.01, far from converged after a
    few hundred steps, so evaluation-mode outputs would be off; a cumulative average over
    one pass (momentum None) with the final weights fixes that (the usual "BN recalibration").
    """
    bns = [m for net in nets for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    try:
        with torch.no_grad():
            idx = order[:cfg.bn_snippets]
            for s in range(0, len(idx), cfg.batch_size):
                b = np.sort(idx[s:s + cfg.batch_size])
                if len(b) >= 2:
                    forward(b, True)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def _evaluate(nets, forward, va, yt, cfg) -> dict[str, float]:
    for net, head in nets.values():
        net.eval()
        head.eval()
    hits = {k: 0 for k in nets}
    with torch.inference_mode():
        for s in range(0, len(va), 64):
            idx = va[s:s + 64]
            for k, o in forward(idx, False).items():
                hits[k] += _exact(o, yt[idx])
    return {k: 100.0 * h / max(1, len(va)) for k, h in hits.items()}


@dataclass
class PretrainData:
    """Rendered snippets, kept compactly: what the nets are trained on."""

    mel: torch.Tensor          # float32 [Na, E, 96, 64] log-mel examples (the extractor's front end)
    y_audio: np.ndarray        # float32 [Na, C+1] multi-hot targets (last column: nothing)
    img: np.ndarray            # uint8 [Nv, 1, H, W, 3] one frame of each visual snippet
    clip: np.ndarray           # uint8 [Nv, F, clip_size, clip_size, 3] its frames as the 3D net's resize makes them
    y_visual: np.ndarray       # float32 [Nv, C+1]
    seconds: dict


def render_data(cfg: PretrainConfig, *, log: Callable[[str], None] = lambda s: None) -> PretrainData:
    """Render the isolated audio and visual snippets of ``cfg`` (deterministic in ``cfg.seed``)."""
    from avparse.core.extractors.frontend import LogMel

    profile: FeatureProfile = get_profile(cfg.profile)
    if profile.sample_rate != cfg.synth.sample_rate:
        raise ValueError(f"the snippets are rendered at {cfg.synth.sample_rate} Hz but profile {profile.name!r} "
                         f"takes {profile.sample_rate} Hz")
    seconds: dict[str, float] = {}
    F = profile.frames_per_snippet
    frontend = LogMel(profile)

    t0 = time.perf_counter()
    n_a = cfg.audio_snippets
    mel: list = [None] * n_a

    def keep_audio(start, wave):
        with torch.inference_mode():
            ex = frontend(torch.from_numpy(wave))
        for j in range(len(wave)):
            mel[start + j] = ex[j].clone()

    _render("audio", n_a, cfg, F, keep_audio)
    mel_t = torch.stack(mel)
    del mel
    seconds["render_audio"] = time.perf_counter() - t0
    log(f"pretrain: rendered {n_a} audio snippets in {seconds['render_audio']:.0f} s")

    t0 = time.perf_counter()
    n_v = cfg.visual_snippets
    pick = np.random.default_rng([cfg.seed, 97]).integers(0, F, n_v)
    img = np.zeros((n_v, 1, cfg.synth.height, cfg.synth.width, 3), np.uint8)
    clip = np.zeros((n_v, F, profile.clip_size, profile.clip_size, 3), np.uint8)

    def keep_frames(start, frames):
        n = len(frames)
        img[start:start + n, 0] = frames[np.arange(n), pick[start:start + n]]
        clip[start:start + n] = clip_frames(frames, profile)

    _render("visual", n_v, cfg, F, keep_frames)
    seconds["render_visual"] = time.perf_counter() - t0
    log(f"pretrain: rendered {n_v} visual snippets in {seconds['render_visual']:.0f} s")
    return PretrainData(mel_t, _targets(cfg.seed, "audio", n_a, cfg), img, clip,
                        _targets(cfg.seed, "visual", n_v, cfg), seconds)


def train_extractors(data: PretrainData, cfg: PretrainConfig, *, log: Callable[[str], None] = lambda s: None
                     ) -> PretrainResult:
    """Train the profile's three nets with linear heads on ``data``; return their weights."""
    from avparse.core.extractors import build_extractor
    from avparse.core.extractors.frontend import frames_to_images

    profile: FeatureProfile = get_profile(cfg.profile)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        ext = build_extractor(profile, weights="random")
        seconds = dict(data.seconds)
        c = len(HEAD_CLASSES)
        heads = {"audio": nn.Linear(profile.audio_dim, c), "v2d": nn.Linear(profile.v2d_dim, c),
                 "v3d": nn.Linear(profile.v3d_dim, c)}
        ext.train()

        def fwd_audio(idx, train):
            x = data.mel[torch.from_numpy(np.asarray(idx))]
            n, e = x.shape[:2]
            emb = ext.audio_net(x.reshape(n * e, 1, *x.shape[2:])).reshape(n, e, -1).mean(1)  # as encode_audio
            return {"audio": heads["audio"](emb)}

        def fwd_visual(idx, train):
            v2 = ext.v2d_net(frames_to_images(torch.from_numpy(data.img[idx]), profile))  # encode_v2d, one frame
            v3 = ext.encode_v3d(torch.from_numpy(data.clip[idx]))
            return {"v2d": heads["v2d"](v2), "v3d": heads["v3d"](v3)}

        t0 = time.perf_counter()
        with torch.enable_grad():
            h1, a1 = _fit("audio", {"audio": (ext.audio_net, heads["audio"])}, fwd_audio, data.y_audio, cfg, log)
            seconds["train_audio"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            h2, a2 = _fit("visual", {"v2d": (ext.v2d_net, heads["v2d"]), "v3d": (ext.v3d_net, heads["v3d"])},
                          fwd_visual, data.y_visual, cfg, log)
            seconds["train_visual"] = time.perf_counter() - t0
        ext.eval()
        state = {k: v.detach().float().contiguous().clone() for k, v in ext.state_dict().items()}
        return PretrainResult(state, h1 + h2, {**a1, **a2}, seconds)
    finally:
        torch.set_num_threads(old_threads)


def pretrain_extractors(cfg: PretrainConfig = PretrainConfig(), *, log: Callable[[str], None] = lambda s: None
                        ) -> PretrainResult:
    """Render the isolated snippets, train the profile's three nets with linear heads, return their weights."""
    return train_extractors(render_data(cfg, log=log), cfg, log=log)


def clip_frames(frames: np.ndarray, profile: FeatureProfile) -> np.ndarray:
    """uint8 [N, F, H, W, 3] -> uint8 [N, F, clip_size, clip_size, 3] resized exactly as the extractor's
    3D preprocessing resizes (so feeding the result to ``encode_v3d`` equals feeding ``frames``)."""
    from avparse.core.extractors.frontend import _resize_center_crop

    n, f, h, w, _ = frames.shape
    x = torch.from_numpy(frames).reshape(n * f, h, w, 3).permute(0, 3, 1, 2)
    x = _resize_center_crop(x, resize=profile.clip_resize, size=profile.clip_size)
    return x.permute(0, 2, 3, 1).reshape(n, f, profile.clip_size, profile.clip_size, 3).numpy()


def save_extractor_state(state: dict, path, *, meta: dict | None = None) -> Path:
    """Write the extractor state dict (plain tensors) to ``path``; build_extractor(profile, weights=path) reads it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(dict(state), tmp)
    tmp.replace(path)
    if meta is not None:
        import json

        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path
