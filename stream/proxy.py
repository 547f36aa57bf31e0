"""Forwarding many publishers to many subscribers: ZeroMQ's XSUB/XPUB proxy.

A runtime's event socket binds (so that subscribers can also connect to it
directly), so the proxy's XSUB side *connects* to every runtime's event
endpoint and its XPUB side *binds* the endpoint that subscribers connect to
(publishers that connect instead are served by ``xsub_bind``):

    runtime A XPUB (bind :5556) <-- XSUB (connect) [proxy] XPUB (bind :5558) <-- subscribers
    runtime B XPUB (bind :5556) <--/

Subscriptions travel upstream (XPUB -> XSUB -> each runtime), messages
downstream, through ``zmq.proxy_steerable`` (ZeroMQ's own proxy, in C).
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
        try:
            zmq.proxy_steerable(xsub, xpub, None, ctl)
        except zmq.ZMQError:
            pass  # context terminated

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
        release(self._sockets, self._auth, self._ctx, self._ctx_given, linger=0)
        self._sockets = []
        self._auth = self._ctx = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
