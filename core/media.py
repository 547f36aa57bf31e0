"""The shared media decoder: FFmpeg and ffprobe run as subprocesses.

Everything that reads a media file (feature extraction, offline parsing, the
live file source) goes through this module, so audio and video are decoded
the same way everywhere:

* ``probe(path)`` -> :class:`MediaInfo` (one ffprobe call).
* ``read_audio(path, sample_rate)`` -> float32 mono samples, resampled by
  FFmpeg, downmixed here (mean of the channels).
* ``iter_audio(path, sample_rate, block)`` -> ``(t, samples)`` blocks.
* ``iter_frames(path, fps=None, size=None)`` -> ``(pts_seconds, RGB image)``
  with the real presentation timestamps (FFmpeg's ``showinfo`` filter reports
  them; frames pass through unchanged, so variable frame rate stays variable).
* ``iter_av(path, ...)`` -> audio blocks and video frames of one file merged
  in media-time order (two FFmpeg processes, read in step).

Media time: FFmpeg shifts every stream of a file by the same offset (the
file's start time), so t = 0 is the file's start and audio and video stay in
sync. Audio is padded/trimmed by ``aresample=async=1:first_pts=0`` so that
sample ``i`` is at ``i / sample_rate`` even when the audio track starts late.

Every failure a user can cause is a :class:`MediaError` whose message names
the file and the cause (missing, empty, not media, truncated or corrupt, no
audio track, no video track, FFmpeg missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np


class MediaError(Exception):
    """A media file cannot be decoded; the message says which file and why."""


@dataclass(frozen=True)
class MediaInfo:
    path: str
    duration: float        # seconds (container duration; 0.0 when unknown)
    has_audio: bool        # at least one audio stream
    has_video: bool        # at least one video stream (cover art does not count)
    sample_rate: int       # native rate of the first audio stream (0 without audio)
    channels: int          # channels of the first audio stream (0 without audio)
    fps: float             # average frame rate of the first video stream (0.0 without video)
    width: int             # of the first video stream (0 without video)
    height: int            # of the first video stream (0 without video)
    num_frames: int = 0    # frames of the first video stream when the container says (else 0)
    start_time: float = 0.0  # container start time (s); media time 0 is this instant


# FFmpeg's messages that mean "the data ends early or is damaged".
_CORRUPT_PATTERNS = (
    "partial file",
    "Invalid data found when processing input",
    "Error while decoding",
    "error reading header",
    "corrupt",
    "Truncat",
    "truncat",
    "Packet corrupt",
    "missing picture",
    "Invalid NAL",
    "decode_slice_header error",
    "Input buffer exhausted",
)


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise MediaError(f"{name} is not installed or not on PATH: install FFmpeg (apt-get install ffmpeg)")
    return exe


def _check_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if p.is_dir():
        raise MediaError(f"{p}: is a directory, not a media file")
    if p.is_file() and p.stat().st_size == 0:
        raise MediaError(f"{p}: empty file (0 bytes), not a media file")
    return p


def is_url(path) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a file name: the one test every
    tool and source uses."""
    return isinstance(path, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _looks_corrupt(stderr: str) -> bool:
    return any(p in stderr for p in _CORRUPT_PATTERNS)


def _has_mp4_header(p: Path) -> bool:
    """True when the file starts like an ISO-BMFF (mp4/mov) file: a box we know."""
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")


def _fraction(s) -> float:
    if not s or s in ("0/0", "N/A"):
        return 0.0
    if "/" in str(s):
        n, d = str(s).split("/", 1)
        return float(n) / float(d) if float(d) else 0.0
    return float(s)


def probe(path) -> MediaInfo:
    """Describe a media file (streams, duration, rate, size) with ffprobe."""
    src = str(path) if is_url(path) else str(_check_file(path))
    cmd = [_tool("ffprobe"), "-v", "error", "-show_format", "-show_streams", "-of", "json", src]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        err = r.stderr
        if "moov atom not found" in err and _has_mp4_header(Path(src)):
            raise MediaError(f"{src}: truncated or corrupt media file (moov atom not found: the file was cut short)")
        if "Invalid data found" in err or "moov atom not found" in err:
            raise MediaError(f"{src}: not a media file (FFmpeg cannot read it: invalid data)")
        raise MediaError(f"{src}: cannot read media file: {_last_line(err)}")
    try:
        d = json.loads(r.stdout or "{}")
    except json.JSONDecodeError:
        raise MediaError(f"{src}: ffprobe gave unreadable output") from None
    streams = d.get("streams", [])
    fmt = d.get("format", {})
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [
        s for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic", 0)
    ]
    if not audio and not video:
        raise MediaError(f"{src}: not a media file (no audio or video stream found)")
    a = audio[0] if audio else {}
    v = video[0] if video else {}
    fps = _fraction(v.get("avg_frame_rate")) or _fraction(v.get("r_frame_rate")) if v else 0.0
    try:
        duration = float(fmt.get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    try:
        start = float(fmt.get("start_time") or 0.0)
    except ValueError:
        start = 0.0
    return MediaInfo(
        path=src,
        duration=duration,
        has_audio=bool(audio),
        has_video=bool(video),
        sample_rate=int(a.get("sample_rate", 0) or 0),
        channels=int(a.get("channels", 0) or 0),
        fps=float(fps),
        width=int(v.get("width", 0) or 0),
        height=int(v.get("height", 0) or 0),
        num_frames=int(v.get("nb_frames", 0) or 0) if str(v.get("nb_frames", "0")).isdigit() else 0,
        start_time=start,
    )


class _StderrReader:
    """Drains a process's stderr in a thread (so FFmpeg never blocks on it),
    keeps the tail for error messages and hands showinfo's pts to a deque."""

    _PTS = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:\s*(-?[\d.]+(?:e-?\d+)?)")

    def __init__(self, stream, *, want_pts: bool = False):
        self.lines: deque[str] = deque(maxlen=200)
        self.pts: deque[float] = deque()
        self.want_pts = want_pts
        self.cond = threading.Condition()
        self.done = False
        self.corrupt = False
        self.problem = ""       # the last line that reported damage
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream):
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if self.want_pts and "Parsed_showinfo" in line:
                    m = self._PTS.search(line)
                    if m:
                        with self.cond:
                            self.pts.append(float(m.group(3)))
                            self.cond.notify_all()
                    continue
                if _looks_corrupt(line):
                    self.corrupt = True
                    self.problem = line
                elif self.want_pts and "rror" not in line:
                    continue  # info-level chatter (stream maps, stats): keep only problems
                self.lines.append(line)
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def next_pts(self, timeout: float = 10.0) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: self.pts or self.done, timeout=timeout)
            if self.pts:
                return self.pts.popleft()
            return None

    def join(self, timeout: float = 5.0):
        self._t.join(timeout)

    def text(self) -> str:
        return "\n".join(self.lines)


# Decoders run in their own session (start_new_session): Ctrl-C in a terminal signals the whole
# foreground process group, and a decoder killed by it would end its stream as "source-lost" before
# the runtime stops it as "stopped". The reader stops them (_stop); if avparse dies, their next write
# to the closed pipe ends them.


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass


def _read_exact(f, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _finish(proc, err: _StderrReader, src: str, what: str, strict: bool) -> None:
    """After the last byte: raise MediaError if FFmpeg failed or reported damage."""
    rc = proc.wait()
    err.join()
    if rc != 0:
        text = err.text()
        if err.corrupt:
            raise MediaError(f"{src}: truncated or corrupt media file ({what}: {err.problem})")
        raise MediaError(f"{src}: FFmpeg failed decoding {what}: {_last_line(text)}")
    if strict and err.corrupt:
        raise MediaError(f"{src}: truncated or corrupt media file ({what}: {err.problem})")


def _audio_cmd(src: str, sample_rate: int, channels: int) -> list[str]:
    return [
        _tool("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error", "-i", src,
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-af", f"aresample={int(sample_rate)}:async=1:first_pts=0",
        "-ac", str(max(1, channels)), "-ar", str(int(sample_rate)),
        "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]


def _open_audio(path, sample_rate: int, info: MediaInfo | None = None):
    info = info or probe(path)
    if not info.has_audio:
        raise MediaError(f"{info.path}: no audio track (the file has only video)")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    ch = max(1, info.channels)
    proc = subprocess.Popen(_audio_cmd(info.path, sample_rate, ch), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    return info, ch, proc, _StderrReader(proc.stderr)


def iter_audio(path, sample_rate: int, block: int, *, strict: bool = True,
               info: MediaInfo | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(t, samples)``: float32 mono blocks of ``block`` samples (the
    last may be shorter) at ``sample_rate``; ``t`` is the media time of the
    block's first sample. ``strict``: raise MediaError at the end when FFmpeg
    reported a truncated or damaged file (otherwise decode what is there).
    ``info``: the file's ``probe`` (given: not probed again)."""
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
    info, ch, proc, err = _open_audio(path, sample_rate, info)
    frame_bytes = 4 * ch
    n = 0
    try:
        while True:
            raw = _read_exact(proc.stdout, block * frame_bytes)
            usable = len(raw) - len(raw) % frame_bytes
            if usable:
                x = np.frombuffer(raw[:usable], dtype="<f4").reshape(-1, ch)
                mono = x.mean(axis=1, dtype=np.float32) if ch > 1 else x[:, 0].copy()
                yield n / sample_rate, mono.astype(np.float32, copy=False)
                n += len(mono)
            if len(raw) < block * frame_bytes:
                break
        _finish(proc, err, info.path, "audio", strict)
        if n == 0:
            raise MediaError(f"{info.path}: the audio track decodes to no samples (truncated or corrupt file)")
    finally:
        _stop(proc)


def read_audio(path, sample_rate: int, *, strict: bool = True) -> np.ndarray:
    """The whole audio track as float32 mono at ``sample_rate`` (FFmpeg
    resamples; channels are averaged). Sample i is at media time i / rate."""
    blocks = [b for _, b in iter_audio(path, sample_rate, 1 << 16, strict=strict)]
    return np.concatenate(blocks).astype(np.float32, copy=False)


def _parse_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    w, h = size
    return int(w), int(h)


def iter_frames(path, *, fps: float | None = None, size=None, strict: bool = True,
                pts_timeout: float = 30.0, info: MediaInfo | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(pts_seconds, image)``: uint8 RGB [H, W, 3] video frames with
    their real presentation times (variable frame rate stays variable).

    ``fps``: resample to a constant rate first (FFmpeg's fps filter; frame k
    is then at k / fps). ``size``: ``(width, height)`` or an int for a square;
    the image is scaled to it (no cropping). ``strict``: raise MediaError at
    the end when FFmpeg reported a truncated or damaged file. ``info``: the
    file's ``probe`` (given: not probed again).
    """
    info = info or probe(path)
    if not info.has_video:
        raise MediaError(f"{info.path}: no video track (the file has only audio)")
    wh = _parse_size(size)
    filters = []
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        filters.append(f"fps={float(fps)!r}")
    if wh is not None:
        filters.append(f"scale={wh[0]}:{wh[1]}:flags=bilinear")
    filters.append("showinfo")
    w, h = wh if wh is not None else (info.width, info.height)
    if w <= 0 or h <= 0:
        raise MediaError(f"{info.path}: video stream has no frame size")
    cmd = [
        _tool("ffmpeg"), "-nostdin", "-hide_banner", "-nostats", "-v", "info", "-i", info.path,
        "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", ",".join(filters),
        "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    err = _StderrReader(proc.stderr, want_pts=True)
    nbytes = w * h * 3
    count = 0
    try:
        while True:
            raw = _read_exact(proc.stdout, nbytes)
            if len(raw) < nbytes:
                break
            pts = err.next_pts(timeout=pts_timeout)
            if pts is None:
                raise MediaError(f"{info.path}: FFmpeg gave a frame without a timestamp")
            img = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
            count += 1
            yield pts, img
        _finish(proc, err, info.path, "video", strict)
        if count == 0:
            raise MediaError(f"{info.path}: the video track decodes to no frames (truncated or corrupt file)")
    finally:
        _stop(proc)


def iter_av(path, *, sample_rate: int, block: int, fps: float | None = None, size=None,
            strict: bool = True, info: MediaInfo | None = None) -> Iterator[tuple[str, float, np.ndarray]]:
    """Audio and video of one file, decoded together, in media-time order.

    Yields ``("audio", t, float32 mono [<= block])`` and ``("video", t, uint8
    RGB [H, W, 3])`` in capture order: an audio block when its last sample is
    in (``t + len / sample_rate``), a frame at its pts, so the order is the
    one a live camera and microphone would deliver. A file without
    audio (or without video) yields only the other kind; a file with neither
    raises MediaError. ``info``: the file's ``probe`` (given: not probed again).
    """
    info = info or probe(path)
    audio = iter_audio(info.path, sample_rate, block, strict=strict, info=info) if info.has_audio else iter([])
    video = iter_frames(info.path, fps=fps, size=size, strict=strict, info=info) if info.has_video else iter([])
    try:
        a = next(audio, None)
        v = next(video, None)
        while a is not None or v is not None:
            if v is None or (a is not None and a[0] + len(a[1]) / sample_rate <= v[0]):
                yield "audio", a[0], a[1]
                a = next(audio, None)
            else:
                yield "video", v[0], v[1]
                v = next(video, None)
    finally:
        for it in (audio, video):
            close = getattr(it, "close", None)
            if close is not None:
                close()


__all__ = ["MediaError", "MediaInfo", "probe", "read_audio", "iter_audio", "iter_frames", "iter_av"]

