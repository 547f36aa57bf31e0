"""What the publisher, the subscriber client and the proxy share about their ZeroMQ sockets:
releasing them in the one safe order (sockets, then the CURVE authenticator, then the context,
unless the caller handed the context in). zmq itself is not imported here."""

from __future__ import annotations


def release(sockets, auth, ctx, ctx_given, *, linger: int | None = None) -> None:
    """Close every socket of ``sockets`` that is not None (with ``linger`` ms when given), stop
    ``auth`` when there is one, and terminate ``ctx`` unless it was given (``ctx_given``)."""
    for s in sockets:
        if s is not None:
            s.close() if linger is None else s.close(linger=linger)
    if auth is not None:
        auth.stop()
    if ctx is not None and ctx_given is None:
        ctx.term()
