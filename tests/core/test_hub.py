"""Fetching published weight files: a real HTTP server on loopback (tests/conftest.py WeightHost)
serves generated files laid out like the real hosts; nothing reaches the internet."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess

import pytest

from avparse.core import hub
from avparse.core.hub import DownloadError, RemoteFile, WeightsError, WeightsNotFoundError


def _blob(tmp_path, n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def _torchvision_like(host, data: bytes, stem: str = "resnet152") -> RemoteFile:
    """A file named like torchvision's (``<stem>-<first 8 hex of its SHA-256>.pth``) at /models/."""
    prefix = hashlib.sha256(data).hexdigest()[:8]
    name = f"{stem}-{prefix}.pth"
    host.files[f"/models/{name}"] = data
    return RemoteFile(name=name, url=host.url(f"/models/{name}"), sha256=prefix)


def _git_blob_id(tmp_path, data: bytes) -> str:
    """The blob id as git itself computes it (an independent implementation of the check)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    p = tmp_path / "for-git"
    p.write_bytes(data)
    return subprocess.run(["git", "hash-object", str(p)], check=True, capture_output=True, text=True).stdout.strip()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_first_use_downloads_into_the_hub_cache_and_verifies(weight_host, torch_home, tmp_path):
    data = _blob(tmp_path, 300_000, 1)
    f = _torchvision_like(weight_host, data)
    ckpt = _blob(tmp_path, 123_457, 2)
    path = "/YapengTian/AVVP-ECCV20/0b28c1a7eafbd952d8ed5aac67a722fb09306ae4/models/MMIL_Net.pt"
    weight_host.files[path] = ckpt
    g = RemoteFile(name="AVVP-ECCV20-MMIL_Net-test.pt", url=weight_host.url(path), git_blob=_git_blob_id(tmp_path, ckpt))
    log = io.StringIO()
    got = hub.fetch([f, g], progress=log)
    cache = torch_home / "hub" / "checkpoints"
    assert got == [cache / f.name, cache / g.name]
    assert got[0].read_bytes() == data and got[1].read_bytes() == ckpt
    assert not list(cache.glob("*.partial"))
    out = log.getvalue()
    assert f"downloading {f.name} from {f.url}" in out and "verified" in out and "\r" not in out  # not a terminal
    assert hub.was_verified(got[0], f) and hub.was_verified(got[1], g)


def test_progress_bar_on_a_terminal(weight_host, torch_home, tmp_path):
    f = _torchvision_like(weight_host, _blob(tmp_path, 3 * hub.CHUNK + 5, 3))
    term = _Terminal()
    hub.fetch([f], progress=term)
    out = term.getvalue()
    assert "\r" in out and "100.0%" in out and "MB/s" in out
    assert hub.fetch([f], progress=_Terminal()) == [torch_home / "hub" / "checkpoints" / f.name]


def test_resume_after_a_cut_connection(weight_host, torch_home, tmp_path):
    data = _blob(tmp_path, 5 * hub.CHUNK // 2, 4)
    f = _torchvision_like(weight_host, data)
    path = f"/models/{f.name}"
    weight_host.cut[path] = 1_000_000  # the first response stops after 1 MB
    (p,) = hub.fetch([f], progress=None)
    assert p.read_bytes() == data
    assert weight_host.log == [(path, None), (path, "bytes=1000000-")]


def test_an_interrupted_run_resumes_from_its_partial_file(weight_host, torch_home, tmp_path):
    data = _blob(tmp_path, 400_000, 5)
    f = _torchvision_like(weight_host, data)
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / (f.name + ".partial")).write_bytes(data[:150_000])  # what a killed run left
    assert hub.locate(f) is None  # a partial file is never taken for the file
    (p,) = hub.fetch([f])
    assert p.read_bytes() == data and weight_host.log == [(f"/models/{f.name}", "bytes=150000-")]


def test_a_server_without_range_support_restarts_cleanly(weight_host, torch_home, tmp_path):
    data = _blob(tmp_path, 200_000, 6)
    f = _torchvision_like(weight_host, data)
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / (f.name + ".partial")).write_bytes(b"x" * 50_000)  # even a wrong partial is harmless then
    weight_host.ignore_range = True
    (p,) = hub.fetch([f])
    assert p.read_bytes() == data


def test_wrong_checksum_is_refused_and_removed(weight_host, torch_home, tmp_path):
    data = _blob(tmp_path, 100_000, 7)
    f = _torchvision_like(weight_host, data)
    weight_host.files[f"/models/{f.name}"] = data[:-1] + bytes([data[-1] ^ 1])  # one bit off
    with pytest.raises(WeightsError) as e:
        hub.fetch([f])
    msg = str(e.value)
    assert f.name in msg and "refused" in msg and "removed" in msg and "\n" not in msg
    cache = torch_home / "hub" / "checkpoints"
    assert not (cache / f.name).exists() and not (cache / (f.name + ".partial")).exists()


def test_a_bad_file_in_the_cache_is_refused_and_removed_a_named_folder_is_left_alone(torch_home, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("AVPARSE_OFFLINE", "1")
    data = _blob(tmp_path, 10_000, 8)
    f = RemoteFile(name="thing-00000000.pth", url="http://127.0.0.1:9/models/thing-00000000.pth", sha256="00000000")
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / f.name).write_bytes(data)
    with pytest.raises(WeightsError, match="removed it"):
        hub.fetch([f])
    assert not (cache / f.name).exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / f.name).write_bytes(data)
    with pytest.raises(WeightsError, match="left it in place"):
        hub.fetch([f], dirs=[mine])
    assert (mine / f.name).exists()


def test_404_is_one_line_naming_the_address(weight_host, torch_home):
    f = RemoteFile(name="gone-12345678.pth", url=weight_host.url("/models/gone-12345678.pth"), sha256="12345678")
    with pytest.raises(DownloadError) as e:
        hub.fetch([f])
    assert str(e.value) == f"{f.url}: HTTP 404 Not Found; cannot download {f.name}"
    assert len(weight_host.log) == 1  # a 404 is not retried


def test_offline_never_downloads_and_says_where_to_put_what(weight_host, torch_home, tmp_path, monkeypatch):
    a = _torchvision_like(weight_host, _blob(tmp_path, 1000, 9), "a")
    b = _torchvision_like(weight_host, _blob(tmp_path, 1000, 10), "b")
    monkeypatch.setenv("AVPARSE_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as e:
        hub.fetch([a, b])
    msg = str(e.value)
    for x in (a.name, b.name, a.url, b.url, str(torch_home / "hub" / "checkpoints"), "offline"):
        assert x in msg
    with pytest.raises(WeightsNotFoundError):
        hub.fetch([a], offline=True)  # the argument too, without the variable
    monkeypatch.delenv("AVPARSE_OFFLINE")
    with pytest.raises(WeightsNotFoundError):
        hub.fetch([a], offline=True)
    assert weight_host.log == []


def test_mirror_replaces_the_original_hosts(weight_host, torch_home, tmp_path, monkeypatch):
    data = _blob(tmp_path, 50_000, 11)
    prefix = hashlib.sha256(data).hexdigest()[:8]
    f = RemoteFile(name=f"r-{prefix}.pth", url=f"http://127.0.0.1:9/models/r-{prefix}.pth", sha256=prefix)  # unreachable
    weight_host.files[f"/mirror/{f.name}"] = data  # a flat folder of files
    monkeypatch.setenv("AVPARSE_MIRROR", weight_host.url("/mirror/"))
    (p,) = hub.fetch([f])
    assert p.read_bytes() == data and weight_host.log == [(f"/mirror/{f.name}", None)]
    with pytest.raises(DownloadError, match="AVPARSE_MIRROR"):
        hub.fetch([RemoteFile(name="absent-12345678.pth", url=f.url, sha256="12345678")])


def test_a_mirror_argument_wins_and_is_checked_like_the_original_hosts(weight_host, torch_home, tmp_path,
                                                                        monkeypatch):
    good, bad = _blob(tmp_path, 40_000, 13), _blob(tmp_path, 40_000, 14)
    f = RemoteFile(name="g-x.pth", url="http://127.0.0.1:9/models/g-x.pth", sha256=hashlib.sha256(good).hexdigest())
    weight_host.files["/m/g-x.pth"] = good
    monkeypatch.setenv("AVPARSE_MIRROR", "http://127.0.0.1:9/elsewhere/")  # the argument overrides it
    (p,) = hub.fetch([f], mirror=weight_host.url("/m"))  # with or without a trailing slash
    assert p.read_bytes() == good and weight_host.log == [("/m/g-x.pth", None)]
    # a mirror serving the wrong bytes under the right name: refused and removed, one line naming it
    h = RemoteFile(name="h-x.pth", url="http://127.0.0.1:9/models/h-x.pth", sha256=hashlib.sha256(good).hexdigest())
    weight_host.files["/m/h-x.pth"] = bad
    with pytest.raises(WeightsError) as e:
        hub.fetch([h], mirror=weight_host.url("/m/"))
    assert weight_host.url("/m/h-x.pth") in str(e.value) and "refused" in str(e.value) and "\n" not in str(e.value)
    assert not (torch_home / "hub" / "checkpoints" / "h-x.pth").exists()


def test_a_folder_is_a_mirror_and_bad_addresses_are_one_line(torch_home, tmp_path, monkeypatch):
    data = _blob(tmp_path, 30_000, 15)
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "k-x.pth").write_bytes(data)
    f = RemoteFile(name="k-x.pth", url="http://127.0.0.1:9/k-x.pth", sha256=hashlib.sha256(data).hexdigest())
    (p,) = hub.fetch([f], mirror=folder.as_uri() + "/", progress=None)
    assert p.read_bytes() == data
    g = RemoteFile(name="l-x.pth", url="http://127.0.0.1:9/l-x.pth", sha256="12345678")
    for bad in ("ftp://host/w/", "mirror.example.org/w", "http://"):
        with pytest.raises(DownloadError, match="is not a base address") as e:
            hub.fetch([g], mirror=bad)
        assert str(e.value).startswith(f"mirror {bad!r}")
    monkeypatch.setenv("AVPARSE_MIRROR", "w.example")
    with pytest.raises(DownloadError, match="^AVPARSE_MIRROR 'w.example' is not a base address"):
        hub.fetch([g])
    assert hub.fetch([f]) == [p]  # a cached file needs no mirror: a bad setting does not stop it


def test_cached_files_are_used_without_network_and_checked_once(weight_host, torch_home, tmp_path):
    data = _blob(tmp_path, 80_000, 12)
    f = _torchvision_like(weight_host, data)
    (p,) = hub.fetch([f])
    weight_host.close()  # no server any more
    assert hub.fetch([f]) == [p]
    # checked once: a remembered file is not hashed again ...
    calls = []
    real = hub.digest
    hub.digest = lambda *a: calls.append(a) or real(*a)
    try:
        assert hub.fetch([f]) == [p] and calls == []
        # ... until it changes on disk
        p.write_bytes(data[::-1])
        with pytest.raises(WeightsError, match="refused"):
            hub.fetch([f], offline=True)
        assert calls and not p.exists()
    finally:
        hub.digest = real


def test_a_file_put_in_the_cache_by_hand_is_checked_and_used(torch_home, tmp_path):
    data = _blob(tmp_path, 20_000, 13)
    prefix = hashlib.sha256(data).hexdigest()[:8]
    f = RemoteFile(name=f"hand-{prefix}.pth", url=f"http://127.0.0.1:9/hand-{prefix}.pth", sha256=prefix)
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / f.name).write_bytes(data)
    assert not hub.was_verified(cache / f.name, f)
    assert hub.fetch([f], offline=True) == [cache / f.name]
    assert hub.was_verified(cache / f.name, f)


def test_no_network_is_one_line_and_keeps_what_arrived(weight_host, torch_home, tmp_path):
    data = _blob(tmp_path, 3 * hub.CHUNK, 14)
    f = _torchvision_like(weight_host, data)
    weight_host.cut[f"/models/{f.name}"] = 2 * hub.CHUNK
    base = weight_host.base
    weight_host.close()  # ... nobody listens now: every retry is refused
    g = RemoteFile(name=f.name, url=base + f"/models/{f.name}", sha256=f.sha256)
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / (f.name + ".partial")).write_bytes(data[:1000])
    with pytest.raises(DownloadError) as e:
        hub.download(g, retries=1)
    msg = str(e.value)
    assert g.url in msg and "1000 bytes received are kept" in msg and "\n" not in msg


def test_git_blob_id_matches_git(tmp_path):
    data = _blob(tmp_path, 70_001, 15)
    p = tmp_path / "x.pt"
    p.write_bytes(data)
    assert hub.digest(p, "git-blob") == _git_blob_id(tmp_path, data)


def test_cache_dir_follows_torch_without_importing_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub.cache_dir() == tmp_path / "th" / "hub" / "checkpoints"
    code = ("import os, sys; from avparse.core import hub, registry; p = hub.cache_dir(); "
            "print(p, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "TORCH_HOME": str(tmp_path / "t2")}).stdout.split()
    assert out == [str(tmp_path / "t2" / "hub" / "checkpoints"), "False"]
    import torch

    assert hub.cache_dir() == __import__("pathlib").Path(torch.hub.get_dir()) / "checkpoints"
