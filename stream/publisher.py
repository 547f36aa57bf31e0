"""Publishing events over ZeroMQ: the runtime's sink.

A :class:`Publisher` is a sink of the live runtime (``emit(event)``,
``stats(d)``, ``close(reason)``). It owns

- an XPUB socket (a PUB that also sees subscriptions) bound to
  ``tcp://127.0.0.1:5556`` by default, sending two-frame messages
  (topic, JSON body; see stream/wire.py) with a session id and a sequence
  number strictly increasing over every message of the session;
- a heartbeat every ``heartbeat_interval`` seconds (and one right after a new
  subscription arrives, so a subscriber's handshake does not wait a second);
- a ROUTER snapshot service (the ZeroMQ guide's Clone pattern) bound to
  ``tcp://127.0.0.1:5557``: a request is answered with the events open now and
  the sequence number to continue from;
- optionally CURVE on both sockets, with an allow-list of client public keys
  enforced by ``zmq.auth`` (a client not on the list completes no handshake
  and receives nothing);
- optionally a JSON-lines event log, one line per onset/offset (the wire body
  itself), written whole with one append as the event is numbered; a log that
  cannot be written (full disk) is closed with its partial line cut away and
  reported once, and publishing goes on; a log moved or deleted under the run is
  opened again at its path;
- a :class:`~avparse.stream.guard.PeerGuard` on each socket: what one peer may
  cost (subscription size and count, handshake time, descriptors).

``emit`` never blocks on the network: it numbers and logs the message under a
lock and queues it; one background thread owns the sockets (ZeroMQ sockets are
not thread-safe) and sends with ``NOBLOCK``. A slow or gone subscriber costs
only its own messages: past ``SNDHWM`` queued messages the XPUB socket drops
them for that subscriber, which sees a seq gap.
"""

from __future__ import annotations

import errno
import os
import re
import socket as _socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from avparse.core.events import Event
from avparse.stream import wire

from .guard import PeerGuard, PeerLimits
from .sockets import KeyFileError, check_allow_list, release

DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_SNAPSHOT = "tcp://127.0.0.1:5557"


class PublisherError(RuntimeError):
    """The publisher cannot start (busy port, bad endpoint, bad key files)."""


@dataclass(frozen=True)
class PublisherConfig:
    pub: str = DEFAULT_PUB               # endpoint the XPUB socket binds (loopback by default)
    snapshot: str | None = DEFAULT_SNAPSHOT  # endpoint of the snapshot ROUTER; None: no snapshot service
    name: str | None = None              # stable publisher name on the wire; None: "<host>/<pub endpoint>"
    heartbeat_interval: float = 1.0      # seconds between heartbeats
    sndhwm: int = 10000                  # messages queued per subscriber before ZeroMQ drops for it
    linger_ms: int = 2000                # ms close() may spend flushing queued messages to slow peers
    log_path: str | None = None          # JSON-lines event log (appended); None: no log
    fsync: bool = False                  # also fsync the log after every event (slower, survives power loss)
    curve_secret_key: str | None = None  # server key file with the secret key (from `avparse keys`): enables CURVE
    curve_allow_dir: str | None = None   # folder of allowed client public keys (*.key); None with CURVE: any client
    max_request: int = wire.MAX_REQUEST  # bytes: larger snapshot requests make ZeroMQ drop the peer
    peers: PeerLimits = PeerLimits()     # what one peer may cost: subscriptions, handshake time, descriptors


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is one this project binds or connects (``tcp://HOST:PORT`` with a port
    from 0 to 65535 or ``*``, ``ipc://PATH``, ``inproc://NAME``), else a PublisherError saying
    what is wrong (libzmq itself takes ``tcp://127.0.0.1:99999`` and binds some other port)."""
    if not isinstance(endpoint, str):
        raise PublisherError(f"{endpoint!r} is not an endpoint (endpoints look like tcp://HOST:PORT)")
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise PublisherError(f"{endpoint!r} is not an endpoint (endpoints look like tcp://HOST:PORT, "
                             f"ipc://PATH or inproc://NAME)")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host:
            raise PublisherError(f"{endpoint!r} names no port (endpoints look like tcp://HOST:PORT)")
        if port != "*" and not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
            raise PublisherError(f"{endpoint!r}: the port must be a number from 0 to 65535 or *, got {port!r}")
    return endpoint


def _sanitize_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:/@\[\]-]", "_", s)[:128] or "avparse"


def _bind(sock, endpoint: str, what: str) -> str:
    import zmq

    try:
        check_endpoint(endpoint)
    except PublisherError as e:
        raise PublisherError(f"cannot bind the {what} socket: {e}") from None
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        if e.errno == errno.EADDRINUSE:
            raise PublisherError(
                f"cannot bind the {what} socket to {endpoint}: the address is in use "
                f"(another avparse run?); choose a free port") from None
        raise PublisherError(f"cannot bind the {what} socket to {endpoint}: {e.strerror}") from None
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


class Publisher:
    """Event sink publishing over ZeroMQ. Use as a context manager or call open()/close()."""

    def __init__(self, config: PublisherConfig = PublisherConfig(), *, context=None, clock=time.time,
                 on_fault=None):
        """``on_fault(message)``: called once per failure of a part of the publisher that the live
        stream survives (the event log could not be written), from the thread that saw it."""
        self.config = config
        self._on_fault = on_fault
        self.failures: list[str] = []   # those failures, in order (also in the stats this sink publishes)
        self._clock = clock
        self._ctx_given = context
        self._ctx = None
        self._auth = None
        self._xpub = self._router = None
        self._guards: list[PeerGuard] = []                # the XPUB's, then the ROUTER's
        self.session = uuid.uuid4().hex
        self.name = _sanitize_name(config.name) if config.name else None
        self.pub_endpoint = self.snapshot_endpoint = None
        self._lock = threading.Lock()
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._seq = 0
        self._tseq: dict[bytes, int] = {}                 # topic -> last tseq
        self._open: dict[tuple, tuple[Event, bytes, bytes]] = {}  # event key -> (onset, topic, body)
        self._last_media: dict[str, float] = {}           # stream -> latest media time seen
        self._log = None                                  # fd of the event log (O_APPEND), None: no log
        self._log_check = 0.0                             # monotonic time of the next check of its path
        self._thread = None
        self._stopping = threading.Event()
        self._wake_r = self._wake_w = None
        self._hb_due = 0.0
        self.counters = dict(published=0, events=0, heartbeats=0, stats=0, snapshots=0,
                             bad_requests=0, encode_errors=0, send_dropped=0, log_errors=0, guard_errors=0,
                             log_reopened=0)
        self._closed = False
        self._drop = 0  # see drop_next()

    # -- lifecycle --------------------------------------------------------
    def open(self) -> "Publisher":
        import zmq

        cfg = self.config
        if cfg.curve_allow_dir and not cfg.curve_secret_key:
            raise PublisherError("a CURVE allow-list needs CURVE on: give the server's secret key file too "
                                 "(--curve-server-key); without it every client would be let in")
        if not (isinstance(cfg.heartbeat_interval, (int, float)) and 0 < cfg.heartbeat_interval < float("inf")):
            raise PublisherError(f"heartbeat interval must be a positive number of seconds, got {cfg.heartbeat_interval!r}")
        self._ctx = self._ctx_given or zmq.Context()
        try:
            server_keys = self._load_curve() if cfg.curve_secret_key else None
            self._xpub = self._ctx.socket(zmq.XPUB)
            self._xpub.setsockopt(zmq.SNDHWM, cfg.sndhwm)
            self._xpub.setsockopt(zmq.LINGER, cfg.linger_ms)
            self._xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            guard = PeerGuard(self._xpub, cfg.peers)
            guard.configure(curve=bool(server_keys))  # frame size, subscription queue, handshake interval
            self._guards.append(guard)
            if server_keys:
                self._curve(self._xpub, server_keys)
            self.pub_endpoint = _bind(self._xpub, cfg.pub, "event (PUB)")
            guard.start()
            if cfg.snapshot:
                self._router = self._ctx.socket(zmq.ROUTER)
                self._router.setsockopt(zmq.LINGER, 0)
                self._router.setsockopt(zmq.SNDHWM, 100)
                self._router.setsockopt(zmq.MAXMSGSIZE, cfg.max_request)
                guard = PeerGuard(self._router, cfg.peers, subscriptions=False)
                guard.configure()
                self._guards.append(guard)
                if server_keys:
                    self._curve(self._router, server_keys)
                self.snapshot_endpoint = _bind(self._router, cfg.snapshot, "snapshot (ROUTER)")
                guard.start()
            if self.name is None:
                self.name = _sanitize_name(f"{_socket.gethostname()}/{self.pub_endpoint}")
            if cfg.log_path:
                p = Path(cfg.log_path)
                if p.parent and not p.parent.is_dir():
                    raise PublisherError(f"cannot write the event log {p}: folder {p.parent} does not exist")
                if p.is_dir():
                    raise PublisherError(f"cannot write the event log {p}: it is a folder; give a file path")
                try:
                    self._log = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                except OSError as e:
                    raise PublisherError(f"cannot write the event log {p}: {e.strerror}") from None
        except BaseException:
            self._teardown()
            raise
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._hb_due = time.monotonic() + cfg.heartbeat_interval
        self._thread = threading.Thread(target=self._loop, name="avparse-publisher", daemon=True)
        self._thread.start()
        return self

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _load_curve(self):
        import zmq
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        cfg = self.config
        path = Path(cfg.curve_secret_key)
        if not path.is_file():
            raise PublisherError(f"CURVE server key file {path} not found (make one with `avparse keys DIR --name server`)")
        try:
            public, secret = zmq.auth.load_certificate(str(path))
        except (ValueError, OSError) as e:
            raise PublisherError(f"CURVE server key file {path} is not a key file: {e}") from None
        if not secret:
            raise PublisherError(f"CURVE server key file {path} has no secret key (use the .key_secret file)")
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        if cfg.curve_allow_dir:
            try:
                check_allow_list(cfg.curve_allow_dir)
            except KeyFileError as e:
                raise PublisherError(str(e)) from None
            self._auth.configure_curve(domain="*", location=str(cfg.curve_allow_dir))
        else:
            self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        return public, secret

    @staticmethod
    def _curve(sock, keys):
        public, secret = keys
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def close(self, reason: str = "stopped") -> None:
        """Close open events with an offset saying ``reason``, flush, close sockets and log."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None:
            with self._lock:
                for key, (onset, _, _) in list(self._open.items()):
                    t = max(self._last_media.get(onset.stream, onset.media_time), onset.media_time)
                    self._publish_event_locked(Event(
                        kind="offset", stream=onset.stream, label=onset.label, modality=onset.modality,
                        media_time=t, score=onset.score, decided_at=t, reason=reason,
                        onset_time=onset.media_time))
                self._enqueue_heartbeat_locked()
            self._stopping.set()
            self._wake()
            self._thread.join(timeout=5.0)
        self._teardown()

    def _teardown(self):
        for g in self._guards:
            g.close()
        self._guards = []
        release((self._xpub, self._router), self._auth, self._ctx, self._ctx_given)
        self._xpub = self._router = self._auth = self._ctx = None
        if self._log is not None:
            try:
                os.close(self._log)
            except OSError:
                pass  # a failed close loses nothing: every line was written (or truncated away) already
            self._log = None
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None

    # -- the sink API -------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Publish an onset or offset (numbered, logged, queued; never blocks on subscribers)."""
        with self._lock:  # the closed check, numbering and wake-up under one lock: no race with close()
            if self._closed or self._thread is None:
                raise PublisherError("publisher is not open")
            self._publish_event_locked(event)
            self._wake()

    def stats(self, d: dict) -> None:
        """Publish the runtime's figures on the stats topic."""
        with self._lock:
            if self._closed or self._thread is None:
                return
            topic = wire.topic("stats")
            seq, tseq = self._seq + 1, self._tseq.get(topic, 0) + 1
            if self.failures:
                d = dict(d, publisher_faults=list(self.failures[-5:]))
            cut = {k: sum(g.counters[k] for g in self._guards) for k in ("dropped_subscriptions", "dropped_idle",
                                                                        "accept_failed")}
            if any(cut.values()):
                d = dict(d, peers_cut=cut)
            try:
                frames = wire.encode_stats(d, publisher=self.name, session=self.session, seq=seq,
                                           tseq=tseq, wall_time=self._clock())
            except wire.WireError:
                self.counters["encode_errors"] += 1  # e.g. over 64 KiB: not sent, numbering untouched
                return
            self._seq, self._tseq[topic] = seq, tseq
            self._queue_locked(frames)
            self.counters["stats"] += 1
            self._wake()

    def drop_next(self, n: int = 1) -> None:
        """Fault injection for tests: the next ``n`` messages are numbered (and events
        logged) but never sent, as if the network lost them."""
        with self._lock:
            self._drop += n

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def open_events(self) -> list[Event]:
        with self._lock:
            return [e for e, _, _ in self._open.values()]

    # -- internals (callers hold self._lock) ----------------------------------
    def _next(self, topic: bytes) -> tuple[int, int]:
        self._seq += 1
        t = self._tseq.get(topic, 0) + 1
        self._tseq[topic] = t
        return self._seq, t

    def _publish_event_locked(self, event: Event) -> None:
        # Encode first (a WireError leaves the numbering untouched: no false gap), then number.
        topic = wire.topic(event.kind, event.stream)
        seq, tseq = self._seq + 1, self._tseq.get(topic, 0) + 1
        try:
            _, body = wire.encode_event(event, publisher=self.name, session=self.session, seq=seq,
                                        tseq=tseq, wall_time=self._clock())
        except wire.WireError:
            self.counters["encode_errors"] += 1
            raise
        self._seq, self._tseq[topic] = seq, tseq
        if event.kind == "onset":
            self._open[event.key] = (event, topic, body)
        else:
            self._open.pop(event.key, None)
        self._last_media[event.stream] = max(self._last_media.get(event.stream, event.media_time),
                                             event.media_time, event.decided_at)
        if self._log is not None:
            self._write_log_locked(body + b"\n", seq)
        self._queue_locked((topic, body))
        self.counters["events"] += 1

    def _follow_log_locked(self) -> None:
        """At most once a second: if the log's path no longer names the file being written (it
        was deleted, or moved away by log rotation), open the path again (a new file) and say so
        once per occurrence: lines written to a deleted file would be lost to everyone."""
        now = time.monotonic()
        if now < self._log_check:
            return
        self._log_check = now + 1.0
        path = self.config.log_path
        try:
            st = os.stat(path)
            if os.path.samestat(st, os.fstat(self._log)):
                return
        except OSError:
            pass  # gone: open it again below
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            self._fault(f"the event log {path} was moved or deleted and cannot be opened again "
                        f"({e.strerror}); events go on into the moved file")
            self._log_check = float("inf")  # said once; not tried again
            return
        os.close(self._log)
        self._log = fd
        self.counters["log_reopened"] += 1
        if self._on_fault is not None:
            try:
                self._on_fault(f"the event log {path} was moved or deleted while running: "
                               f"a new {path} goes on from here")
            except Exception:
                pass

    def _write_log_locked(self, line: bytes, seq: int) -> None:
        """Append one whole line to the log. A failure (full disk, file size limit, I/O error)
        cuts the partial line away, closes the log and is reported once; publishing goes on."""
        self._follow_log_locked()
        fd, start = self._log, None
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            done = 0
            while done < len(line):
                done += os.write(fd, line[done:])
            if self.config.fsync:
                os.fsync(fd)
        except OSError as e:
            if start is not None:
                try:
                    os.ftruncate(fd, start)  # never a partial line (a device cannot be truncated: ignored)
                except OSError:
                    pass
            self._log = None
            try:
                os.close(fd)
            except OSError:
                pass
            self.counters["log_errors"] += 1
            self._fault(f"the event log {self.config.log_path} failed at seq {seq}: {e.strerror or e}; "
                        f"events from seq {seq} on are published but not logged")

    def _fault(self, message: str) -> None:
        self.failures.append(message)
        if self._on_fault is not None:
            try:
                self._on_fault(message)
            except Exception:
                pass

    def _enqueue_heartbeat_locked(self) -> None:
        t = wire.topic("heartbeat")
        seq, tseq = self._next(t)
        self._queue_locked(wire.encode_heartbeat(publisher=self.name, session=self.session, seq=seq,
                                                 tseq=tseq, wall_time=self._clock(), topics=dict(self._tseq)))
        self.counters["heartbeats"] += 1

    def _queue_locked(self, frames) -> None:
        if self._drop > 0:
            self._drop -= 1
            return
        self._queue.append(frames)

    def _wake(self):
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError, TypeError):
            pass  # pipe full (a wake-up is already pending) or closed

    # -- the socket thread ------------------------------------------------------
    def _loop(self):
        import zmq

        poller = zmq.Poller()
        poller.register(self._xpub, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if self._router is not None:
            poller.register(self._router, zmq.POLLIN)
        for g in self._guards:
            poller.register(g.poll_in, zmq.POLLIN)
        interval = self.config.heartbeat_interval
        while True:
            timeout = max(0.0, self._hb_due - time.monotonic())
            events = dict(poller.poll(timeout * 1000))
            if self._wake_r in events:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            for g in self._guards:
                try:
                    if g.poll_in in events:
                        g.monitor_events()
                    g.maintain()
                except Exception:  # (out of descriptors, say): the guard's turn is lost, the stream goes on
                    self.counters["guard_errors"] += 1
            if self._xpub in events:
                self._read_subscriptions(zmq)
            if self._router is not None and self._router in events:
                self._serve_snapshots(zmq)
            now = time.monotonic()
            if now >= self._hb_due and not self._stopping.is_set():
                with self._lock:
                    self._enqueue_heartbeat_locked()
                self._hb_due = now + interval
            self._drain(zmq)
            if self._stopping.is_set():
                self._drain(zmq)
                return

    def _drain(self, zmq):
        while True:
            with self._lock:
                if not self._queue:
                    return
                frames = self._queue.popleft()
            try:
                self._xpub.send_multipart(frames, flags=zmq.NOBLOCK)
                self.counters["published"] += 1
            except zmq.Again:
                self.counters["send_dropped"] += 1

    def _read_subscriptions(self, zmq):
        guard = self._guards[0]
        for _ in range(10 * guard.limits.rcvhwm):  # bounded per wake-up
            try:
                frame = self._xpub.recv(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if not guard.subscription(frame):
                continue  # its connection went over a limit and was cut
            if frame.bytes[:1] == b"\x01":
                # A new subscriber: send a heartbeat soon so its handshake can proceed
                # (rate-limited, so a flood of subscriptions is no flood of heartbeats).
                self._hb_due = min(self._hb_due, time.monotonic() + 0.02)

    def _serve_snapshots(self, zmq):
        for _ in range(100):  # bounded per wake-up
            try:
                raw = self._router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._guards[-1].heard(raw[0])
            frames = [f.bytes for f in raw]
            if len(frames) < 2:
                continue
            envelope, rest = [frames[0]], frames[1:]
            if rest[0] == b"" and len(rest) > 1:  # REQ client: keep the empty delimiter
                envelope, rest = envelope + [b""], rest[1:]
            try:
                streams = wire.decode_snapshot_request(rest)
            except wire.WireError as e:
                self.counters["bad_requests"] += 1
                reply = wire.encode_snapshot_error(str(e))
            else:
                with self._lock:
                    reply = []
                    count = 0
                    for ev, topic, body in self._open.values():
                        if not streams or ev.stream in streams:
                            reply += [topic, body]
                            count += 1
                    reply += wire.encode_snapshot_end(publisher=self.name, session=self.session,
                                                      seq=self._seq, count=count, topics=dict(self._tseq))
                self.counters["snapshots"] += 1
            try:
                self._router.send_multipart(envelope + reply, flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the peer is gone or not keeping up: it can ask again
