"""Two publishers through one XSUB/XPUB proxy, on loopback."""

import pytest

zmq = pytest.importorskip("zmq")

from avparse.core.events import Event  # noqa: E402
from avparse.stream.client import Gap, Subscriber  # noqa: E402
from avparse.stream.proxy import Proxy, ProxyConfig, ProxyError  # noqa: E402
from avparse.stream.publisher import Publisher, PublisherConfig  # noqa: E402

ANY = "tcp://127.0.0.1:*"


def ev(kind, label, stream, t=1.0):
    return Event(kind=kind, stream=stream, label=label, modality="audio", media_time=t, score=0.7,
                 decided_at=t, reason="ended" if kind == "offset" else "", onset_time=0.0 if kind == "offset" else None)


def drain(sub, timeout=0.4):
    out = []
    while (item := sub.recv(timeout)) is not None:
        out.append(item)
    return out


def test_a_subscriber_of_the_proxy_receives_both_runtimes():
    a = Publisher(PublisherConfig(pub=ANY, snapshot=ANY, heartbeat_interval=0.25)).open()
    b = Publisher(PublisherConfig(pub=ANY, snapshot=ANY, heartbeat_interval=0.25)).open()
    proxy = Proxy(ProxyConfig(xsub=(a.pub_endpoint, b.pub_endpoint), xpub=ANY)).start()
    try:
        a.emit(ev("onset", "Dog", "camA"))  # open before the subscriber joins
        sub = Subscriber(proxy.xpub_endpoint, snapshot=[a.snapshot_endpoint, b.snapshot_endpoint]).open()
        first = drain(sub, 0.3)
        for i in range(5):
            a.emit(ev("onset", f"a{i}", "camA", t=float(i)))
            b.emit(ev("onset", f"b{i}", "camB", t=float(i)))
        items = first + drain(sub, 0.5)
        sub.close()
    finally:
        proxy.stop()
        a.close(), b.close()
    msgs = [i for i in items if getattr(i, "event", None) is not None]
    assert not [i for i in items if isinstance(i, Gap)]
    assert [m.event.label for m in msgs if m.from_snapshot] == ["Dog"]
    live = [m for m in msgs if not m.from_snapshot]
    assert [m.event.label for m in live if m.publisher == a.name] == [f"a{i}" for i in range(5)]
    assert [m.event.label for m in live if m.publisher == b.name] == [f"b{i}" for i in range(5)]
    assert a.name != b.name


def test_proxy_busy_port_and_no_upstream_are_clear_errors():
    with Proxy(ProxyConfig(xsub=("tcp://127.0.0.1:1",), xpub=ANY)) as p:
        with pytest.raises(ProxyError, match="in use"):
            Proxy(ProxyConfig(xsub=("tcp://127.0.0.1:1",), xpub=p.xpub_endpoint)).start()
    with pytest.raises(ProxyError, match="upstream"):
        Proxy(ProxyConfig(xpub=ANY)).start()


def test_proxy_with_curve_on_both_sides(tmp_path):
    """Runtime -(CURVE, proxy's client key allowed)-> proxy -(CURVE, its own server key)-> subscribers."""
    import zmq.auth

    from avparse.stream.client import CurveClientKeys

    for n in ("runtime", "proxy_client", "proxy_server", "alice", "mallory"):
        zmq.auth.create_certificates(str(tmp_path), n)
    runtime_allow, proxy_allow = tmp_path / "runtime_allow", tmp_path / "proxy_allow"
    runtime_allow.mkdir(), proxy_allow.mkdir()
    (runtime_allow / "proxy_client.key").write_bytes((tmp_path / "proxy_client.key").read_bytes())
    (proxy_allow / "alice.key").write_bytes((tmp_path / "alice.key").read_bytes())
    a = Publisher(PublisherConfig(pub=ANY, snapshot=None, heartbeat_interval=0.25,
                                  curve_secret_key=str(tmp_path / "runtime.key_secret"),
                                  curve_allow_dir=str(runtime_allow))).open()
    proxy = Proxy(ProxyConfig(xsub=(a.pub_endpoint,), xpub=ANY,
                              curve_client_key=str(tmp_path / "proxy_client.key_secret"),
                              curve_upstream_server_key=str(tmp_path / "runtime.key"),
                              curve_server_key=str(tmp_path / "proxy_server.key_secret"),
                              curve_allow_dir=str(proxy_allow))).start()

    def keys(name):
        return CurveClientKeys.from_files(str(tmp_path / "proxy_server.key"), str(tmp_path / f"{name}.key_secret"))

    try:
        alice = Subscriber(proxy.xpub_endpoint, curve=keys("alice"), types=("onset",)).open()
        mallory = Subscriber(proxy.xpub_endpoint, curve=keys("mallory"), handshake_timeout=0.3).open()
        a.emit(ev("onset", "Dog", "camA"))
        got = drain(alice, 0.6)
        assert any(getattr(m, "event", None) is not None and m.event.label == "Dog" for m in got)
        assert drain(mallory, 0.3) == [] and mallory.counters["received"] == 0
        alice.close(), mallory.close()
    finally:
        proxy.stop()
        a.close()
