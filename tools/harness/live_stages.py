"""`avparse bench live`, part 1: the model it measures and every stage timed alone.

The model is the given checkpoint, the bundled demo model, or a random lite model whose
classifier is rescaled so that its decisions change over a scene. Each stage is timed on its
own, after warm-up: capture (rendering a generated scene) and snippet assembly, extraction per
profile, backend and batch size, HAN per window, tracking per prediction, publishing (the cost
of ``emit`` and emit -> receipt at a subscriber on loopback).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from avparse.tools.common import UserError

if TYPE_CHECKING:
    from .bench_live import BenchLiveConfig

from .timing import spread, sync_of, times


def _demo_path() -> Path | None:
    from importlib.resources import files

    try:
        p = Path(str(files("avparse.core") / "assets" / "demo.pt"))
    except (ModuleNotFoundError, TypeError):
        return None
    return p if p.is_file() else None


def load_or_build_model(cfg: BenchLiveConfig, profile: str = "lite"):
    """(LoadedModel, what): the given checkpoint, the bundled demo model, or random weights."""
    from avparse.core.checkpoint import CheckpointError, load_model

    path, what = cfg.model, "given"
    if path is None:
        path, what = _demo_path(), "demo"
    if path is not None:
        try:
            return load_model(path, device=cfg.device), f"{what} model {path}"
        except CheckpointError as e:
            raise UserError(f"{e}; pass --model with a checkpoint written by avparse train") from None
    return random_model(cfg, profile), "RANDOM weights (no trained model installed; classifier rescaled so " \
                                         "that decisions change over a scene): timings and decision latencies " \
                                         "hold, matches with the ground truth are chance"


def random_model(cfg: BenchLiveConfig, profile_name: str):
    import torch

    from avparse.core.checkpoint import load_model, save_checkpoint
    from avparse.core.extractors import build_extractor
    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile
    from avparse.train.synth import SYNTH_CLASSES

    p = get_profile(profile_name)
    torch.manual_seed(cfg.seed)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                              frames_per_snippet=p.frames_per_snippet, num_classes=len(SYNTH_CLASSES)),
                    device=cfg.device).eval()
    ext = build_extractor(p, weights="random", device=cfg.device)
    _spread_classifier(han, ext, p, cfg.seed)
    han.cpu()
    state = {k: v.cpu() for k, v in ext.state_dict().items()} if profile_name == "lite" else None
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / f"random-{profile_name}.pt"
    save_checkpoint(path, han, classes=SYNTH_CLASSES, profile=p, extractor_state=state,
                    extra={"note": "random weights, classifier rescaled (avparse bench live): for timing only"})
    return load_model(path, device=cfg.device)


def _spread_classifier(han, ext, profile, seed: int, scale: float = 1.5) -> None:
    """Rescale a random HAN's classifier so that its decisions change over a scene.

    Random weights give nearly the same probability, close to 0.5, for every
    snippet: every class turns on at the first snippet and stays on, so every
    onset is stamped at media time 0 and latencies say nothing about hops. Here
    each class's snippet logits over two generated scenes are centred and scaled
    to standard deviation ``scale`` (``fc_prob``: W' = W s / sigma, b' = (b - mu) s / sigma):
    events then start and end throughout a scene, decided when the pipeline
    decides them. The decisions stay random (not matched to the truth)."""
    import numpy as np
    import torch

    from avparse.train.synth import SynthConfig, make_scene

    logits = []
    with torch.inference_mode():
        for k in range(2):
            sc = make_scene((seed, 500 + k), SynthConfig(duration=6))
            n, spf = int(sc.duration), profile.frames_per_snippet
            audio = np.stack([sc.render_audio(i * sc.sample_rate, sc.sample_rate) for i in range(n)])
            if sc.sample_rate != profile.sample_rate:
                raise ValueError("calibration scenes must be at the profile's sample rate")
            frames = np.stack([np.stack([sc.render_frame(int((i + (j + 0.5) / spf) * sc.fps)) for j in range(spf)])
                               for i in range(n)])
            f = ext(audio.astype(np.float32), frames)
            out = han(f.audio[None], f.v2d.reshape(1, n * spf, -1), f.v3d[None])
            p = out.frame_prob[0].clamp(1e-6, 1 - 1e-6)  # [T, 2, C]
            logits.append(torch.log(p / (1 - p)).reshape(-1, p.shape[-1]))
    z = torch.cat(logits)
    mu, sigma = z.mean(0), z.std(0).clamp_min(1e-6)
    fc = han.fc_prob
    with torch.no_grad():
        fc.weight.mul_((scale / sigma)[:, None])
        fc.bias.sub_(mu).mul_(scale / sigma)


class Extractors:
    """The model's extractor per backend, built once (compiled ones warmed up once)."""

    def __init__(self, loaded, device: str):
        self.loaded, self.device, self._cache = loaded, device, {}
        self.warmed: set = set()  # (backend, batch) already run once

    def get(self, backend: str):
        if backend not in self._cache:
            from avparse.core.extractors import build_extractor

            w = self.loaded.extractor_state
            if w is None:
                w = None if self.loaded.profile.name.startswith("paper") else "random"
            try:
                ext = build_extractor(self.loaded.profile, weights=w, backend=backend, device=self.device)
            except Exception as e:
                from avparse.core.weights import WeightsNotFoundError

                if not isinstance(e, WeightsNotFoundError):
                    raise
                ext = build_extractor(self.loaded.profile, weights="random", backend=backend, device=self.device)
            self._cache[backend] = ext
        return self._cache[backend]


def stage_capture(loaded, cfg: BenchLiveConfig, hops=(1.0,)) -> dict:
    """Rendering a generated scene (the capture of a synthetic stream) and assembling its snippets
    at each of ``hops``."""
    from avparse.stream.assembler import SnippetAssembler
    from avparse.stream.pipeline import pipeline_config
    from avparse.stream.sources import SceneSource
    from avparse.stream.types import EndOfStream
    from avparse.train.synth import SynthConfig, make_scene

    secs = 2 if cfg.quick else 5
    scene = make_scene((cfg.seed, 999), SynthConfig(duration=secs))
    prof = loaded.profile
    chunks = []

    def render():
        chunks.clear()
        src = SceneSource(scene, sample_rate=prof.sample_rate, paced=False, name="c")
        src.open()
        chunks.extend(c for c in src.read() if not isinstance(c, EndOfStream))

    t_render = times(render, cfg.reps, 1)
    out = {"render_ms_per_media_second": spread([t / secs for t in t_render], 1000),
           "scene": f"{scene.width}x{scene.height} at {scene.fps} fps, audio {scene.sample_rate} Hz"}
    for hop in sorted(set(hops), reverse=True):
        pc = pipeline_config(profile=prof, hop=hop)
        n = [0]

        def assemble():
            asm = SnippetAssembler(pc.assembler, grid=pc.grid, stream="c")
            k = 0
            for c in chunks:
                k += len(asm.push(c))
            n[0] = k + len(asm.flush())

        ts = times(assemble, cfg.reps, 1)
        out[f"assembler_ms_per_snippet_hop{hop:g}"] = spread([t / max(1, n[0]) for t in ts], 1000)
    return out


def stage_extraction(loaded, extractors: Extractors, cfg: BenchLiveConfig) -> list[dict]:
    """Extractor calls on snippets at the scenes' frame size, per profile, backend and batch size."""
    import numpy as np
    import torch

    from avparse.train.synth import SynthConfig

    sc = SynthConfig()
    rng = np.random.default_rng(cfg.seed)
    rows = []
    profiles = cfg.profiles or (loaded.profile.name,)
    backends = list(cfg.backends)
    if str(cfg.device).startswith("cuda") and "tensorrt" not in backends and not cfg.quick:
        backends.append("tensorrt")
    for prof_name in profiles:
        for backend in backends:
            t_build = time.perf_counter()
            try:
                if prof_name == loaded.profile.name:
                    ext = extractors.get(backend)
                    note = "the model's extractor"
                else:
                    from .bench_extract import build

                    ext, note, _ = build(prof_name, backend, torch.device(cfg.device), None)
            except Exception as e:  # a backend that cannot be set up here is reported, not fatal
                rows.append({"profile": prof_name, "backend": backend, "error": str(e).splitlines()[0][:200]})
                continue
            p = ext.profile
            warm_all = ext.backend != "eager"  # compiled code is specialised per batch shape: warm each one
            for b in cfg.batches:
                audio = (0.1 * rng.standard_normal((b, p.samples_per_snippet))).astype(np.float32)
                frames = rng.integers(0, 256, (b, p.frames_per_snippet, sc.height, sc.width, 3), dtype=np.uint8)

                def call():
                    with torch.inference_mode():
                        ext(audio, frames)

                warm = cfg.warmup + (1 if (warm_all or b == cfg.batches[0]) else 0)
                ts = times(call, cfg.reps, warm, sync_of(cfg.device))
                if prof_name == loaded.profile.name:
                    extractors.warmed.add((ext.backend, b))
                rows.append({"profile": prof_name, "backend": ext.backend, "batch": b, "note": note,
                             "ms_per_batch": spread(ts, 1000), "ms_per_snippet": spread([t / b for t in ts], 1000),
                             "setup_seconds": round(time.perf_counter() - t_build, 1) if b == cfg.batches[0] else None})
                print(f"  extraction {prof_name:<9} {ext.backend:<8} batch {b:>3}  "
                      f"{statistics.median(ts) * 1000 / b:8.1f} ms/snippet", flush=True)
    return rows


def stage_han(loaded, cfg: BenchLiveConfig, window: int = 10) -> list[dict]:
    import torch

    m, c = loaded.model, loaded.config
    dev = next(m.parameters()).device
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for b in cfg.batches:
        x = (torch.rand(b, window, c.audio_dim, generator=g).to(dev),
             torch.rand(b, window * c.frames_per_snippet, c.v2d_dim, generator=g).to(dev),
             torch.rand(b, window, c.v3d_dim, generator=g).to(dev))

        def call():
            with torch.inference_mode():
                m(*x)

        ts = times(call, max(cfg.reps, 5), cfg.warmup, sync_of(cfg.device))
        rows.append({"batch": b, "T": window, "ms_per_call": spread(ts, 1000),
                     "ms_per_window": spread([t / b for t in ts], 1000)})
    return rows


def stage_tracker(loaded, cfg: BenchLiveConfig) -> dict:
    import numpy as np

    from avparse.stream.tracker import SnippetProbs, Tracker, TrackerConfig

    C = len(loaded.classes)
    rng = np.random.default_rng(cfg.seed)
    n = 200 if cfg.quick else 1000
    probs = [SnippetProbs("t", i, float(i), rng.random((2, C)).astype(np.float32),
                          rng.random(C).astype(np.float32), decided_at=i + 1.0) for i in range(n)]

    def run():
        tr = Tracker(TrackerConfig(), classes=loaded.classes)
        for p in probs:
            tr.push(p)

    ts = times(run, cfg.reps, 1)
    return {"ms_per_prediction": spread([t / n for t in ts], 1000), "classes": C,
            "note": f"{C} classes x 3 modalities, random probabilities (many transitions)"}


def stage_publish(loaded, cfg: BenchLiveConfig) -> dict:
    """emit() cost and emit -> receipt at a subscriber (real sockets on loopback)."""
    from avparse.core.events import Event
    from avparse.stream.publisher import Publisher, PublisherConfig
    from .live_e2e import SubscriberHandle

    n = 100 if cfg.quick else 1000
    pub = Publisher(PublisherConfig(pub="tcp://127.0.0.1:*", snapshot="tcp://127.0.0.1:*", name="avparse-bench")).open()
    emits = []
    try:
        sub = SubscriberHandle(pub.pub_endpoint, pub.snapshot_endpoint, cfg.subscriber)
        sub.wait_ready()
        lab = loaded.classes[0]
        for i in range(n):
            kind = "onset" if i % 2 == 0 else "offset"
            e = Event(kind, "p", lab, "audio", float(i), 0.9, float(i) + 1.0,
                      reason="ended" if kind == "offset" else "", onset_time=float(i - 1) if kind == "offset" else None)
            t = time.monotonic()
            pub.emit(e)
            emits.append((t, time.monotonic() - t))
            time.sleep(0.002)
        pub.close()
        got = sub.finish(pub.seq)
    finally:
        pub.close()
    rx = [r[0] for r in got["records"] if not r[2]]
    lat = [r - t for (t, _), r in zip(emits, rx)]
    return {"events": n, "received": len(rx), "emit_ms": spread([c for _, c in emits], 1000),
            "transport_ms": spread(lat, 1000), "seq_gaps": len(got["gaps"]), "subscriber": cfg.subscriber}
