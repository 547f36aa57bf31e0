"""The event stream's wire format: topic frames and versioned JSON bodies.

Every message on the PUB socket is two frames: a topic and a JSON body.

Topic: ``avp.<type>.<stream>.`` (ASCII) for events, ``<type>`` being
``onset`` or ``offset``, and ``avp.<type>.`` for the publisher-wide
``heartbeat`` and ``stats`` messages. The type comes first because the set of types is fixed and
known to every subscriber while stream names are not: any selection
"these types of these streams" is a finite set of ZeroMQ prefix
subscriptions (``avp.onset.``: onsets of every stream; ``avp.onset.cam1.``
plus ``avp.offset.cam1.``: all events of cam1). The trailing dot ends the
stream name, so ``avp.onset.cam1.`` does not also match ``cam10``.

Body: one UTF-8 JSON object (schema version ``v`` = 1), documented field by
field in docs/eventstream.md. Decoding is strict: size limit, JSON only
(never pickle or eval), NaN/Infinity rejected, every known field checked for
type and range, the topic checked against the body. Unknown fields are
ignored so that version 1 can gain optional fields; a different ``v`` is
rejected with :class:`UnsupportedVersion`.

numpy-free and zmq-free: this module only turns bytes into typed messages
and back.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from avparse.core.events import KINDS, SCHEMA_VERSION, Event
from avparse.core.labels import MODALITIES
TYPES = ("onset", "offset", "heartbeat", "stats")
EVENT_TYPES = KINDS  # ("onset", "offset")
TOPIC_PREFIX = b"avp."
MAX_BODY = 64 * 1024        # bytes: largest body a decoder accepts
MAX_TOPIC = 128             # bytes: largest topic frame
MAX_REQUEST = 4096          # bytes: largest snapshot request
STREAM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PUBLISHER_RE = re.compile(r"^[A-Za-z0-9_.:/@\[\]-]{1,128}$")
SESSION_RE = re.compile(r"^[0-9a-f]{8,64}$")
LABEL_RE = re.compile(r"^[^\x00-\x1f]{1,128}$")

# Frames of the snapshot service (see stream/publisher.py).
SNAPSHOT_END = b"avp.snapshot.end"
SNAPSHOT_ERROR = b"avp.snapshot.error"


class WireError(ValueError):
    """A message that does not follow the documented schema."""


class UnsupportedVersion(WireError):
    """A message of a schema version this decoder does not know."""


def check_stream_name(name: str) -> str:
    """Stream names become topic segments: 1-64 of [A-Za-z0-9_-]."""
    if not isinstance(name, str) or not STREAM_RE.match(name):
        raise WireError(f"stream name must be 1-64 characters of A-Z a-z 0-9 _ -, got {name!r}")
    return name


def topic(type_: str, stream: str = "") -> bytes:
    """The topic frame of a message: ``avp.<type>.<stream>.``."""
    if type_ not in TYPES:
        raise WireError(f"message type must be one of {TYPES}, got {type_!r}")
    if type_ in EVENT_TYPES:
        check_stream_name(stream)
    elif stream:
        raise WireError(f"{type_} messages have no stream")
    return (f"avp.{type_}.{stream}." if stream else f"avp.{type_}.").encode("ascii")


_PARTIAL_STREAM = re.compile(rb"^([A-Za-z0-9_-]{0,64}|[A-Za-z0-9_-]{1,64}\.)$")


def is_topic_prefix(prefix: bytes) -> bool:
    """True when ``prefix`` is a prefix of some topic of this schema (what a subscriber may
    usefully subscribe to: "" for everything, "avp.onset.", "avp.onset.cam1.", ...). A proxy
    forwards only these upstream."""
    for t in TYPES:
        head = f"avp.{t}.".encode("ascii")
        if head.startswith(prefix):
            return True
        if t in EVENT_TYPES and prefix.startswith(head) and _PARTIAL_STREAM.match(prefix[len(head):]):
            return True
    return False


def subscriptions(streams=(), types=TYPES) -> list[bytes]:
    """ZeroMQ prefixes that select exactly ``types`` of ``streams`` (all streams when empty).

    Publisher-wide types (heartbeat, stats) ignore the stream selection.
    """
    out = []
    for t in types:
        if t not in TYPES:
            raise WireError(f"message type must be one of {TYPES}, got {t!r}")
        if t in EVENT_TYPES and streams:
            out += [topic(t, s) for s in streams]
        else:
            out.append(f"avp.{t}.".encode("ascii"))
    return out


@dataclass(frozen=True)
class Message:
    """One decoded message of the event stream."""

    type: str                    # "onset" | "offset" | "heartbeat" | "stats"
    publisher: str               # stable name of the publishing runtime
    session: str                 # random id of this publisher run (changes on restart)
    seq: int                     # per session, strictly increasing over all messages, from 1
    tseq: int                    # per session and topic, strictly increasing, from 1
    wall_time: float             # publisher's Unix time when sent (s)
    topic: bytes                 # the topic frame
    event: Event | None = None   # for onset/offset
    stats: dict | None = None    # for stats: the runtime's figures
    topics: dict = field(default_factory=dict)  # for heartbeat: topic -> last tseq, every topic so far
    from_snapshot: bool = False  # set by the client for open events learnt from a snapshot

    @property
    def stream(self) -> str:
        return self.event.stream if self.event is not None else ""


def _finite(x) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer too large for a float (JSON allows any number of digits)
        return False


def _as_finite(x) -> float | None:
    """float(x) if x is a finite real number (numpy scalars included), else None."""
    if isinstance(x, (bool, str, bytes)) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _json_safe(x, depth=0):
    """Stats may hold numpy scalars, tuples and non-finite floats: make plain JSON."""
    if depth > 8:
        raise WireError("stats nested deeper than 8 levels")
    if isinstance(x, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    if hasattr(x, "item"):  # numpy scalar
        x = x.item()
        if isinstance(x, (bool, int)):
            return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f if math.isfinite(f) else None


def _dump(body: dict) -> bytes:
    try:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError) as e:
        raise WireError(f"cannot encode message: {e}") from None
    if len(data) > MAX_BODY:
        raise WireError(f"message body of {len(data)} bytes exceeds the {MAX_BODY}-byte limit")
    return data


def event_body(event: Event, *, publisher: str, session: str, seq: int, tseq: int, wall_time: float) -> dict:
    """The body of an onset or offset; raises WireError for what a decoder would reject."""
    check_stream_name(event.stream)
    if not isinstance(event.label, str) or not LABEL_RE.match(event.label):
        raise WireError(f"class name {event.label!r} cannot be sent (1-128 printable characters)")
    if not (_as_finite(event.score) is not None and 0.0 <= float(event.score) <= 1.0):
        raise WireError(f"score {event.score!r} of {event.label} is not in [0, 1]")
    for name in ("media_time", "decided_at"):
        if _as_finite(getattr(event, name)) is None:
            raise WireError(f"{name} {getattr(event, name)!r} of {event.label} is not a finite number")
    if event.onset_time is not None and _as_finite(event.onset_time) is None:
        raise WireError(f"onset_time {event.onset_time!r} of {event.label} is not a finite number")
    if len(event.reason) > 64:
        raise WireError("reason longer than 64 characters")
    fields = event.to_dict()
    return {"v": fields.pop("v"), "type": fields.pop("type"), "publisher": publisher, "session": session,
            "seq": seq, "tseq": tseq, "wall_time": wall_time, **fields}


class EventLines:
    """Event files in the one encoding: each event as its wire body on one line, numbered as one
    publisher session numbers its messages (``seq`` over all, ``tseq`` per topic). What
    ``avparse parse --json`` prints and ``avparse demo --events`` writes; ``decode_body`` reads it."""

    def __init__(self, publisher: str, *, clock: Callable[[], float] = time.time):
        if not PUBLISHER_RE.match(publisher):
            raise WireError(f"malformed publisher name {publisher!r}")
        self.publisher = publisher
        self.session = uuid.uuid4().hex
        self._clock = clock
        self._seq = 0
        self._tseq: dict[bytes, int] = {}

    def line(self, event: Event) -> str:
        """The next line (without its newline); raises WireError for what a decoder would reject."""
        t = topic(event.kind, event.stream)
        seq, tseq = self._seq + 1, self._tseq.get(t, 0) + 1
        body = _dump(event_body(event, publisher=self.publisher, session=self.session, seq=seq, tseq=tseq,
                                wall_time=self._clock()))
        self._seq, self._tseq[t] = seq, tseq
        return body.decode("utf-8")


def encode_event(event: Event, **header) -> tuple[bytes, bytes]:
    """(topic, body) frames of an onset or offset."""
    return topic(event.kind, event.stream), _dump(event_body(event, **header))


def encode_heartbeat(*, publisher: str, session: str, seq: int, tseq: int, wall_time: float,
                     topics: dict[bytes | str, int]) -> tuple[bytes, bytes]:
    body = {"v": SCHEMA_VERSION, "type": "heartbeat", "publisher": publisher, "session": session,
            "seq": seq, "tseq": tseq, "wall_time": wall_time,
            "topics": {(k.decode("ascii") if isinstance(k, bytes) else k): int(n) for k, n in topics.items()}}
    return topic("heartbeat"), _dump(body)


def encode_stats(stats: dict, *, publisher: str, session: str, seq: int, tseq: int,
                 wall_time: float) -> tuple[bytes, bytes]:
    body = {"v": SCHEMA_VERSION, "type": "stats", "publisher": publisher, "session": session,
            "seq": seq, "tseq": tseq, "wall_time": wall_time, "stats": _json_safe(dict(stats))}
    return topic("stats"), _dump(body)


def _reject_constant(name):
    raise WireError(f"JSON constant {name} is not allowed")


def loads_object(data: bytes, *, limit: int = MAX_BODY, what: str = "message body") -> dict:
    """Parse bytes as one JSON object, strictly (size, UTF-8, no NaN/Infinity)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"{what} must be bytes")
    if len(data) > limit:
        raise WireError(f"{what} of {len(data)} bytes exceeds the {limit}-byte limit")
    try:
        text = bytes(data).decode("utf-8")
        obj = json.loads(text, parse_constant=_reject_constant)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"{what} is not valid UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WireError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _get(body, name, kind, *, optional=False):
    if name not in body:
        if optional:
            return None
        raise WireError(f"missing field {name!r}")
    v = body[name]
    if kind == "int":
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif kind == "num":
        ok = _finite(v)
    elif kind == "str":
        ok = isinstance(v, str)
    elif kind == "obj":
        ok = isinstance(v, dict)
    else:  # pragma: no cover
        raise AssertionError(kind)
    if not ok:
        if optional and v is None:
            return None
        raise WireError(f"field {name!r} must be {kind}, got {type(v).__name__}")
    return v


def decode_body(data: bytes) -> dict:
    """Validate a body and return it as a dict (the schema, checked). See :func:`decode`."""
    body = loads_object(data)
    v = body.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError("missing or non-integer schema version 'v'")
    if v != SCHEMA_VERSION:
        raise UnsupportedVersion(f"schema version {v} is not supported (this decoder knows {SCHEMA_VERSION})")
    t = _get(body, "type", "str")
    if t not in TYPES:
        raise WireError(f"unknown message type {t!r}")
    pub = _get(body, "publisher", "str")
    if not PUBLISHER_RE.match(pub):
        raise WireError(f"malformed publisher name {pub!r}")
    if not SESSION_RE.match(_get(body, "session", "str")):
        raise WireError("malformed session id")
    for name in ("seq", "tseq"):
        if _get(body, name, "int") < 1:
            raise WireError(f"{name!r} must be >= 1")
    _get(body, "wall_time", "num")
    if t in EVENT_TYPES:
        check_stream_name(_get(body, "stream", "str"))
        if not LABEL_RE.match(_get(body, "class", "str")):
            raise WireError("malformed class name")
        if _get(body, "modality", "str") not in MODALITIES:
            raise WireError(f"modality must be one of {MODALITIES}")
        _get(body, "media_time", "num")
        _get(body, "decided_at", "num")
        score = _get(body, "score", "num")
        if not 0.0 <= score <= 1.0:
            raise WireError(f"score {score} outside [0, 1]")
        if t == "offset":
            if len(_get(body, "reason", "str")) > 64:
                raise WireError("reason longer than 64 characters")
            _get(body, "onset_time", "num", optional=True)
    elif t == "heartbeat":
        topics = _get(body, "topics", "obj")
        for k, n in topics.items():
            if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0) or len(k) > MAX_TOPIC:
                raise WireError("heartbeat 'topics' must map topic strings to counts >= 0")
    else:
        _get(body, "stats", "obj")
    return body


def decode(topic_frame: bytes, body_frame: bytes) -> Message:
    """Decode one (topic, body) pair. Raises WireError (or UnsupportedVersion)."""
    if not isinstance(topic_frame, (bytes, bytearray)) or len(topic_frame) > MAX_TOPIC:
        raise WireError("missing or oversized topic frame")
    body = decode_body(body_frame)
    t = body["type"]
    stream = body.get("stream", "") if t in EVENT_TYPES else ""
    if bytes(topic_frame) != topic(t, stream):
        raise WireError(f"topic {bytes(topic_frame)!r} does not match the body ({t}, stream {stream!r})")
    head = dict(type=t, publisher=body["publisher"], session=body["session"], seq=body["seq"],
                tseq=body["tseq"], wall_time=float(body["wall_time"]), topic=bytes(topic_frame))
    if t in EVENT_TYPES:
        return Message(**head, event=Event.from_dict(body))
    if t == "heartbeat":
        return Message(**head, topics=dict(body["topics"]))
    return Message(**head, stats=body["stats"])


def decode_frames(frames: list[bytes]) -> Message:
    """Decode a received multipart message (exactly two frames)."""
    if len(frames) != 2:
        raise WireError(f"expected 2 frames (topic, body), got {len(frames)}")
    return decode(frames[0], frames[1])


# --- the snapshot service (the ZeroMQ guide's Clone pattern) -----------------
#
# Request (DEALER/REQ -> ROUTER), one frame:
#     {"v": 1, "type": "snapshot", "streams": ["cam1", ...]}   ("streams" optional)
# Reply: ONE multipart message (so REQ and DEALER clients both work, and the
# state arrives whole or not at all): for each open event two frames, topic and
# body of its onset exactly as published (its own seq), then two closing frames
#     b"avp.snapshot.end", {"v": 1, "type": "snapshot-end", "publisher", "session",
#                           "seq": last seq published, "count": events sent,
#                           "topics": {topic: last tseq} for every topic so far}
# or, for a malformed request, the two frames
#     b"avp.snapshot.error", {"v": 1, "type": "error", "error": "..."}.


@dataclass(frozen=True)
class SnapshotEnd:
    publisher: str
    session: str
    seq: int                   # continue after this seq (drop live messages with seq <= it)
    count: int                 # number of open events sent before this marker
    topics: dict               # topic (bytes) -> last tseq published on it


def encode_snapshot_request(streams=()) -> bytes:
    body = {"v": SCHEMA_VERSION, "type": "snapshot"}
    if streams:
        body["streams"] = [check_stream_name(s) for s in streams]
    return json.dumps(body).encode("utf-8")


def decode_snapshot_request(frames: list[bytes]) -> tuple[str, ...]:
    """Validate a snapshot request (frames after the ROUTER identity); return its stream filter."""
    if len(frames) != 1:
        raise WireError(f"a snapshot request is one frame, got {len(frames)}")
    body = loads_object(frames[0], limit=MAX_REQUEST, what="snapshot request")
    v = body.get("v")
    if v != SCHEMA_VERSION or isinstance(v, bool):
        raise UnsupportedVersion(f"snapshot request version {v!r} is not supported (this service knows {SCHEMA_VERSION})")
    if body.get("type") != "snapshot":
        raise WireError("snapshot request must have type 'snapshot'")
    streams = body.get("streams", [])
    if not isinstance(streams, list) or len(streams) > 256:
        raise WireError("'streams' must be a list of at most 256 stream names")
    return tuple(check_stream_name(s) for s in streams)


def encode_snapshot_end(*, publisher: str, session: str, seq: int, count: int, topics: dict) -> list[bytes]:
    body = {"v": SCHEMA_VERSION, "type": "snapshot-end", "publisher": publisher, "session": session,
            "seq": seq, "count": count,
            "topics": {(k.decode("ascii") if isinstance(k, bytes) else k): int(n) for k, n in topics.items()}}
    return [SNAPSHOT_END, json.dumps(body, separators=(",", ":")).encode("utf-8")]


def encode_snapshot_error(message: str) -> list[bytes]:
    body = {"v": SCHEMA_VERSION, "type": "error", "error": message[:500]}
    return [SNAPSHOT_ERROR, json.dumps(body).encode("utf-8")]


def decode_snapshot_end(body_frame: bytes) -> SnapshotEnd:
    body = loads_object(body_frame, limit=4 * MAX_BODY, what="snapshot end")
    if body.get("v") != SCHEMA_VERSION:
        raise UnsupportedVersion(f"snapshot version {body.get('v')!r} is not supported")
    if body.get("type") != "snapshot-end":
        raise WireError("expected a snapshot-end body")
    pub = _get(body, "publisher", "str")
    sess = _get(body, "session", "str")
    if not PUBLISHER_RE.match(pub) or not SESSION_RE.match(sess):
        raise WireError("malformed publisher or session in snapshot end")
    seq = _get(body, "seq", "int")
    count = _get(body, "count", "int")
    topics = _get(body, "topics", "obj")
    if seq < 0 or count < 0 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                       for n in topics.values()):
        raise WireError("negative counters in snapshot end")
    return SnapshotEnd(publisher=pub, session=sess, seq=seq, count=count,
                       topics={k.encode("ascii", "replace"): n for k, n in topics.items()})


def decode_snapshot_error(body_frame: bytes) -> str:
    body = loads_object(body_frame, limit=MAX_REQUEST, what="snapshot error")
    msg = body.get("error")
    return msg if isinstance(msg, str) else "unspecified error"
