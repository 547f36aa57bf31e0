"""Forwarding many publishers to many subscribers: ZeroMQ's XSUB/XPUB proxy.

A runtime's event socket binds (so that subscribers can also connect to it
directly), so the proxy's XSUB side *connects* to every runtime's event
endpoint and its XPUB side *binds* the endpoint that subscribers connect to
(publishers that connect instead are served by ``xsub_bind``):

    runtime A XPUB (bind :5556) <-- XSUB (connect) [proxy] XPUB (bind :5558) <-- subscribers
    runtime B XPUB (bind :5556) <--/

Subscriptions travel upstream (XPUB -> XSUB -> each runtime), messages
downstream. The forwarding loop is this module's own (not ``zmq.proxy``): every
subscription is charged to the subscriber that sent it (:class:`PeerGuard`: size,
count per subscriber and in all, silent connections near the descriptor limit),
and one that the runtimes would refuse (longer than any topic) is never sent
upstream: the runtime would drop the proxy's whole connection for it, and every
subscriber of the proxy would lose messages (issue 18). Messages from upstream
larger than a wire frame can be make ZeroMQ drop that publisher.
Every message keeps its ``publisher`` and ``session`` fields, so a
subscriber of the proxy checks each runtime's numbering separately.

Snapshots are not proxied: the snapshot service is request/reply per
runtime, so a late joiner behind a proxy asks each runtime's snapshot
endpoint directly (``Subscriber(proxy_xpub, snapshot=[a_snap, b_snap])``,
``avparse listen EP --snapshot A --snapshot B``). Without them it still gets
every live message, gap and restart detection, but not the events that were
already open when it joined.

CURVE: the proxy is a client of the runtimes (give it a client key on their
allow-list) and a server to its subscribers (its own server key and allow-list).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from . import wire
from .guard import PeerGuard, PeerLimits
from .sockets import KeyFileError, check_allow_list, release


class ProxyError(RuntimeError):
    """The proxy cannot start (busy port, bad endpoint, bad keys)."""


@dataclass(frozen=True)
class ProxyConfig:
    xsub: tuple[str, ...] = ()           # runtimes' event endpoints the XSUB side connects to (or binds, see xsub_bind)
    xpub: str = "tcp://127.0.0.1:5558"   # endpoint the XPUB side binds for subscribers
    xsub_bind: tuple[str, ...] = ()      # endpoints the XSUB side binds (for publishers that connect instead)
    hwm: int = 10000                     # per-peer queue limit on both sides (messages)
    curve_client_key: str | None = None  # our client secret key file, towards CURVE runtimes
    curve_upstream_server_key: str | None = None  # runtimes' server public key file
    curve_server_key: str | None = None  # our server secret key file, towards subscribers
    curve_allow_dir: str | None = None   # allowed subscriber public keys (*.key)
    peers: PeerLimits = PeerLimits()     # what one subscriber may cost (subscriptions, handshake, descriptors)


class Proxy:
    """Run ``zmq.proxy_steerable`` in a thread; ``stop()`` ends it cleanly."""

    def __init__(self, config: ProxyConfig, *, context=None):
        self.config = config
        self._ctx_given = context
        self._ctx = None
        self._thread = None
        self._ctl_addr = None
        self._auth = None
        self.xpub_endpoint = None
        self.xsub_endpoints: list[str] = []
        self._sockets = []
        self._guard = None
        self._forwarded: set[bytes] = set()  # distinct prefixes subscribed upstream
        self.forwarded = 0      # messages sent downstream
        self.refused = 0        # subscriptions not sent upstream (their subscriber was cut)

    def start(self) -> "Proxy":
        import errno

        import zmq

        cfg = self.config
        if not cfg.xsub and not cfg.xsub_bind:
            raise ProxyError("the proxy needs at least one upstream endpoint (--xsub)")
        self._ctx = self._ctx_given or zmq.Context()
        try:
            xsub = self._ctx.socket(zmq.XSUB)
            xpub = self._ctx.socket(zmq.XPUB)
            self._sockets = [xsub, xpub]
            for s in (xsub, xpub):
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, cfg.hwm)
                s.setsockopt(zmq.RCVHWM, cfg.hwm)
            # Forward every subscription upstream, duplicates included, so each new
            # subscriber makes the runtimes send their prompt heartbeat.
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._guard = PeerGuard(xpub, cfg.peers)
            self._guard.configure(curve=bool(cfg.curve_server_key))
            # a frame from upstream larger than any wire frame: ZeroMQ drops that publisher
            xsub.setsockopt(zmq.MAXMSGSIZE, max(wire.MAX_BODY, wire.MAX_TOPIC) + 1024)
            if cfg.curve_client_key:
                from avparse.stream.client import CurveClientKeys

                CurveClientKeys.from_files(cfg.curve_upstream_server_key, cfg.curve_client_key).apply(xsub)
            if cfg.curve_server_key:
                import zmq.auth
                from zmq.auth.thread import ThreadAuthenticator

                public, secret = zmq.auth.load_certificate(cfg.curve_server_key)
                if not secret:
                    raise ProxyError(f"{cfg.curve_server_key} has no secret key")
                self._auth = ThreadAuthenticator(self._ctx)
                self._auth.start()
                loc = cfg.curve_allow_dir if cfg.curve_allow_dir else zmq.auth.CURVE_ALLOW_ANY
                if cfg.curve_allow_dir:
                    try:
                        check_allow_list(cfg.curve_allow_dir)
                    except KeyFileError as e:
                        raise ProxyError(str(e)) from None
                self._auth.configure_curve(domain="*", location=loc)
                xpub.curve_secretkey, xpub.curve_publickey, xpub.curve_server = secret, public, True
            try:
                xpub.bind(cfg.xpub)
                self.xpub_endpoint = xpub.getsockopt(zmq.LAST_ENDPOINT).decode()
                for ep in cfg.xsub_bind:
                    xsub.bind(ep)
                    self.xsub_endpoints.append(xsub.getsockopt(zmq.LAST_ENDPOINT).decode())
            except zmq.ZMQError as e:
                if e.errno == errno.EADDRINUSE:
                    raise ProxyError(f"cannot bind {cfg.xpub if self.xpub_endpoint is None else ep}: "
                                     f"the address is in use; choose a free port") from None
                raise ProxyError(f"cannot bind: {e.strerror}") from None
            for ep in cfg.xsub:
                try:
                    xsub.connect(ep)
                except zmq.ZMQError as e:
                    raise ProxyError(f"cannot connect to {ep}: {e.strerror}") from None
                self.xsub_endpoints.append(ep)
            self._guard.start()
            ctl_pull = self._ctx.socket(zmq.PAIR)
            self._ctl_addr = f"inproc://avparse-proxy-{id(self)}"
            ctl_pull.bind(self._ctl_addr)
            self._sockets.append(ctl_pull)
        except BaseException:
            self._teardown()
            raise
        self._thread = threading.Thread(target=self._run, name="avparse-proxy", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        import zmq

        xsub, xpub, ctl = self._sockets
        guard = self._guard
        poller = zmq.Poller()
        for s in (xsub, xpub, ctl, guard.poll_in):
            poller.register(s, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll(500))
                if ctl in events:
                    return  # TERMINATE
                try:
                    if guard.poll_in in events:
                        guard.monitor_events()
                    guard.maintain()
                except Exception:  # (out of descriptors, say): the guard's turn is lost, forwarding goes on
                    pass
                if xpub in events:
                    for _ in range(10 * guard.limits.rcvhwm):  # subscriptions, bounded per wake-up
                        try:
                            frame = xpub.recv(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        if guard.subscription(frame) and self._upstream(frame.bytes):
                            try:
                                xsub.send(frame.bytes, zmq.NOBLOCK)
                            except zmq.Again:
                                self.refused += 1
                        else:
                            self.refused += 1
                if xsub in events:
                    for _ in range(1000):  # messages, bounded per wake-up
                        try:
                            frames = xsub.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        xpub.send_multipart(frames, zmq.NOBLOCK)  # XPUB drops for a full subscriber
                        self.forwarded += 1
        except zmq.ZMQError:
            pass  # context terminated

    def _upstream(self, msg: bytes) -> bool:
        """Whether to send a subscription message upstream: only prefixes of real topics, and at
        most ``peers.proxy_forward`` distinct ones (the runtimes cut a peer holding more than
        their own limit, and the proxy is one peer to them for all its subscribers). ZeroMQ
        passes an unsubscription up only when no subscriber holds the prefix any more."""
        kind, prefix = msg[:1], msg[1:]
        if kind == b"\x00":
            if prefix in self._forwarded:
                self._forwarded.discard(prefix)
                return True
            return False
        if kind != b"\x01" or not wire.is_topic_prefix(prefix):
            return False
        if prefix not in self._forwarded:
            if len(self._forwarded) >= self.config.peers.proxy_forward:
                return False
            self._forwarded.add(prefix)
        return True  # (a repeated one too: it asks the runtimes for a prompt heartbeat)

    def stop(self) -> None:
        import zmq

        if self._thread is not None:
            ctl = self._ctx.socket(zmq.PAIR)
            ctl.connect(self._ctl_addr)
            ctl.send(b"TERMINATE")
            self._thread.join(timeout=5.0)
            ctl.close(linger=0)
            self._thread = None
        self._teardown()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the proxy ends (or ``timeout``); True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _teardown(self):
        if self._guard is not None:
            self._guard.close()
            self._guard = None
        release(self._sockets, self._auth, self._ctx, self._ctx_given, linger=0)
        self._sockets = []
        self._guard = None
        self.forwarded = 0      # messages sent downstream
        self.refused = 0        # subscriptions not sent upstream (their subscriber was cut)
        self._auth = self._ctx = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
