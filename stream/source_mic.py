"""MicrophoneSource: a PortAudio input device through sounddevice.

The device is chosen by index or by name (exact, else a unique
case-insensitive substring), opened at its native rate (or ``native_rate``)
with ``channels`` channels (default: up to 2 of the device's), and every
block is downmixed (channel mean) and resampled to ``sample_rate`` by the
streaming polyphase resampler (``stream.resample``).

Time stamps: media time is PortAudio's ``inputBufferAdcTime`` relative to
the first block's. Between gaps the time line is the sample count (exact,
without the jitter of the ADC times); when PortAudio flags an input
overflow, or a block's ADC time is more than ``gap_tolerance`` past the
count's, the resampler is flushed and the time line re-anchored at the ADC
time, so lost audio shows as a gap in media time (the assembler zero-fills
it and counts it). The tolerance is large (1 s) on purpose: through
PulseAudio's ALSA plugin the ADC time is the current time minus a latency
estimate, and that estimate changes by a few hundred ms when the sound server
renegotiates latency (measured here: steps of 0.17 and 0.38 s with the
samples arriving intact), which must not be taken for lost audio. The
latest difference between the two time lines is kept in ``adc_skew``. Host APIs that report no ADC time (0) fall back to the injected
clock. ``wall_time`` is the clock at the callback minus PortAudio's input
latency for that block (``currentTime - inputBufferAdcTime``).

Counters: blocks, overflows (PortAudio input overflow flags), dropped
(blocks dropped because the reader fell behind ``queue_blocks``; the gap
they leave is placed exactly, by their sample count), gaps.
sounddevice is imported here only, when a source opens.
"""

from __future__ import annotations

import queue
from typing import Iterator

import numpy as np

from .clock import Clock
from .resample import StreamingResampler
from .source_base import MicrophoneError, StopFlag, as_clock, log
from .types import AudioChunk, Chunk, EndOfStream


def _sd():
    try:
        import sounddevice as sd
    except OSError as e:  # libportaudio missing
        raise MicrophoneError(f"PortAudio is not available ({e}); install libportaudio2") from None
    return sd


def refresh_devices() -> None:
    """Re-initialise PortAudio so that devices (or a sound server) that
    appeared after ``import sounddevice`` are seen. Closes every open
    PortAudio stream of this process: call it before opening any."""
    sd = _sd()
    sd._terminate()
    sd._initialize()


def list_input_devices() -> list[dict]:
    """Input devices PortAudio sees: dicts with index, name, channels, rate, hostapi."""
    sd = _sd()
    out = []
    for i, d in enumerate(sd.query_devices()):
        if d["max_input_channels"] > 0:
            api = sd.query_hostapis(d["hostapi"])["name"]
            out.append(dict(index=i, name=d["name"], channels=int(d["max_input_channels"]),
                            rate=float(d["default_samplerate"]), hostapi=api))
    return out


def _describe_inputs(devs: list[dict]) -> str:
    if not devs:
        return "none (PortAudio sees no input device; is a sound card or sound server present?)"
    return "; ".join(f"{d['index']}: {d['name']!r} ({d['channels']} ch, {d['rate']:.0f} Hz, {d['hostapi']})"
                     for d in devs)


def resolve_input_device(device) -> dict:
    """Index, name or None (the default input) -> the device's dict, or MicrophoneError listing inputs."""
    sd = _sd()
    devs = list_input_devices()
    if device is None:
        default = sd.default.device[0] if isinstance(sd.default.device, (list, tuple)) else sd.default.device
        try:
            default = int(default)
        except (TypeError, ValueError):
            default = -1
        for d in devs:
            if d["index"] == default:
                return d
        if devs:
            return devs[0]
        raise MicrophoneError(f"no default microphone; input devices here: {_describe_inputs(devs)}")
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device.strip())
    if isinstance(device, int) and not isinstance(device, bool):
        for d in devs:
            if d["index"] == device:
                return d
        raise MicrophoneError(f"microphone {device} does not exist or has no input channels; "
                              f"input devices here: {_describe_inputs(devs)}")
    name = str(device)
    exact = [d for d in devs if d["name"] == name]
    if exact:
        return exact[0]
    sub = [d for d in devs if name.lower() in d["name"].lower()]
    if len(sub) == 1:
        return sub[0]
    if len(sub) > 1:
        raise MicrophoneError(f"microphone name {name!r} is ambiguous; it matches: {_describe_inputs(sub)}")
    raise MicrophoneError(f"microphone {name!r} not found; input devices here: {_describe_inputs(devs)}")


class MicrophoneSource:
    """Audio of one PortAudio input device as AudioChunk blocks (mono, ``sample_rate``)."""

    def __init__(self, device=None, *, sample_rate: int, name: str = "mic", clock: Clock | None = None,
                 channels: int | None = None, native_rate: int | None = None, block_seconds: float = 0.02,
                 latency="low", queue_blocks: int = 500, gap_tolerance: float = 1.0,
                 poll_seconds: float = 0.1):
        if block_seconds <= 0:
            raise ValueError(f"block_seconds must be positive, got {block_seconds}")
        self.device = device
        self.sample_rate = int(sample_rate)
        self.name = name
        self.clock = as_clock(clock)
        self.channels, self.native_rate = channels, native_rate
        self.block_seconds, self.latency = block_seconds, latency
        self.gap_tolerance, self.poll_seconds = gap_tolerance, poll_seconds
        self.kinds = frozenset({"audio"})
        self.counters = {"blocks": 0, "overflows": 0, "dropped": 0, "gaps": 0}
        self.adc_skew = 0.0   # latest (ADC time - sample-count time) in s: latency re-estimates, drift
        self.device_info: dict | None = None
        self._q: queue.Queue = queue.Queue(maxsize=queue_blocks)
        self._stream = None
        self._stop = StopFlag()
        self._reading = False

    # ------------------------------------------------------------ callback
    def _callback(self, indata, frames, time_info, status):  # PortAudio's thread
        now = self.clock.now()
        adc = float(getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0)
        cur = float(getattr(time_info, "currentTime", 0.0) or 0.0)
        lat = cur - adc if adc > 0 and cur > 0 and 0.0 <= cur - adc < 2.0 else 0.0
        overflow = bool(status and status.input_overflow)
        if overflow:
            self.counters["overflows"] += 1
        try:
            self._q.put_nowait((indata.copy(), adc, now - lat, overflow, self._lost))
            self._lost = 0
        except queue.Full:
            self.counters["dropped"] += 1
            self._lost += frames   # the next block that gets through carries this gap

    # ------------------------------------------------------------ life cycle
    def open(self) -> None:
        sd = _sd()
        d = resolve_input_device(self.device)
        self.device_info = d
        ch = int(self.channels or min(2, d["channels"]))
        if not 1 <= ch <= d["channels"]:
            raise MicrophoneError(f"microphone {d['name']!r} has {d['channels']} input channels, {ch} asked")
        rate = int(self.native_rate or round(d["rate"]))
        self._in_rate, self._in_ch = rate, ch
        self._stop.clear()
        self._lost = 0
        try:
            self._stream = sd.InputStream(device=d["index"], channels=ch, samplerate=rate,
                                          blocksize=max(1, int(round(self.block_seconds * rate))),
                                          dtype="float32", latency=self.latency, callback=self._callback)
            self._stream.start()
        except sd.PortAudioError as e:
            self._stream = None
            raise MicrophoneError(f"microphone {d['index']}: {d['name']!r} does not open at {rate} Hz, "
                                  f"{ch} ch: {e}") from None

    def read(self) -> Iterator[Chunk]:
        if self._stream is None:
            self.open()
        self._reading = True
        in_rate, out_rate = self._in_rate, self.sample_rate
        rs = StreamingResampler(in_rate, out_rate)
        origin = None          # (adc or wall) time of the first sample
        seg_t0 = 0.0           # media time where the current segment started
        seg_in = seg_out = 0   # input / output samples in the current segment
        wall_off = 0.0         # wall - media for the latest block
        t_end = 0.0
        reason, error = "end-of-stream", None
        try:
            while True:
                if self._stop:
                    reason = "stopped"
                    break
                try:
                    x, adc, wall, overflow, lost = self._q.get(timeout=self.poll_seconds)
                except queue.Empty:
                    if self._stream is not None and not self._stream.active:
                        reason, error = "source-lost", "the audio device stopped delivering"
                        break
                    continue
                mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
                stamp = adc if adc > 0 else wall
                if origin is None:
                    origin = stamp
                actual = stamp - origin                    # this block's time by PortAudio (or the clock)
                expected = seg_t0 + seg_in / in_rate       # its time by the sample count
                self.adc_skew = actual - expected
                if self.counters["blocks"] and (lost or overflow or actual - expected > self.gap_tolerance):
                    tail = rs.flush()
                    if len(tail):
                        t = seg_t0 + seg_out / out_rate
                        yield AudioChunk(self.name, t, tail, out_rate, wall_time=t + wall_off)
                    self.counters["gaps"] += 1
                    log.info("stream %s: audio gap at %.3f s (%s; %.3f s by the ADC time, %.3f s by the count)",
                             self.name, expected, "blocks dropped" if lost else "overflow" if overflow else "ADC time jumped",
                             actual, expected)
                    rs = StreamingResampler(in_rate, out_rate)
                    # blocks we dropped: their exact length; otherwise the ADC time says where we are
                    seg_t0 = expected + lost / in_rate if lost else max(actual, expected)
                    seg_in = seg_out = 0
                    expected = seg_t0
                self.counters["blocks"] += 1
                wall_off = wall - expected
                y = rs.process(mono)
                seg_in += len(mono)
                if len(y):
                    t = seg_t0 + seg_out / out_rate
                    seg_out += len(y)
                    t_end = t + len(y) / out_rate
                    yield AudioChunk(self.name, t, y, out_rate, wall_time=t + wall_off)
        finally:
            self._reading = False
            self._close_stream()
        yield EndOfStream(self.name, t_end, reason, error)

    def _close_stream(self):
        s, self._stream = self._stream, None
        if s is not None:
            try:
                s.stop()
                s.close()
            except Exception:  # noqa: BLE001 - closing a failed device must not mask the cause
                pass

    def close(self) -> None:
        self._stop.set()
        if not self._reading:
            self._close_stream()


__all__ = ["MicrophoneSource", "list_input_devices", "resolve_input_device", "refresh_devices"]
