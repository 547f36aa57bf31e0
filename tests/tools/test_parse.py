"""`avparse parse` and live-equals-offline on the real LLP clip through FFmpeg."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from avparse.core.events import Event
from avparse.core.han import HANConfig, build_han
from avparse.core.labels import LLP_CLASSES
from avparse.stream import wire
from avparse.stream.clock import RealClock, VirtualClock
from avparse.stream.offline import parse_source
from avparse.stream.pipeline import EventLog, Runtime, pipeline_config
from avparse.stream.sources import FileSource
from avparse.tools import parse
from avparse.tools.harness.standins import StatsExtractor, stand_in


def one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("avparse: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A lite-profile checkpoint with a small random HAN and random lite extractors bundled."""
    from avparse.core.checkpoint import save_checkpoint
    from avparse.core.extractors import build_extractor
    from avparse.core.profiles import get_profile

    p = get_profile("lite")
    torch.manual_seed(0)
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                              frames_per_snippet=p.frames_per_snippet, d_model=16, dim_feedforward=16, dropout=0.0))
    ext = build_extractor(p, weights="random")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, han, classes=LLP_CLASSES, profile=p,
                    extractor_state={k: v.detach().cpu() for k, v in ext.state_dict().items()})
    return path


def test_missing_model_is_one_line(capsys, tmp_path):
    rc = parse.main([str(tmp_path / "x.mp4"), "--model", str(tmp_path / "nope.pt")])
    assert "nope.pt" in one_line_error(capsys, rc)


def test_bad_checkpoint_is_one_line(capsys, tmp_path, llp_clip):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    rc = parse.main([str(llp_clip), "--model", str(bad)])
    assert "bad.pt" in one_line_error(capsys, rc)


def test_missing_media_is_one_line(capsys, tmp_path, tiny_checkpoint):
    rc = parse.main([str(tmp_path / "missing.mp4"), "--model", str(tiny_checkpoint)])
    assert "missing.mp4" in one_line_error(capsys, rc)


def test_not_media_is_one_line(capsys, tmp_path, tiny_checkpoint):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    rc = parse.main([str(junk), "--model", str(tiny_checkpoint)])
    assert "junk.mp4" in one_line_error(capsys, rc)


def test_bad_options_are_one_line(capsys, tiny_checkpoint, llp_clip):
    rc = parse.main([str(llp_clip), "--model", str(tiny_checkpoint), "--on", "0.4", "--off", "0.6"])
    assert "off_threshold" in one_line_error(capsys, rc)
    rc = parse.main([str(llp_clip), "--model", str(tiny_checkpoint), "--hop", "0.3"])
    assert "hop" in one_line_error(capsys, rc)


def test_no_model_and_no_demo(capsys, llp_clip, monkeypatch):
    import dataclasses

    from avparse.core import registry

    monkeypatch.setitem(registry.MODELS, "demo", dataclasses.replace(registry.DEMO, bundled="no-such-demo-model.pt"))
    rc = parse.main([str(llp_clip)])
    assert "--model" in one_line_error(capsys, rc)


@pytest.mark.slow
def test_parse_llp_clip_with_real_checkpoint_equals_runtime(capsys, tiny_checkpoint, llp_clip):
    """The CLI end to end (checkpoint, bundled lite extractors, FFmpeg), and the Runtime on the
    same file with the same model gives the same events."""
    rc = parse.main([str(llp_clip), "--model", str(tiny_checkpoint), "--json"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    events = [Event.from_dict(wire.decode_body(x.encode())) for x in lines]   # the wire body, checked
    assert events and all(e.stream == "BjCEufrlXm4" for e in events)
    assert max(e.media_time for e in events) <= 10.0
    opened = {e.key for e in events if e.kind == "onset"}
    assert opened == {e.key for e in events if e.kind == "offset"}  # every onset is closed

    from avparse.core.checkpoint import load_model
    from avparse.core.extractors import build_extractor

    loaded = load_model(tiny_checkpoint)
    ext = build_extractor(loaded.profile, weights=loaded.extractor_state)
    src = FileSource(llp_clip, sample_rate=loaded.profile.sample_rate)
    rt = Runtime(pipeline_config(profile=loaded.profile), loaded, ext, [src], clock=VirtualClock())
    log = EventLog()
    rt.add_sink(log)
    rt.run()
    assert log.events == events
    text = parse.format_event(events[0])
    assert events[0].label in text and events[0].kind in text


# ---------------------------------------------------------------------------------------------
# live equals offline on the real clip, with a cheap stand-in extractor (the point is the pipeline)
@pytest.mark.parametrize("hop,lookahead", [(1.0, 0), (0.5, 1)])
@pytest.mark.slow
def test_live_equals_offline_on_llp_clip(llp_clip, hop, lookahead):
    m = stand_in(LLP_CLASSES)
    han, ext, profile = m.model, StatsExtractor(), m.profile
    cfg = pipeline_config(profile=profile, hop=hop, window=10, lookahead=lookahead, max_batch=4)
    offline = parse_source(cfg, han, ext, FileSource(llp_clip, sample_rate=16000), classes=LLP_CLASSES)
    assert offline, "the stand-in model should find some events on the clip"
    assert {e.reason for e in offline if e.kind == "offset"} <= {"ended", "end-of-stream"}

    # as fast as possible, on a virtual clock: exactly the same events
    log = EventLog()
    rt = Runtime(cfg, han, ext, [FileSource(llp_clip, sample_rate=16000)], clock=VirtualClock(),
                 classes=LLP_CLASSES)
    rt.add_sink(log)
    rt.run()
    assert log.events == offline

    if hop != 1.0:
        return
    # paced by the source on a simulated clock (instant, but with pacing time stamps)
    log = EventLog()
    src = FileSource(llp_clip, sample_rate=16000, paced=True, clock=VirtualClock())
    rt = Runtime(cfg, han, ext, [src], clock=VirtualClock(), classes=LLP_CLASSES)
    rt.add_sink(log)
    rt.run()
    assert log.events == offline


def test_live_real_pacing_equals_offline_on_llp_clip(llp_clip):
    m = stand_in(LLP_CLASSES)
    han, ext, profile = m.model, StatsExtractor(), m.profile
    cfg = pipeline_config(profile=profile, window=10, lookahead=1, max_batch=4, max_wait=0.02)
    offline = parse_source(cfg, han, ext, FileSource(llp_clip, sample_rate=16000), classes=LLP_CLASSES)
    clock = RealClock()
    src = FileSource(llp_clip, sample_rate=16000, paced=True, clock=clock, speed=5.0)  # 10 s clip in 2 s
    rt = Runtime(cfg, han, ext, [src], clock=clock, classes=LLP_CLASSES)
    log = EventLog()
    rt.add_sink(log)
    st = rt.run()
    # batches differ with real timing; decisions and times must not
    key = lambda e: (e.kind, e.label, e.modality, e.media_time, e.decided_at, e.reason, e.onset_time)
    assert [key(e) for e in log.events] == [key(e) for e in offline]
    np.testing.assert_allclose([e.score for e in log.events], [e.score for e in offline], atol=1e-4)
    assert st["snippets"] == 10 and st["streams"]["BjCEufrlXm4"]["video_timeouts"] == 0
