"""`avparse bench train`: training throughput, avparse's trainer against the paper's step.

Generates LLP-size random features (10,000 train + 649 val videos, paper
sizes, packed, in a temporary folder; or reads --data) and measures, in
interleaved rounds on the same machine:

(a) a plain reimplementation of the paper's training step (YapengTian/AVVP-ECCV20
    main_avvp.py + nets/net_audiovisual.py structure, written here from reading
    it): fc_v on all 8T frames then avg-pool, the shared HAN layer called once
    for audio and once for visual queries with sequence-first attention,
    attentive MMIL pooling, BCE with the paper's smoothing, plain Adam, fed by a
    torch DataLoader over per-video .npy files (batch 16, shuffled);
(b) avparse's trainer step (avparse.train.trainer.train_step: packed
    memory-mapped batches gathered one step ahead by a helper thread unless
    --no-prefetch, the HAN of avparse.core.han, fused Adam, threads set by the
    trainer).

It prints the videos/s of both (median over rounds), their ratio, the CPU
time of this process per video of both (steadier than wall time on a shared
machine; the paper step's leaves out its DataLoader workers), the
validation time on the val split, and the projected time of the full recipe
(40 epochs of 10,000 videos, validation each epoch). ``--epoch`` also runs one
real trainer epoch end to end (data, step, validation, checkpoints).
``--quick`` is a smoke run on a small set. ``--recipes paper,teacher,jomold``
times the training recipes' runs against each other instead and projects
their full runs at LLP size (:mod:`avparse.tools.harness.bench_recipes`).
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------- (a) the paper's step, reimplemented


def _paper_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PaperHANLayer(nn.Module):
        """The original HANLayer: sequence-first attention, x + cross + self, FFN (post-norm)."""

        def __init__(self, d, ff, p=0.1):
            super().__init__()
            self.self_attn = nn.MultiheadAttention(d, 1, dropout=p)
            self.cm_attn = nn.MultiheadAttention(d, 1, dropout=p)
            self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.dropout, self.dropout11, self.dropout12, self.dropout2 = (nn.Dropout(p) for _ in range(4))

        def forward(self, q, kv):
            q, kv = q.permute(1, 0, 2), kv.permute(1, 0, 2)
            s1 = self.cm_attn(q, kv, kv)[0]
            s2 = self.self_attn(q, q, q)[0]
            q = self.norm1(q + self.dropout11(s1) + self.dropout12(s2))
            q = self.norm2(q + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(q))))))
            return q.permute(1, 0, 2)

    class PaperNet(nn.Module):
        """MMIL_Net's forward: fc_v on every frame, then the 8-frame average pool."""

        def __init__(self, a_dim, v2d_dim, v3d_dim, frames, classes, d=512, ff=512):
            super().__init__()
            self.frames = frames
            self.fc_prob, self.fc_frame_att, self.fc_av_att = (nn.Linear(d, classes) for _ in range(3))
            self.fc_a, self.fc_v, self.fc_st = nn.Linear(a_dim, d), nn.Linear(v2d_dim, d), nn.Linear(v3d_dim, d)
            self.fc_fusion = nn.Linear(2 * d, d)
            self.layer = PaperHANLayer(d, ff)

        def forward(self, audio, visual, visual_st):
            x1 = self.fc_a(audio)
            vid_s = self.fc_v(visual).permute(0, 2, 1).unsqueeze(-1)
            vid_s = F.avg_pool2d(vid_s, (self.frames, 1)).squeeze(-1).permute(0, 2, 1)
            x2 = self.fc_fusion(torch.cat((vid_s, self.fc_st(visual_st)), dim=-1))
            x1, x2 = self.layer(x1, x2), self.layer(x2, x1)   # Encoder: output_a, output_v
            x = torch.cat([x1.unsqueeze(-2), x2.unsqueeze(-2)], dim=-2)
            frame_prob = torch.sigmoid(self.fc_prob(x))
            frame_att = torch.softmax(self.fc_frame_att(x), dim=1)
            av_att = torch.softmax(self.fc_av_att(x), dim=2)
            temporal_prob = frame_att * frame_prob
            global_prob = (temporal_prob * av_att).sum(dim=2).sum(dim=1)
            return global_prob, temporal_prob[:, :, 0, :].sum(dim=1), temporal_prob[:, :, 1, :].sum(dim=1), frame_prob

    class NpyDataset(torch.utils.data.Dataset):
        """dataloader.py LLP_dataset: three np.load per video, label vector."""

        def __init__(self, root, ids, labels):
            self.root, self.ids, self.labels = Path(root), ids, labels

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            name = self.ids[i]
            return {"audio": torch.from_numpy(np.load(self.root / "vggish" / f"{name}.npy")),
                    "video_s": torch.from_numpy(np.load(self.root / "res152" / f"{name}.npy")),
                    "video_st": torch.from_numpy(np.load(self.root / "r2plus1d_18" / f"{name}.npy")),
                    "label": torch.from_numpy(self.labels[i].astype(np.float64))}

    return PaperNet, NpyDataset


class PaperContender:
    def __init__(self, root, ids, labels, profile, classes, *, workers, d_model, ff, seed=1, device="cpu"):
        import torch

        PaperNet, NpyDataset = _paper_modules()
        torch.manual_seed(seed)
        self.device = device
        self.model = PaperNet(profile.audio_dim, profile.v2d_dim, profile.v3d_dim, profile.frames_per_snippet,
                              classes, d_model, ff).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=3e-4)
        self.crit = torch.nn.BCELoss()
        self.loader = torch.utils.data.DataLoader(NpyDataset(root, ids, labels), batch_size=16, shuffle=True,
                                                  num_workers=workers, persistent_workers=workers > 0)
        self.it = iter(self.loader)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the DataLoader workers stop refilling their prefetch queues, so that
        they do not take CPU from the contender timed next (Linux /proc; else no wait)."""
        pids = [w.pid for w in getattr(self.it, "_workers", [])]
        if not pids or not Path(f"/proc/{pids[0]}/stat").is_file():
            return

        def cpu_ticks():
            total = 0
            for pid in pids:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])   # utime + stime
                except (OSError, IndexError, ValueError):
                    pass
            return total

        deadline, last, still = time.monotonic() + timeout, cpu_ticks(), 0
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            now = cpu_ticks()
            still, last = (still + 1 if now == last else 0), now

    def steps(self, k: int) -> int:
        import torch

        self.model.train()
        n = 0
        for _ in range(k):
            try:
                s = next(self.it)
            except StopIteration:
                self.it = iter(self.loader)
                s = next(self.it)
            target = s["label"].type(torch.FloatTensor).to(self.device)   # main_avvp.py: .to('cuda') on a GPU
            self.opt.zero_grad()
            out, a_prob, v_prob, _ = self.model(*(s[k].to(self.device) for k in ("audio", "video_s", "video_st")))
            out, a_prob, v_prob = (x.clamp(1e-7, 1 - 1e-7) for x in (out, a_prob, v_prob))
            pa, pv = 1.0 * target + 0.0 * 0.5, 0.9 * target + 0.1 * 0.5
            loss = self.crit(a_prob, pa) + self.crit(v_prob, pv) + self.crit(out, target)
            loss.backward()
            self.opt.step()
            n += len(target)
        float(loss.detach())   # waits for the device
        return n


class AvparseContender:
    def __init__(self, split, model_cfg, train_cfg, device: str = "cpu"):
        import torch

        from avparse.core.han import build_han
        from avparse.train.trainer import make_optimizer, model_config_for

        torch.manual_seed(train_cfg.seed)
        self.prepare_seconds = 0.0
        if train_cfg.frame_means and split.profile.frames_per_snippet > 1:   # as the trainer does
            from avparse.train.dataset import FrameMeanSplit

            t0 = time.perf_counter()
            split = FrameMeanSplit(split)
            self.prepare_seconds = time.perf_counter() - t0
        self.split, self.cfg, self.device = split, train_cfg, device
        self.model = build_han(model_config_for(model_cfg, split), device=device)
        self.opt, _ = make_optimizer(self.model, train_cfg)
        self.y = torch.from_numpy(np.asarray(split.labels, np.float32))
        self.rng = np.random.default_rng(train_cfg.seed)
        self.stream = None

    def _indices(self):
        while True:  # endless shuffled epochs, batch_size videos per step
            perm = self.rng.permutation(len(self.split))
            for s in range(0, len(perm), self.cfg.batch_size):
                yield perm[s:s + self.cfg.batch_size]

    def steps(self, k: int) -> int:
        from avparse.train.trainer import batch_stream, train_step

        if self.stream is None:  # the trainer's batch path: prefetched one batch ahead when cfg.prefetch
            self.stream = batch_stream(self.split, self._indices(), prefetch=self.cfg.prefetch)
        self.model.train()
        n = 0
        for _ in range(k):
            idx, arrays = next(self.stream)
            loss, _ = train_step(self.model, self.opt, self.cfg.loss, self.split, idx, self.y, self.device,
                                 arrays=arrays, precision=self.cfg.precision)
            n += len(idx)
        float(loss)
        return n

    def close(self):
        if self.stream is not None:
            self.stream.close()


def timed_rounds(contenders: dict, rounds: int, steps, *, on_round=None) -> tuple[dict, dict]:
    """Interleaved rounds: per round each contender runs ``steps`` steps (an int, or a dict of one per
    contender), in the dict's order.
    Before any other contender is timed, the "paper" contender's DataLoader workers settle (they
    refill their queues then, not while another runs). Each contender's ``steps`` ends by waiting
    for its device. Returns (videos/s, CPU ms of this process per video), a list per contender;
    ``on_round(r, videos_per_s)`` after each round."""
    vps: dict = {k: [] for k in contenders}
    cpu: dict = {k: [] for k in contenders}   # all threads of this process; not the DataLoader workers
    for r in range(rounds):
        for name, c in contenders.items():
            if name != "paper" and "paper" in contenders:
                contenders["paper"].settle()
            t0, c0 = time.perf_counter(), time.process_time()
            n = c.steps(steps[name] if isinstance(steps, dict) else steps)
            vps[name].append(n / (time.perf_counter() - t0))
            cpu[name].append(1000 * (time.process_time() - c0) / n)
        if on_round is not None:
            on_round(r, vps)
    return vps, cpu


# ---------------------------------------------------------------- data


def generate(out: Path, profile, classes, n_train: int, n_val: int, n_files: int, seed: int = 0, log=print):
    """Random packed train/val stores and n_files train videos in the LLP layout."""
    from avparse.train.dataset import write_layout_video
    from avparse.train.pack import PackedWriter

    rng = np.random.default_rng(seed)
    c, t = len(classes), 10

    def labels(n):
        y = np.zeros((n, c), np.uint8)
        for i in range(n):
            y[i, rng.choice(c, int(rng.integers(1, 4)), replace=False)] = 1
        return y

    for split, n in (("train", n_train), ("val", n_val)):
        t0 = time.perf_counter()
        ids = [f"v{i:010d}" for i in range(n)]
        w = PackedWriter(out / "packed", split, ids, classes=classes, profile=profile, num_snippets=t,
                         dense=split == "val", source="random")
        y = labels(n)
        w.arrays["labels"][:] = y
        if split == "val":
            g = (rng.random((n, c, t)) < 0.3).astype(np.uint8) * y[:, :, None]
            w.arrays["gt_audio"][:] = g
            w.arrays["gt_visual"][:] = (rng.random((n, c, t)) < 0.3).astype(np.uint8) * y[:, :, None]
        for s in range(0, n, 256):
            e = min(n, s + 256)
            for m in ("audio", "v2d", "v3d"):
                shape = w.arrays[m].shape[1:]
                w.arrays[m][s:e] = rng.random((e - s, *shape), dtype=np.float32)
            if split == "train" and s < n_files:
                for i in range(s, min(e, n_files)):
                    write_layout_video(out / "layout", ids[i], w.arrays["audio"][i], w.arrays["v2d"][i],
                                       w.arrays["v3d"][i])
        w.close()
        log(f"generated {split}: {n} videos in {time.perf_counter() - t0:.1f} s")
    return out / "packed", out / "layout"


# ---------------------------------------------------------------- main


def build_parser():
    p = argparse.ArgumentParser(prog="avparse bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="STORE", help="a packed store with train and val (default: generate random "
                   "LLP-size features in a temporary folder)")
    p.add_argument("--videos", type=int, default=10000, help="generated train videos (LLP: 10,000)")
    p.add_argument("--val-videos", type=int, default=649, help="generated val videos (LLP: 649)")
    p.add_argument("--files", type=int, default=1600, help="train videos also written as per-video .npy files "
                   "for the paper's DataLoader (the baseline cycles over them)")
    p.add_argument("--steps", type=int, default=25, help="timed steps per contender per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per contender first")
    p.add_argument("--workers", type=int, default=12, help="DataLoader workers of the paper baseline "
                   "(main_avvp.py: num_workers=12)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the trainer's choice, all cores)")
    p.add_argument("--no-prefetch", action="store_true", help="avparse without the helper thread that gathers "
                   "the next batch during the step (TrainConfig.prefetch=False)")
    p.add_argument("--no-frame-means", action="store_true", help="avparse reading every frame from the store "
                   "each step instead of the frame means held in memory (TrainConfig.frame_means=False)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: both contenders train there (the paper's code "
                   "moves each batch to the GPU)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="avparse's arithmetic (bf16: mixed precision, not the paper's; the paper step stays fp32)")
    p.add_argument("--epoch", action="store_true", help="also run one real trainer epoch with validation")
    p.add_argument("--epochs", type=int, default=40, help="epochs of the projected full recipe (paper: 40)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 small videos, lite sizes, 2 steps")
    p.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (a later run with the same "
                   "--keep reuses it)")
    p.add_argument("--recipes", metavar="LIST", help="instead: time the training recipes side by side (comma-"
                   "separated, e.g. paper,teacher,jomold; the paper's is always included as the reference), each "
                   "phase's optimiser step through the trainer's own path, and project each recipe's full run at "
                   "LLP size with the ratio to the paper's (docs/training.md, 'What the recipes cost')")
    p.add_argument("--label-videos", type=int, default=1000, help="--recipes: training clips of the timed "
                   "labelling pass (scaled to 10,000)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from avparse.core.han import HANConfig
    from avparse.core.labels import LLP_CLASSES
    from avparse.core.profiles import LITE, PAPER
    from avparse.tools.common import fail
    from avparse.train.dataset import FeatureError, PackedSplit
    from avparse.train.evaluate import score_split
    from avparse.train.trainer import TrainConfig

    from .machine import cores as _cores

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return fail("--device cuda: no CUDA GPU is available (use --device cpu)")
    d_model = 512
    if args.quick:
        args.videos, args.val_videos, args.files = 64, 16, 64
        args.steps, args.rounds, args.warmup = 2, 1, 1
        d_model = 64
    profile = LITE if args.quick else PAPER
    threads = args.threads or _cores()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    tmp = None
    try:
        if args.data:
            store = Path(args.data)
            layout = None
        else:
            if args.keep:
                base = Path(args.keep)
            else:
                tmp = tempfile.TemporaryDirectory(prefix="avparse-bench-train-")
                base = Path(tmp.name)
            if args.keep and (base / "packed" / "val.json").is_file() and (args.recipes or (base / "layout").is_dir()):
                store, layout = base / "packed", base / "layout"   # generated by an earlier --keep run
                print(f"reusing the features generated in {base}")
            else:   # --recipes needs no per-video files (the paper's DataLoader is not timed)
                store, layout = generate(base, profile, LLP_CLASSES, args.videos, args.val_videos,
                                         0 if args.recipes else min(args.files, args.videos))
        try:
            tr = PackedSplit(store / "train.json")
            va = PackedSplit(store / "val.json")
        except FeatureError as e:
            return fail(str(e))
        profile = tr.profile
        if args.recipes:
            from .bench_recipes import run as run_recipes

            return run_recipes(args, tr, va, d_model=d_model, threads=threads)
        if layout is None:  # --data: write the baseline's per-video files from the store
            tmp = tempfile.TemporaryDirectory(prefix="avparse-bench-train-")
            layout = Path(tmp.name) / "layout"
            from avparse.train.dataset import write_layout_video

            for i in range(min(args.files, len(tr))):
                a, v2, v3 = tr.batch([i])
                write_layout_video(layout, tr.ids[i], a[0], v2[0], v3[0])
        n_files = min(args.files, len(tr))
        model_cfg = HANConfig(d_model=d_model, dim_feedforward=d_model)
        train_cfg = TrainConfig(num_threads=threads, prefetch=not args.no_prefetch, frame_means=not args.no_frame_means,
                                device=args.device, precision=args.precision)
        print(f"data: {len(tr)} train / {len(va)} val videos ({profile.name} sizes: audio {profile.audio_dim}, "
              f"2D {profile.frames_per_snippet}x{profile.v2d_dim}, 3D {profile.v3d_dim}), batch 16, "
              f"avparse {args.precision} (paper step fp32), device {args.device}, "
              f"{threads} torch threads on {_cores()} cores")
        base_c = PaperContender(layout, tr.ids[:n_files], np.asarray(tr.labels[:n_files]), profile, len(tr.classes),
                                workers=args.workers, d_model=d_model, ff=d_model, device=args.device)
        ours_c = AvparseContender(tr, model_cfg, train_cfg, device=args.device)
        for c in (base_c, ours_c):
            c.steps(args.warmup)
        vps, cpu = timed_rounds({"paper": base_c, "avparse": ours_c}, args.rounds, args.steps,
                                on_round=lambda r, v: print(f"round {r + 1}/{args.rounds}: paper {v['paper'][-1]:.1f} "
                                                            f"videos/s, avparse {v['avparse'][-1]:.1f} videos/s",
                                                            flush=True))
        t0 = time.perf_counter()
        ours_c.close()
        score_split(ours_c.model, va, batch_size=train_cfg.val_batch_size, device=args.device)
        val_s = time.perf_counter() - t0
        med = {k: statistics.median(v) for k, v in vps.items()}
        ratio = med["avparse"] / med["paper"]
        n_full, v_full = 10000, 649
        prep = ours_c.prepare_seconds * n_full / len(tr)
        proj = lambda v: args.epochs * (n_full / v + val_s * v_full / len(va))  # noqa: E731
        print(f"(a) paper step, DataLoader over .npy files ({args.workers} workers): "
              f"{med['paper']:.1f} videos/s (median of {args.rounds}; {min(vps['paper']):.1f}-{max(vps['paper']):.1f})")
        held = (f"frame means held in memory, built once in {ours_c.prepare_seconds:.1f} s"
                if ours_c.prepare_seconds else "frames read from the store every step")
        print(f"(b) avparse trainer step, packed store ({held}): {med['avparse']:.1f} videos/s "
              f"(median of {args.rounds}; {min(vps['avparse']):.1f}-{max(vps['avparse']):.1f})")
        print(f"ratio avparse / paper: {ratio:.2f}x")
        mc = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"CPU time of this process per video (medians; steady under load; the paper step's excludes its "
              f"DataLoader worker processes): paper {mc['paper']:.2f} ms, avparse {mc['avparse']:.2f} ms, "
              f"ratio {mc['paper'] / mc['avparse']:.2f}x")
        print(f"validation: {len(va)} videos in {val_s:.2f} s ({len(va) / val_s:.0f} videos/s)")
        print(f"projected full recipe ({args.epochs} epochs x {n_full} videos + val on {v_full}): "
              f"avparse {(proj(med['avparse']) + prep) / 60:.1f} min, paper step {proj(med['paper']) / 60:.1f} min")
        if args.epoch:
            from avparse.train.trainer import train

            with tempfile.TemporaryDirectory(prefix="avparse-bench-run-") as run:
                t0 = time.perf_counter()
                res = train(model_cfg, replace(train_cfg, epochs=1), tr, va, run)
                wall = time.perf_counter() - t0
            h = res.history[0]
            print(f"one real epoch: {wall:.1f} s wall ({len(tr)} videos: train {h['train_seconds']:.1f} s = "
                  f"{len(tr) / h['train_seconds']:.1f} videos/s, val {h['val_seconds']:.1f} s); "
                  f"x{args.epochs} = {args.epochs * wall * n_full / len(tr) / 60:.1f} min projected")
    finally:
        torch.set_num_threads(old_threads)
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
