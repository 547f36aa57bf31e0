"""`avparse pack`, `avparse train`, `avparse evaluate`, `avparse bench train` as a user runs them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from avparse.core.profiles import LITE
from avparse.tools import evaluate, pack
from avparse.tools.harness import bench_train
from avparse.tools import train as train_cli
from avparse.train.featgen import PlantedSpec, write_planted_layout

CLASSES = ("drum", "bell", "horn")
TINY = ["--d-model", "16", "--dim-feedforward", "16", "--threads", "1", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lay = write_planted_layout(root / "llp", PlantedSpec(CLASSES, LITE), n_train=48, n_val=12, n_test=12, seed=2)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _pack(layout, out):
    return pack.main(["--data", str(layout / "llp"), "--classes", str(layout / "classes.txt"), "--profile", "lite",
                      "--out", str(out), "--quiet"])


def test_pack_train_evaluate(layout, tmp_path, capsys):
    store = tmp_path / "store"
    assert _pack(layout, store) == 0
    assert {p.name for p in store.iterdir()} == {f"{s}.{e}" for s in ("train", "val", "test") for e in ("bin", "json")}
    capsys.readouterr()
    run = tmp_path / "run"
    assert train_cli.main(["--data", str(store), "--out", str(run), "--epochs", "2", "--quiet", *TINY]) == 0
    out = capsys.readouterr().out
    val_lines = [ln for ln in out.splitlines() if ln.startswith("epoch ") and "Type@AV" in ln]
    assert len(val_lines) == 2
    assert (run / "best.pt").is_file() and (run / "training.png").is_file()
    # a second run into the same folder needs --resume
    assert train_cli.main(["--data", str(store), "--out", str(run), "--epochs", "2", "--quiet", *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    # evaluate: the data folder is recorded in the checkpoint
    js = tmp_path / "test.json"
    assert evaluate.main([str(run / "best.pt"), "--split", "test", "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split()[-2:] for ln in printed.splitlines()[2:7]}
    assert list(rows) == ["audio", "visual", "audio-visual", "Type@AV", "Event@AV"]
    result = json.loads(js.read_text())
    assert result["videos"] == 12 and len(result["scores"]) == 10
    assert float(rows["Type@AV"][0]) == pytest.approx(result["scores"]["seg_type"], abs=0.051)
    assert float(rows["Event@AV"][1]) == pytest.approx(result["scores"]["evt_event"], abs=0.051)


def test_train_from_the_llp_layout_directly(layout, tmp_path, capsys):
    run = tmp_path / "run"
    rc = train_cli.main(["--data", str(layout / "llp"), "--classes", str(layout / "classes.txt"), "--profile", "lite",
                         "--out", str(run), "--epochs", "1", "--quiet", "--pooling", "mean", "--temporal", "gru",
                         "--loss", "guided", "--noisy", "bootstrap", *TINY])
    assert rc == 0, capsys.readouterr().err
    assert (run / "best.pt").is_file()


def test_user_errors_are_one_line(layout, tmp_path, capsys):
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(layout / "llp", bad)
    vid = (bad / "AVVP_val_pd.csv").read_text().splitlines()[2].split("\t")[0]
    (bad / "res152" / f"{vid[:11]}.npy").unlink()
    rc = pack.main(["--data", str(bad), "--classes", str(layout / "classes.txt"), "--profile", "lite",
                    "--out", str(tmp_path / "s"), "--quiet", "--splits", "val"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and vid in err[0] and "res152" in err[0]
    # the paper profile expects 2048-d frames: a wrong-shape error, one line
    rc = pack.main(["--data", str(layout / "llp"), "--classes", str(layout / "classes.txt"),
                    "--out", str(tmp_path / "s2"), "--quiet", "--splits", "train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "shape" in err[0]
    # LLP classes against a CSV of other classes: the unknown class and the file
    rc = train_cli.main(["--data", str(layout / "llp"), "--profile", "lite", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown event label" in err[0] and "AVVP_train.csv" in err[0]
    rc = train_cli.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "no such data folder" in capsys.readouterr().err
    rc = evaluate.main([str(tmp_path / "missing.pt")])
    assert rc == 2 and "no such checkpoint" in capsys.readouterr().err
    rc = train_cli.main(["--data", str(layout / "llp"), "--eps-v", "1.5", "--out", str(tmp_path / "r")])
    assert rc == 2 and "eps_v" in capsys.readouterr().err


def test_bench_train_quick(capsys):
    assert bench_train.main(["--quick", "--threads", "1", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "(a) paper step" in out and "(b) avparse trainer step" in out and "ratio avparse / paper" in out
    assert "projected full recipe" in out
    cpu = [ln for ln in out.splitlines() if ln.startswith("CPU time of this process per video")]
    assert len(cpu) == 1 and " ms, avparse " in cpu[0] and cpu[0].endswith("x")
    assert bench_train.main(["--quick", "--threads", "1", "--workers", "0", "--no-prefetch"]) == 0
    assert "ratio avparse / paper" in capsys.readouterr().out
    assert bench_train.main(["--quick", "--threads", "1", "--workers", "0", "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "avparse bf16 (paper step fp32)" in out and "ratio avparse / paper" in out


def test_bench_train_recipes_quick(capsys):
    """`avparse bench train --recipes`: every phase of each recipe timed, each recipe's full run projected
    with the schedule run_recipe uses at LLP size, and a finite positive ratio to the paper's (figures, not
    timings, are checked)."""
    import math
    import re

    assert bench_train.main(["--quick", "--threads", "1", "--recipes", "teacher,jomold"]) == 0
    out = capsys.readouterr().out
    for phase in ("paper: model", "teacher: teacher", "teacher: model", "jomold: estimator", "jomold: model"):
        assert re.search(rf"^  {phase} +.*ms/step wall .* ms/step CPU; validation", out, re.M), phase
    phase_lines = {ln.split(" " * 2)[1].strip(): ln for ln in out.splitlines() if "ms/step wall" in ln}
    assert "labelling" in phase_lines["teacher: teacher"] and "labelling" in phase_lines["jomold: estimator"]
    assert "labelling" not in phase_lines["paper: model"]
    proj = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and " min = " in ln}
    assert set(proj) == {"paper", "teacher", "jomold"}
    assert "model (40 epochs x 625 steps at batch 16" in proj["paper"]
    assert "teacher (40 epochs x 625 steps at batch 16" in proj["teacher"] and "labelling pass" in proj["teacher"]
    assert "estimator (25 epochs x 79 steps at batch 128" in proj["jomold"]
    ratios = re.findall(r"^ratio (\S+) / paper: ([\d.]+)x \(steps by CPU time: ([\d.]+)x\)$", out, re.M)
    assert [r[0] for r in ratios] == ["teacher", "jomold"]
    assert all(math.isfinite(float(x)) and float(x) > 0 for r in ratios for x in r[1:])
    assert bench_train.main(["--quick", "--threads", "1", "--recipes", "paper,magic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown recipe 'magic'" in err[0]


def test_jomold_keeps_the_settings_given_on_the_command_line(tmp_path):
    """--recipe jomold runs JoMoLD's optimiser and schedule, except what the command line states."""
    def cfg(*extra):
        return train_cli.configs(train_cli.build_parser().parse_args(["--data", str(tmp_path), *extra]))[1]

    j = cfg("--recipe", "jomold")
    assert (j.batch_size, j.lr, j.seed, j.steps, j.epochs, j.schedule) == (128, 5e-4, 6, 1975, 25, "auto")
    s = cfg("--recipe", "jomold", "--steps", "60", "--lr-step-steps", "40", "--rounds", "3", "--batch-size", "32")
    assert (s.schedule, s.steps, s.lr_step_steps, s.rounds, s.batch_size, s.lr) == ("steps", 60, 40, 3, 32, 5e-4)
    e = cfg("--recipe", "jomold", "--epochs", "2", "--lr", "1e-3", "--seed", "3")
    assert (e.schedule, e.epochs, e.lr, e.seed, e.batch_size) == ("epochs", 2, 1e-3, 3, 128)
    p = cfg()
    assert (p.batch_size, p.lr, p.seed, p.rounds, p.lr_gamma) == (16, 3e-4, 1, 40, 0.1)
    n = cfg("--recipe", "jomold", "--no-jomold-hparams")
    assert (n.batch_size, n.lr, n.seed) == (16, 3e-4, 1)


def test_bench_train_without_a_gpu_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert bench_train.main(["--quick", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU is available" in err[0]


def test_train_precision_flag(tmp_path):
    args = train_cli.build_parser().parse_args(["--data", str(tmp_path), "--precision", "bf16"])
    assert train_cli.configs(args)[1].precision == "bf16"
    assert train_cli.configs(train_cli.build_parser().parse_args(["--data", str(tmp_path)]))[1].precision == "fp32"


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_gloo_as_torchrun_starts_them(layout, tmp_path):
    """Two CPU processes with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
    DDP over gloo trains one epoch and rank 0 alone prints and writes the files. (torchrun itself only adds
    the rendezvous agent; `torchrun --standalone --nproc_per_node 2 -m avparse.tools.cli train ...` runs
    the same code.)"""
    store = tmp_path / "store"
    assert _pack(layout, store) == 0
    run = tmp_path / "run"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "avparse.tools.cli", "train", "--data", str(store), "--out", str(run),
               "--epochs", "1", "--quiet", *TINY]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=180))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert (run / "best.pt").is_file() and (run / "resume.pt").is_file()
    assert outs[0][0].count("epoch 1/1") == 1 and outs[1][0] == ""  # only rank 0 prints
    import torch

    st = torch.load(run / "resume.pt", weights_only=True)
    assert st["epoch"] == 1 and len(st["rng"]) == 2
    assert np.isfinite(st["history"][0]["train_loss"])


def test_train_recipes_and_schedule_from_the_command_line(layout, tmp_path, capsys):
    """`avparse train --recipe teacher|jomold` on LLP-layout features; the schedule it runs is printed;
    the JoMoLD checkpoint is evaluated with its own decision rule; user mistakes end in one line."""
    data = ["--data", str(layout / "llp"), "--classes", str(layout / "classes.txt"), "--profile", "lite"]
    short = ["--steps", "12", "--lr-step-steps", "8", "--rounds", "2", *TINY]
    assert train_cli.main([*data, "--out", str(tmp_path / "t"), "--recipe", "teacher", *short]) == 0
    out = capsys.readouterr().out
    assert "schedule: steps (12 optimiser steps at batch 16" in out and "teacher labels:" in out
    assert (tmp_path / "t" / "teacher" / "best.pt").is_file() and (tmp_path / "t" / "teacher_labels.npz").is_file()
    # JoMoLD with this command's optimiser (its own is 1,975 steps of 128 clips), then evaluated
    assert train_cli.main([*data, "--out", str(tmp_path / "j"), "--recipe", "jomold", "--no-jomold-hparams",
                           "--gate", "modality", "--select", "evt_a", *short]) == 0
    out = capsys.readouterr().out
    assert "noise ratios" in out and (tmp_path / "j" / "noise_ratios.json").is_file()
    js = tmp_path / "j.json"
    assert evaluate.main([str(tmp_path / "j" / "best.pt"), "--split", "test", "--json", str(js), *data]) == 0
    assert "each modality's snippets gated by its own" in capsys.readouterr().out
    assert json.loads(js.read_text())["gate"] == "modality"
    # the epoch schedule when epochs are asked for, and its line
    assert train_cli.main([*data, "--out", str(tmp_path / "e"), "--epochs", "1", *TINY]) == 0
    assert "schedule: epochs (1 epochs of 3 steps" in capsys.readouterr().out
    # mistakes: one line, nonzero exit
    assert train_cli.main([*data, "--out", str(tmp_path / "x"), "--recipe", "teacher", "--no-val", *short]) == 2
    assert "needs validation" in capsys.readouterr().err
    assert train_cli.main([*data, "--out", str(tmp_path / "y"), "--steps", "3", "--rounds", "5", *TINY]) == 2
    assert "rounds" in capsys.readouterr().err
