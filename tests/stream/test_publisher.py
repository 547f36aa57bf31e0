"""The publisher over real ZeroMQ sockets on loopback (random free ports)."""

import json
import time

import pytest

zmq = pytest.importorskip("zmq")

from avparse.core.events import Event  # noqa: E402
from avparse.stream import wire  # noqa: E402
from avparse.stream.publisher import Publisher, PublisherConfig, PublisherError  # noqa: E402

ANY = "tcp://127.0.0.1:*"


def onset(label, stream="cam1", t=1.0, modality="audio"):
    return Event(kind="onset", stream=stream, label=label, modality=modality, media_time=t, score=0.9,
                 decided_at=t + 1)


def offset(label, stream="cam1", t=3.0, on=1.0, modality="audio"):
    return Event(kind="offset", stream=stream, label=label, modality=modality, media_time=t, score=0.2,
                 decided_at=t + 1, reason="ended", onset_time=on)


def plain_sub(endpoint, *prefixes, rcvhwm=1000, ctx=None):
    """A subscriber that knows only the documented schema (plain pyzmq + json)."""
    ctx = ctx or zmq.Context.instance()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, rcvhwm)
    s.connect(endpoint)
    for p in prefixes or (b"",):
        s.setsockopt(zmq.SUBSCRIBE, p)
    return s


def wait_joined(s, timeout=3.0):
    """The publisher heartbeats right after a subscription: wait for it."""
    assert s.poll(timeout * 1000), "no heartbeat after subscribing"
    return s.recv_multipart()


def recv_all(s, timeout=0.5, skip_heartbeats=True):
    """Messages until none came for ``timeout`` s (heartbeats do not extend the wait)."""
    out = []
    end = time.monotonic() + timeout
    while s.poll(max(0, end - time.monotonic()) * 1000):
        frames = s.recv_multipart()
        if skip_heartbeats and frames[0] == b"avp.heartbeat.":
            continue
        out.append(frames)
        end = time.monotonic() + timeout
    return out


@pytest.fixture
def pub(tmp_path):
    p = Publisher(PublisherConfig(pub=ANY, snapshot=ANY, log_path=str(tmp_path / "events.jsonl"),
                                  heartbeat_interval=0.3))
    p.open()
    yield p
    p.close()


def test_plain_pyzmq_subscriber_reads_documented_schema(pub):
    s = plain_sub(pub.pub_endpoint)
    topic, body = wait_joined(s)
    assert topic == b"avp.heartbeat."
    pub.emit(onset("Dog"))
    pub.emit(offset("Dog"))
    pub.stats({"fps": 25.0, "queues": {"cam1": 0}})
    msgs = [(t, json.loads(b)) for t, b in recv_all(s, 0.3)]
    events = [(t, m) for t, m in msgs if m["type"] in ("onset", "offset")]
    assert [t for t, _ in events] == [b"avp.onset.cam1.", b"avp.offset.cam1."]
    on, off = events[0][1], events[1][1]
    for m in (on, off):
        assert m["v"] == 1 and m["session"] == pub.session and m["stream"] == "cam1"
        assert m["class"] == "Dog" and m["modality"] == "audio" and isinstance(m["wall_time"], float)
    assert on["media_time"] == 1.0 and on["score"] == 0.9 and on["decided_at"] == 2.0
    assert off["reason"] == "ended" and off["onset_time"] == 1.0 and off["media_time"] == 3.0
    stats = [m for t, m in msgs if t == b"avp.stats."]
    assert stats and stats[0]["stats"] == {"fps": 25.0, "queues": {"cam1": 0}}
    seqs = [json.loads(body)["seq"]] + [m["seq"] for _, m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    s.close()


def test_heartbeats_when_idle_and_seq_strictly_increasing(pub):
    s = plain_sub(pub.pub_endpoint, b"avp.heartbeat.")
    wait_joined(s)
    t0 = time.monotonic()
    beats = []
    while time.monotonic() - t0 < 1.0:
        if s.poll(500):
            beats.append(json.loads(s.recv_multipart()[1]))
    assert len(beats) >= 2, "heartbeat interval is 0.3 s"
    assert all(b["seq"] < c["seq"] for b, c in zip(beats, beats[1:]))
    s.close()


def test_prefix_filtering_by_stream_and_type(pub):
    cam1 = plain_sub(pub.pub_endpoint, *wire.subscriptions(["cam1"], ["onset", "offset"]), b"avp.heartbeat.")
    onsets = plain_sub(pub.pub_endpoint, b"avp.onset.", b"avp.heartbeat.")
    wait_joined(cam1), wait_joined(onsets)
    pub.emit(onset("Dog", "cam1"))
    pub.emit(onset("Cat", "cam10"))
    pub.emit(offset("Dog", "cam1"))
    got1 = [json.loads(b) for t, b in recv_all(cam1, 0.3) if t != b"avp.heartbeat."]
    got2 = [json.loads(b) for t, b in recv_all(onsets, 0.3) if t != b"avp.heartbeat."]
    assert [(m["type"], m["stream"]) for m in got1] == [("onset", "cam1"), ("offset", "cam1")]
    assert [(m["type"], m["stream"]) for m in got2] == [("onset", "cam1"), ("onset", "cam10")]
    cam1.close(), onsets.close()


def test_event_log_is_flushed_per_event_and_close_ends_open_events(tmp_path):
    log = tmp_path / "ev.jsonl"
    p = Publisher(PublisherConfig(pub=ANY, snapshot=None, log_path=str(log))).open()
    p.emit(onset("Dog", t=1.0))
    p.emit(onset("Cat", t=2.0))
    p.emit(offset("Dog", t=4.0))
    lines = log.read_text().splitlines()  # read while the publisher is still open
    assert [json.loads(x)["type"] for x in lines] == ["onset", "onset", "offset"]
    p.close(reason="stopped")
    rows = [wire.decode_body(x.encode()) for x in log.read_text().splitlines()]
    assert len(rows) == 4
    last = rows[-1]
    assert last["type"] == "offset" and last["class"] == "Cat" and last["reason"] == "stopped"
    assert last["onset_time"] == 2.0 and last["media_time"] >= 4.0
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)


def test_busy_port_is_one_clear_error(pub):
    with pytest.raises(PublisherError, match="in use"):
        Publisher(PublisherConfig(pub=pub.pub_endpoint, snapshot=None)).open()
    with pytest.raises(PublisherError, match="in use"):
        Publisher(PublisherConfig(pub=ANY, snapshot=pub.snapshot_endpoint)).open()


def _request(endpoint, frames, timeout=2.0):
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(endpoint)
    d.send_multipart(frames)
    reply = d.recv_multipart() if d.poll(timeout * 1000) else None
    d.close()
    return reply


def test_snapshot_service_survives_malformed_and_oversized_requests(pub):
    pub.emit(onset("Dog"))
    for bad in ([b"ICANHAZ?"], [b"{not json"], [b'{"v":9,"type":"snapshot"}'], [b"a", b"b", b"c"]):
        reply = _request(pub.snapshot_endpoint, bad)
        assert reply is not None and reply[0] == wire.SNAPSHOT_ERROR, bad
        assert wire.decode_snapshot_error(reply[1])
    assert _request(pub.snapshot_endpoint, [b"x" * 100_000], timeout=0.5) is None  # peer dropped
    reply = _request(pub.snapshot_endpoint, [wire.encode_snapshot_request()])
    assert reply[-2] == wire.SNAPSHOT_END
    end = wire.decode_snapshot_end(reply[-1])
    assert end.count == 1 and end.session == pub.session and end.seq == pub.seq
    assert wire.decode(reply[0], reply[1]).event == onset("Dog")
    assert pub.counters["bad_requests"] == 4


def test_a_subscriber_that_never_reads_does_not_block_emit():
    p = Publisher(PublisherConfig(pub=ANY, snapshot=None, sndhwm=10)).open()
    s = plain_sub(p.pub_endpoint, rcvhwm=10)
    wait_joined(s)
    t0 = time.monotonic()
    for i in range(5000):
        p.emit(onset(f"c{i % 50}", t=float(i)))
    took = time.monotonic() - t0
    p.close()
    assert took < 3.0, f"emit took {took:.2f} s for 5000 events"
    got = recv_all(s, 0.2)
    assert len(got) < 5000  # some were dropped for this subscriber; none blocked the publisher
    s.close()


def test_curve_allowed_client_receives_and_unlisted_client_receives_nothing(tmp_path):
    import zmq.auth

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir(), allowed.mkdir()
    zmq.auth.create_certificates(str(keys), "server")
    zmq.auth.create_certificates(str(keys), "good")
    zmq.auth.create_certificates(str(keys), "evil")
    (allowed / "good.key").write_bytes((keys / "good.key").read_bytes())
    p = Publisher(PublisherConfig(pub=ANY, snapshot=ANY, curve_secret_key=str(keys / "server.key_secret"),
                                  curve_allow_dir=str(allowed), heartbeat_interval=0.2)).open()
    server_public, _ = zmq.auth.load_certificate(str(keys / "server.key"))

    def curve_sub(name):
        s = zmq.Context.instance().socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        pub_k, sec_k = zmq.auth.load_certificate(str(keys / f"{name}.key_secret"))
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_public, pub_k, sec_k
        s.connect(p.pub_endpoint)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        return s

    good, evil, plain = curve_sub("good"), curve_sub("evil"), plain_sub(p.pub_endpoint)
    try:
        wait_joined(good)
        p.emit(onset("Dog"))
        got = [json.loads(b) for t, b in recv_all(good, 0.3)]
        assert any(m["type"] == "onset" and m["class"] == "Dog" for m in got)
        assert recv_all(evil, 0.5) == [] and recv_all(plain, 0.1) == []
    finally:
        for s in (good, evil, plain):
            s.close()
        p.close()


def test_curve_key_errors_are_clear(tmp_path):
    with pytest.raises(PublisherError, match="not found"):
        Publisher(PublisherConfig(pub=ANY, snapshot=None, curve_secret_key=str(tmp_path / "nope"))).open()
    import zmq.auth

    pub_file, _ = zmq.auth.create_certificates(str(tmp_path), "server")
    with pytest.raises(PublisherError, match="secret"):
        Publisher(PublisherConfig(pub=ANY, snapshot=None, curve_secret_key=pub_file)).open()


def test_an_event_that_cannot_be_encoded_is_refused_without_a_false_gap(pub):
    import numpy as np

    s = plain_sub(pub.pub_endpoint, b"avp.onset.", b"avp.heartbeat.")
    wait_joined(s)
    pub.emit(onset("Dog"))
    before = pub.seq
    for bad in (Event(kind="onset", stream="cam1", label="Cat", modality="audio", media_time=1.0, score=float("nan")),
                Event(kind="onset", stream="cam1", label="Cat", modality="audio", media_time=float("inf"), score=0.5),
                Event(kind="onset", stream="has space", label="Cat", modality="audio", media_time=1.0, score=0.5)):
        with pytest.raises(wire.WireError):
            pub.emit(bad)
    assert pub.seq == before and pub.counters["encode_errors"] == 2
    pub.emit(Event(kind="onset", stream="cam1", label="Car", modality="audio", media_time=np.float32(2.0),
                   score=np.float32(0.75)))  # numpy scalars are fine
    got = [json.loads(b) for _, b in recv_all(s, 0.3)]
    assert [m["class"] for m in got] == ["Dog", "Car"]
    assert [m["tseq"] for m in got] == [1, 2] and got[1]["score"] == 0.75


def test_curve_without_allow_list_encrypts_for_any_client_key(tmp_path):
    import zmq.auth

    zmq.auth.create_certificates(str(tmp_path), "server")
    zmq.auth.create_certificates(str(tmp_path), "anyone")
    p = Publisher(PublisherConfig(pub=ANY, snapshot=None, curve_secret_key=str(tmp_path / "server.key_secret"),
                                  heartbeat_interval=0.2)).open()
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_serverkey = zmq.auth.load_certificate(str(tmp_path / "server.key"))[0]
    s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(str(tmp_path / "anyone.key_secret"))
    s.connect(p.pub_endpoint)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    plain = plain_sub(p.pub_endpoint)
    try:
        assert wait_joined(s)[0] == b"avp.heartbeat."
        assert recv_all(plain, 0.3, skip_heartbeats=False) == []  # a client without CURVE gets nothing
    finally:
        s.close(), plain.close()
        p.close()
