"""Bad input: each answered with one clear line and a nonzero exit (or a reported, survived fault),
never a traceback, never garbage events.

Already covered elsewhere (not repeated here): the decoder's own errors (tests/core/test_media.py),
checkpoint validation in the library (tests/core/test_checkpoint.py), NaN features at pack/train
time (tests/train/test_dataset.py, test_trainer.py), mutated TOML files (tests/tools/
test_run_listen.py::test_fuzzed_run_configs_give_user_errors_only), malformed snapshot requests
(tests/stream/test_publisher.py::test_snapshot_service_survives_malformed_and_oversized_requests).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avparse.stream.offline import parse_source
from avparse.stream.clock import VirtualClock
from avparse.stream.pipeline import EventLog, Runtime, pipeline_config
from avparse.stream.sources import FileSource
from avparse.tools import parse as parse_tool

from tests.reliability.conftest import assert_sane_events, free_port

ON = "0.45"  # the random tiny model crosses this often: plenty of events to check


def one_line_error(capsys, rc) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert rc != 0, "a user error must exit nonzero"
    assert len(err) == 1 and err[0].startswith("avparse: error:"), err
    assert "Traceback" not in err[0]
    return err[0]


def parse_file(tiny_model, path, **kw):
    loaded, ext = tiny_model
    cfg = pipeline_config(profile=loaded.profile, tracker=_tracker())
    stats = {}
    events = parse_source(cfg, loaded, ext, FileSource(path, sample_rate=loaded.profile.sample_rate, **kw),
                          stats=stats)
    return events, stats


def _tracker():
    from avparse.stream.tracker import TrackerConfig

    return TrackerConfig(on_threshold=float(ON), off_threshold=float(ON))


# ------------------------------------------------------------------ media files at the command line
@pytest.mark.parametrize("name,needle", [
    ("truncated", "truncated or corrupt"),
    ("empty", "empty file"),
    ("text", "not a media file"),
    ("video_only", "has no audio"),
])
def test_parse_refuses_unusable_media_in_one_line(capsys, media_files, tiny_ckpt, name, needle):
    rc = parse_tool.main([str(media_files[name]), "--model", str(tiny_ckpt), "--json"])
    line = one_line_error(capsys, rc)
    assert needle in line and media_files[name].name in line, line
    assert capsys.readouterr().out == ""  # no events at all


def test_run_refuses_a_video_only_file_instead_of_publishing_nothing(capsys, media_files, tiny_ckpt):
    """A stream without audio never gives a snippet (audio is the clock): before the fix `run`
    published heartbeats forever and `parse` printed nothing, with exit status 0."""
    from avparse.tools import run as run_tool

    rc = run_tool.main(["--file", str(media_files["video_only"]), "--model", str(tiny_ckpt), "--fast",
                        "--pub", f"tcp://127.0.0.1:{free_port()}", "--snapshot", "none"])
    assert "has no audio" in one_line_error(capsys, rc)


def test_corrupt_file_is_a_reported_fault_and_its_events_are_closed(media_files, tiny_model, caplog):
    with caplog.at_level(logging.WARNING):
        events, stats = parse_file(tiny_model, media_files["corrupt"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "corrupt" in warnings[0] and "corrupt.mp4" in warnings[0], warnings
    assert_sane_events(events, duration=2.0, classes=tiny_model[0].classes)
    assert {e.reason for e in events if e.kind == "offset"} <= {"ended", "source-lost"}


# --------------------------------------------------------------- odd but valid media: parsed whole
@pytest.mark.parametrize("name,snippets", [
    ("av", 2), ("audio_only", 2), ("8k_mono", 2), ("96k_8ch", 2), ("vfr", 2), ("4k", 1),
])
@pytest.mark.slow
def test_odd_media_parse_whole_with_sane_events(media_files, tiny_model, name, snippets):
    events, stats = parse_file(tiny_model, media_files[name])
    assert stats["snippets"] == snippets, stats
    assert events, "the random tiny model fires on any input at this threshold"
    assert_sane_events(events, duration=2.0, classes=tiny_model[0].classes)
    st = next(iter(stats["streams"].values()))
    if name in ("vfr", "4k", "av"):
        assert st["frames"] > 0 and st["black_snippets"] == 0, st
    assert st["nonfinite_audio"] == 0


@pytest.mark.slow
def test_4k_frames_reach_the_extractor_at_full_size_then_are_resized(media_files, tiny_model):
    seen = []
    loaded, ext = tiny_model

    def spy(audio, frames):
        seen.append(frames.shape)
        return ext(audio, frames)

    cfg = pipeline_config(profile=loaded.profile)
    parse_source(cfg, loaded, spy, FileSource(media_files["4k"], sample_rate=loaded.profile.sample_rate))
    assert seen and seen[0][2:] == (2160, 3840, 3), seen


# ------------------------------------------------------------------------- NaN / inf in the live path
def test_nan_and_inf_audio_samples_count_as_silence(media_files, tiny_model):
    """A float file with NaN/inf samples: before the fix its whole 10-snippet window came out NaN
    and the tracker silently produced no events. Now those samples are zeros (counted)."""
    events, stats = parse_file(tiny_model, media_files["nan"])
    clean, _ = parse_file(tiny_model, media_files["nan_zeroed"])
    st = next(iter(stats["streams"].values()))
    assert st["nonfinite_audio"] > 0
    assert clean and events == [dataclasses.replace(e, stream="nan") for e in clean]
    assert_sane_events(events, duration=2.0, classes=tiny_model[0].classes)


class _Cheap:
    """A cheap stand-in extractor (audio RMS and zero crossings, frame colour means, motion):
    the point here is the inference stage's guard, not the features."""

    def __call__(self, audio, frames):
        a = torch.from_numpy(np.asarray(audio, np.float32))
        fr = torch.from_numpy(np.asarray(frames)).float() / 255.0
        feat_a = torch.stack([a.pow(2).mean(1).sqrt() * 10, (a[:, 1:] * a[:, :-1] < 0).float().mean(1)], -1)
        return SimpleNamespace(audio=feat_a, v2d=fr.mean(dim=(2, 3)), v3d=fr.std(dim=(1, 2, 3, 4))[:, None])


def _cheap_han():
    from avparse.core.han import HANConfig, build_han

    torch.manual_seed(3)
    return build_han(HANConfig(audio_dim=2, v2d_dim=3, v3d_dim=1, frames_per_snippet=8, d_model=8,
                               dim_feedforward=8, dropout=0.0, num_classes=5)).eval()


class _Poisoned(_Cheap):
    """Snippets whose audio is all exactly 0.25 get NaN audio features and inf motion features."""

    def __call__(self, audio, frames):
        f = super().__call__(audio, frames)
        hit = torch.from_numpy(np.all(np.asarray(audio) == 0.25, axis=1))
        f.audio[hit] = float("nan")
        f.v3d[hit] = float("inf")
        return f


class _Zeroed(_Cheap):
    def __call__(self, audio, frames):
        f = super().__call__(audio, frames)
        hit = torch.from_numpy(np.all(np.asarray(audio) == 0.25, axis=1))
        f.audio[hit] = 0.0  # what _Poisoned spoilt, zeroed; the rest as it was
        f.v3d[hit] = 0.0
        return f


class _ListSource:
    """Eight snippets of audio (snippet 3 constant 0.25) and frames, as one stream."""

    name = "s"
    kinds = ("audio", "video")

    def open(self):
        pass

    def close(self):
        pass

    def read(self):
        from avparse.stream.types import AudioChunk, EndOfStream, VideoFrame

        rng = np.random.default_rng(5)
        for k in range(8):
            x = (0.25 if k == 3 else rng.normal(0, 0.1, 16000)) * np.ones(16000, np.float32)
            for j in range(8):
                yield VideoFrame("s", k + (j + 0.5) / 8, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
            yield AudioChunk("s", float(k), x.astype(np.float32), 16000)
        yield EndOfStream("s", 8.0)


def _cheap_config():
    profile = SimpleNamespace(sample_rate=16000, snippet_seconds=1.0, frames_per_snippet=8, frame_size=16)
    return pipeline_config(profile=profile, tracker=_tracker(), window=8, max_batch=4)


CHEAP_CLASSES = ("a", "b", "c", "d", "e")


def test_nonfinite_features_are_zeroed_and_counted_and_publish_cleanly():
    """A NaN/inf feature (an fp16 overflow, a broken extractor) would reach every window it is in
    through attention; it is replaced by zeros: the events equal those with zero features there,
    and every one of them goes out through a real Publisher."""
    from avparse.stream.publisher import Publisher, PublisherConfig

    han = _cheap_han()
    stats = {}
    with pytest.warns(RuntimeWarning, match=r"non-finite audio/v3d features; they are replaced by zeros"):
        got = parse_source(_cheap_config(), han, _Poisoned(), _ListSource(), classes=CHEAP_CLASSES, stats=stats)
    want = parse_source(_cheap_config(), han, _Zeroed(), _ListSource(), classes=CHEAP_CLASSES)
    assert stats["inference"]["nonfinite_features"] == 1
    assert got and got == want
    assert_sane_events(got, duration=8.0, classes=CHEAP_CLASSES)
    pub = Publisher(PublisherConfig(pub=f"tcp://127.0.0.1:{free_port()}", snapshot=None)).open()
    try:
        for e in got:
            pub.emit(e)
        assert pub.counters["events"] == len(got) and pub.counters.get("encode_errors", 0) == 0
    finally:
        pub.close()


def test_a_model_that_outputs_nan_gives_no_events_and_says_so():
    class NaNModel(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, a, v2d, v3d):
            out = self.m(a, v2d, v3d)
            return SimpleNamespace(**{k: torch.full_like(getattr(out, k), float("nan"))
                                      for k in ("frame_prob", "global_prob", "a_prob", "v_prob")})

    log = EventLog()
    rt = Runtime(_cheap_config(), NaNModel(_cheap_han()), _Cheap(), [_ListSource()], clock=VirtualClock(),
                 classes=CHEAP_CLASSES)
    rt.add_sink(log)
    st = rt.run()
    assert log.events == []
    assert st["inference"]["nonfinite_probs"] >= st["inference"]["windows"] > 0


# ------------------------------------------------------------------------------------ checkpoints
def _cut(src, dst):
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


def _resave(src, dst, edit):
    d = torch.load(src, map_location="cpu", weights_only=True)
    edit(d)
    torch.save(d, dst)
    return dst


@pytest.mark.parametrize("what,make,needle", [
    ("truncated", lambda src, dst: _cut(src, dst), "truncated"),
    ("newer version", lambda src, dst: _resave(src, dst, lambda d: d.update(version=d["version"] + 1)),
     "version"),
    ("unknown profile", lambda src, dst: _resave(src, dst, lambda d: d["profile"].update(name="nonesuch")),
     "profile"),
    ("a tensor, not a checkpoint", lambda src, dst: torch.save(torch.zeros(3), dst) or dst, "checkpoint"),
    ("another model's classes", lambda src, dst: _resave(src, dst, lambda d: d.update(classes=["a", "b"])),
     "class"),
])
def test_parse_refuses_bad_checkpoints_in_one_line(capsys, media_files, tiny_ckpt, tmp_path, what, make, needle):
    bad = make(tiny_ckpt, tmp_path / "bad.pt")
    rc = parse_tool.main([str(media_files["av"]), "--model", str(bad)])
    line = one_line_error(capsys, rc)
    assert "bad.pt" in line and needle in line.lower(), line


def test_run_refuses_a_checkpoint_of_another_profile(capsys, tiny_ckpt):
    from avparse.tools import run as run_tool

    rc = run_tool.main(["--scene", "1", "--model", str(tiny_ckpt), "--profile", "paper", "--fast",
                        "--pub", f"tcp://127.0.0.1:{free_port()}", "--snapshot", "none"])
    line = one_line_error(capsys, rc)
    assert "profile" in line and "lite" in line, line


@pytest.mark.slow
def test_parse_of_a_file_corrupt_mid_way_prints_its_events_then_fails(capsys, media_files, tiny_ckpt):
    rc = parse_tool.main([str(media_files["corrupt"]), "--model", str(tiny_ckpt), "--json", "--on", str(ON)])
    out, err = capsys.readouterr()
    lines = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    assert rc == 1
    assert lines and all(ln["type"] in ("onset", "offset") for ln in lines)   # nothing lost before the damage
    errors = [ln for ln in err.splitlines() if ln.startswith("avparse: error:")]
    assert len(errors) == 1 and "corrupt.mp4" in errors[0] and "stopped at" in errors[0], err
    assert "Traceback" not in err
