"""Snippet assembly: alignment by media time, audio gaps, late frames, drift."""

from __future__ import annotations

import numpy as np
import pytest

from avparse.stream.assembler import AssemblerConfig, SnippetAssembler
from avparse.stream.grid import SnippetGrid
from avparse.stream.types import AudioChunk, EndOfStream, VideoFrame

SR = 16000
BLOCK = 320  # 20 ms


def frame_image(i: int) -> np.ndarray:
    """A tiny frame whose pixels spell its index."""
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0, 0], img[0, 0, 1] = i % 256, i // 256
    return img


def frame_index(img: np.ndarray) -> int:
    return int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])


def signal(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) % 1000) / 1000.0 + 0.001


def audio_chunks(seconds: float, *, drop=(), t_scale=1.0, wall=None):
    x = signal(int(seconds * SR))
    for b in range(len(x) // BLOCK):
        if b in drop:
            continue
        t = b * BLOCK / SR
        yield AudioChunk("s", t * t_scale, x[b * BLOCK:(b + 1) * BLOCK], SR, wall(t) if wall else 0.0)


def video_frames(seconds: float, fps: float, *, t_map=lambda t: t, wall=None):
    n = int(seconds * fps)
    for i in range(n):
        t = i / fps
        yield VideoFrame("s", t_map(t), frame_image(i), wall(t) if wall else 0.0)


def interleave(audio, video):
    """Chunks in capture order (by true time): what a combined source yields."""
    items = [(c.wall_time or c.t, 0, c) for c in audio] + [(f.wall_time or f.t, 1, f) for f in video]
    items.sort(key=lambda x: (x[0], x[1]))
    return [c for _, _, c in items]


def run(asm, chunks, end=True):
    out = []
    for c in chunks:
        out += asm.push(c)
    if end:
        out += asm.push(EndOfStream("s", 0.0))
    return out


def expected_slots(k, fps, hop=1.0, F=8):
    centres = k * hop + (np.arange(F) + 0.5) / F
    return [int(np.floor(c * fps + 0.5)) for c in centres]


@pytest.mark.parametrize("fps", [29.97, 7.0])
def test_frames_chosen_by_media_time(fps):
    asm = SnippetAssembler(AssemblerConfig(), grid=SnippetGrid(sample_rate=SR), stream="s")
    out = run(asm, interleave(audio_chunks(4.0), video_frames(4.2, fps)))
    assert [s.index for s in out] == [0, 1, 2, 3]
    for s in out:
        assert s.t0 == pytest.approx(s.index * 1.0)
        assert s.audio.shape == (SR,) and s.frames.shape == (8, 2, 2, 3)
        assert [frame_index(f) for f in s.frames] == expected_slots(s.index, fps)
        np.testing.assert_array_equal(s.audio, signal(4 * SR)[s.index * SR:(s.index + 1) * SR])
        assert s.missing_frames == 0 and s.missing_audio == 0
    st = asm.stats()
    assert st["snippets"] == 4 and st["audio_gaps"] == 0 and st["late_frames"] == 0


def test_overlapping_hop_grid():
    asm = SnippetAssembler(AssemblerConfig(), grid=SnippetGrid(sample_rate=SR, hop=0.25), stream="s")
    out = run(asm, interleave(audio_chunks(3.0), video_frames(3.2, 29.97)), end=False)
    # snippets every 0.25 s, each 1 s long, as soon as their audio is in: t0 = 0 .. 2.0
    assert [s.t0 for s in out] == pytest.approx([k * 0.25 for k in range(9)])
    x = signal(3 * SR)
    for s in out:
        a = int(round(s.t0 * SR))
        np.testing.assert_array_equal(s.audio, x[a:a + SR])
        assert [frame_index(f) for f in s.frames] == expected_slots(s.index, 29.97, hop=0.25)


def test_audio_gap_is_zero_filled_and_grid_does_not_shift():
    asm = SnippetAssembler(AssemblerConfig(), grid=SnippetGrid(sample_rate=SR), stream="s")
    dropped = range(75, 81)  # 1.5 .. 1.62 s
    out = run(asm, interleave(audio_chunks(3.0, drop=dropped), video_frames(3.2, 25)))
    assert [s.t0 for s in out] == [0.0, 1.0, 2.0]
    x = signal(3 * SR)
    gap = slice(75 * BLOCK - SR, 81 * BLOCK - SR)
    s1 = out[1].audio
    assert np.all(s1[gap] == 0)
    keep = np.ones(SR, bool)
    keep[gap] = False
    np.testing.assert_array_equal(s1[keep], x[SR:2 * SR][keep])
    np.testing.assert_array_equal(out[2].audio, x[2 * SR:])  # after the gap: still on the grid
    assert out[1].missing_audio == 6 * BLOCK and out[0].missing_audio == out[2].missing_audio == 0
    st = asm.stats()
    assert st["audio_gaps"] == 1 and st["missing_audio"] == 6 * BLOCK


def test_overlapping_audio_is_trimmed():
    asm = SnippetAssembler(AssemblerConfig(video=False), grid=SnippetGrid(sample_rate=SR), stream="s")
    x = signal(2 * SR)
    chunks = [AudioChunk("s", 0.0, x[:SR], SR), AudioChunk("s", 0.9, x[int(0.9 * SR):2 * SR], SR)]
    out = run(asm, chunks)
    assert len(out) == 2
    np.testing.assert_array_equal(out[1].audio, x[SR:2 * SR])
    assert asm.stats()["overlap_audio"] == int(0.1 * SR)


def test_snippet_waits_for_frames_that_arrive_a_little_late():
    cfg = AssemblerConfig(late_tolerance=0.5)
    asm = SnippetAssembler(cfg, grid=SnippetGrid(sample_rate=SR), stream="s")
    audio = list(audio_chunks(4.0))
    video = list(video_frames(4.2, 29.97))
    # frames arrive 0.3 s after the audio of the same media time
    items = [(c.t, 0, c) for c in audio] + [(f.t + 0.3, 1, f) for f in video]
    items.sort(key=lambda x: (x[0], x[1]))
    out = run(asm, [c for _, _, c in items])
    assert [s.index for s in out] == [0, 1, 2, 3]
    for s in out:
        assert [frame_index(f) for f in s.frames] == expected_slots(s.index, 29.97)
    st = asm.stats()
    assert st["video_timeouts"] == 0 and st["late_frames"] == 0 and st["missing_frames"] == 0


def test_frames_later_than_tolerance_do_not_stall_and_are_counted():
    cfg = AssemblerConfig(late_tolerance=0.2)
    asm = SnippetAssembler(cfg, grid=SnippetGrid(sample_rate=SR), stream="s")
    audio = list(audio_chunks(5.0))
    video = list(video_frames(5.0, 25))
    items = [(c.t, 0, c) for c in audio] + [(f.t + 1.5, 1, f) for f in video]  # 1.5 s behind
    items.sort(key=lambda x: (x[0], x[1]))
    emitted_at = []  # audio time at which each snippet came out
    last_audio = 0.0
    for _, _, c in items:
        if isinstance(c, AudioChunk):
            last_audio = c.end
        for s in asm.push(c):
            emitted_at.append((s.index, last_audio))
    for k, at in emitted_at:
        assert at <= k + 1.0 + 0.2 + BLOCK / SR + 1e-9  # never waited past the tolerance
    st = asm.stats()
    assert st["video_timeouts"] >= 3
    assert st["late_frames"] > 0
    assert st["black_snippets"] >= 1  # the first snippet had no frame at all


def test_no_video_at_all_never_stalls():
    asm = SnippetAssembler(AssemblerConfig(late_tolerance=0.5), grid=SnippetGrid(sample_rate=SR, frame_size=(4, 6)),
                           stream="s")
    out = []
    for c in audio_chunks(3.0):
        out += asm.push(c)
    assert [s.index for s in out] == [0, 1]  # snippet 2 needs 0.5 s more audio before it gives up
    assert out[0].frames.shape == (8, 4, 6, 3) and not out[0].frames.any()
    assert out[0].missing_frames == 8
    out += asm.flush()
    assert [s.index for s in out] == [0, 1, 2]
    assert asm.stats()["black_snippets"] == 3


def test_tail_is_zero_padded_on_flush():
    asm = SnippetAssembler(AssemblerConfig(video=False), grid=SnippetGrid(sample_rate=SR), stream="s")
    out = run(asm, audio_chunks(2.6))
    assert [s.index for s in out] == [0, 1, 2]
    assert np.all(out[2].audio[int(0.6 * SR):] == 0) and out[2].audio[: int(0.6 * SR)].all()
    assert asm.stats()["padded_tail"] == 1
    asm.reset()
    assert run(asm, audio_chunks(2.3)) and asm.stats()["padded_tail"] == 0


def test_camera_clock_drift_is_mapped_onto_audio_time():
    rng = np.random.default_rng(0)
    fps, secs = 29.97, 20.0
    # camera clock: starts at 100 s and runs 0.3 % fast; both stamped with a jittery capture time
    cam = lambda t: 100.0 + 1.003 * t
    wall = lambda t: 5000.0 + t + rng.uniform(0, 0.004)
    audio = list(audio_chunks(secs, wall=wall))
    video = list(video_frames(secs + 0.5, fps, t_map=cam, wall=wall))
    chunks = interleave(audio, video)

    grid = SnippetGrid(sample_rate=SR)
    synced = run(SnippetAssembler(AssemblerConfig(sync="capture"), grid=grid, stream="s"), chunks)
    naive = run(SnippetAssembler(AssemblerConfig(sync="media"), grid=grid, stream="s"), chunks)
    assert len(synced) == len(naive) == int(secs)
    exact = near = total = 0
    for s in synced:
        got = [frame_index(f) for f in s.frames]
        want = expected_slots(s.index, fps)
        total += len(want)
        exact += sum(g == w for g, w in zip(got, want))
        near += sum(abs(g - w) <= 1 for g, w in zip(got, want))
    assert near == total and exact >= 0.8 * total
    # without the mapping every slot of a snippet takes the camera's oldest buffered frame
    # (its clock is 100 s ahead): one frame repeated, almost never the right one
    assert all(len({frame_index(f) for f in s.frames}) == 1 for s in naive)
    wrong = sum(frame_index(f) != w for s in naive for f, w in zip(s.frames, expected_slots(s.index, fps)))
    assert wrong >= 0.9 * total


def test_tail_with_overlapping_hop_ends():
    asm = SnippetAssembler(AssemblerConfig(video=False), grid=SnippetGrid(sample_rate=SR, hop=0.5), stream="s")
    out = run(asm, audio_chunks(2.6))
    # complete: t0 = 0, 0.5, 1.0, 1.5; tails with >= 0.5 s of real audio: 2.0 (0.6 s); not 2.5 (0.1 s)
    assert [s.t0 for s in out] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert asm.stats()["padded_tail"] == 1


def test_clock_jump_skips_snippets_instead_of_zero_filling():
    asm = SnippetAssembler(AssemblerConfig(video=False, max_gap=5.0), grid=SnippetGrid(sample_rate=SR), stream="s")
    x = signal(SR)
    chunks = [AudioChunk("s", 0.0, x, SR), AudioChunk("s", 1.0, x[: SR // 2], SR),  # 1.5 s, then a jump
              AudioChunk("s", 3600.25, x, SR), AudioChunk("s", 3601.25, x, SR)]
    out = run(asm, chunks)
    assert [s.t0 for s in out] == [0.0, 1.0, 3600.0, 3601.0]  # the grid's phase is kept
    assert np.all(out[1].audio[SR // 2:] == 0) and np.all(out[2].audio[: SR // 4] == 0)
    np.testing.assert_array_equal(out[2].audio[SR // 4:], x[: SR - SR // 4])
    st = asm.stats()
    assert st["audio_jumps"] == 1 and st["skipped_snippets"] == 3598


def test_frame_buffer_is_bounded_when_audio_stalls():
    asm = SnippetAssembler(AssemblerConfig(max_frames=50), grid=SnippetGrid(sample_rate=SR), stream="s")
    for f in video_frames(10.0, 30.0):
        assert asm.push(f) == []
    assert asm.stats()["dropped_frames"] == 250
