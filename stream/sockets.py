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


def is_z85_key(key) -> bool:
    """True for a CURVE key in Z85 text: 40 characters that decode to 32 bytes."""
    from zmq.utils import z85

    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except Exception:  # z85.decode raises ValueError, KeyError or struct.error on bad text
        return False


class KeyFileError(ValueError):
    """A CURVE key file that cannot be used (its message names the file)."""


def check_allow_list(folder) -> int:
    """Read every ``*.key`` public key file of a CURVE allow-list ``folder`` the way the
    authenticator will, and return how many there are. The first file that is not a usable public
    key (unparsable, no public key, not 40 Z85 characters) is a KeyFileError naming it: pyzmq's
    authenticator would log one line and then refuse every client, listed or not."""
    from pathlib import Path

    import zmq.auth

    d = Path(folder)
    if not d.is_dir():
        raise KeyFileError(f"CURVE allow-list folder {d} not found")
    files = sorted(d.glob("*.key"))
    if not files:
        raise KeyFileError(f"CURVE allow-list folder {d} has no *.key public key files")
    for f in files:
        try:
            public, _ = zmq.auth.load_certificate(str(f))
            if not public or not is_z85_key(public):
                raise ValueError("not a 40-character Z85 public key")
        except (ValueError, OSError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
            raise KeyFileError(f"CURVE allow-list key file {f} is not a public key file ({e}); "
                               f"fix or remove it (make key pairs with `avparse keys`)") from None
    return len(files)
