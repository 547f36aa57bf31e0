"""`avparse keys DIR --name N`: make a CURVE key pair for the event stream.

Writes ``DIR/N.key`` (public key: give it to the other side) and
``DIR/N.key_secret`` (secret key: keep it, mode 0600) with
``zmq.auth.create_certificates``. A publisher uses its ``server.key_secret``
and a folder of allowed clients' ``*.key`` files; a client uses the server's
``server.key`` and its own ``N.key_secret``.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from avparse.tools.common import fail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="avparse keys", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="folder for the key files (created if missing)")
    ap.add_argument("--name", default="avparse", help="base name of the key files (default: avparse)")
    ap.add_argument("--force", action="store_true", help="overwrite existing key files of that name")
    args = ap.parse_args(argv)
    if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", args.name) or args.name.startswith("."):
        return fail(f"key name {args.name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    d = Path(args.dir)
    public, secret = d / f"{args.name}.key", d / f"{args.name}.key_secret"
    if (public.exists() or secret.exists()) and not args.force:
        return fail(f"{public} or {secret} already exists; pass --force to overwrite")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return fail(f"cannot create {d}: {e.strerror}")
    import zmq.auth

    try:
        pub, sec = zmq.auth.create_certificates(str(d), args.name)
        os.chmod(sec, 0o600)
    except OSError as e:
        return fail(f"cannot write key files in {d}: {e.strerror}")
    print(f"public key: {pub}")
    print(f"secret key: {sec}")
    return 0
