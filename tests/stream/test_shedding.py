"""A real-time runtime that cannot keep up sheds snippets instead of falling ever further behind.

Real parts: the bundled model and its lite extractors, the real LLP clip looped by FFmpeg and
played by a paced FileSource at 40x real time, which no CPU here analyses fast enough."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_clip(llp_clip_60s):
    return llp_clip_60s


def _run(parser, clip, max_lag):
    from avparse.stream.clock import RealClock
    from avparse.stream.pipeline import EventLog, Runtime
    from avparse.stream.sources import FileSource

    clock = RealClock()
    src = FileSource(clip, sample_rate=parser.profile.sample_rate, paced=True, speed=40.0, clock=clock, name="x")
    rt = Runtime(parser.config(max_lag=max_lag), parser.loaded, parser.extractor, [src], clock=clock)
    seen = []
    rt.on_notice = seen.append
    log = EventLog()
    rt.add_sink(log)
    return rt.run(), seen, log.events


def test_shedding_keeps_the_delay_bounded(long_clip):
    import avparse

    parser = avparse.load("demo", progress=None)
    st, notices, events = _run(parser, long_clip, max_lag=0.3)
    total = 60
    assert st["drops"]["shed_snippets"] > 0 and st["snippets"] + st["drops"]["shed_snippets"] == total
    assert st["inference"]["snippets"] == st["snippets"]  # shed snippets never reach the extractors
    assert sum(n.startswith("behind real time") for n in notices) == 1  # said once
    assert events and all(e.media_time <= total for e in events)
    base, _, _ = _run(parser, long_clip, max_lag=None)  # the same input without shedding
    assert base["drops"]["shed_snippets"] == 0 and base["snippets"] == total
    assert st["input_lag"]["max"] < base["input_lag"]["max"]
