"""Real parts for the source tests: a private PulseAudio server with a null
sink (PortAudio records its monitor through ALSA's 'pulse' device), and
FFmpeg serving a live test stream on loopback (UDP or HTTP)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PA_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=avtest rate=48000 channels=2
set-default-sink avtest
set-default-source avtest.monitor
"""


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory):
    """Start ``pulseaudio`` (private runtime dir, null sink 'avtest', its
    monitor the default source) and point this process's PortAudio at it.
    Yields a dict with ``server`` (PULSE_SERVER value) and ``sink``."""
    if shutil.which("pulseaudio") is None or shutil.which("pacat") is None:
        pytest.skip("pulseaudio/pacat are not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)")
    d = tmp_path_factory.mktemp("pulse")
    sock = d / "native"
    conf = d / "pa.conf"
    conf.write_text(PA_CONFIG.format(socket=sock))
    (d / "runtime").mkdir()
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(d / "runtime"), XDG_RUNTIME_DIR=str(d / "runtime"),
               HOME=str(d), PULSE_STATE_PATH=str(d / "state"))
    log = open(d / "pulseaudio.log", "wb")
    proc = subprocess.Popen(["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "-F", str(conf),
                             "--use-pid-file=no", "--disable-shm=yes", "--log-target=stderr"],
                            env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    server = f"unix:{sock}"
    deadline = time.monotonic() + 15
    ok = False
    while time.monotonic() < deadline and proc.poll() is None:
        r = subprocess.run(["pactl", "info"], env=dict(env, PULSE_SERVER=server), capture_output=True)
        if r.returncode == 0:
            ok = True
            break
        time.sleep(0.1)
    if not ok:
        proc.kill()
        proc.wait()
        log.close()
        tail = (d / "pulseaudio.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"pulseaudio did not start (rc={proc.returncode}):\n{tail}")
    old = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = server
    try:
        from avparse.stream.source_mic import refresh_devices

        refresh_devices()   # PortAudio enumerates devices at init: let it see the server now
        yield {"server": server, "sink": "avtest", "env": dict(env, PULSE_SERVER=server)}
    finally:
        if old is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = old
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class ServedStream:
    def __init__(self, url: str, proc: subprocess.Popen):
        self.url, self.proc = url, proc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve_stream():
    """``serve_stream(proto, seconds=8, fps=15)`` -> ServedStream: FFmpeg
    plays testsrc in real time (-re) as MPEG-TS on loopback, over UDP (sent
    to a port) or HTTP (FFmpeg listens for one client)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    started: list[ServedStream] = []

    def start(proto: str, seconds: float = 8.0, fps: int = 15, size: str = "160x120") -> ServedStream:
        if proto == "udp":
            port = free_port(socket.SOCK_DGRAM)
            url = f"udp://127.0.0.1:{port}"
            out = [f"{url}?pkt_size=1316"]
        elif proto == "http":
            port = free_port()
            url = f"http://127.0.0.1:{port}/live.ts"
            out = ["-listen", "1", url]
        else:
            raise ValueError(proto)
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i",
               f"testsrc=size={size}:rate={fps}", "-t", str(seconds), "-c:v", "mpeg2video", "-g", str(fps),
               "-f", "mpegts", *out]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        s = ServedStream(url, proc)
        started.append(s)
        if proto == "http":  # wait until FFmpeg listens
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                # a probe connection would be taken as the one client: look at /proc instead
                if _listening(port):
                    break
                time.sleep(0.05)
        return s

    yield start
    for s in started:
        s.stop()


def _listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:port (reads /proc/net/tcp; no connection made)."""
    hexport = f"{port:04X}"
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        p = Path(f)
        if not p.exists():
            continue
        for line in p.read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) > 3 and parts[1].endswith(":" + hexport) and parts[3] == "0A":
                return True
    return False
