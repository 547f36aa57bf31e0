"""Fuzzing every decoder of untrusted bytes with a seeded mutational fuzzer (numpy RNG): wire
bodies and topics, whole received messages through the Subscriber, snapshot requests (decoder and
the live service over a real socket), snapshot replies, run's TOML configuration, checkpoints.

Each finds no crash: only the documented exception type comes out (WireError, UserError,
CheckpointError), or nothing at all where the receiver must swallow bad input (the Subscriber,
the snapshot service). Mutations are structural (JSON values swapped for other types, huge
integers, deep nesting, control characters, removed and unknown keys) and byte-level (flips,
inserts, deletions, truncation, splices). tests/stream/test_wire.py has a byte-only fuzz; these
go deeper into the schema checks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from avparse.core.events import Event
from avparse.stream import wire

CASES = 2000
HEAD = dict(publisher="host/tcp://127.0.0.1:5556", session="52ac48f85c784fac97966cc5445a39bb", seq=7, tseq=3,
            wall_time=1795685793.6)

WEIRD = [None, True, False, 0, -1, 1, 2**31, 2**63, 10**400, -(10**400), 1e308, -1e308, 1e-320, 0.5, 1.5,
         "", "x", "a.b", "cam1", "\x00", "\x1f", "é" * 200, "a" * 70000, [], [1], {}, {"a": 1}, [[[]]],
         "NaN", "Infinity", "onset", "offset", "heartbeat", "stats", "audio", "snapshot", "snapshot-end"]


def good_bodies() -> list[tuple[bytes, bytes]]:
    on = Event("onset", "cam1", "Dog", "audio", 12.0, 0.91, 13.0)
    off = Event("offset", "cam1", "Dog", "audiovisual", 14.0, 0.2, 15.0, reason="ended", onset_time=12.0)
    return [wire.encode_event(on, **HEAD), wire.encode_event(off, **HEAD),
            wire.encode_heartbeat(**HEAD, topics={b"avp.onset.cam1.": 3, "avp.offset.cam1.": 2}),
            wire.encode_stats({"stages": {"a": 1.5}, "q": [1, 2], "nan": float("nan")}, **HEAD)]


class Mutator:
    """Seeded structural + byte mutations of JSON documents."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def weird(self):
        r = self.rng.random()
        if r < 0.1:  # deep nesting
            depth = int(self.rng.integers(50, 3000))
            return json.loads("[" * depth + "]" * depth) if depth < 900 else {"deep": "[" * depth}
        return self.pick(WEIRD)

    def mutate_obj(self, obj):
        obj = json.loads(json.dumps(obj))
        for _ in range(int(self.rng.integers(1, 4))):
            target = obj
            # descend into a nested dict sometimes (topics, stats)
            while isinstance(target, dict) and target and self.rng.random() < 0.3:
                k = self.pick(list(target))
                if isinstance(target[k], dict):
                    target = target[k]
                else:
                    break
            if not isinstance(target, dict):
                continue
            r = self.rng.random()
            keys = list(target)
            if r < 0.5 and keys:
                target[self.pick(keys)] = self.weird()
            elif r < 0.7 and keys:
                del target[self.pick(keys)]
            elif r < 0.85:
                target[self.pick(["extra", "v", "type", "seq", "stream", "streams", "topics", "x" * 300])] = self.weird()
            else:
                return self.weird()
        return obj

    def mutate_bytes(self, data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(int(self.rng.integers(1, 6))):
            r = self.rng.random()
            pos = int(self.rng.integers(len(b) + 1))
            if r < 0.3 and b:
                b[min(pos, len(b) - 1)] = int(self.rng.integers(256))
            elif r < 0.5:
                b[pos:pos] = bytes(self.rng.integers(0, 256, int(self.rng.integers(1, 8)), dtype=np.uint8))
            elif r < 0.65 and b:
                del b[pos:pos + int(self.rng.integers(1, 16))]
            elif r < 0.75:
                b = b[:pos]
            elif r < 0.85 and b:  # splice a piece of itself
                i = int(self.rng.integers(len(b)))
                b[pos:pos] = b[i:i + int(self.rng.integers(1, 32))]
            else:
                b[pos:pos] = self.pick([b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\u0000", b"\\ud800",
                                        b"NaN", b"-Infinity", b"1e999", b"9" * 500, b"\xff\xfe", b"\xc3"])
        return bytes(b)

    def document(self, good: bytes) -> bytes:
        r = self.rng.random()
        if r < 0.55:
            body = json.dumps(self.mutate_obj(json.loads(good)), ensure_ascii=self.rng.random() < 0.5)
            return body.encode("utf-8", "surrogatepass")
        if r < 0.9:
            return self.mutate_bytes(good)
        return self.mutate_bytes(json.dumps(self.mutate_obj(json.loads(good))).encode("utf-8", "surrogatepass"))

    def topic(self, good: bytes) -> bytes:
        r = self.rng.random()
        if r < 0.7:
            return good
        if r < 0.8:
            return self.pick([b"", b"avp.", b"avp.onset.", b"avp.onset.cam1", b"avp.onset.cam10.", b"x" * 200,
                              b"avp.stats.", b"avp.heartbeat.", b"avp.offset.cam1."])
        return self.mutate_bytes(good)


def test_wire_decoders_raise_only_wire_errors_and_accept_only_what_they_can_resend():
    m = Mutator(2026)
    goods = good_bodies()
    accepted = rejected = 0
    for i in range(CASES):
        topic, body = goods[i % len(goods)]
        t, b = m.topic(topic), m.document(body)
        try:
            msg = wire.decode(t, b)
        except wire.WireError:
            rejected += 1
            continue
        accepted += 1
        # what a decoder accepts, a relay can send on unchanged
        if msg.event is not None:
            wire.encode_event(msg.event, **{**HEAD, "seq": msg.seq, "tseq": msg.tseq})
        for frames in ([t, b], [t], [t, b, b]):
            try:
                wire.decode_frames(frames)
            except wire.WireError:
                pass
    assert rejected > CASES // 4 and accepted > 20, (accepted, rejected)  # the fuzzer hits both sides


def test_snapshot_messages_raise_only_wire_errors():
    m = Mutator(7)
    req = wire.encode_snapshot_request(["cam1", "door"])
    end = wire.encode_snapshot_end(publisher=HEAD["publisher"], session=HEAD["session"], seq=9, count=1,
                                   topics={b"avp.onset.cam1.": 2})[1]
    err = wire.encode_snapshot_error("bad request")[1]
    outcomes = {"ok": 0, "err": 0}
    for i in range(CASES):
        for fn, good in ((lambda d: wire.decode_snapshot_request([d]), req),
                         (wire.decode_snapshot_end, end), (wire.decode_snapshot_error, err)):
            try:
                fn(m.document(good))
                outcomes["ok"] += 1
            except wire.WireError:
                outcomes["err"] += 1
    assert outcomes["ok"] > 100 and outcomes["err"] > 1000, outcomes


def test_subscriber_swallows_any_received_frames():
    """Whole received messages (any number of frames, any bytes, several publishers and sessions)
    through the Subscriber's receive path: it counts them as malformed or takes them; it never
    raises, and what it hands out is well typed."""
    from avparse.stream.client import Gap, Restart, Subscriber

    m = Mutator(99)
    goods = good_bodies()
    sub = Subscriber("tcp://127.0.0.1:1")  # never opened: frames go straight into its receive path
    for i in range(CASES):
        topic, body = goods[i % len(goods)]
        n = int(m.rng.integers(0, 4)) if m.rng.random() < 0.1 else 2
        frames = [m.topic(topic), m.document(body)][:n] + [body] * max(0, n - 2)
        sub._handle(frames)
    out = list(sub._out)
    assert sub.counters["malformed"] > CASES // 4 and out
    for item in out:
        assert isinstance(item, (Gap, Restart)) or (item.type in wire.TYPES and isinstance(item.seq, int))


@pytest.mark.slow
def test_snapshot_service_answers_or_drops_every_fuzzed_request_and_keeps_serving():
    zmq = pytest.importorskip("zmq")

    from avparse.stream.publisher import Publisher, PublisherConfig
    from tests.reliability.conftest import free_port

    cfg = PublisherConfig(pub=f"tcp://127.0.0.1:{free_port()}", snapshot=f"tcp://127.0.0.1:{free_port()}")
    pub = Publisher(cfg).open()
    pub.emit(Event("onset", "cam1", "Dog", "audio", 1.0, 0.9, 2.0))
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(cfg.snapshot)
    m = Mutator(31)
    req = wire.encode_snapshot_request(["cam1"])
    answered = errors = 0
    try:
        for i in range(500):  # over a real socket: fewer cases, each a round trip
            n = int(m.rng.integers(1, 4)) if m.rng.random() < 0.1 else 1
            frames = [m.document(req) for _ in range(n)]
            d.send_multipart(frames)
            oversized = sum(len(f) for f in frames) > wire.MAX_REQUEST  # ZeroMQ drops the peer: no answer
            if d.poll(300 if oversized else 3000):
                frames = d.recv_multipart()
                answered += 1
                if frames[0] == wire.SNAPSHOT_ERROR:
                    errors += 1
                    assert wire.decode_snapshot_error(frames[1])
                else:
                    assert frames[-2] == wire.SNAPSHOT_END
            else:  # an oversized request made ZeroMQ drop this peer: reconnect
                d.close()
                d = ctx.socket(zmq.DEALER)
                d.setsockopt(zmq.LINGER, 0)
                d.connect(cfg.snapshot)
        d.send(req)
        assert d.poll(3000), "the snapshot service stopped answering"
        frames = d.recv_multipart()
        assert frames[-2] == wire.SNAPSHOT_END and wire.decode(frames[0], frames[1]).event.label == "Dog"
    finally:
        d.close()
        pub.close()
    assert answered > 350 and errors > 100, (answered, errors)


@pytest.mark.slow
def test_run_configuration_gives_user_errors_only(tmp_path):
    """Structurally mutated TOML run files (values of every type in every key, tables where
    values were, unknown keys): load_toml parses them or raises one-line UserErrors; what it
    accepts, the configuration builders accept too (no error surfaces later as a traceback)."""
    from avparse.stream.pipeline import pipeline_config
    from avparse.stream.tracker import TrackerConfig
    from avparse.tools import run as run_tool
    from avparse.tools import common
    from avparse.tools.common import UserError

    values = ['0', '-1', '1', '0.5', '1e999', '-1e999', 'nan', 'inf', '-inf', '9' * 40, 'true', '"x"', '""',
              '"a.b"', '[]', '[1, "a"]', '{}', '{ a = 1 }', '1979-05-27', '"tcp://0.0.0.0:1"', '"\\u0000"']
    keys = sorted(run_tool.TOP_KEYS - {"publish", "stream"})
    pkeys, skeys = sorted(run_tool.PUBLISH_KEYS), sorted(run_tool.STREAM_KEYS)
    rng = np.random.default_rng(11)
    f = tmp_path / "fuzz.toml"
    outcomes = {"ok": 0, "user": 0}
    for i in range(CASES):
        top = {k: values[int(rng.integers(len(values)))] for k in rng.choice(keys, int(rng.integers(0, 4)), False)}
        pub = {k: values[int(rng.integers(len(values)))] for k in rng.choice(pkeys, int(rng.integers(0, 3)), False)}
        st = {"name": '"s"', "scene": "1"}
        for k in rng.choice(skeys, int(rng.integers(0, 3)), False):
            st[k] = values[int(rng.integers(len(values)))]
        if rng.random() < 0.05:
            top["bogus"] = "1"
        text = "".join(f"{k} = {v}\n" for k, v in top.items()) + "[publish]\n" + \
            "".join(f"{k} = {v}\n" for k, v in pub.items()) + "[[stream]]\n" + \
            "".join(f"{k} = {v}\n" for k, v in st.items())
        f.write_text(text)
        try:
            spec = run_tool.load_toml(str(f))
        except UserError as e:
            assert "\n" not in str(e) and str(f) in str(e), str(e)
            outcomes["user"] += 1
            continue
        outcomes["ok"] += 1
        o = spec.options
        # what the file says builds the publisher's config (run does not guard that step) ...
        pcfg = common.publisher_config(spec.publish)
        assert 0 < pcfg.heartbeat_interval < float("inf"), pcfg
        # ... and the pipeline's, or fails with the ValueError that run turns into one line
        try:
            tracker = TrackerConfig(on_threshold=o.get("on", 0.5), off_threshold=o.get("on", 0.5),
                                    min_on=o.get("min_on", 0.0), min_off=o.get("min_off", 0.0))
            pipeline_config(hop=float(o.get("hop", 1.0)), window=int(o.get("window", 10)),
                            lookahead=int(o.get("lookahead", 0)), max_batch=int(o.get("max_batch", 16)),
                            tracker=tracker)
        except ValueError:
            pass
        for s in spec.streams:
            assert s.speed > 0 and s.scene_duration >= 1 and (s.scene is None or s.scene >= 0), s
        assert 0 <= o.get("duration", 0) < float("inf"), o
    assert outcomes["user"] > CASES // 3 and outcomes["ok"] > 50, outcomes


@pytest.mark.slow
def test_checkpoint_bytes_give_checkpoint_errors_only(tmp_path):
    torch = pytest.importorskip("torch")
    from avparse.core.checkpoint import CheckpointError, load_model, save_checkpoint
    from avparse.core.han import HANConfig, build_han
    from avparse.core.profiles import get_profile

    p = get_profile("lite")
    han = build_han(HANConfig(audio_dim=p.audio_dim, v2d_dim=p.v2d_dim, v3d_dim=p.v3d_dim,
                              frames_per_snippet=p.frames_per_snippet, d_model=4, dim_feedforward=4, num_classes=3))
    good = tmp_path / "good.pt"
    save_checkpoint(good, han, classes=("a", "b", "c"), profile=p)
    data = good.read_bytes()
    m = Mutator(5)
    f = tmp_path / "fuzz.pt"
    loaded = refused = 0
    for i in range(300):
        f.write_bytes(m.mutate_bytes(data))
        try:
            load_model(f)
            loaded += 1
        except CheckpointError as e:
            assert "\n" not in str(e).strip() and "fuzz.pt" in str(e), str(e)
            refused += 1
    # and structural damage inside a well-formed file
    for i in range(300):
        d = torch.load(good, map_location="cpu", weights_only=True)
        k = m.pick(["config", "classes", "profile", "version", "format", "state_dict", "extra", "extractor_state"])
        if m.rng.random() < 0.5 and isinstance(d.get(k), dict) and d[k]:
            d[k][m.pick(list(d[k]))] = m.pick(WEIRD[:20] + [torch.zeros(2), torch.full((1,), float("nan"))])
        else:
            d[k] = m.pick(WEIRD[:20] + [torch.zeros(2)])
        torch.save(d, f)
        try:
            load_model(f)
            loaded += 1
        except CheckpointError as e:
            assert "fuzz.pt" in str(e), str(e)
            refused += 1
    assert refused > 400, (loaded, refused)
