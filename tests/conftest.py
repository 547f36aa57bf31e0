"""Shared test fixtures: where ../shared is, and skipping when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "llp").is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): the real LLP files are needed")
    return SHARED


@pytest.fixture(scope="session")
def llp_dir(shared_dir) -> Path:
    return shared_dir / "llp"


@pytest.fixture(scope="session")
def llp_clip(shared_dir) -> Path:
    p = shared_dir / "media" / "BjCEufrlXm4.mp4"
    if not p.is_file():
        pytest.skip(f"{p} is absent")
    return p


@pytest.fixture(scope="session")
def llp_clip_60s(llp_clip, tmp_path_factory) -> Path:
    """The real LLP clip six times over (FFmpeg, stream copy): 60.3 s of real media."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    out = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "5", "-i", str(llp_clip),
                    "-c", "copy", str(out)], check=True)
    return out


# ----------------------------------------------------------------------------- a loopback weight host
class WeightHost:
    """A real HTTP server on 127.0.0.1 (http.server in a thread) serving generated files by path,
    with HTTP Range support, laid out like the real hosts (``/models/<file>`` for download.pytorch.org,
    ``/<owner>/<repo>/<commit>/<path>`` for raw.githubusercontent.com, ...). Knobs for the failure
    cases: ``cut[path] = n`` sends the full Content-Length but closes the connection after ``n`` bytes
    (once); ``ignore_range`` answers every request with the whole file (200). ``log`` holds
    ``(path, Range header)`` per request."""

    def __init__(self):
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.log: list[tuple[str, str | None]] = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                host.log.append((self.path, rng))
                body = host.files.get(self.path)
                if body is None:
                    self.send_response(404, "Not Found")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and not host.ignore_range and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(body):
                        self.send_response(416, "Range Not Satisfiable")
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206, "Partial Content")
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200, "OK")
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                n = host.cut.pop(self.path, None)
                if n is not None:
                    self.wfile.write(part[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    import socket as _s

                    self.connection.shutdown(_s.SHUT_RDWR)
                    return
                self.wfile.write(part)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def weight_host():
    host = WeightHost()
    yield host
    host.close()


@pytest.fixture(scope="module")
def module_weight_host():
    host = WeightHost()
    yield host
    host.close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty $TORCH_HOME (so the hub cache is tmp/torch/hub/checkpoints), online, no mirror."""
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("AVPARSE_OFFLINE", raising=False)
    monkeypatch.delenv("AVPARSE_MIRROR", raising=False)
    return home


@pytest.fixture(autouse=True)
def _offline_by_default(monkeypatch):
    """Tests never reach the internet: offline mode everywhere, except where a test serves the files
    itself (the ``torch_home`` fixture turns it off, next to a loopback ``weight_host``)."""
    monkeypatch.setenv("AVPARSE_OFFLINE", "1")
    monkeypatch.delenv("AVPARSE_MIRROR", raising=False)
