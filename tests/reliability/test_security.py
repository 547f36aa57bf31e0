"""Security: loopback by default, CURVE keeps unlisted and plaintext clients out (events and
snapshots), nothing received is unpickled or evaluated, checkpoints and weights load with
weights_only.

Covered elsewhere: an allowed CURVE key receives and an unlisted one receives nothing on the
events socket (tests/stream/test_publisher.py), the CURVE Subscriber and the proxy with CURVE on
both sides (tests/stream/test_client.py, test_proxy.py), `avparse keys` writes 0600 secrets
(tests/tools/test_run_listen.py), pickled objects in a checkpoint are refused
(tests/core/test_checkpoint.py::test_not_a_checkpoint).
"""

from __future__ import annotations

import json
import pickle
import socket
import time

import pytest

zmq = pytest.importorskip("zmq")

from avparse.core.events import Event  # noqa: E402
from avparse.stream import wire  # noqa: E402
from avparse.stream.publisher import Publisher, PublisherConfig  # noqa: E402
from tests.reliability.conftest import free_port  # noqa: E402


def non_loopback_ipv4() -> str | None:
    """An address of this host that is not loopback (None when the host has none)."""
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            ip = info[4][0]
            if not ip.startswith("127."):
                return ip
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
            return None if ip.startswith("127.") or ip == "0.0.0.0" else ip
    except OSError:
        return None


def reachable(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=1.0):
            return True
    except OSError:
        return False


class Marker:
    """Unpickling this runs code: it writes a file (the test looks for it)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ------------------------------------------------------------------------------------- loopback
def test_every_default_endpoint_is_loopback():
    import inspect

    from avparse.stream.proxy import ProxyConfig
    from avparse.stream.publisher import DEFAULT_PUB, DEFAULT_SNAPSHOT
    from avparse.tools import common
    from avparse.tools import proxy as proxy_tool

    cfg = common.publisher_config({})  # what `avparse run` binds without --pub/--snapshot
    xpub = ProxyConfig().xpub
    assert '"--xpub", default=ProxyConfig.xpub' in inspect.getsource(proxy_tool)  # `avparse proxy`'s default
    for ep in (DEFAULT_PUB, DEFAULT_SNAPSHOT, cfg.pub, cfg.snapshot, PublisherConfig().pub,
               PublisherConfig().snapshot, xpub):
        assert ep.startswith("tcp://127.0.0.1:"), ep


def test_a_loopback_publisher_cannot_be_reached_from_another_interface():
    ip = non_loopback_ipv4()
    if ip is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    port, snap = free_port(), free_port()
    p = Publisher(PublisherConfig(pub=f"tcp://127.0.0.1:{port}", snapshot=f"tcp://127.0.0.1:{snap}")).open()
    try:
        assert reachable("127.0.0.1", port) and reachable("127.0.0.1", snap)
        assert not reachable(ip, port) and not reachable(ip, snap)
    finally:
        p.close()
    # the check can fail: a socket bound to every interface is reachable at that address
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        assert reachable(ip, s.getsockname()[1])


# ---------------------------------------------------------------------------------------- CURVE
def test_curve_snapshot_service_and_plaintext_clients_get_nothing(tmp_path):
    import zmq.auth

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir(), allowed.mkdir()
    zmq.auth.create_certificates(str(keys), "server")
    zmq.auth.create_certificates(str(keys), "good")
    zmq.auth.create_certificates(str(keys), "evil")
    (allowed / "good.key").write_bytes((keys / "good.key").read_bytes())
    p = Publisher(PublisherConfig(pub=f"tcp://127.0.0.1:{free_port()}", snapshot=f"tcp://127.0.0.1:{free_port()}",
                                  curve_secret_key=str(keys / "server.key_secret"), curve_allow_dir=str(allowed),
                                  heartbeat_interval=0.2)).open()
    p.emit(Event("onset", "cam1", "Dog", "audio", 1.0, 0.9, 2.0))
    server_public, _ = zmq.auth.load_certificate(str(keys / "server.key"))
    ctx = zmq.Context.instance()

    def dealer(name):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        if name:
            pub_k, sec_k = zmq.auth.load_certificate(str(keys / f"{name}.key_secret"))
            d.curve_serverkey, d.curve_publickey, d.curve_secretkey = server_public, pub_k, sec_k
        d.connect(p.snapshot_endpoint)
        d.send(wire.encode_snapshot_request())
        return d

    socks = {name: dealer(name) for name in ("good", "evil", None)}
    try:
        assert socks["good"].poll(3000), "the allowed key got no snapshot"
        frames = socks["good"].recv_multipart()
        assert wire.decode(frames[0], frames[1]).event.label == "Dog"
        assert not socks["evil"].poll(1000) and not socks[None].poll(200)
    finally:
        for s in socks.values():
            s.close()
        p.close()


# ---------------------------------------------------------------------- nothing is unpickled/eval'd
def test_pickles_and_code_sent_to_the_subscriber_and_the_snapshot_service_run_nothing(tmp_path):
    """Payloads that would write a marker file if unpickled, evaluated or exec'd, sent as message
    bodies to a Subscriber and as requests to the snapshot service: no marker appears, the
    subscriber counts them as malformed and goes on, the service answers each with an error
    frame and then serves a good request."""
    from avparse.stream.client import Subscriber

    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w')"
    payloads = [pickle.dumps(Marker(marker), protocol=p) for p in (0, 2, 5)] + [
        code.encode(), f"__import__('builtins').{code}".encode(),
        json.dumps({"v": 1, "type": "onset", "__reduce__": code, "class": code}).encode(),
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.",
    ]
    # a raw PUB socket standing in for a hostile publisher
    ctx = zmq.Context.instance()
    evil = ctx.socket(zmq.PUB)
    evil.setsockopt(zmq.LINGER, 0)
    port = evil.bind_to_random_port("tcp://127.0.0.1")
    good_topic, good_body = wire.encode_event(Event("onset", "cam1", "Dog", "audio", 1.0, 0.9, 2.0),
                                              publisher="evil", session="a" * 32, seq=1, tseq=1, wall_time=0.0)
    sub = Subscriber(f"tcp://127.0.0.1:{port}", handshake_timeout=0.2)
    got = []
    try:
        sub.open()
        time.sleep(0.3)
        for body in payloads:
            for topic in (b"avp.onset.cam1.", body):
                evil.send_multipart([topic, body])
        evil.send_multipart([good_topic, good_body])
        end = time.monotonic() + 5
        while time.monotonic() < end and not got:
            item = sub.recv(0.2)
            if item is not None:
                got.append(item)
        malformed = sub.counters["malformed"]
    finally:
        sub.close()
        evil.close()
    assert got and got[0].event.label == "Dog", "the subscriber went on after the payloads"
    assert malformed >= len(payloads)

    p = Publisher(PublisherConfig(pub=f"tcp://127.0.0.1:{free_port()}", snapshot=f"tcp://127.0.0.1:{free_port()}")).open()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(p.snapshot_endpoint)
    try:
        for body in payloads:
            d.send(body)
            assert d.poll(3000)
            frames = d.recv_multipart()
            assert frames[0] == wire.SNAPSHOT_ERROR, frames
        d.send(wire.encode_snapshot_request())
        assert d.poll(3000) and d.recv_multipart()[-2] == wire.SNAPSHOT_END
    finally:
        d.close()
        p.close()
    assert not marker.exists(), "a payload ran"


def test_no_pickle_eval_or_exec_on_the_receive_paths():
    """Audit backing the behavioural test: the modules that read network bytes use no unpickler,
    eval, exec or marshal at all (docs/reliability.md lists them)."""
    import ast
    import inspect

    from avparse.stream import client, proxy, publisher

    banned_calls = {"eval", "exec", "compile", "loads", "load", "Unpickler", "__import__"}
    for mod in (wire, client, publisher, proxy):
        tree = ast.parse(inspect.getsource(mod))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if getattr(node, "module", None) else [])
                assert not any(n.split(".")[0] in ("pickle", "marshal", "shelve", "dill", "cloudpickle")
                               for n in names), (mod.__name__, names)
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
                if name in banned_calls and (owner, name) not in (("json", "loads"), ("re", "compile")):
                    raise AssertionError(f"{mod.__name__}: {owner + '.' if owner else ''}{name}() on a receive path")


# -------------------------------------------------------------------------- weights_only loading
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    import torch

    from avparse.core.checkpoint import CheckpointError, load_model

    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "avparse-han", "version": 1, "config": {}, "state_dict": {}, "x": Marker(marker)}, bad)
    with pytest.raises(CheckpointError) as e:
        load_model(bad)
    assert "evil.pt" in str(e.value) and not marker.exists()


def test_extractor_weight_files_that_would_run_code_are_refused(tmp_path):
    import torch

    from avparse.core.weights import load_state_dict

    marker = tmp_path / "pwned"
    bad = tmp_path / "vggish-10086976.pth"
    torch.save({"w": torch.zeros(2), "x": Marker(marker)}, bad)
    with pytest.raises(Exception) as e:
        load_state_dict(bad)
    assert not marker.exists()
    assert "Traceback" not in str(e.value) and str(bad.name) in str(e.value), str(e.value)


def test_feature_files_with_pickled_objects_are_refused_by_the_dataset(tmp_path):
    """Feature files are untrusted too (shared data sets): an object array in an .npy file would
    unpickle; the dataset reads them with allow_pickle=False and names the file."""
    import numpy as np

    from avparse.core.profiles import LITE
    from avparse.train.dataset import DataConfig, FeatureError, open_split
    from avparse.train.featgen import PlantedSpec, write_planted_layout

    classes = ("alpha", "beta", "gamma")
    d = write_planted_layout(tmp_path / "llp", PlantedSpec(classes, LITE), n_train=4, n_val=2, n_test=2, seed=1)
    s = open_split(DataConfig(str(d), profile=LITE, classes=classes), "train")
    marker = tmp_path / "pwned"
    path = s.feature_file("audio", 1)
    np.save(path, np.array([Marker(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(FeatureError) as e:
        s.batch([0, 1])
    assert path in str(e.value) and not marker.exists()
