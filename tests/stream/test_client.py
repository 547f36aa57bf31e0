"""The Subscriber's handshake, gap and restart detection over real loopback sockets."""

import threading
import time

import pytest

zmq = pytest.importorskip("zmq")

from avparse.core.events import Event  # noqa: E402
from avparse.stream.client import CurveClientKeys, Gap, Restart, Subscriber, SubscriberError  # noqa: E402
from avparse.stream.publisher import Publisher, PublisherConfig  # noqa: E402

ANY = "tcp://127.0.0.1:*"


def ev(kind, label, stream="cam1", t=1.0, on=None):
    return Event(kind=kind, stream=stream, label=label, modality="visual", media_time=t, score=0.8,
                 decided_at=t + 1, reason="ended" if kind == "offset" else "", onset_time=on)


def drain(sub, timeout=0.4):
    """Items until none came for ``timeout`` s."""
    out = []
    while (item := sub.recv(timeout)) is not None:
        out.append(item)
    return out


def events(items):
    return [i for i in items if getattr(i, "event", None) is not None]


@pytest.fixture
def pub():
    p = Publisher(PublisherConfig(pub=ANY, snapshot=ANY, heartbeat_interval=0.25)).open()
    yield p
    p.close()


def test_late_joiner_gets_open_events_then_live_without_duplicates(pub):
    pub.emit(ev("onset", "Dog", t=1.0))
    pub.emit(ev("onset", "Cat", t=2.0))
    pub.emit(ev("offset", "Cat", t=3.0, on=2.0))
    with Subscriber(pub.pub_endpoint, snapshot=pub.snapshot_endpoint) as sub:
        first = sub.recv(1.0)
        assert first.from_snapshot and first.event == ev("onset", "Dog", t=1.0)
        pub.emit(ev("offset", "Dog", t=5.0, on=1.0))
        pub.emit(ev("onset", "Car", t=6.0))
        items = drain(sub)
    assert not [i for i in items if isinstance(i, (Gap, Restart))]
    assert [(m.event.kind, m.event.label, m.from_snapshot) for m in events(items)] == [
        ("offset", "Dog", False), ("onset", "Car", False)]
    assert sub.open_events == [ev("onset", "Car", t=6.0)]


def test_late_joiner_during_a_busy_stream_loses_and_repeats_nothing(pub):
    stop = threading.Event()

    def emitter():
        i = 0
        while not stop.is_set():
            label = f"c{i}"
            pub.emit(ev("onset", label, t=float(i)))
            if i % 3:
                pub.emit(ev("offset", label, t=i + 0.5, on=float(i)))
            i += 1
            time.sleep(0.002)

    th = threading.Thread(target=emitter)
    th.start()
    try:
        time.sleep(0.2)
        sub = Subscriber(pub.pub_endpoint, snapshot=pub.snapshot_endpoint).open()
        time.sleep(0.3)
    finally:
        stop.set()
        th.join()
    items = drain(sub)
    sub.close()
    assert not [i for i in items if isinstance(i, (Gap, Restart))]
    msgs = events(items)
    live = [m.seq for m in msgs if not m.from_snapshot]
    assert live and live == sorted(set(live)), "live messages in order, each once"
    assert min(live) > max(m.seq for m in msgs if m.from_snapshot)
    # the subscriber's view of what is open equals the publisher's
    assert sorted(e.label for e in sub.open_events) == sorted(e.label for e in pub.open_events)


def test_forced_gap_is_reported_with_its_range(pub):
    with Subscriber(pub.pub_endpoint, snapshot=pub.snapshot_endpoint) as sub:
        pub.emit(ev("onset", "Dog"))
        seq_before = pub.seq
        pub.drop_next(2)
        pub.emit(ev("offset", "Dog", t=2.0, on=1.0))
        pub.emit(ev("onset", "Cat", t=2.0))
        pub.emit(ev("onset", "Car", t=3.0))
        items = drain(sub)
    gaps = [i for i in items if isinstance(i, Gap)]
    assert len(gaps) == 1 and (gaps[0].first, gaps[0].last) == (seq_before + 1, seq_before + 2)
    assert gaps[0].missed == 2 and "gap" in gaps[0].describe()
    # the resync after the gap fixed the open set: Dog's lost offset no longer leaves it open
    assert sorted(e.label for e in sub.open_events) == ["Car", "Cat"]


def test_filtered_subscriber_detects_losses_of_its_stream_only(pub):
    with Subscriber(pub.pub_endpoint, snapshot=pub.snapshot_endpoint, streams=["cam1"]) as sub:
        pub.emit(ev("onset", "Dog", stream="cam2"))   # other streams: seq jumps, no gap
        pub.emit(ev("onset", "Dog", stream="cam1"))
        pub.drop_next(1)
        pub.emit(ev("onset", "Cat", stream="cam2"))   # lost, but not ours
        pub.emit(ev("onset", "Car", stream="cam1"))
        items = drain(sub)
        assert not [i for i in items if isinstance(i, Gap)]
        assert [m.event.label for m in events(items)] == ["Dog", "Car"]
        pub.drop_next(1)
        pub.emit(ev("offset", "Car", stream="cam1", t=4.0, on=1.0))  # lost at the tail of a topic
        items = drain(sub, 0.8)  # a heartbeat (every 0.25 s) reveals it
    gaps = [i for i in items if isinstance(i, Gap)]
    assert len(gaps) == 1 and gaps[0].topic == "avp.offset.cam1." and gaps[0].missed == 1


def test_slow_subscriber_sees_a_gap():
    p = Publisher(PublisherConfig(pub=ANY, snapshot=None, sndhwm=5)).open()
    try:
        sub = Subscriber(p.pub_endpoint, rcvhwm=5).open()
        p.emit(ev("onset", "warmup"))
        assert sub.recv(2.0) is not None
        flood = []
        for i in range(20000):  # the subscriber reads nothing meanwhile
            p.emit(ev("onset", f"c{i % 25}", t=float(i)))
            flood.append(p.seq)
        items = drain(sub, 0.3)  # what survived the queues (socket buffers included)
        # A sentinel sent once the queues are empty: every dropped message before it is either
        # delivered or counted by a Gap by the time it arrives, however slow the machine is.
        p.emit(ev("onset", "sentinel"))
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            item = sub.recv(1.0)
            if item is None:
                continue
            items.append(item)
            if getattr(getattr(item, "event", None), "label", None) == "sentinel":
                break
        sub.close()
    finally:
        p.close()
    got = events(items)
    assert got and got[-1].event.label == "sentinel"
    gaps = [i for i in items if isinstance(i, Gap)]
    assert gaps, "20000 messages into HWM 5 queues must drop some"
    # Every flood message was either delivered (once) or reported inside a gap's seq range.
    delivered = [m.seq for m in got[:-1]]
    assert len(delivered) == len(set(delivered))
    covered = set(delivered)
    for g in gaps:
        covered.update(range(g.first, g.last + 1))
    assert not set(flood) - covered


def test_publisher_restart_is_reported_and_resynchronised():
    p1 = Publisher(PublisherConfig(pub=ANY, snapshot=ANY, heartbeat_interval=0.25)).open()
    pub_ep, snap_ep = p1.pub_endpoint, p1.snapshot_endpoint
    sub = Subscriber(pub_ep, snapshot=snap_ep).open()
    p1.emit(ev("onset", "Dog"))
    assert sub.recv(1.0).event.label == "Dog"
    old = p1.session
    p1.close(reason="stopped")
    items = drain(sub, 0.3)
    assert [(m.event.label, m.event.reason) for m in events(items)] == [("Dog", "stopped")]
    p2 = Publisher(PublisherConfig(pub=pub_ep, snapshot=snap_ep, heartbeat_interval=0.25)).open()
    try:
        p2.emit(ev("onset", "Cat"))
        items = drain(sub, 1.0)
        p2.emit(ev("onset", "Car"))
        items += drain(sub, 0.3)
    finally:
        sub.close()
        p2.close()
    restarts = [i for i in items if isinstance(i, Restart)]
    assert len(restarts) == 1 and restarts[0].old_session == old and restarts[0].new_session == p2.session
    assert not [i for i in items if isinstance(i, Gap)]
    labels = [m.event.label for m in events(items)]
    assert labels == ["Cat", "Car"]  # Cat once: live or from the new session's snapshot, not both


def test_snapshot_service_absent_is_one_clear_error(pub):
    sub = Subscriber(pub.pub_endpoint, snapshot="tcp://127.0.0.1:1", snapshot_timeout=0.3)
    with pytest.raises(SubscriberError, match="no answer from the snapshot service"):
        sub.open()
    sub.close()


def test_curve_subscriber(tmp_path):
    import zmq.auth

    for n in ("server", "me"):
        zmq.auth.create_certificates(str(tmp_path), n)
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "me.key").write_bytes((tmp_path / "me.key").read_bytes())
    p = Publisher(PublisherConfig(pub=ANY, snapshot=ANY, curve_secret_key=str(tmp_path / "server.key_secret"),
                                  curve_allow_dir=str(allow))).open()
    try:
        p.emit(ev("onset", "Dog"))
        keys = CurveClientKeys.from_files(str(tmp_path / "server.key"), str(tmp_path / "me.key_secret"))
        with Subscriber(p.pub_endpoint, snapshot=p.snapshot_endpoint, curve=keys) as sub:
            m = sub.recv(1.0)
            assert m.from_snapshot and m.event.label == "Dog"
        # a client without a key on the allow-list gets nothing, live or from the snapshot
        zmq.auth.create_certificates(str(tmp_path), "other")
        other = CurveClientKeys.from_files(str(tmp_path / "server.key"), str(tmp_path / "other.key_secret"))
        with Subscriber(p.pub_endpoint, snapshot=p.snapshot_endpoint, curve=other,
                        types=("onset", "offset", "heartbeat"), handshake_timeout=0.5, snapshot_timeout=0.5) as sub:
            p.emit(ev("onset", "Cat"))
            assert sub.recv(1.0) is None
            assert sub.open_events == [] and sub.counters["received"] == 0
            with pytest.raises(SubscriberError, match="no answer"):
                sub._snapshot(p.snapshot_endpoint)
    finally:
        p.close()


def test_subscriber_started_before_the_publisher_gets_the_snapshot_later():
    import socket

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    pub_ep, snap_ep = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    sub = Subscriber(pub_ep, snapshot=snap_ep, handshake_timeout=0.3).open()  # nobody publishing yet
    p = Publisher(PublisherConfig(pub=pub_ep, snapshot=snap_ep, heartbeat_interval=0.25)).open()
    try:
        p.emit(ev("onset", "Dog"))   # may go out before the subscriber's connection is up
        items = drain(sub, 1.0)
        p.emit(ev("offset", "Dog", t=2.0, on=1.0))
        items += drain(sub, 0.3)
    finally:
        sub.close()
        p.close()
    assert not [i for i in items if isinstance(i, (Gap, Restart))]
    assert [(m.event.kind, m.event.label) for m in events(items)] == [("onset", "Dog"), ("offset", "Dog")]


def test_type_filter_does_not_make_false_gaps(pub):
    with Subscriber(pub.pub_endpoint, snapshot=pub.snapshot_endpoint, streams=["cam1"], types=("onset",)) as sub:
        pub.emit(ev("onset", "Dog"))
        pub.emit(ev("offset", "Dog", t=2.0, on=1.0))   # not subscribed: heartbeats count it, no gap
        pub.emit(ev("onset", "Cat", t=3.0))
        items = drain(sub, 0.8)
    assert not [i for i in items if isinstance(i, Gap)], items
    assert [m.event.label for m in events(items)] == ["Dog", "Cat"]
