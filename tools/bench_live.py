"""`avparse bench live`: what every stage costs, how late every event arrives, how many streams hold.

One run, side by side, after warm-up, medians with spreads (p10-p90, p95, p99):

1. stages, each alone: capture (rendering a generated scene, per media second)
   and snippet assembly (per snippet); extraction per profile and backend at
   batch sizes 1..many streams; HAN per window; tracking per prediction;
   publishing (the cost of ``emit`` and emit -> receipt at a subscriber on
   loopback);
2. end to end, per configuration (the baseline: eager, hop 1 s, lookahead 0;
   options: compiled extractors, hop 0.5/0.25 s, lookahead 1): the live
   runtime on K generated scenes paced in real time, a subscriber in another
   process on the real ZeroMQ stream, and for every ground-truth onset and
   offset the delay from the moment it happened in the media (the source's
   pacing maps media time to the monotonic clock) to the moment its message
   arrived: p50/p95/p99, missed and spurious events (same class, modality and
   kind within ``--tolerance`` s); every event's latency split into evidence,
   capture, batch wait, extraction, HAN, tracking + publishing, transport;
3. capacity: the real-time factor per stream and the largest number K of
   real-time streams before the decision lag grows without bound (sweep K);
4. options as ratios to the baseline; optionally (``--minutes``) a soak run
   checking that nothing is lost: every event emitted arrives, in order, with
   no gap in ``seq``.

Writes ``results.md``, ``results.json`` and PNG plots into ``--out``. Without a
trained model (``--model``, else the bundled demo model) it builds a checkpoint
with random weights: timings hold, ground-truth matching does not (it says so).
``--quick`` is the smoke mode the test suite runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from avparse.tools.bench_live_e2e import (
    PARTS,
    LiveOption,
    RunSpec,
    realtime_verdict,
    spread,
)
from avparse.tools.errors import UserError, fail

BASELINE = LiveOption("baseline", "eager", 1.0, 0)
OPTIONS = {
    "compile": LiveOption("compile", "compile", 1.0, 0),
    "hop0.5": LiveOption("hop0.5", "eager", 0.5, 0),
    "hop0.25": LiveOption("hop0.25", "eager", 0.25, 0),
    "lookahead1": LiveOption("lookahead1", "eager", 1.0, 1),
}
TARGETS = {"onset_p50_hop1": 1.2, "onset_p50_hop0.25": 0.75, "lite_compute_per_snippet": 0.150,
           "soak_minutes": 10.0}


@dataclass(frozen=True)
class BenchLiveConfig:
    out: Path = Path("bench-live")       # folder for results.md, results.json and the plots
    model: Path | None = None            # checkpoint (None: the bundled demo model, else random weights)
    device: str = "cpu"                  # torch device of extractors and HAN
    threads: int | None = None           # torch CPU threads (None: torch's default)
    profiles: tuple[str, ...] = ()       # extractor profiles timed alone (empty: the model's)
    backends: tuple[str, ...] = ("eager", "compile")  # extractor backends timed alone
    batches: tuple[int, ...] = (1, 2, 4, 8, 16)  # batch sizes (snippets of that many streams) for extraction and HAN
    reps: int = 5                        # timed repetitions per stage figure (after warm-up)
    warmup: int = 2                      # untimed repetitions first
    streams: int = 1                     # K scenes of each end-to-end configuration
    seconds: int = 30                    # media seconds per scene of the end-to-end runs
    speed: float = 1.0                   # pacing of the end-to-end runs (1: real time)
    options: tuple[str, ...] = tuple(OPTIONS)  # configurations compared with the baseline
    sweep: tuple[int, ...] = ()          # K values of the capacity sweep (empty: 1, 2, 4, ... until one fails)
    max_streams: int = 16                # the doubling sweep stops here
    bisect: int = 2                      # runs bisecting between the last K that held and the first that did not
    prompt_lag: float = 1.0              # capacity also reports the largest K whose p95 decision lag is <= this (s)
    sweep_seconds: int = 20              # media seconds per scene of a sweep run
    minutes: float = 0.0                 # soak: at least this many minutes of scene time (0: no soak)
    soak_streams: int = 4                # soak: scenes at once
    soak_speed: float = 0.0              # soak: pacing (1 real time, >1 faster; 0: as fast as the pipeline goes)
    tolerance: float = 1.0               # seconds between a true and a detected onset/offset to match them
    seed: int = 0                        # scenes, random weights and inputs
    max_batch: int = 16                  # the runtime's snippets per extractor call at most
    subscriber: str = "process"          # the subscriber runs in a spawned "process" or a "thread"
    sections: tuple[str, ...] = ("stages", "e2e", "capacity", "soak")  # what to run
    plots: bool = True                   # write PNG plots
    quick: bool = False                  # smoke mode (seconds): small runs, one repetition


def _quick(cfg: BenchLiveConfig) -> BenchLiveConfig:
    # the baseline run (K=1, real time) is also the sweep's K=1 point
    return replace(cfg, backends=("eager",), batches=(1,), reps=1, warmup=1, streams=1, seconds=2, speed=1.0,
                   options=("lookahead1",), sweep=(1, 2), sweep_seconds=2, max_batch=4,
                   minutes=min(cfg.minutes, 0.1), soak_streams=2, soak_speed=0.0)


# ----------------------------------------------------------------- machine and model


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    import torch

    d = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
         "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"), "load": _load()}
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
    return d


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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
    return _random_model(cfg, profile), "RANDOM weights (no trained model installed; classifier rescaled so " \
                                         "that decisions change over a scene): timings and decision latencies " \
                                         "hold, matches with the ground truth are chance"


def _random_model(cfg: BenchLiveConfig, profile_name: str):
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


# ----------------------------------------------------------------- stages alone


def _times(fn, reps: int, warmup: int, sync=None) -> list[float]:
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t)
    return out


def _sync_of(device: str):
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return None


def stage_capture(loaded, cfg: BenchLiveConfig) -> dict:
    """Rendering a generated scene (the capture of a synthetic stream) and assembling its snippets."""
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

    t_render = _times(render, cfg.reps, 1)
    out = {"render_ms_per_media_second": spread([t / secs for t in t_render], 1000),
           "scene": f"{scene.width}x{scene.height} at {scene.fps} fps, audio {scene.sample_rate} Hz"}
    for hop in sorted({1.0} | {OPTIONS[o].hop for o in cfg.options if o in OPTIONS}, reverse=True):
        acfg = pipeline_config(profile=prof, hop=hop).assembler
        n = [0]

        def assemble():
            asm = SnippetAssembler(acfg, stream="c")
            k = 0
            for c in chunks:
                k += len(asm.push(c))
            n[0] = k + len(asm.flush())

        ts = _times(assemble, cfg.reps, 1)
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
                    from avparse.tools.bench_extract import _build

                    ext, note, _ = _build(prof_name, backend, torch.device(cfg.device), None)
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
                ts = _times(call, cfg.reps, warm, _sync_of(cfg.device))
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

        ts = _times(call, max(cfg.reps, 5), cfg.warmup, _sync_of(cfg.device))
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

    ts = _times(run, cfg.reps, 1)
    return {"ms_per_prediction": spread([t / n for t in ts], 1000), "classes": C,
            "note": f"{C} classes x 3 modalities, random probabilities (many transitions)"}


def stage_publish(loaded, cfg: BenchLiveConfig) -> dict:
    """emit() cost and emit -> receipt at a subscriber (real sockets on loopback)."""
    from avparse.core.events import Event
    from avparse.stream.publisher import Publisher, PublisherConfig
    from avparse.tools.bench_live_e2e import SubscriberHandle

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


# ----------------------------------------------------------------- end to end


def _warm(loaded, extractors: Extractors, backend: str, cfg: BenchLiveConfig, batch_max: int) -> float:
    """Extractor at batch 1, 2 and the largest batch a run will see, and HAN at every window length."""
    import numpy as np
    import torch

    from avparse.train.synth import SynthConfig

    t = time.perf_counter()
    ext = extractors.get(backend)
    p, sc, c = ext.profile, SynthConfig(), loaded.config
    dev = next(loaded.model.parameters()).device
    sizes = sorted({1, 2, max(1, batch_max)}) if backend != "eager" else [1]
    with torch.inference_mode():
        for b in sizes:
            if (backend, b) in extractors.warmed:
                continue
            ext(np.zeros((b, p.samples_per_snippet), np.float32),
                np.zeros((b, p.frames_per_snippet, sc.height, sc.width, 3), np.uint8))
            extractors.warmed.add((backend, b))
        for T in range(1, 11):
            if ("han", T) in extractors.warmed:
                continue
            extractors.warmed.add(("han", T))
            loaded.model(torch.zeros(1, T, c.audio_dim, device=dev),
                         torch.zeros(1, T * c.frames_per_snippet, c.v2d_dim, device=dev),
                         torch.zeros(1, T, c.v3d_dim, device=dev))
    return time.perf_counter() - t


def e2e_run(loaded, extractors: Extractors, option: LiveOption, cfg: BenchLiveConfig, *, streams: int,
            seconds: int, speed: float, label: str = "") -> dict:
    from avparse.tools.bench_live_e2e import run_live, summarize

    strides = max(1, int(round(1.0 / option.hop)))
    warm = _warm(loaded, extractors, option.backend, cfg, min(cfg.max_batch, streams * strides))
    spec = RunSpec(streams=streams, seconds=seconds, speed=speed, seed=cfg.seed, max_batch=cfg.max_batch,
                   subscriber=cfg.subscriber)
    load0 = _load()
    raw = run_live(loaded, extractors.get(option.backend), option, spec, device=cfg.device)
    s = summarize(raw, tolerance=cfg.tolerance)
    s["warmup_seconds"] = round(warm, 2)
    s["load"] = [load0, _load()]
    if speed > 0:
        ok, why = realtime_verdict(s)
        s["realtime"], s["realtime_why"] = ok, why
    print(f"  {label or option.name:<12} K={streams} {seconds}s x{speed:g}: " + _one_line(s), flush=True)
    return s


def _fmt(x, unit="s", nd=2):
    if x is None:
        return "n/a"
    return f"{x:.{nd}f}{(' ' + unit) if unit else ''}"


def _one_line(s: dict) -> str:
    ev = s.get("event_latency", {}).get("onset", {})
    gt = s.get("latency", {}).get("onset", {})
    st = s["stream"]
    parts = [f"onset(truth) p50 {_fmt(gt.get('p50'))} (n={gt.get('n', 0)})",
             f"onset(events) p50 {_fmt(ev.get('p50'))}",
             f"compute {s['compute']['total_ms_per_snippet']:.0f} ms/snippet",
             f"RTF {_fmt(s['rtf']['compute_per_stream'], '')}",
             f"events {st['received']}/{st['emitted']} {'in order, no gap' if st['nothing_lost'] else 'LOST/GAP'}"]
    if "realtime" in s:
        parts.append(("real time" if s["realtime"] else "NOT real time") + f" ({s['realtime_why']})")
    return "; ".join(parts)


def capacity(loaded, extractors: Extractors, cfg: BenchLiveConfig, baseline: dict | None) -> dict:
    runs = []
    ks = list(cfg.sweep) if cfg.sweep else []
    doubling = not ks
    k = 1
    while True:
        if doubling:
            if k > cfg.max_streams:
                break
        elif not ks:
            break
        else:
            k = ks.pop(0)
        if baseline is not None and baseline["streams"] == k and baseline["seconds"] == cfg.sweep_seconds \
                and baseline["speed"] == 1.0:
            s = baseline
        else:
            s = e2e_run(loaded, extractors, BASELINE, cfg, streams=k, seconds=cfg.sweep_seconds, speed=1.0,
                        label=f"sweep K={k}")
        runs.append(s)
        if doubling:
            if not s.get("realtime"):
                break
            k *= 2
    # between the last K that held and the first that did not: bisect (a few more runs)
    for _ in range(cfg.bisect if doubling else 0):
        ok = [r["streams"] for r in runs if r.get("realtime")]
        bad = [r["streams"] for r in runs if not r.get("realtime")]
        if not ok or not bad or min(bad) - max(ok) <= 1:
            break
        k = (max(ok) + min(bad)) // 2
        runs.append(e2e_run(loaded, extractors, BASELINE, cfg, streams=k, seconds=cfg.sweep_seconds, speed=1.0,
                            label=f"sweep K={k}"))
    return capacity_summary(runs, cfg.prompt_lag)


def capacity_summary(runs: list[dict], prompt_lag: float) -> dict:
    """Largest K that kept up (and that kept up promptly) among the sweep's runs."""
    from avparse.tools.bench_live_e2e import MAX_LAG_SLOPE

    runs = sorted(runs, key=lambda r: r["streams"])
    ok = [r["streams"] for r in runs if r.get("realtime")]
    best = max(ok) if ok else 0
    prompt = [r["streams"] for r in runs if r.get("realtime") and
              ((r.get("lag") or {}).get("decision") or {}).get("p95", 1e9) <= prompt_lag]
    rtf = [r["rtf"]["compute_per_stream"] for r in runs if r["rtf"]["compute_per_stream"]]
    return {"runs": runs, "max_realtime_streams": best, "max_prompt_streams": max(prompt) if prompt else 0,
            "prompt_lag": prompt_lag,
            "swept": [r["streams"] for r in runs],
            "estimate_from_rtf": (int(1.0 / min(rtf)) if rtf and min(rtf) > 0 else None),
            "criterion": "the decision lag (end of a snippet's evidence -> its prediction at the tracker) does "
                         "not grow: its least-squares slope over media time, after the first 20% of the run, is "
                         f"<= {MAX_LAG_SLOPE:g} s per s ({60 * MAX_LAG_SLOPE:.1f} s per minute), and the run ends "
                         "within 1.5 x its media time + 20 s"}


def soak(loaded, extractors: Extractors, cfg: BenchLiveConfig) -> dict:
    import math

    k = max(1, cfg.soak_streams)
    secs = max(2, int(math.ceil(cfg.minutes * 60 / k)))
    s = e2e_run(loaded, extractors, BASELINE, cfg, streams=k, seconds=secs, speed=cfg.soak_speed, label="soak")
    s["scene_minutes"] = k * secs / 60
    return s


# ----------------------------------------------------------------- report


def ratios(e2e: dict) -> dict:
    base = e2e.get("baseline")
    if not base:
        return {}

    def r(a, b):
        return (a / b) if (a is not None and b not in (None, 0)) else None

    def g(s, *path):
        for p in path:
            s = s.get(p) if isinstance(s, dict) else None
        return s

    out = {}
    for name, s in e2e.items():
        out[name] = {
            "onset_truth_p50": r(g(s, "latency", "onset", "p50"), g(base, "latency", "onset", "p50")),
            "onset_events_p50": r(g(s, "event_latency", "onset", "p50"), g(base, "event_latency", "onset", "p50")),
            "events_p95": r(g(s, "event_latency", "all", "p95"), g(base, "event_latency", "all", "p95")),
            "compute_per_snippet": r(g(s, "compute", "total_ms_per_snippet"), g(base, "compute", "total_ms_per_snippet")),
            "compute_per_media_second": r(g(s, "rtf", "compute_per_stream"), g(base, "rtf", "compute_per_stream")),
        }
    return out


def targets(res: dict) -> list[dict]:
    e2e = res.get("e2e", {})
    rows = []

    def onset_row(name, key, limit):
        s = e2e.get(name)
        if not s:
            rows.append({"target": key, "limit": limit, "measured": None, "verdict": "not run"})
            return
        gt = s["latency"]["onset"]
        ev = s["event_latency"]["onset"]
        if gt.get("n", 0) >= 3 and not res.get("model", "").startswith("RANDOM"):
            m, how = gt["p50"], f"ground-truth onsets (n={gt['n']})"
        else:
            why = "random model: its matches with the truth are chance" if res.get("model", "").startswith("RANDOM") \
                else "fewer than 3 true onsets matched"
            m, how = ev.get("p50"), f"{why}; every published onset against its own media time (n={ev.get('n', 0)})"
        rows.append({"target": key, "limit": limit, "measured": m, "how": how,
                     "verdict": "n/a" if m is None else ("met" if m <= limit else "MISSED")})

    onset_row("baseline", "onset latency p50, hop 1 s (s)", TARGETS["onset_p50_hop1"])
    onset_row("hop0.25", "onset latency p50, hop 0.25 s (s)", TARGETS["onset_p50_hop0.25"])
    ex = [r for r in res.get("stages", {}).get("extraction", [])
          if r.get("profile") == "lite" and r.get("backend") == "eager" and r.get("batch") == 1]
    han = [r for r in res.get("stages", {}).get("han", []) if r["batch"] == 1]
    if ex:
        m = ex[0]["ms_per_snippet"]["p50"] / 1000 + (han[0]["ms_per_window"]["p50"] / 1000 if han else 0.0)
        rows.append({"target": "lite compute per 1 s snippet, batch 1, eager (s): extraction + HAN window",
                     "limit": TARGETS["lite_compute_per_snippet"], "measured": m,
                     "verdict": "met" if m <= TARGETS["lite_compute_per_snippet"] else "MISSED"})
    sk = res.get("soak")
    if sk:
        st = sk["stream"]
        enough = sk["scene_minutes"] >= TARGETS["soak_minutes"] - 1e-9
        rows.append({"target": f"nothing lost over >= {TARGETS['soak_minutes']:g} min of scene time",
                     "limit": TARGETS["soak_minutes"], "measured": sk["scene_minutes"],
                     "how": f"{st['received']}/{st['emitted']} events, {st['seq_gaps']} seq gaps, "
                            f"identical and in order: {st['identical_in_order']}",
                     "verdict": ("met" if st["nothing_lost"] else "MISSED") if enough else
                                ("no loss (run shorter than the target)" if st["nothing_lost"] else "MISSED")})
    return rows


def _sp(d: dict | None, key="p50", unit="", scale=1.0, nd=2) -> str:
    if not d or not d.get("n"):
        return "n/a"
    return f"{d[key] * scale:.{nd}f}{unit}"


def _spread_cell(d: dict | None, nd=1) -> str:
    if not d or not d.get("n"):
        return "n/a"
    return f"{d['p50']:.{nd}f} [{d['p10']:.{nd}f}-{d['p90']:.{nd}f}]"


def markdown(res: dict) -> str:
    m = res["machine"]
    L = [f"# avparse bench live: {m['date']}", "",
         f"Machine: {m['cores']} cores, {m['cpu']}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
         + f"; torch {m['torch']} ({m['threads']} threads); device {res['config']['device']}; "
         f"load average at start {m['load']} and end {res.get('load_end')} (1/5/15 min).",
         f"Model: {res['model']}; profile {res['profile']}.", ""]
    st = res.get("stages")
    if st:
        L += ["## Stages alone (after warm-up; median [p10-p90])", "",
              "| stage | figure | median [p10-p90] |", "|---|---|---|"]
        c = st["capture"]
        L.append(f"| capture | render a generated scene ({c['scene']}), ms per media second | "
                 f"{_spread_cell(c['render_ms_per_media_second'])} |")
        for k, v in c.items():
            if k.startswith("assembler_ms_per_snippet"):
                L.append(f"| capture -> snippet | assembler, ms per snippet, hop {k.rsplit('hop', 1)[1]} s | "
                         f"{_spread_cell(v, 2)} |")
        for r in st["extraction"]:
            if "error" in r:
                L.append(f"| extraction | {r['profile']} / {r['backend']} | not run: {r['error']} |")
            else:
                L.append(f"| extraction | {r['profile']} / {r['backend']}, batch {r['batch']}, ms per snippet | "
                         f"{_spread_cell(r['ms_per_snippet'])} |")
        for r in st["han"]:
            L.append(f"| HAN | batch {r['batch']} windows of T={r['T']}, ms per window | {_spread_cell(r['ms_per_window'], 2)} |")
        L.append(f"| tracking | {st['tracker']['note']}, ms per prediction | "
                 f"{_spread_cell(st['tracker']['ms_per_prediction'], 3)} |")
        pb = st["publish"]
        L.append(f"| publishing | emit(), ms per event | {_spread_cell(pb['emit_ms'], 3)} |")
        L.append(f"| publishing | emit -> receipt at a subscriber ({pb['subscriber']}), ms "
                 f"(p99 {_sp(pb['transport_ms'], 'p99', nd=2)}) | {_spread_cell(pb['transport_ms'], 2)} |")
        L.append("")
    e2e = res.get("e2e")
    if e2e:
        any_s = next(iter(e2e.values()))
        L += [f"## End to end: {any_s['streams']} stream(s) x {any_s['seconds']} s of generated scene, paced at "
              f"{any_s['speed']:g}x real time, subscriber in another process", "",
              "Latency: from the moment an onset/offset happened in the media to its message at the subscriber "
              f"(seconds). Truth: ground-truth marks matched within {res['config']['tolerance']:g} s; "
              "events: every published onset/offset against its own media time. Neither counts onsets at media "
              "time 0 (under way when the stream starts)."
              + (" The model has random weights: matches with the truth are chance, and so are their latencies "
                 "(one can be negative: an event decided before a true onset within the tolerance)."
                 if res.get("model", "").startswith("RANDOM") else ""), "",
              "| config | onset p50 / p95 / p99 (truth) | offset p50 / p95 / p99 (truth) | matched / missed / spurious "
              "| onset p50 / p95 (events) | compute ms per snippet | compute s per media s per stream | real time | "
              "nothing lost |", "|---|---|---|---|---|---|---|---|---|"]
        for name, s in e2e.items():
            lat, ev, t = s["latency"], s["event_latency"], s["truth"]
            L.append(f"| {name} ({s['describe']}) | {_sp(lat['onset'])} / {_sp(lat['onset'], 'p95')} / "
                     f"{_sp(lat['onset'], 'p99')} (n={lat['onset'].get('n', 0)}) | {_sp(lat['offset'])} / "
                     f"{_sp(lat['offset'], 'p95')} / {_sp(lat['offset'], 'p99')} | {t['matched']} / {t['missed']} / "
                     f"{t['spurious']} | {_sp(ev['onset'])} / {_sp(ev['onset'], 'p95')} (n={ev['onset'].get('n', 0)}) | "
                     f"{s['compute']['total_ms_per_snippet']:.1f} | {_fmt(s['rtf']['compute_per_stream'], '', 3)} | "
                     f"{'yes' if s.get('realtime') else 'no'} ({s.get('realtime_why', '')}) | "
                     f"{'yes' if s['stream']['nothing_lost'] else 'NO'} ({s['stream']['received']}/"
                     f"{s['stream']['emitted']}) |")
        L += ["", "### Where the time goes", "",
              "Mean seconds per event, from the moment it happened in the media to its receipt "
              "(evidence: waiting for the snippets that decide it; capture: end of that evidence -> snippet "
              "at the inference stage; batch wait; extraction; HAN; tracking + publishing; transport), "
              "and compute per snippet by stage (ms).", "",
              "| config | " + " | ".join(PARTS) + " | sum | assembler | extraction | HAN | tracking | publishing |",
              "|---|" + "---|" * (len(PARTS) + 6)]
        for name, s in e2e.items():
            lp, w = s.get("latency_parts", {}), s["compute"]["where_ms_per_snippet"]
            tot = sum(v for v in lp.values() if v is not None) if lp else None
            L.append(f"| {name} | " + " | ".join(_fmt(lp.get(k), "", 3) for k in PARTS) + f" | {_fmt(tot, '', 3)} | "
                     + " | ".join(f"{w[k]:.1f}" for k in ("assembler", "extraction", "HAN", "tracking", "publishing"))
                     + " |")
        L += ["", "### Stages inside the live runs (median [p10-p90])", "",
              "| config | capture -> snippet ready (s) | snippet ready -> prediction (s) | extraction ms per snippet "
              "(mean batch) | HAN ms per window | tracking ms per prediction | emit ms per event | emit -> receipt "
              "ms (p99) |", "|---|---|---|---|---|---|---|---|"]
        for name, s in e2e.items():
            c, sn, tr = s["compute"], s.get("snippets", {}), s["stream"].get("transport")
            L.append(f"| {name} | {_spread_cell(sn.get('capture_to_ready'), 3)} | "
                     f"{_spread_cell(sn.get('ready_to_prediction'), 3)} | {_spread_cell(c['extract_ms_per_snippet'])} "
                     f"({c['mean_batch']:.1f}) | {_spread_cell(c['han_ms_per_window'], 2)} | "
                     f"{_spread_cell(c['tracker_ms_per_prediction'], 3)} | {_spread_cell(c['publish_ms_per_event'], 3)} | "
                     f"{_sp(tr, scale=1000)} ({_sp(tr, 'p99', scale=1000)}) |")
        rt = res.get("ratios", {})
        if rt:
            L += ["", "### Ratios to the baseline (option / baseline)", "",
                  "| config | onset p50 (truth) | onset p50 (events) | events p95 | compute per snippet | "
                  "compute per media second |", "|---|---|---|---|---|---|"]
            for name, r in rt.items():
                L.append(f"| {name} | " + " | ".join(_fmt(r[k], "", 2) for k in (
                    "onset_truth_p50", "onset_events_p50", "events_p95", "compute_per_snippet",
                    "compute_per_media_second")) + " |")
        L.append("")
    cap = res.get("capacity")
    if cap:
        L += ["## Capacity (baseline configuration)", "",
              f"Largest number of real-time streams: **{cap['max_realtime_streams']}** (swept K = "
              f"{', '.join(map(str, cap['swept']))}); of those, with p95 decision lag <= {cap.get('prompt_lag', 1.0):g} s: "
              f"**{cap.get('max_prompt_streams', 'n/a')}**; estimate from the best compute RTF (1 / compute s per media s): "
              f"{cap['estimate_from_rtf']}. Criterion: {cap['criterion']}.", "",
              "| K | compute s per media s per stream | CPU s per media s per stream (all threads) | decision lag p50 / "
              "p95 (s) | lag slope (s/s) | onset p50 (events) | real time |", "|---|---|---|---|---|---|---|"]
        for s in cap["runs"]:
            lag = s.get("lag", {})
            L.append(f"| {s['streams']} | {_fmt(s['rtf']['compute_per_stream'], '', 3)} | "
                     f"{_fmt(s['rtf']['cpu_per_stream'], '', 3)} | {_sp(lag.get('decision'))} / "
                     f"{_sp(lag.get('decision'), 'p95')} | {_fmt(lag.get('slope'), '', 3)} | "
                     f"{_sp(s['event_latency']['onset'])} | {'yes' if s.get('realtime') else 'no'} "
                     f"({s.get('realtime_why', '')}) |")
        L.append("")
    sk = res.get("soak")
    if sk:
        st2 = sk["stream"]
        pace = f"paced at {sk['speed']:g}x real time" if sk["speed"] > 0 else "as fast as the pipeline goes"
        L += ["## Nothing lost (soak)", "",
              f"{sk['streams']} scenes x {sk['seconds']} s = {sk['scene_minutes']:.1f} min of scene time, {pace}, "
              f"in {sk['wall_seconds']:.0f} s wall ({sk['scene_minutes'] * 60 / sk['wall_seconds']:.2f}x real time "
              f"over all streams): {st2['emitted']} events emitted, "
              f"{st2['received']} received, identical and in order: {st2['identical_in_order']}, seq gaps: "
              f"{st2['seq_gaps']}, restarts: {st2['restarts']}, last seq {st2['last_seq_received']} of "
              f"{st2['final_seq']}; emit -> receipt p50 {_sp(st2.get('transport'), scale=1000)} ms, p99 "
              f"{_sp(st2.get('transport'), 'p99', scale=1000)} ms; nothing lost: "
              f"**{'yes' if st2['nothing_lost'] else 'NO'}**.", ""]
    tg = res.get("targets")
    if tg:
        L += ["## Targets", "", "| target | limit | measured | verdict |", "|---|---|---|---|"]
        for t in tg:
            L.append(f"| {t['target']} | {t['limit']} | {_fmt(t['measured'], '', 3)}"
                     + (f" ({t['how']})" if t.get("how") else "") + f" | {t['verdict']} |")
        L.append("")
    if res.get("plots"):
        L += ["Plots: " + ", ".join(f"`{Path(p).name}`" for p in res["plots"]), ""]
    return "\n".join(L)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    return str(o)


# ----------------------------------------------------------------- main


def run(cfg: BenchLiveConfig) -> dict:
    import torch

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(threads)  # the caller's setting (tests run in one process)


def _run(cfg: BenchLiveConfig) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    from dataclasses import asdict

    res = {"machine": machine(), "config": json.loads(json.dumps(asdict(cfg), default=_json_default))}
    print(f"bench live: {res['machine']['cores']} cores, {res['machine']['cpu']}, torch {res['machine']['torch']}, "
          f"load {res['machine']['load']}", flush=True)
    loaded, what = load_or_build_model(cfg)
    res["model"], res["profile"] = what, loaded.profile.name
    print(f"model: {what}; profile {loaded.profile.name}", flush=True)
    extractors = Extractors(loaded, cfg.device)
    if "stages" in cfg.sections:
        print("stages alone:", flush=True)
        res["stages"] = {"capture": stage_capture(loaded, cfg),
                         "extraction": stage_extraction(loaded, extractors, cfg),
                         "han": stage_han(loaded, cfg), "tracker": stage_tracker(loaded, cfg),
                         "publish": stage_publish(loaded, cfg)}
        pb = res["stages"]["publish"]
        print(f"  publishing: emit {_sp(pb['emit_ms'], nd=3)} ms, emit -> receipt p50 {_sp(pb['transport_ms'])} ms "
              f"p99 {_sp(pb['transport_ms'], 'p99')} ms", flush=True)
    if "e2e" in cfg.sections:
        print("end to end:", flush=True)
        e2e = {}
        for opt in [BASELINE] + [OPTIONS[o] for o in cfg.options]:
            try:
                e2e[opt.name] = e2e_run(loaded, extractors, opt, cfg, streams=cfg.streams, seconds=cfg.seconds,
                                        speed=cfg.speed)
            except Exception as e:  # e.g. a backend that cannot compile here: reported, the rest goes on
                print(f"  {opt.name}: not run ({type(e).__name__}: {str(e).splitlines()[0][:200]})", flush=True)
                res.setdefault("errors", {})[opt.name] = str(e)[:500]
        res["e2e"] = e2e
        res["ratios"] = ratios(e2e)
    if "capacity" in cfg.sections:
        print("capacity:", flush=True)
        res["capacity"] = capacity(loaded, extractors, cfg, res.get("e2e", {}).get("baseline"))
        print(f"  largest real-time K: {res['capacity']['max_realtime_streams']}", flush=True)
    if "soak" in cfg.sections and cfg.minutes > 0:
        print("soak:", flush=True)
        res["soak"] = soak(loaded, extractors, cfg)
    res["targets"] = targets(res)
    res["load_end"] = _load()
    if cfg.plots:
        from avparse.tools.bench_plots import write_plots

        res["plots"] = [str(p) for p in write_plots(res, cfg.out)]
    (cfg.out / "results.json").write_text(json.dumps(res, indent=1, default=_json_default))
    (cfg.out / "results.md").write_text(markdown(res))
    print("\n" + markdown(res))
    print(f"wrote {cfg.out / 'results.md'}, {cfg.out / 'results.json'}"
          + (f" and {len(res.get('plots', []))} plots" if res.get("plots") else ""))
    return res


def _ints(s: str, what: str) -> tuple[int, ...]:
    try:
        v = tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{what} must be positive integers separated by commas, got {s!r}") from None
    if not v or min(v) < 1:
        raise UserError(f"{what} must be positive integers separated by commas, got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    d = BenchLiveConfig()
    p = argparse.ArgumentParser(prog="avparse bench live", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=d.out, help="folder for results.md, results.json, plots (./bench-live)")
    p.add_argument("--model", type=Path, help="checkpoint (default: the bundled demo model; else random weights)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--profiles", default="", help="extractor profiles timed alone (default: the model's)")
    p.add_argument("--backends", default=",".join(d.backends), help="extractor backends timed alone")
    p.add_argument("--batches", default=",".join(map(str, d.batches)), help="batch sizes of extraction and HAN")
    p.add_argument("--reps", type=int, default=d.reps, help="timed repetitions per stage figure")
    p.add_argument("--streams", type=int, default=d.streams, help="K scenes of each end-to-end configuration")
    p.add_argument("--seconds", type=int, default=d.seconds, help="media seconds per scene (end to end)")
    p.add_argument("--options", default=",".join(d.options),
                   help=f"configurations compared with the baseline (of {', '.join(OPTIONS)}; '' for none)")
    p.add_argument("--sweep", default="", help="K values of the capacity sweep (default: 1, 2, 4, ... until one fails)")
    p.add_argument("--max-streams", type=int, default=d.max_streams, help="the doubling sweep stops here")
    p.add_argument("--bisect", type=int, default=d.bisect,
                   help="runs bisecting between the last K that held and the first that did not (doubling sweep)")
    p.add_argument("--sweep-seconds", type=int, default=d.sweep_seconds, help="media seconds per scene of a sweep run")
    p.add_argument("--minutes", type=float, default=d.minutes,
                   help="soak: at least this many minutes of scene time, checking nothing is lost (0: skip)")
    p.add_argument("--soak-streams", type=int, default=d.soak_streams, help="soak: scenes at once")
    p.add_argument("--soak-speed", type=float, default=d.soak_speed,
                   help="soak: pacing (1 real time, >1 faster, 0 as fast as possible)")
    p.add_argument("--tolerance", type=float, default=d.tolerance, help="seconds to match a true onset/offset")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="the runtime's snippets per extractor call")
    p.add_argument("--subscriber", choices=("process", "thread"), default=d.subscriber)
    p.add_argument("--only", default="", help="sections to run: stages,e2e,capacity,soak (default: all)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quick", action="store_true", help="smoke mode: seconds, one repetition, tiny runs")
    p.add_argument("--report", metavar="DIR", type=Path,
                   help="measure nothing: write results.md and the plots again from DIR/results.json")
    return p


def report(folder: Path, plots: bool = True) -> None:
    """results.md and the plots from an earlier run's results.json."""
    path = folder / "results.json"
    try:
        res = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; pass --report with the --out folder of an earlier run") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the results: {e}") from None
    # the verdicts again, from the stored lag figures (the criterion may have changed since)
    runs = [s for s in (res.get("e2e") or {}).values()] + list((res.get("capacity") or {}).get("runs", []))
    for s in runs:
        if s.get("speed", 0) > 0 and s.get("lag"):
            s["realtime"], s["realtime_why"] = realtime_verdict(s)
    if res.get("capacity"):
        res["capacity"] = capacity_summary(res["capacity"]["runs"], res["capacity"].get("prompt_lag", 1.0))
    res["targets"] = targets(res)
    (folder / "results.json").write_text(json.dumps(res, indent=1, default=_json_default))
    if plots:
        from avparse.tools.bench_plots import write_plots

        res["plots"] = [str(p) for p in write_plots(res, folder)]
    (folder / "results.md").write_text(markdown(res))
    print(f"wrote {folder / 'results.md'}" + (f" and {len(res['plots'])} plots" if plots else ""))


def config_from_args(a) -> BenchLiveConfig:
    opts = tuple(o for o in a.options.split(",") if o.strip())
    bad = [o for o in opts if o not in OPTIONS]
    if bad:
        raise UserError(f"unknown --options {', '.join(bad)}; known: {', '.join(OPTIONS)}")
    sections = tuple(s for s in a.only.split(",") if s.strip()) or BenchLiveConfig.sections
    bad = [s for s in sections if s not in BenchLiveConfig.sections]
    if bad:
        raise UserError(f"unknown --only sections {', '.join(bad)}; known: {', '.join(BenchLiveConfig.sections)}")
    if min(a.streams, a.seconds, a.reps, a.max_streams, a.sweep_seconds, a.soak_streams, a.max_batch) < 1:
        raise UserError("--streams, --seconds, --reps, --max-streams, --sweep-seconds, --soak-streams and "
                        "--max-batch must be >= 1")
    if a.minutes < 0 or a.soak_speed < 0 or a.tolerance < 0:
        raise UserError("--minutes, --soak-speed and --tolerance must be >= 0")
    if a.model is not None and not a.model.is_file():
        raise UserError(f"{a.model}: no such checkpoint file; pass --model with a checkpoint written by avparse train")
    cfg = BenchLiveConfig(
        out=a.out, model=a.model, device=a.device, threads=a.threads,
        profiles=tuple(x for x in a.profiles.split(",") if x.strip()),
        backends=tuple(x for x in a.backends.split(",") if x.strip()), batches=_ints(a.batches, "--batches"),
        reps=a.reps, streams=a.streams, seconds=a.seconds, options=opts,
        sweep=_ints(a.sweep, "--sweep") if a.sweep.strip() else (), max_streams=a.max_streams, bisect=max(0, a.bisect),
        sweep_seconds=a.sweep_seconds, minutes=a.minutes, soak_streams=a.soak_streams, soak_speed=a.soak_speed,
        tolerance=a.tolerance, max_batch=a.max_batch, subscriber=a.subscriber, sections=sections,
        plots=not a.no_plots, seed=a.seed, quick=a.quick)
    return _quick(cfg) if a.quick else cfg


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        if a.report is not None:
            report(a.report, plots=not a.no_plots)
            return 0
        cfg = config_from_args(a)
        run(cfg)
    except UserError as e:
        return fail(str(e), e.code)
    except OSError as e:
        return fail(f"cannot write the results: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
