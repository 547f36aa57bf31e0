"""Published weight files: found, fetched on first use, verified, cached.

The convention of torchvision and whisper: a file published at an address is
kept in torch hub's checkpoint cache, ``$TORCH_HOME/hub/checkpoints`` (by
default ``~/.cache/torch/hub/checkpoints``), under its file name, and is
checked before it is used:

- files whose published name holds a hex digest (torchvision's
  ``resnet152-394f9c45.pth``, torchvggish's ``vggish-10086976.pth``): the
  file's SHA-256 must start with it (what ``torch.hub`` checks with
  ``check_hash=True``);
- files kept in a git repository (the authors' ``models/MMIL_Net.pt``): the
  git blob id, SHA-1 of ``b"blob <size>\\0" + content``, so the file is
  verified whichever host serves it;
- or a full SHA-256.

A file is looked for in the folders the caller names, then in the cache. A
file found there is checked once: the check is remembered (path, size,
mtime) in ``.avparse-verified.json`` in the cache folder, so a 230 MB file is
not hashed at every start. A missing file is downloaded into the cache unless
offline mode is on (``offline=True`` or ``AVPARSE_OFFLINE=1``): then the error
names every missing file, where to put it and where it is published. A mirror
base address (``mirror=``, the commands' ``--mirror``, or ``AVPARSE_MIRROR``)
replaces the original hosts: ``<mirror>/<file name>`` for every file, a flat
folder that any web server can serve (http://, https://, or file:// for a
folder on a shared disk); the files are checked exactly as from the
original hosts.

Downloads go to ``<name>.partial`` beside the final file (under an exclusive
lock, so two processes never write one file), resume with an HTTP Range
request after a cut connection or an interrupted run (a server that ignores
Range sends the whole file again: the download restarts), and become the
final file only after the check passed (``os.replace``): a partial file is
never taken for a whole one. A file that fails its check is refused, and
removed when it is in the cache (a file in a folder the caller named is
left alone), with one line naming it.

No torch import here: ``avparse models`` lists the cache without loading
torch. When torch is already imported, ``torch.hub.get_dir()`` (which
``torch.hub.set_dir`` may have changed) is honoured.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, TextIO

CHUNK = 1 << 20                  # bytes read and hashed at a time
STAMP_FILE = ".avparse-verified.json"  # the remembered checks, in the cache folder


class WeightsNotFoundError(FileNotFoundError):
    """A published weight file is not on disk and may not be downloaded (one clear message)."""


class WeightsError(ValueError):
    """A weight file exists but is not the expected one (checksum, corrupt, wrong names or shapes)."""


class DownloadError(OSError):
    """A download failed (HTTP error, no network, cut off too often); one line naming the address."""


@dataclass(frozen=True)
class RemoteFile:
    name: str                   # file name in the cache folder and in a mirror
    url: str                    # where it is published
    sha256: str = ""            # SHA-256 in hex, or its first characters (the digest in a torchvision file name)
    git_blob: str = ""          # git blob id (SHA-1 of "blob <size>\0" + content), for files kept in git
    size: int | None = None     # exact size in bytes, when known (checked before hashing)
    approx_mb: float = 0.0      # approximate size in MB (10^6 bytes) for listings, when the exact size is unknown
    what: str = ""              # one line for humans: what the file is

    def __post_init__(self):
        if not (self.sha256 or self.git_blob):
            raise ValueError(f"{self.name}: a published file needs a sha256 (prefix) or a git blob id")
        for v in (self.sha256, self.git_blob):
            if v and (v != v.lower() or any(c not in "0123456789abcdef" for c in v)):
                raise ValueError(f"{self.name}: checksum {v!r} is not lower-case hex")

    @property
    def check(self) -> str:
        """The check in words, e.g. ``sha256 394f9c45...`` or ``git blob ef441b42...``."""
        if self.git_blob:
            return f"git blob {self.git_blob}"
        return f"sha256 {self.sha256}{'...' if len(self.sha256) < 64 else ''}"


# ----------------------------------------------------------------------------- settings


def cache_dir() -> Path:
    """torch hub's checkpoint cache: ``torch.hub.get_dir()/checkpoints``; without importing torch,
    the same rule (``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``, + ``hub``)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "hub"):
        return Path(torch.hub.get_dir()) / "checkpoints"
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def offline_default() -> bool:
    """``AVPARSE_OFFLINE`` set to 1/true/yes/on."""
    return os.environ.get("AVPARSE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def mirror_default() -> str | None:
    """``AVPARSE_MIRROR``: a base address serving the files by name (None when unset)."""
    m = os.environ.get("AVPARSE_MIRROR", "").strip()
    return m or None


MIRROR_SCHEMES = ("http://", "https://", "file://")  # what urllib fetches; file:// for a folder on a share


def check_mirror(mirror: str) -> str:
    """``mirror`` if it is a base address avparse can download from (http://host/..., https://...,
    file:///folder), else ValueError saying why (one line)."""
    from urllib.parse import urlsplit

    text = mirror.strip()
    parts = urlsplit(text)
    if not text.lower().startswith(MIRROR_SCHEMES) or (parts.scheme != "file" and not parts.netloc):
        raise ValueError(f"{mirror!r} is not a base address: give http://host/path/, https://... or "
                         "file:///folder/ (the model files are fetched as <mirror>/<file name>)")
    return text


def source_url(f: RemoteFile, mirror: str | None) -> str:
    """Where ``f`` is downloaded from: ``<mirror>/<name>`` with a mirror, else its published address."""
    return f"{mirror.rstrip('/')}/{f.name}" if mirror else f.url


# ----------------------------------------------------------------------------- checking


def digest(path: str | os.PathLike, kind: str) -> str:
    """Hex digest of a file: ``kind`` "sha256" or "git-blob" (SHA-1 over git's blob header + content)."""
    path = Path(path)
    if kind == "sha256":
        h = hashlib.sha256()
    elif kind == "git-blob":
        h = hashlib.sha1()
        h.update(b"blob %d\0" % path.stat().st_size)
    else:
        raise ValueError(f"unknown digest {kind!r}")
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def mismatch(path: str | os.PathLike, f: RemoteFile) -> str | None:
    """None when the file at ``path`` is ``f``; else why not (one phrase)."""
    size = Path(path).stat().st_size
    if f.size is not None and size != f.size:
        return f"it has {size} bytes, the published file {f.size}"
    if f.git_blob:
        got = digest(path, "git-blob")
        if got != f.git_blob:
            return f"its git blob id is {got}, the published file's {f.git_blob}"
    if f.sha256:
        got = digest(path, "sha256")
        if not got.startswith(f.sha256):
            want = f.sha256 + ("..." if len(f.sha256) < 64 else "")
            return f"its SHA-256 is {got[:max(16, len(f.sha256))]}..., the published file's {want}"
    return None


def _stamp_path() -> Path:
    return cache_dir() / STAMP_FILE


def _stamp_key(path: Path) -> str:
    return str(path.resolve())


def _stamp_value(path: Path, f: RemoteFile) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, f.check]


def _read_stamps() -> dict:
    try:
        with open(_stamp_path()) as fh:
            d = json.load(fh)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(path: Path, f: RemoteFile) -> None:
    """Record that ``path`` passed ``f``'s check (best effort: a read-only cache just checks again)."""
    stamps = _read_stamps()
    stamps[_stamp_key(path)] = _stamp_value(path, f)
    stamps = {k: v for k, v in stamps.items() if os.path.exists(k)}
    target = _stamp_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            json.dump(stamps, fh, indent=0, sort_keys=True)
        os.replace(tmp, target)
    except OSError:
        pass


def was_verified(path: Path, f: RemoteFile) -> bool:
    """True when ``path`` passed ``f``'s check before and has not changed since (size, mtime)."""
    return _read_stamps().get(_stamp_key(path)) == _stamp_value(path, f)


def verify(path: str | os.PathLike, f: RemoteFile, *, remove: bool = False) -> Path:
    """Check ``path`` against ``f`` once (remembered); a bad file raises WeightsError, and is deleted
    first when ``remove`` (files in the cache)."""
    path = Path(path)
    if was_verified(path, f):
        return path
    why = mismatch(path, f)
    if why is not None:
        if remove:
            try:
                path.unlink()
            except OSError:
                pass
        fate = "removed it" if remove else "left it in place"
        raise WeightsError(f"{path}: refused: {why} (corrupt, truncated or not {f.url}); {fate}"
                           + ("; the next run downloads it again" if remove else ""))
    _remember(path, f)
    return path


# ----------------------------------------------------------------------------- finding


def _places(dirs: Iterable) -> list[Path]:
    out = []
    for d in dirs:
        if d is not None and Path(d) not in out:
            out.append(Path(d))
    if cache_dir() not in out:
        out.append(cache_dir())
    return out


def locate(f: RemoteFile, dirs: Iterable = ()) -> Path | None:
    """The verified local copy of ``f`` in ``dirs`` or the cache, or None (a bad copy raises WeightsError)."""
    cache = cache_dir()
    for d in _places(dirs):
        p = d / f.name
        if p.is_file():
            return verify(p, f, remove=(d == cache))
    return None


def missing_message(files: Sequence[RemoteFile], dirs: Iterable = (), *, why: str) -> str:
    places = " or ".join(str(d) for d in _places(dirs))
    many = len(files) > 1
    names = ", ".join(f.name for f in files)
    urls = " ".join(f.url for f in files)
    return (f"weight file{'s' if many else ''} {names} not found; put {'them' if many else 'it'} in {places} "
            f"(published at {urls}; {why})")


def fetch(files: Sequence[RemoteFile], *, dirs: Iterable = (), offline: bool | None = None,
          mirror: str | None = None, progress: TextIO | None = None, retries: int = 4,
          timeout: float = 30.0) -> list[Path]:
    """Local, verified paths of ``files``: found in ``dirs`` or the cache, else downloaded into the cache.

    ``offline`` (default: ``AVPARSE_OFFLINE``): never download; a WeightsNotFoundError names every
    missing file, where to put it and its address. ``mirror`` (default: ``AVPARSE_MIRROR``): download
    ``<mirror>/<name>`` instead of the published address. ``progress``: a stream for the progress
    bar (a terminal: a bar redrawn in place; anything else: one line per file), or None for silence.
    """
    dirs = list(dirs)
    offline = offline_default() if offline is None else offline
    given = mirror
    mirror = mirror_default() if mirror is None else (mirror or None)
    found: dict[str, Path] = {}
    missing = []
    for f in files:
        p = locate(f, dirs)
        if p is None:
            missing.append(f)
        else:
            found[f.name] = p
    if missing and offline:
        raise WeightsNotFoundError(missing_message(missing, dirs, why="offline mode (AVPARSE_OFFLINE or --offline) "
                                                                      "does not download"))
    if missing and mirror:  # checked when it is needed: a bad setting does not stop a run from the cache
        try:
            mirror = check_mirror(mirror)
        except ValueError as e:
            raise DownloadError(f"{'mirror' if given else 'AVPARSE_MIRROR'} {e}") from None
    for f in missing:
        found[f.name] = download(f, mirror=mirror, progress=progress, retries=retries, timeout=timeout)
    return [found[f.name] for f in files]


# ----------------------------------------------------------------------------- downloading


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"avparse/{version('avparse')}"
    except Exception:
        return "avparse"


class _Progress:
    """A progress line: redrawn in place on a terminal (at most 10 times a second), one line otherwise."""

    def __init__(self, stream: TextIO | None, name: str, url: str):
        self.stream = stream
        self.name = name
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.last = 0.0
        self.start = 0
        if stream is not None:
            stream.write(f"avparse: downloading {name} from {url}\n")
            stream.flush()

    def begin(self, have: int) -> None:
        self.start = have
        self.t0 = time.monotonic()

    def update(self, done: int, total: int | None, *, final: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        rate = (done - self.start) / max(now - self.t0, 1e-6) / 1e6
        if total:
            pct = 100.0 * done / total
            bar = "#" * int(pct / 5)
            line = f"\r  {self.name} [{bar:<20}] {pct:5.1f}% {done / 1e6:7.1f}/{total / 1e6:.1f} MB {rate:6.1f} MB/s"
        else:
            line = f"\r  {self.name} {done / 1e6:7.1f} MB {rate:6.1f} MB/s"
        self.stream.write(line)
        self.stream.flush()

    def done(self, size: int) -> None:
        if self.stream is None:
            return
        if self.tty:
            self.update(size, size, final=True)
            self.stream.write("\n")
        secs = time.monotonic() - self.t0
        self.stream.write(f"avparse: {self.name}: {size / 1e6:.1f} MB in {secs:.1f} s, verified\n")
        self.stream.flush()


class _Lock:
    """An exclusive lock on a hidden ``.<file>.lock`` for the duration of one download (POSIX; no-op
    elsewhere). The lock file stays: removing it would let a third process lock a new file while a
    second still holds the old one."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = None

    def __enter__(self):
        self.fh = open(self.path, "a+")
        try:
            import fcntl

            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        except ImportError:  # not POSIX
            pass
        return self

    def __exit__(self, *exc):
        self.fh.close()


def download(f: RemoteFile, *, mirror: str | None = None, progress: TextIO | None = None, retries: int = 4,
             timeout: float = 30.0) -> Path:
    """Download ``f`` into the cache (resuming a ``.partial`` file), verify it, and return its path."""
    import urllib.error
    import urllib.request

    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the weight cache {cache}: {e.strerror}") from None
    final = cache / f.name
    partial = cache / (f.name + ".partial")
    url = source_url(f, mirror)
    with _Lock(cache / f".{f.name}.lock"):
        if final.is_file():  # another process finished it while we waited for the lock
            return verify(final, f, remove=True)
        bar = _Progress(progress, f.name, url)
        attempt = 0
        while True:
            have = partial.stat().st_size if partial.exists() else 0
            headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                    resumed = have > 0 and r.status == 206 and _range_start(r.headers.get("Content-Range")) == have
                    if not resumed:
                        have = 0  # the server sent the whole file (it ignores Range): start over
                    length = r.headers.get("Content-Length")
                    total = have + int(length) if length and length.isdigit() else f.size
                    bar.begin(have)
                    done = have
                    with open(partial, "ab" if resumed else "wb") as out:
                        while True:
                            block = r.read(CHUNK)
                            if not block:
                                break
                            out.write(block)
                            done += len(block)
                            bar.update(done, total)
                        out.flush()
                        os.fsync(out.fileno())
                    if total is not None and done < total:
                        raise ConnectionError(f"connection closed after {done} of {total} bytes")
                break
            except urllib.error.HTTPError as e:
                if e.code == 416 and have:  # the range starts at or past the end: check what we have
                    if f.size is None or have >= f.size:
                        break
                    partial.unlink()
                    continue
                if e.code < 500 and e.code != 429 or attempt >= retries:
                    hint = " (check the mirror: --mirror or AVPARSE_MIRROR)" if mirror else ""
                    raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; cannot download {f.name}{hint}") from None
            except ValueError as e:  # urllib: "unknown url type" and other malformed addresses
                raise DownloadError(f"{url}: not a valid address ({e})") from None
            except OSError as e:  # URLError (no network, refused), timeouts, a connection cut mid-way
                if _hopeless(e):  # no such host, nobody listening: trying again will not help
                    attempt = retries
                if attempt >= retries:
                    reason = getattr(e, "reason", None) or e
                    kept = (f"; the {partial.stat().st_size} bytes received are kept in {partial} and the next "
                            "run resumes" if partial.exists() and partial.stat().st_size else "")
                    hint = ("is the mirror (--mirror or AVPARSE_MIRROR) up?" if mirror else
                            "no network? give a mirror with --mirror or AVPARSE_MIRROR,")
                    raise DownloadError(f"{url}: {reason}; cannot download {f.name}{kept} ({hint} or put the "
                                        f"file in {cache} by hand)") from None
            except Exception as e:  # http.client.IncompleteRead and other protocol errors (not OSErrors)
                if attempt >= retries:
                    raise DownloadError(f"{url}: {type(e).__name__}: {e}; cannot download {f.name}") from None
            attempt += 1
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
        why = mismatch(partial, f)
        if why is not None:
            partial.unlink()
            raise WeightsError(f"{f.name} downloaded from {url} refused: {why}; removed it (a damaged download "
                               "or a wrong file on the server); the next run downloads it again")
        os.replace(partial, final)
        bar.done(final.stat().st_size)
        _remember(final, f)
        return final


def _hopeless(e: OSError) -> bool:
    """Errors that a retry will not cure: the host name does not resolve, the connection is refused."""
    import socket

    reason = getattr(e, "reason", e)
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError))


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``, or None."""
    if not content_range:
        return None
    try:
        unit, _, rest = content_range.strip().partition(" ")
        if unit != "bytes":
            return None
        return int(rest.split("-", 1)[0])
    except ValueError:
        return None
