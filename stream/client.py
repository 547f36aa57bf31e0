"""Subscribing to the event stream: the snapshot-then-subscribe handshake.

:class:`Subscriber` follows the ZeroMQ guide's Clone pattern:

1. connect a SUB socket and subscribe (heartbeats always, so restarts and
   liveness are visible whatever the filter);
2. wait for the first message (the publisher sends a heartbeat as soon as it
   sees a new subscription), which proves the subscription is in place (if
   none comes within ``handshake_timeout``, nobody is publishing yet: the
   snapshot is asked for when the first message of a publisher arrives);
3. ask each snapshot service for its state: the events open now and the
   sequence number ``N`` it has published up to;
4. hand out the open events (``from_snapshot=True``), then the live messages
   with ``seq > N``, dropping the older ones that were queued meanwhile.

It then checks every message's numbering, per publisher:

- unfiltered (no stream filter): ``seq`` must go up by exactly one; a jump is
  a :class:`Gap` with the missed range;
- filtered by stream: ``seq`` jumps are expected, so each topic's own counter
  ``tseq`` must go up by one, and each heartbeat's per-topic counters reveal
  losses at the tail of a topic;
- a new ``session`` from a known publisher is a :class:`Restart`.

After a gap or a restart the subscriber asks that publisher's snapshot
service again (when it has one) and hands out open events it did not know.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from avparse.core.events import Event
from avparse.stream import wire

from .sockets import is_z85_key, release


class SubscriberError(RuntimeError):
    """The subscriber cannot do its handshake (no snapshot answer, bad keys, ...)."""


@dataclass(frozen=True)
class Gap:
    """Messages of ``publisher`` that this subscriber did not receive."""

    publisher: str
    session: str
    missed: int              # number of messages missed (of the subscribed selection)
    first: int | None = None  # first missed seq (unfiltered subscribers)
    last: int | None = None   # last missed seq (unfiltered subscribers)
    topic: str = ""          # the topic that lost them (filtered subscribers)

    def describe(self) -> str:
        where = f"seq {self.first}-{self.last}" if self.first is not None else f"topic {self.topic}"
        return f"gap: {self.missed} message(s) missed from {self.publisher} (session {self.session[:8]}, {where})"


@dataclass(frozen=True)
class Restart:
    """``publisher`` restarted: its session id changed."""

    publisher: str
    old_session: str
    new_session: str

    def describe(self) -> str:
        return f"restart: {self.publisher} restarted (session {self.old_session[:8]} -> {self.new_session[:8]})"


@dataclass(frozen=True)
class CurveClientKeys:
    server_public: bytes   # the publisher's public key
    public: bytes          # this client's public key
    secret: bytes          # this client's secret key

    @classmethod
    def from_files(cls, server_key: str, client_key: str) -> "CurveClientKeys":
        import zmq.auth

        for p in (server_key, client_key):
            if not Path(p).is_file():
                raise SubscriberError(f"CURVE key file {p} not found (make key pairs with `avparse keys`)")
        keys = []
        for p in (server_key, client_key):
            try:
                public, secret = zmq.auth.load_certificate(p)
                for k in (public, secret):  # a key libzmq would refuse later with a bare EINVAL
                    if k is not None and not is_z85_key(k):
                        raise ValueError("a key is not 40 Z85 characters")
                if not public:
                    raise ValueError("no public key")
            except (ValueError, OSError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
                raise SubscriberError(f"CURVE key file {p} is not a key file ({e}); "
                                      f"make key pairs with `avparse keys`") from None
            keys.append((public, secret))
        (server_public, _), (public, secret) = keys
        if not secret:
            raise SubscriberError(f"CURVE client key file {client_key} has no secret key (use the .key_secret file)")
        return cls(server_public=server_public, public=public, secret=secret)

    def apply(self, sock) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


@dataclass
class _PubState:
    session: str
    seq: int = 0                  # last seq accepted (unfiltered) / snapshot floor
    floor: int = 0                # messages with seq <= floor are already in the snapshot
    seq_known: bool = False       # whether ``seq`` is a real baseline
    topics: dict = field(default_factory=dict)  # topic -> last tseq (filtered mode)
    baseline: bool = False        # topics holds every counter (from a snapshot or heartbeat)


class Subscriber:
    """Receive decoded events, heartbeats and stats, plus Gap and Restart notices."""

    def __init__(self, endpoint: str, *, snapshot: str | list[str] | None = None, streams=(),
                 types=wire.EVENT_TYPES, curve: CurveClientKeys | None = None, context=None,
                 rcvhwm: int = 10000, handshake_timeout: float = 2.5, snapshot_timeout: float = 2.0,
                 resync: bool = True):
        self.endpoint = endpoint
        self.snapshots = [snapshot] if isinstance(snapshot, str) else list(snapshot or [])
        self.streams = tuple(wire.check_stream_name(s) for s in streams)
        for t in types:
            if t not in wire.TYPES:
                raise SubscriberError(f"message type must be one of {wire.TYPES}, got {t!r}")
        self.types = tuple(types)
        self.curve = curve
        self.rcvhwm = rcvhwm
        self.handshake_timeout = handshake_timeout
        self.snapshot_timeout = snapshot_timeout
        self.resync = resync
        self._ctx_given = context
        self._ctx = None
        self._sub = None
        self._out: deque = deque()
        self._pubs: dict[str, _PubState] = {}
        self._snap_of: dict[str, str] = {}        # publisher -> snapshot endpoint
        self._open: dict[tuple, Event] = {}       # (publisher, stream, label, modality) -> onset
        self._filtered = bool(self.streams)
        # the exact event topics this subscriber receives (filtered mode checks their tseq)
        self._exact = {wire.topic(t, s) for t in wire.EVENT_TYPES if t in self.types for s in self.streams}
        self.counters = dict(received=0, malformed=0, dropped_old=0, gaps=0, restarts=0, snapshots=0)

    # -- lifecycle ------------------------------------------------------------
    def open(self) -> "Subscriber":
        import zmq

        self._ctx = self._ctx_given or zmq.Context()
        s = self._sub = self._ctx.socket(zmq.SUB)
        try:
            self._subscribe(s)
            # The first message proves the subscription reached the publisher: only
            # then is a snapshot sure to be followed by every later message.
            buffered = [s.recv_multipart()] if s.poll(self.handshake_timeout * 1000) else []
            if buffered:  # nobody publishing yet: ask when the first message comes (in _handle)
                for ep in self.snapshots:
                    self._snapshot(ep)
        except BaseException:
            self.close()
            raise
        for frames in buffered:
            self._handle(frames)
        return self

    def _subscribe(self, s) -> None:
        import zmq

        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, self.rcvhwm)
        s.setsockopt(zmq.MAXMSGSIZE, 2 * wire.MAX_BODY)
        if self.curve:
            self.curve.apply(s)
        s.connect(self.endpoint)
        if self._filtered:
            prefixes = wire.subscriptions(self.streams, [t for t in self.types if t in wire.EVENT_TYPES])
            if "stats" in self.types:
                prefixes.append(wire.topic("stats"))
        else:  # everything, so that the global seq can be checked
            prefixes = wire.subscriptions((), [t for t in wire.TYPES if t != "heartbeat"])
        for p in prefixes:
            s.setsockopt(zmq.SUBSCRIBE, p)
        s.setsockopt(zmq.SUBSCRIBE, wire.topic("heartbeat"))  # last: its arrival proves all are in place

    def close(self) -> None:
        release((self._sub,), None, self._ctx, self._ctx_given)
        self._sub = self._ctx = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    @property
    def open_events(self) -> list[Event]:
        """Events open now as this subscriber knows them (within its stream filter)."""
        return list(self._open.values())

    # -- receiving --------------------------------------------------------------
    def recv(self, timeout: float | None = None):
        """Next Message (of the requested types), Gap or Restart; None after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._out:
                return self._out.popleft()
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sub.poll(wait):
                return None
            self._handle(self._sub.recv_multipart())

    def __iter__(self):
        while True:
            item = self.recv()
            if item is not None:
                yield item

    # -- internals ------------------------------------------------------------
    def _wanted(self, m: wire.Message) -> bool:
        if m.type not in self.types:
            return False
        return not (self.streams and m.type in wire.EVENT_TYPES and m.stream not in self.streams)

    def _deliver(self, m: wire.Message) -> None:
        if m.event is not None:
            key = (m.publisher,) + m.event.key
            if m.type == "onset":
                self._open[key] = m.event
            else:
                self._open.pop(key, None)
        if self._wanted(m):
            self._out.append(m)

    def _gap(self, st: _PubState, m: wire.Message, **kw) -> None:
        g = Gap(publisher=m.publisher, session=m.session, **kw)
        self.counters["gaps"] += 1
        self._out.append(g)

    def _handle(self, frames: list[bytes]) -> None:
        try:
            m = wire.decode_frames(frames)
        except wire.WireError:
            self.counters["malformed"] += 1
            return
        self.counters["received"] += 1
        st = self._pubs.get(m.publisher)
        if st is None:
            st = self._pubs[m.publisher] = _PubState(session=m.session)
            # A publisher met for the first time: a snapshot service not yet heard from may be its.
            for ep in self.snapshots:
                if ep not in self._snap_of.values():
                    self._snapshot(ep, quiet=True)
            st = self._pubs[m.publisher]
        elif m.session != st.session:
            self.counters["restarts"] += 1
            self._out.append(Restart(publisher=m.publisher, old_session=st.session, new_session=m.session))
            for key in [k for k in self._open if k[0] == m.publisher]:
                del self._open[key]
            st = self._pubs[m.publisher] = _PubState(session=m.session, seq_known=True, baseline=True)
            ep = self._snap_of.get(m.publisher)
            if ep is not None and self.resync:
                self._snapshot(ep, quiet=True)
                st = self._pubs[m.publisher]
        if m.session != st.session:
            return  # a straggler of an older session
        if not self._check(st, m):
            self.counters["dropped_old"] += 1
            return
        self._deliver(m)

    def _check(self, st: _PubState, m: wire.Message) -> bool:
        """Continuity of ``m``; returns False for a message already covered (old or duplicate)."""
        if m.seq <= st.floor:
            return False
        gap = False
        if not self._filtered:
            if st.seq_known and m.seq <= st.seq:
                return False
            if st.seq_known and m.seq > st.seq + 1:
                self._gap(st, m, missed=m.seq - st.seq - 1, first=st.seq + 1, last=m.seq - 1)
                gap = True
            st.seq, st.seq_known = m.seq, True
        else:
            last = st.topics.get(m.topic)
            if last is None and not st.baseline:
                last = m.tseq - 1
            last = last or 0
            if m.tseq <= last:
                return False
            if m.tseq > last + 1 and (m.topic in self._exact or m.type == "heartbeat"):
                self._gap(st, m, missed=m.tseq - last - 1, topic=m.topic.decode())
                gap = True
            st.topics[m.topic] = m.tseq
            if m.type == "heartbeat":
                for t in sorted(self._exact):
                    n = m.topics.get(t.decode(), 0)
                    have = st.topics.get(t, n if not st.baseline else 0)
                    if n > have:
                        self._gap(st, m, missed=n - have, topic=t.decode())
                        gap = True
                    st.topics[t] = max(have, n)
                st.baseline = True
        if gap and self.resync and m.publisher in self._snap_of:
            self._snapshot(self._snap_of[m.publisher], quiet=True)
            return m.seq > self._pubs[m.publisher].floor
        return True

    def _snapshot(self, endpoint: str, quiet: bool = False) -> None:
        """Ask ``endpoint`` for the open events; merge them into the state."""
        import zmq

        d = self._ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)
        if self.curve:
            self.curve.apply(d)
        try:
            d.connect(endpoint)
            d.send(wire.encode_snapshot_request(self.streams))
            if not d.poll(self.snapshot_timeout * 1000):
                if quiet:
                    return
                raise SubscriberError(f"no answer from the snapshot service at {endpoint} within "
                                      f"{self.snapshot_timeout:g} s (is avparse run publishing there?)")
            frames = d.recv_multipart()
        finally:
            d.close()
        try:
            if len(frames) == 2 and frames[0] == wire.SNAPSHOT_ERROR:
                raise SubscriberError(f"snapshot service at {endpoint} refused: {wire.decode_snapshot_error(frames[1])}")
            if len(frames) < 2 or len(frames) % 2 or frames[-2] != wire.SNAPSHOT_END:
                raise wire.WireError("snapshot reply does not end with the end marker")
            end = wire.decode_snapshot_end(frames[-1])
            onsets = [wire.decode(frames[i], frames[i + 1]) for i in range(0, len(frames) - 2, 2)]
            if any(o.type != "onset" or o.session != end.session or o.seq > end.seq for o in onsets):
                raise wire.WireError("snapshot holds something other than open onsets of its session")
        except wire.WireError as e:
            if quiet:
                return
            raise SubscriberError(f"malformed snapshot from {endpoint}: {e}") from None
        self.counters["snapshots"] += 1
        self._snap_of[end.publisher] = endpoint
        st = self._pubs.get(end.publisher)
        if st is None or st.session != end.session:
            st = self._pubs[end.publisher] = _PubState(session=end.session)
        st.floor = max(st.floor, end.seq)
        if end.seq >= st.seq:
            st.seq, st.seq_known = end.seq, True
        for t, n in end.topics.items():
            st.topics[t] = max(st.topics.get(t, 0), n)
        st.baseline = True
        now_open = {(end.publisher,) + o.event.key: o for o in onsets}
        for key in [k for k in self._open if k[0] == end.publisher and k not in now_open]:
            del self._open[key]  # closed while we were not looking (its offset was lost)
        for key, o in now_open.items():
            if key not in self._open:
                snap = replace(o, from_snapshot=True)
                self._deliver(snap)
