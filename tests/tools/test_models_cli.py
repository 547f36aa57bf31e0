"""The commands as a user meets them: `avparse models`, `parse` streaming and its progress line on a
terminal (a real pseudo-terminal), the DCASE event list, the bundled model's notice."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from avparse.core.events import Event

CLI = [sys.executable, "-m", "avparse.tools.cli"]


def test_models_lists_names_files_and_cache(capsys, tmp_path, monkeypatch):
    from avparse.tools import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert models.main([]) == 0
    out = capsys.readouterr().out
    assert f"cache: {tmp_path / 'hub' / 'checkpoints'}" in out
    assert "demo  (default):" in out and "bundled" in out and "llp:" in out
    assert out.count("missing (~") == 4 and "AVVP-ECCV20-MMIL_Net-ef441b42.pt" in out and "git blob ef441b42" in out
    assert models.main(["llp", "--notes"]) == 0 and "raw 128-d embedding" in capsys.readouterr().out
    assert models.main(["whisper"]) == 2
    assert capsys.readouterr().err.strip() == "avparse: error: unknown model 'whisper'; known models: demo, llp"
    assert models.main(["llp", "--fetch"]) == 2  # tests run offline
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offline" in err[0] and str(tmp_path) in err[0]


@pytest.mark.slow
def test_parse_prints_each_event_when_it_is_decided(llp_clip_60s):
    p = subprocess.Popen(CLI + ["parse", str(llp_clip_60s), "--format", "json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        still_running = p.poll() is None  # the first event came out while 60 s of media were still ahead
        rest, err = p.communicate(timeout=300)
    finally:
        p.kill()
    assert still_running and p.returncode == 0, err
    events = [Event.from_dict(json.loads(x)) for x in [first] + rest.splitlines()]
    assert events[0].media_time < 10 and max(e.media_time for e in events) > 50
    assert "of media" not in err  # no progress line when stderr is not a terminal


@pytest.mark.slow
def test_progress_line_on_a_terminal_for_long_files(llp_clip_60s):
    master, slave = pty.openpty()
    p = subprocess.Popen(CLI + ["parse", str(llp_clip_60s), "--format", "json"], stdout=subprocess.PIPE,
                         stderr=slave, text=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
        elif p.poll() is not None:
            break
    out, _ = p.communicate(timeout=60)
    os.close(master)
    text = seen.decode(errors="replace")
    assert p.returncode == 0 and out.strip()
    assert "of media" in text and "\r" in text and "real time" in text and "/ 60." in text
    assert "note:" in text  # the bundled model's notice, on the same terminal


def test_tsv_is_the_dcase_event_list_of_one_modality(capsys, llp_clip):
    from avparse.stream.tracker import events_to_segments
    from avparse.tools import parse

    assert parse.main([str(llp_clip), "--format", "json"]) == 0
    events = [Event.from_dict(json.loads(x)) for x in capsys.readouterr().out.splitlines()]
    for modality in ("audio", "visual"):
        assert parse.main([str(llp_clip), "--format", "tsv", "--modality", modality]) == 0
        rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
        assert rows and all(len(r) == 3 for r in rows)
        got = sorted((float(a), float(b), c) for a, b, c in rows)
        want = sorted((s.onset, s.offset, s.label) for s in events_to_segments(events) if s.modality == modality)
        assert [g[2] for g in got] == [w[2] for w in want]
        assert [x for g in got for x in g[:2]] == pytest.approx([x for w in want for x in w[:2]], abs=1e-3)


def _bundled_classes() -> tuple:
    """The bundled model's classes, read from the file (not from the registry or a literal)."""
    from importlib.resources import files

    from avparse.core import registry
    from avparse.core.checkpoint import load_model

    return tuple(load_model(files("avparse.core") / "assets" / registry.DEMO.bundled).classes)


def test_the_bundled_model_says_what_it_knows_on_real_input_only(capsys, llp_clip, tmp_path):
    from avparse.tools import parse, run

    classes = _bundled_classes()
    assert parse.main([str(llp_clip)]) == 0
    err = capsys.readouterr().err.splitlines()
    notes = [x for x in err if "note:" in x]
    assert len(notes) == 1 and f"{len(classes)} classes of generated scenes ({', '.join(classes[:4])}, ...)" \
        in notes[0] and "--model llp" in notes[0]
    assert run.main(["--scene", "1", "--scene-duration", "3", "--fast", "--pub", "ipc://" + str(tmp_path / "a"),
                     "--snapshot", "none"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert run.main(["--file", str(llp_clip), "--fast", "--pub", "ipc://" + str(tmp_path / "b"),
                     "--snapshot", "none", "--duration", "30"]) == 0
    assert sum("note:" in x for x in capsys.readouterr().err.splitlines()) == 1


def _small_llp(host, monkeypatch, tmp_path):
    """The llp entry with its files replaced by small generated ones (the registry's names, their own
    checksums), published at addresses that answer 404: only a mirror can serve them."""
    import dataclasses
    import random

    from avparse.core import hub, registry

    files = {}
    for i, real in enumerate((registry.MMIL_NET, registry.VGGISH, registry.VGGISH_PCA, registry.RESNET152,
                              registry.R2PLUS1D)):
        p = tmp_path / real.name
        p.write_bytes(random.Random(i).randbytes(20_000 + i))
        check = dict(git_blob=hub.digest(p, "git-blob")) if real.git_blob else dict(sha256=hub.digest(p, "sha256"))
        files[real.name] = hub.RemoteFile(name=real.name, url=host.url(f"/original/{real.name}"), **check)
        host.files[f"/mirror/{real.name}"] = p.read_bytes()
    fs = lambda *fl: tuple(files[f.name] for f in fl)  # noqa: E731
    monkeypatch.setitem(registry.MODELS, "llp",
                        dataclasses.replace(registry.LLP, checkpoint=files[registry.MMIL_NET.name]))
    monkeypatch.setitem(registry.PROFILE_FILES, "paper", fs(registry.VGGISH, registry.RESNET152, registry.R2PLUS1D))
    return files


def test_models_takes_a_mirror_reports_it_and_fetches_from_it(weight_host, torch_home, tmp_path, monkeypatch, capsys):
    from avparse.tools import models

    files = _small_llp(weight_host, monkeypatch, tmp_path)
    mirror = weight_host.url("/mirror/")
    assert models.main(["llp", "--mirror", mirror]) == 0
    out = capsys.readouterr().out
    assert f"mirror: {mirror} (--mirror)" in out
    for name in ("AVVP-ECCV20-MMIL_Net-ef441b42.pt", "vggish-10086976.pth", "resnet152-394f9c45.pth",
                 "r2plus1d_18-91a641e6.pth"):
        assert f"{mirror}{name}  (mirror of {files[name].url})" in out
    assert weight_host.log == []  # listing downloads nothing
    monkeypatch.setenv("AVPARSE_MIRROR", mirror)
    assert models.main(["llp"]) == 0 and f"mirror: {mirror} (AVPARSE_MIRROR)" in capsys.readouterr().out
    monkeypatch.delenv("AVPARSE_MIRROR")
    assert models.main(["llp"]) == 0 and "mirror: none" in capsys.readouterr().out
    assert models.main(["llp", "--fetch", "--mirror", mirror]) == 0
    capsys.readouterr()
    assert sorted(p for p, _ in weight_host.log) == sorted(f"/mirror/{n}" for n in
                                                           ("AVVP-ECCV20-MMIL_Net-ef441b42.pt", "vggish-10086976.pth",
                                                            "resnet152-394f9c45.pth", "r2plus1d_18-91a641e6.pth"))
    assert models.main(["llp", "--mirror", mirror]) == 0
    out = capsys.readouterr().out
    assert out.count("cached, verified") == 4 and "[missing" not in out
    assert models.main(["llp", "--mirror", "mirror.example/w"]) == 2
    assert capsys.readouterr().err.strip().startswith("avparse: error: --mirror 'mirror.example/w' is not a base")


def test_demo_run_and_parse_take_a_mirror(weight_host, torch_home, tmp_path, capsys, llp_clip):
    """--mirror (and run's TOML key) reaches the download: a mirror without the files is one line naming
    the mirror's address of the first file, exit 2 (the positive path: test_llp_standin.py)."""
    from avparse.tools import demo, parse, run

    mirror = weight_host.url("/empty/")
    want = f"{mirror}AVVP-ECCV20-MMIL_Net-ef441b42.pt: HTTP 404 Not Found"
    toml = tmp_path / "run.toml"
    toml.write_text(f'model = "llp"\nmirror = "{mirror}"\n[[stream]]\nname = "a"\nscene = 1\n')
    calls = [
        lambda: parse.main([str(llp_clip), "--model", "llp", "--mirror", mirror]),
        lambda: run.main(["--scene", "1", "--fast", "--model", "llp", "--mirror", mirror, "--pub",
                          "ipc://" + str(tmp_path / "p1"), "--snapshot", "none"]),
        lambda: run.main(["--config", str(toml), "--fast", "--pub", "ipc://" + str(tmp_path / "p2"), "--snapshot",
                          "none"]),
        lambda: demo.main(["--scene", "1", "--model", "llp", "--mirror", mirror, "--headless", "--out",
                           str(tmp_path / "d.mp4"), "--no-publish", "--quiet", "--duration", "2"]),
    ]
    for call in calls:
        assert call() == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("avparse: error:")]
        assert len(err) == 1 and want in err[0] and "--mirror or AVPARSE_MIRROR" in err[0], err
    assert [p for p, _ in weight_host.log] == ["/empty/AVVP-ECCV20-MMIL_Net-ef441b42.pt"] * len(calls)
    toml.write_text('mirror = "nowhere"\n[[stream]]\nname = "a"\nscene = 1\n')
    assert run.main(["--config", str(toml)]) == 2
    assert "mirror: must be a base address" in capsys.readouterr().err
