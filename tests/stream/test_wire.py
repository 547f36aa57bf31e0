import json
import random

import pytest

from avparse.core.events import Event
from avparse.stream import wire

HEAD = dict(publisher="host/tcp://127.0.0.1:5556", session="0123456789abcdef0123456789abcdef",
            seq=7, tseq=3, wall_time=1700000000.25)


def _offset():
    return Event(kind="offset", stream="cam1", label="Dog", modality="audiovisual", media_time=5.0,
                 score=0.81, decided_at=6.0, reason="ended", onset_time=2.0)


def test_event_round_trip_and_documented_fields():
    ev = _offset()
    t, b = wire.encode_event(ev, **HEAD)
    assert t == b"avp.offset.cam1."
    body = json.loads(b)
    assert body == {"v": 1, "type": "offset", **HEAD, "stream": "cam1", "class": "Dog",
                    "modality": "audiovisual", "media_time": 5.0, "score": 0.81, "decided_at": 6.0,
                    "reason": "ended", "onset_time": 2.0}
    m = wire.decode(t, b)
    assert m.event == ev and m.seq == 7 and m.tseq == 3 and m.session == HEAD["session"]


def test_one_encoding_event_files_are_wire_bodies_and_the_old_form_is_read_with_a_warning():
    ev = _offset()
    onset = Event(kind="onset", stream="cam1", label="Dog", modality="audio", media_time=2.0, score=0.9,
                  decided_at=3.0)
    assert Event.from_dict(ev.to_dict()) == ev and Event.from_dict(onset.to_dict()) == onset
    lines = wire.EventLines("avparse-parse", clock=lambda: 1700000000.5)
    bodies = [wire.decode_body(lines.line(e).encode()) for e in (onset, ev, onset)]
    assert [(b["seq"], b["tseq"]) for b in bodies] == [(1, 1), (2, 1), (3, 2)]    # as one publisher session
    assert {b["session"] for b in bodies} == {lines.session} and bodies[1]["publisher"] == "avparse-parse"
    assert [Event.from_dict(b) for b in bodies] == [onset, ev, onset]
    assert {k: v for k, v in bodies[1].items() if k not in HEAD} == ev.to_dict()
    old = {"kind": "offset", "stream": "cam1", "label": "Dog", "modality": "audiovisual", "media_time": 5.0,
           "score": 0.81, "decided_at": 6.0, "reason": "ended", "onset_time": 2.0}   # avparse 0.1's event files
    with pytest.warns(DeprecationWarning, match="old form"):
        assert Event.from_dict(old) == ev
    with pytest.raises(ValueError, match="version 2"):
        Event.from_dict({**ev.to_dict(), "v": 2})


def test_onset_has_no_offset_fields_and_heartbeat_stats_round_trip():
    on = Event(kind="onset", stream="mic-2", label="Speech", modality="audio", media_time=1.0, score=0.6)
    t, b = wire.encode_event(on, **HEAD)
    assert "reason" not in json.loads(b) and t == b"avp.onset.mic-2."
    t, b = wire.encode_heartbeat(**HEAD, topics={b"avp.onset.cam1.": 4})
    m = wire.decode(t, b)
    assert t == b"avp.heartbeat." and m.type == "heartbeat" and m.topics == {"avp.onset.cam1.": 4}
    import numpy as np

    t, b = wire.encode_stats({"fps": np.float32(2.5), "lat": float("nan"), "q": (1, 2)}, **HEAD)
    m = wire.decode(t, b)
    assert t == b"avp.stats." and m.stats == {"fps": 2.5, "lat": None, "q": [1, 2]}


def test_topic_prefixes_select_streams_and_types_exactly():
    subs = wire.subscriptions(["cam1"], ["onset", "offset"])
    assert subs == [b"avp.onset.cam1.", b"avp.offset.cam1."]
    cam10 = wire.topic("onset", "cam10")
    assert not any(cam10.startswith(p) for p in subs)
    assert wire.topic("onset", "cam1").startswith(wire.subscriptions([], ["onset"])[0])
    with pytest.raises(wire.WireError):
        wire.topic("onset", "bad.name")


def _body(**changes):
    t, b = wire.encode_event(_offset(), **HEAD)
    d = json.loads(b)
    for k, v in changes.items():
        if v is KeyError:
            d.pop(k)
        else:
            d[k] = v
    return t, json.dumps(d, separators=(",", ":")).encode()


@pytest.mark.parametrize("changes, match", [
    (dict(seq=0), "seq"),
    (dict(seq="7"), "seq"),
    (dict(score=1.5), "score"),
    (dict(media_time=KeyError), "media_time"),
    (dict(modality="smell"), "modality"),
    (dict(type="party"), "type"),
    (dict(session="not hex!"), "session"),
    (dict(onset_time="x"), "onset_time"),
    (dict(stream="cam2"), "topic"),
    (dict(seq=True), "seq"),
])
def test_decoder_rejects_malformed_bodies(changes, match):
    t, b = _body(**changes)
    with pytest.raises(wire.WireError, match=match):
        wire.decode(t, b)


def test_decoder_rejects_non_json_oversized_nan_and_other_versions():
    t, b = _body()
    with pytest.raises(wire.WireError, match="JSON"):
        wire.decode(t, b"\x80\x04pickle")
    with pytest.raises(wire.WireError, match="object"):
        wire.decode(t, b"[1,2]")
    with pytest.raises(wire.WireError, match="limit"):
        wire.decode(t, b" " * (wire.MAX_BODY + 1))
    with pytest.raises(wire.WireError, match="NaN"):
        wire.decode(t, b.replace(b'"score":0.81', b'"score":NaN'))
    with pytest.raises(wire.UnsupportedVersion):
        wire.decode(*_body(v=2))
    with pytest.raises(wire.WireError, match="frames"):
        wire.decode_frames([t])


def test_snapshot_request_validation():
    assert wire.decode_snapshot_request([wire.encode_snapshot_request(["cam1"])]) == ("cam1",)
    assert wire.decode_snapshot_request([wire.encode_snapshot_request()]) == ()
    for bad in ([b"ICANHAZ?"], [b"{}"], [b'{"v":1,"type":"snapshot","streams":"cam1"}'],
                [b'{"v":1,"type":"snapshot","streams":["a.b"]}'], [b"x" * (wire.MAX_REQUEST + 1)],
                [wire.encode_snapshot_request(), b"extra"]):
        with pytest.raises(wire.WireError):
            wire.decode_snapshot_request(bad)


def test_fuzz_decoders_raise_only_wire_errors():
    rng = random.Random(1234)
    t, good = wire.encode_event(_offset(), **HEAD)
    req = wire.encode_snapshot_request(["cam1"])
    for i in range(2000):
        base = good if i % 2 else req
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(data)) if data else 0
            if op < 0.4 and data:
                data[pos] = rng.randrange(256)
            elif op < 0.7:
                data.insert(pos, rng.randrange(256))
            elif data:
                del data[pos]
        for fn in (lambda d: wire.decode(t, d), lambda d: wire.decode_snapshot_request([d]),
                   lambda d: wire.decode_snapshot_end(d)):
            try:
                fn(bytes(data))
            except wire.WireError:
                pass
