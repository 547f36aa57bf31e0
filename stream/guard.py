"""What one peer may cost a publishing socket: subscriptions and file descriptors.

ZeroMQ's XPUB socket keeps every subscription a peer sends in a prefix tree, one node per byte,
for as long as the peer stays connected; it has no per-peer limit. A hostile peer that sends
thousands of long subscriptions makes the process hold hundreds of megabytes and makes every
message's match slow for everyone (issue 18). ZeroMQ also accepts TCP connections until the
process runs out of file descriptors, and a connection that never finishes its greeting holds one
for the handshake interval (30 s by default).

A :class:`PeerGuard` watches one socket (an XPUB or a ROUTER) from the thread that owns it:

- the socket's options: frames longer than ``max_frame`` bytes make ZeroMQ drop the peer
  (``MAXMSGSIZE``; it applies to the handshake's commands too, so it cannot be smaller than
  CURVE's), a handshake must finish within ``handshake_s``
  (``HANDSHAKE_IVL``), at most ``rcvhwm`` subscription messages queue before ZeroMQ stops reading
  the peer (``RCVHWM``);
- every subscription message read from the socket is charged to its connection (ZeroMQ tells
  the connection's file descriptor, ``SRCFD``): a subscription longer than ``max_subscription``
  bytes (no topic is longer), or past ``max_subscriptions`` distinct subscriptions
  for one connection, or ``max_total`` for all connections together (then the connection holding
  the most pays), the connection is shut down, and ZeroMQ forgets its subscriptions;
- a monitor socket reports connections accepted and closed; when the newest descriptor comes
  within ``fd_reserve`` of the process's limit (or an accept fails for lack of descriptors),
  connections that have sent nothing for ``idle_s`` (half-open handshakes, silent peers) are
  shut down, oldest first, so that well-behaved subscribers and the snapshot service still get in.

A connection is shut down with ``shutdown(2)`` on its descriptor (after checking it is still
the same peer; the descriptor stays ZeroMQ's): ZeroMQ sees the connection end as if the peer had left and cleans up
as usual. Nothing here blocks; ``poll_in`` lists the monitor socket for the owner's poller.
"""

from __future__ import annotations

import resource
import socket as _socket
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PeerLimits:
    max_subscription: int = 80       # bytes of one subscription prefix (the longest topic,
                                     # "avp.offset." and a 64-character stream, is 75)
    max_frame: int = 96              # bytes of any frame a peer sends, its handshake commands included:
                                     # ZeroMQ drops the peer (with CURVE, at least curve_frame)
    curve_frame: int = 512           # the same with CURVE (HELLO is 200 bytes, INITIATE about 300)
    max_subscriptions: int = 64      # distinct subscriptions one connection may hold (a subscriber needs a
                                     # few: 4 per stream it filters by; a proxy forwards at most proxy_forward)
    max_total: int = 1024            # distinct subscriptions all connections together may hold
    proxy_forward: int = 48          # distinct subscriptions a proxy forwards upstream (below max_subscriptions)
    rcvbuf: int = 4096               # bytes of kernel receive buffer per peer (only subscriptions come in):
                                     # bounds what a peer has in flight before a cut takes effect
    rcvhwm: int = 16                 # subscription messages ZeroMQ queues from one peer before it stops reading it
    handshake_s: float = 2.0         # seconds a connection has to finish its ZeroMQ handshake (ZeroMQ's default: 30)
    fd_reserve: int = 64             # file descriptors kept free: within this of the limit, silent peers are cut
    idle_s: float = 1.0              # seconds after which a connection that sent nothing counts as silent


STALE = -2     # heard(): a message that most likely belongs to a connection just cut
STALE_S = 0.25  # seconds after a cut during which messages on a reused fd count as the cut one's


@dataclass
class _Conn:
    peer: tuple | None                       # getpeername() when accepted (to check before a shutdown)
    since: float                             # monotonic time accepted
    subs: set = field(default_factory=set)   # distinct subscription prefixes held
    heard: bool = False                      # sent anything (a subscription, a request)
    cut: float | None = None                 # monotonic time the guard shut it down (what it still sends is ignored)


def fd_limit() -> int:
    """The process's soft limit on open file descriptors."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit(want: int = 65536) -> tuple[int, int]:
    """Raise the soft limit on open file descriptors toward the hard limit (at most ``want``);
    returns (soft, hard) afterwards. Never lowers it; a refusal leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class PeerGuard:
    """Bounds what the peers of one socket can make the process hold (see the module's text).
    Use from the thread that owns ``sock``: ``configure()`` before bind, ``start()`` after it,
    ``subscription(frame)`` / ``heard(frame)`` for what is read, ``monitor_events()`` when
    ``poll_in`` is readable, ``close()`` before the socket closes."""

    def __init__(self, sock, limits: PeerLimits = PeerLimits(), *, subscriptions: bool = True):
        self.sock = sock
        self.limits = limits
        self.subscriptions = subscriptions
        self._conns: dict[int, _Conn] = {}
        self._total = 0
        self.poll_in = None
        self.counters = dict(dropped_subscriptions=0, dropped_idle=0, accept_failed=0, peers=0)
        self._trim_at = None  # monotonic time to give freed memory back (after a cut), or None
        self._parse = None    # zmq's monitor-message parser, imported by start()

    def configure(self, *, curve: bool = False) -> None:
        """Set the socket's options (before bind); ``curve``: the socket is a CURVE server."""
        import zmq

        lim = self.limits
        if self.subscriptions:
            self.sock.setsockopt(zmq.MAXMSGSIZE, max(lim.max_frame, lim.curve_frame) if curve else lim.max_frame)
            self.sock.setsockopt(zmq.RCVHWM, lim.rcvhwm)
            self.sock.setsockopt(zmq.RCVBUF, lim.rcvbuf)
        self.sock.setsockopt(zmq.HANDSHAKE_IVL, int(lim.handshake_s * 1000))

    def start(self) -> None:
        import zmq
        from zmq.utils.monitor import parse_monitor_message  # now: out of descriptors, an import fails

        self._parse = parse_monitor_message
        self.poll_in = self.sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_ACCEPT_FAILED)

    def close(self) -> None:
        if self.poll_in is not None:
            try:
                self.sock.disable_monitor()
            except Exception:
                pass
            self.poll_in.close(linger=0)
            self.poll_in = None

    def maintain(self) -> None:
        """Call on every turn of the owner's loop: some time after a cut, when ZeroMQ has freed
        the cut peer's subscriptions, hand the freed heap back to the OS (glibc keeps it
        otherwise, and the process would look as large as at the peak of the attack)."""
        if self._trim_at is not None and time.monotonic() >= self._trim_at:
            self._trim_at = None
            _malloc_trim()

    # ---------------------------------------------------------------- monitor
    def monitor_events(self) -> None:
        import zmq

        for _ in range(1000):  # bounded per wake-up
            try:
                msg = self._parse(self.poll_in.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            ev, fd = msg["event"], int(msg["value"])
            if ev == zmq.EVENT_ACCEPTED:
                peer = _peername(fd)
                known = self._conns.get(fd)
                if known is None or known.peer != peer:  # not already met through its messages
                    self._forget(fd)
                    self._conns[fd] = _Conn(peer=peer, since=time.monotonic())
                self.counters["peers"] = len(self._conns)
                if fd >= fd_limit() - self.limits.fd_reserve:
                    self._cut_idle()
            elif ev in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                self._forget(fd)
                self.counters["peers"] = len(self._conns)
            elif ev == zmq.EVENT_ACCEPT_FAILED:
                self.counters["accept_failed"] += 1
                self._cut_idle()

    def _forget(self, fd: int) -> None:
        c = self._conns.pop(fd, None)
        if c is not None:
            self._total -= len(c.subs)

    def _cut_idle(self) -> None:
        """Shut down connections silent for idle_s, oldest first: at least half of them."""
        now = time.monotonic()
        idle = sorted((c.since, fd) for fd, c in self._conns.items()
                      if not c.heard and now - c.since >= self.limits.idle_s)
        for _, fd in idle[: max(1, (len(idle) + 1) // 2)]:
            if self._shutdown(fd):
                self.counters["dropped_idle"] += 1

    # ---------------------------------------------------------------- reading
    def heard(self, frame) -> int:
        """A message came in ``frame`` (a zmq.Frame): mark its connection as heard from; its fd
        (-1 for a message of ZeroMQ's own). A connection whose messages come before the monitor
        reported it is known from here on."""
        import zmq

        try:
            fd = int(frame.get(zmq.SRCFD))
        except (zmq.ZMQError, TypeError, ValueError):
            return -1
        if fd < 0:
            return -1
        c = self._conns.get(fd)
        peer = _peername(fd)
        if c is not None and c.cut is not None and peer != c.peer and time.monotonic() - c.cut < STALE_S:
            return STALE  # most likely left over from the connection cut on this fd a moment ago
        if c is None or (peer is not None and peer != c.peer):  # new, or a new peer on a reused fd
            self._forget(fd)
            c = self._conns[fd] = _Conn(peer=peer, since=time.monotonic())
        c.heard = True
        return fd

    def subscription(self, frame) -> bool:
        """Charge a subscription message (``\\x01``/``\\x00`` + prefix, a zmq.Frame) to its
        connection; False when the connection went over a limit and was shut down."""
        fd = self.heard(frame)
        if fd == STALE:
            return False
        c = self._conns.get(fd)
        data = frame.bytes
        prefix = data[1:]
        if c is not None and c.cut is not None:
            return False
        if len(prefix) > self.limits.max_subscription:
            if c is not None:
                self._drop_subscriber(fd)
            return False
        if c is None:
            return True  # sent by ZeroMQ itself (a pipe that ended) or before the accept was seen
        if data[:1] == b"\x01":
            if prefix not in c.subs:
                c.subs.add(prefix)
                self._total += 1
        elif data[:1] == b"\x00" and prefix in c.subs:
            c.subs.discard(prefix)
            self._total -= 1
        lim = self.limits
        if len(c.subs) > lim.max_subscriptions:
            self._drop_subscriber(fd)
            return False
        if self._total > lim.max_total:
            worst = max(self._conns, key=lambda f: len(self._conns[f].subs))
            self._drop_subscriber(worst)
            return worst != fd
        return True

    def _drop_subscriber(self, fd: int) -> None:
        c = self._conns.get(fd)
        if self._shutdown(fd):
            self.counters["dropped_subscriptions"] += 1
        if c is not None:  # its subscriptions no longer count (ZeroMQ forgets them as the pipe ends)
            self._total -= len(c.subs)
            c.subs = set()
            c.cut = time.monotonic()

    def _shutdown(self, fd: int) -> bool:
        c = self._conns.get(fd)
        if c is None or c.peer is None or _peername(fd) != c.peer:
            return False  # not (or no longer) the connection we know: leave it alone
        with _borrowed(fd) as s:
            if s is None:
                return False
            try:
                s.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
        c.heard = True  # cut once: not counted as idle again
        self._trim_at = time.monotonic() + 0.5
        return True


def _malloc_trim() -> None:
    """glibc's malloc_trim(0) where there is one (elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _borrowed:
    """``with _borrowed(fd) as s``: a socket object over ZeroMQ's descriptor ``fd`` (None when it
    is no socket), detached again on the way out: it is never closed here, and no descriptor is
    duplicated (when the process is out of descriptors, a dup would fail)."""

    def __init__(self, fd: int):
        self.fd, self.s = fd, None

    def __enter__(self):
        try:
            self.s = _socket.socket(fileno=self.fd)
        except OSError:
            self.s = None
        return self.s

    def __exit__(self, *exc):
        if self.s is not None:
            self.s.detach()


def _peername(fd: int):
    """(address, port) of the TCP peer on ``fd``, or None (not a TCP socket, already gone)."""
    with _borrowed(fd) as s:
        if s is None or s.family not in (_socket.AF_INET, _socket.AF_INET6):
            return None
        try:
            return s.getpeername()
        except OSError:
            return None
